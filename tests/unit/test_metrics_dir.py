"""Where a node's metric files go: a tmpfs, private to the user, never the home's disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from felund import config, home
from felund.errors import ConfigError


def _home(path: Path) -> Path:
    path.mkdir()
    return path


def test_the_metric_files_go_to_the_runtime_tmpfs_not_the_home(tmp_path, monkeypatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    lay = home.layout(_home(tmp_path / "home"), config.build({}, {}))
    assert lay.metrics_dir.parent == xdg
    other = home.layout(_home(tmp_path / "other"), config.build({}, {}))
    assert other.metrics_dir != lay.metrics_dir  # two nodes of one user
    # The home names it, not the path it is reached by.
    (tmp_path / "link").symlink_to(tmp_path / "home")
    assert home.layout(tmp_path / "link", config.build({}, {})).metrics_dir == lay.metrics_dir


def test_without_xdg_runtime_dir_dev_shm(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    lay = home.layout(_home(tmp_path / "home"), config.build({}, {}))
    assert lay.metrics_dir.parent == Path("/dev/shm")


def test_a_configured_runtime_dir_holds_them(tmp_path) -> None:
    cfg = config.build({"bus": {"runtime_dir": str(tmp_path / "rt")}}, {})
    assert home.layout(tmp_path / "home", cfg).metrics_dir == tmp_path / "rt" / "metrics"


def test_a_name_made_first_as_a_link_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    lay = home.layout(_home(tmp_path / "home"), config.build({}, {}))
    (tmp_path / "theirs").mkdir()
    lay.metrics_dir.symlink_to(tmp_path / "theirs")
    with pytest.raises(ConfigError, match="not a directory of this user"):
        home.prepare_metrics(lay)
    lay.metrics_dir.unlink()
    home.prepare_metrics(lay)
    assert lay.metrics_dir.stat().st_mode & 0o777 == 0o700


def test_felund_run_names_the_directory_for_the_supervisor_it_execs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv(home.MULTIPROC_ENV, raising=False)  # and restored after
    lay = home.layout(_home(tmp_path / "home"), config.build({}, {}))
    home.use_metrics_dir(lay)
    assert os.environ[home.MULTIPROC_ENV] == str(lay.metrics_dir)
    assert lay.metrics_dir.is_dir()
