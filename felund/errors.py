"""Every exception felund raises, in one flat module.

I/O edges translate library errors (zmq, sqlite3, msgpack, cryptography)
into these; nothing else invents error types.
"""

from __future__ import annotations

from typing import Any


class FelundError(Exception):
    """Base of every felund error."""


class ConfigError(FelundError):
    """The configuration file or an override is invalid."""


class UsageError(FelundError):
    """The user asked for something that cannot be done: exit status 2 from the CLI,
    a notice in the ui."""


class InviteError(FelundError):
    """An invite code cannot be decoded."""


class InvalidMessage(FelundError):
    """A message has fields of the wrong type, size or form."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # short, bounded, usable as a metric label
        self.detail = detail


class AuthError(FelundError):
    """A MAC, token or ciphertext does not verify."""


class FrameError(FelundError):
    """A bus frame cannot be decoded."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # bounded: garbage, version, oversize, header
        self.detail = detail


class RPCError(FelundError):
    """The serving actor answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RPCTimeout(FelundError):
    """No answer after every retry: the serving actor is down or stuck."""


class ServiceDown(RPCTimeout):
    """The supervisor says the serving actor is given up: no answer is waited for."""


class NodeLocked(FelundError):
    """Another felund process holds this FELUND_HOME."""


class RelayError(FelundError):
    """A relay call that did not succeed; ``kind`` is one of ``felund.relay.client.KINDS``."""

    def __init__(self, kind: str, detail: str = "", code: str = "", retry_after: float = 0.0):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.code = code  # the relay's error code, when it answered one
        self.retry_after = retry_after


class PeerError(FelundError):
    """A gossip peer broke the protocol; the connection is closed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # bounded, a metric label: garbage, too_long, frame, auth, ...
        self.detail = detail


class DiskFull(FelundError):
    """The file system holding the database has no room for a write."""

    def __init__(self, free_bytes: int, where: object) -> None:
        super().__init__(f"disk full: {free_bytes} bytes free in {where}")
        self.free_bytes = free_bytes


class DatabaseLost(FelundError):
    """The database no longer holds the circles this home knew it held."""


class HomeUnusable(FelundError):
    """FELUND_HOME cannot be created or written (read-only, another owner's)."""


class Malformed(FelundError):
    """An answer or row not shaped as the store sends them (the ui's reading of them)."""


class ApiError(FelundError):
    """A request the relay refuses; becomes ``{"ok":false,"code","message"}`` with the
    HTTP status of its code (``felund.relay.protocol.http_status``)."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body of the error answer."""
        return {"ok": False, "code": self.code, "message": self.message}


class DatabaseUnavailable(FelundError):
    """The relay's database cannot be reached now (a restart, a network cut): answered 503."""


class StoreInUse(FelundError):
    """Another relay process has this database open (one process per SQLite file)."""
