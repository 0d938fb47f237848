"""/metrics bodies: the same bytes as prometheus-client's encoders, for every kind of metric."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import exposition as library
from prometheus_client import values
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.openmetrics import exposition as library_om
from prometheus_client.registry import CollectorRegistry

from felund.actor import exposition
from felund.metric_files import TolerantCollector

# Label values a node never makes, but the encoding must survive.
HOSTILE = ['say "hi"', "back\\slash", "two\nlines", "ünïcödé ✓", "", "\\n not a newline", "}{,="]
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def _fill(registry: CollectorRegistry | None) -> None:
    """A counter, a gauge and a histogram with labels, as felund/metrics.py makes them
    (in ``registry``, or None: in the multiprocess files alone)."""
    helped = 'help with "quotes", \\ and\na newline'
    counter = Counter("felund_t_events", helped, ["service"], registry=registry)
    gauge = Gauge(
        "felund_t_level",
        "a gauge",
        ["service", "kind"],
        registry=registry,
        multiprocess_mode="livesum",
    )
    histogram = Histogram(
        "felund_t_seconds", "a histogram", ["op"], registry=registry, buckets=(0.001, 0.5, 60)
    )
    for i, value in enumerate(HOSTILE):
        counter.labels(value).inc(i + 0.5)
        gauge.labels(value, "k").set(-i * 1e-9 if i else 1e21)
        histogram.labels(value).observe(i * 0.3)
    gauge.labels("inf", "k").set(float("inf"))


def test_text_is_the_librarys_for_a_registry_of_each_kind() -> None:
    registry = CollectorRegistry()
    _fill(registry)
    ours = exposition.text_format(registry)
    assert ours == library.generate_latest(registry)
    assert b'service="say \\"hi\\""' in ours and "ünïcödé".encode() in ours  # really hostile
    assert exposition.render(registry, "") == (library.CONTENT_TYPE_PLAIN_0_0_4, ours)


def test_openmetrics_is_the_librarys() -> None:
    registry = CollectorRegistry()
    _fill(registry)
    content_type, body = exposition.render(registry, PROMETHEUS_2)
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body == library_om.generate_latest(registry)  # type: ignore[no-untyped-call]
    assert body.endswith(b"# EOF\n")


def test_text_is_the_librarys_for_the_childrens_files(tmp_path: Path, monkeypatch) -> None:
    """What the supervisor serves: the multiprocess files, through its collector."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())  # type: ignore[no-untyped-call]
    _fill(None)
    registry = CollectorRegistry()
    TolerantCollector(registry, path=str(tmp_path))
    ours = exposition.text_format(registry)
    assert b"felund_t_seconds_bucket" in ours
    assert ours == library.generate_latest(registry)
    body = exposition.render(registry, "application/openmetrics-text")[1]
    assert body == library_om.generate_latest(registry)  # type: ignore[no-untyped-call]


class _Families:
    """A collector of the metric kinds prometheus-client has beyond the node's own."""

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily("t_c", "c", labels=["a"], created=1700000000.5)
        counter.add_metric(["x"], 2, created=1700000000.5, timestamp=1700000001.25)
        yield counter
        info = InfoMetricFamily("t_i", "i")
        info.add_metric([], {"version": "1"})
        yield info
        yield StateSetMetricFamily("t_s", "s", {"on": True, "off": False})
        yield GaugeHistogramMetricFamily(
            "t_g", "g", buckets=[("1.0", 2), ("+Inf", 3)], gsum_value=4
        )
        yield SummaryMetricFamily("t_m", "m", count_value=2, sum_value=1.5)
        yield UnknownMetricFamily("t_u", "u", value=7)


def test_text_is_the_librarys_for_the_other_kinds_too() -> None:
    registry = CollectorRegistry()
    registry.register(_Families())
    assert exposition.text_format(registry) == library.generate_latest(registry)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_2, True),
        ("application/openmetrics-text", True),
        ("text/plain;q=0.9, application/openmetrics-text; version=0.0.1", True),
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-textual", False),
    ],
)
def test_openmetrics_when_asked_for(accept: str, openmetrics: bool) -> None:
    assert exposition.wants_openmetrics(accept) is openmetrics
