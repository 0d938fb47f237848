"""The body of a /metrics scrape, in the format the scraper asks for.

Made from prometheus-client's light modules only: ``prometheus_client.exposition``,
where the library keeps its text format, imports an HTTP stack with it (http.server,
email, urllib.request, wsgiref: 3 MiB of the supervisor's PSS, for nothing it needs).

- OpenMetrics 1.0.0, the library's own encoder, when the Accept header names
  ``application/openmetrics-text`` (what Prometheus asks for first).
- Else the Prometheus text format 0.0.4: what curl, urllib and ``promtool check
  metrics`` read (promtool finds "no help text" for every counter in OpenMetrics).
  ``text_format`` writes what the library's ``exposition.generate_latest`` writes,
  with its escaping and number formatting; a unit test compares the bytes.
"""

from __future__ import annotations

from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

OPENMETRICS = openmetrics.CONTENT_TYPE_LATEST
TEXT = "text/plain; version=0.0.4; charset=utf-8"
# How an OpenMetrics type is written in the text format (the rest as they are).
_TEXT_TYPES = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_NAME_SUFFIXES = {"counter": "_total", "info": "_info"}
# OpenMetrics samples the text format has no place for in their family: each
# is written after it as a gauge of its own.
_APART = ("_created", "_gsum", "_gcount")


def render(registry: Collector, accept: str) -> tuple[str, bytes]:
    """The content type and body of a scrape whose Accept header is ``accept``."""
    if wants_openmetrics(accept):
        body: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        return OPENMETRICS, body
    return TEXT, text_format(registry)


def wants_openmetrics(accept: str) -> bool:
    """Whether the Accept header names OpenMetrics (at any version or weight)."""
    return any(
        part.split(";", 1)[0].strip() == "application/openmetrics-text"
        for part in accept.split(",")
    )


def text_format(registry: Collector) -> bytes:
    """The registry in the Prometheus text format 0.0.4."""
    out: list[str] = []
    for metric in registry.collect():
        name = metric.name + _NAME_SUFFIXES.get(metric.type, "")
        _family(out, name, _TEXT_TYPES.get(metric.type, metric.type), metric.documentation)
        apart: dict[str, list[str]] = {}
        for sample in metric.samples:
            suffix = next((s for s in _APART if sample.name == metric.name + s), "")
            line = _sample(sample.name, sample.labels, sample.value, sample.timestamp)
            if suffix:
                apart.setdefault(suffix, []).append(line)
            else:
                out.append(line)
        for suffix, lines in sorted(apart.items()):
            _family(out, metric.name + suffix, "gauge", metric.documentation)
            out.extend(lines)
    return "".join(out).encode()


def _family(out: list[str], name: str, kind: str, documentation: str) -> None:
    name = openmetrics.escape_metric_name(name)
    help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {name} {help_text}\n")
    out.append(f"# TYPE {name} {kind}\n")


def _sample(name: str, labels: dict[str, str], value: float, timestamp: object) -> str:
    text = openmetrics.escape_metric_name(name)
    if labels:
        pairs = ",".join(
            f'{openmetrics.escape_label_name(k)}="{_label_value(v)}"'
            for k, v in sorted(labels.items())
        )
        text += "{" + pairs + "}"
    when = "" if timestamp is None else f" {int(float(timestamp) * 1000):d}"  # type: ignore[arg-type]
    return f"{text} {floatToGoString(value)}{when}\n"  # type: ignore[no-untyped-call]


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
