"""structlog setup: JSON lines under a service manager, console on a terminal.

Every line carries ``service``, ``node_id`` and ``pid``. Callers log ids,
counts and reasons; never a secret, a token or a message text.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup(
    service: str,
    node_id: str = "",
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
) -> structlog.stdlib.BoundLogger:
    """Configure structlog for this process and return its bound logger."""
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, node_id=node_id, pid=os.getpid())
    log: structlog.stdlib.BoundLogger = structlog.get_logger()
    return log


def get() -> structlog.stdlib.BoundLogger:
    """The process's logger (configured by ``setup``)."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger()
    return log
