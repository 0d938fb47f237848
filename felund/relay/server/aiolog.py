"""aiohttp's and asyncio's own log records as one structlog line each.

aiohttp logs a malformed request (a garbled request line, a bad header, TLS
sent to the plain port) through the stdlib ``aiohttp.server`` logger with a
traceback, which would reach stderr as many lines of plain text beside the
relay's JSON lines. Here a request the client got wrong is one
``http.bad_request`` line at info (the exception's class and its reason up
to the first colon, never the bytes it quotes: they are the client's), and
any other record one line at its own level (structlog's filter applies), a
traceback folded into its ``exception`` field.
"""

from __future__ import annotations

import logging

import structlog
from aiohttp.http_exceptions import HttpProcessingError

MAX_REASON_CHARS = 120
_LOGGERS = ("aiohttp", "asyncio")


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:MAX_REASON_CHARS]


def _reason(exc: BaseException) -> str:
    """What went wrong, without what the client sent (aiohttp quotes it after a colon)."""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return _first_line(str(text).split(":", 1)[0])


class StructlogHandler(logging.Handler):
    """Writes stdlib records through a structlog logger, one line each."""

    def __init__(self, log: structlog.stdlib.BoundLogger) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        """One line for ``record``; never raises."""
        try:
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, HttpProcessingError | ConnectionError):
                client = record.args[0] if isinstance(record.args, tuple) and record.args else ""
                self.log.info(
                    "http.bad_request",
                    client=str(client)[:64],
                    error=type(exc).__name__,
                    reason=_reason(exc),
                )
                return
            self.log.log(
                record.levelno,
                "library.log",
                logger=record.name,
                message=_first_line(record.getMessage()),
                exc_info=record.exc_info or False,
            )
        except Exception:  # a log line must never fail the caller
            self.handleError(record)


def install(log: structlog.stdlib.BoundLogger) -> None:
    """Send every record of aiohttp's and asyncio's loggers through ``log``."""
    handler = StructlogHandler(log)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        # aiohttp logs a non-HTTP first line at debug: the level is ours to choose.
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
