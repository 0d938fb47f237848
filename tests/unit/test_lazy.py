"""``felund.lazy``: a module whose body runs at the first read of a name it holds
(``deferred``), and one that does not import at all (``unavailable``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from felund import lazy

PACKAGE = "felund_test_deferred_pkg"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package whose ``__init__`` and submodule record, in ``RAN``, that they ran."""
    root = tmp_path / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text(
        "import builtins\nbuiltins.RAN.append('init')\nfrom .sub import VALUE\nNAME = 'pkg'\n"
    )
    (root / "sub.py").write_text("import builtins\nbuiltins.RAN.append('sub')\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("builtins.RAN", [], raising=False)
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def _ran() -> list[str]:
    return list(__import__("builtins").RAN)


def test_an_import_statement_does_not_run_a_deferred_module(package: Path) -> None:
    lazy.deferred(PACKAGE)
    mod = importlib.import_module(PACKAGE)  # what a library's ``import name`` does
    assert _ran() == []
    assert mod.NAME == "pkg"  # the first read runs it, into the same module
    assert _ran() == ["init", "sub"]
    assert sys.modules[PACKAGE] is mod and mod.VALUE == 42


def test_a_submodule_of_a_deferred_package_loads_alone(package: Path) -> None:
    lazy.deferred(PACKAGE)
    from felund_test_deferred_pkg import sub  # type: ignore[import-not-found]

    assert sub.VALUE == 42
    assert _ran() == ["sub"]
    assert importlib.import_module(PACKAGE).NAME == "pkg"
    assert _ran() == ["sub", "init"]  # the package's own body, reusing the submodule


def test_a_module_imported_already_is_returned_as_it_is() -> None:
    assert lazy.deferred("json") is importlib.import_module("json")
    with pytest.raises(ModuleNotFoundError):
        lazy.deferred("felund_no_such_module")


def test_an_unavailable_module_fails_to_import_unless_imported_already(package: Path) -> None:
    lazy.deferred(PACKAGE)  # deferred, its body never run: made unavailable all the same
    lazy.unavailable(PACKAGE, "json")
    with pytest.raises(ImportError):
        importlib.import_module(PACKAGE)
    assert _ran() == []
    assert importlib.import_module("json").dumps([]) == "[]"  # imported already: it stays
