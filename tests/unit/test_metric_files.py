"""The supervisor's collector of the children's metric files, with a file it cannot read."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest, values

from felund.metric_files import TolerantCollector


def test_a_file_being_written_or_gone_leaves_the_others_readable(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())  # type: ignore[no-untyped-call]
    Counter("felund_test_good_total", "a child's counter", registry=None).inc(3)
    # A child killed while it grew its file: 'used' says more than the file holds.
    (tmp_path / "counter_99999.db").write_bytes((4096).to_bytes(4, "little") + b"\x00" * 60)
    registry = CollectorRegistry()
    TolerantCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    assert "felund_test_good_total 3.0" in text
