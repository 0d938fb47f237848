"""structlog setup: JSON lines under a service manager, console on a terminal.

Every line carries ``service``, ``node_id`` and ``pid``. Callers log ids,
counts and reasons; never a secret, a token or a message text.

Once a process has its bus, ``publish_to`` also sends each record (at the
configured level, as written to stderr) on ``sys.log`` for an attached ui's
/debug pane: ``{ts, service, level, event, ...}`` with JSON-safe, truncated
values. Publishing never blocks (the bus publisher drops when its queue is
full), never raises, and never logs (so it cannot recurse).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from felund.protocol import TOPIC_LOG

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MAX_LOG_FIELDS = 32  # fields of one sys.log record, beyond ts/service/level/event
MAX_LOG_VALUE = 512  # characters of one value (a traceback is cut here too)
_SKIPPED = frozenset({"timestamp"})  # the record has ``ts`` (a float) instead
_CONTEXT = ("node_id", "pid")  # bound per process: kept ahead of the caller's many fields

Publish = Callable[[str, Any], None]


class BusSink:
    """A structlog processor that hands each record to the bus, as well as passing it on."""

    def __init__(self) -> None:
        self._publish: Publish | None = None
        self._thread = 0
        self._busy = False

    def attach(self, publish: Publish | None) -> None:
        """Publish from now on (None: stop). Only this thread publishes: zmq sockets are
        not thread-safe, and a record logged by another thread just goes to stderr."""
        self._publish = publish
        self._thread = threading.get_ident()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        publish = self._publish
        if publish is None or self._busy or threading.get_ident() != self._thread:
            return event_dict
        self._busy = True  # publishing must not log; if it ever did, this stops the loop
        try:
            publish(TOPIC_LOG, record(event_dict))
        except Exception:  # noqa: S110 - a log line must never fail the caller
            # (A full queue drops inside ZeroMQ and shows as a gap downstream;
            # this is a socket closed at exit, or a value msgpack refused.)
            pass
        finally:
            self._busy = False
        return event_dict


def record(event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """A log event as a ``sys.log`` body: fixed keys first, then JSON-safe fields."""
    body: dict[str, Any] = {
        "ts": time.time(),
        "service": _safe(event_dict.get("service", "")),
        "level": _safe(event_dict.get("level", "")),
        "event": _safe(event_dict.get("event", "")),
    }
    extra = 0
    for key in (*_CONTEXT, *event_dict):
        if key in body or key in _SKIPPED or key not in event_dict:
            continue
        if extra == MAX_LOG_FIELDS:
            body["truncated"] = True
            break
        body[str(key)[:64]] = _safe(event_dict[key])
        extra += 1
    return body


def _safe(value: Any) -> Any:
    """A value msgpack and JSON both carry: scalars as they are, the rest as cut text."""
    if type(value) is str and len(value) <= MAX_LOG_VALUE:  # the common case, first
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # msgpack's range
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_LOG_VALUE else text[: MAX_LOG_VALUE - 1] + "…"


_sink = BusSink()


def setup(
    service: str,
    node_id: str = "",
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
) -> structlog.stdlib.BoundLogger:
    """Configure structlog for this process and return its bound logger."""
    global _sink  # noqa: PLW0603 - structlog's configuration is process-wide too
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    _sink = BusSink()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _sink,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per record (PrintLogger writes the newline apart): children share
        # the node's stderr, which PYTHONUNBUFFERED makes unbuffered.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, node_id=node_id, pid=os.getpid())
    log: structlog.stdlib.BoundLogger = structlog.get_logger()
    return log


def publish_to(publish: Publish | None) -> None:
    """Also send this process's log records on ``sys.log`` through ``publish``
    (a bus publisher's ``publish``, from the thread that owns it); None stops."""
    _sink.attach(publish)


def get() -> structlog.stdlib.BoundLogger:
    """The process's logger (configured by ``setup``)."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger()
    return log
