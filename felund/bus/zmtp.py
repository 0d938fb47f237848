"""ZMTP 3.0 with the NULL mechanism, as a DEALER speaks it to a ROUTER: sans-IO.

What a command needs of the bus is request and reply with one actor's ROUTER;
pyzmq's import alone costs a command more wall time than all the rest of its
start (README, architecture), so commands speak the wire themselves. Only this
subset of RFC 23 is here: the 64-byte greeting (version 3.0, so the peer sends no
PING), one READY command each way, and message frames (MORE, LONG). Anything
else from the peer is a ``FrameError``: the caller drops the connection.

``Reader`` takes bytes as they arrive and gives back whole messages, bounded in
parts and bytes before anything is buffered past the bound.
"""

from __future__ import annotations

import struct
from typing import Final

from felund.errors import FrameError

_SIGNATURE: Final = b"\xff" + bytes(8) + b"\x7f"
_MECHANISM: Final = b"NULL".ljust(20, b"\0")
GREETING: Final = _SIGNATURE + b"\x03\x00" + _MECHANISM + b"\0" + bytes(31)
GREETING_SIZE: Final = 64

_MORE: Final = 0x01
_LONG: Final = 0x02
_COMMAND: Final = 0x04
_READY: Final = b"\x05READY"
_LONG_SIZE = struct.Struct(">Q")
_PROPERTY_SIZE = struct.Struct(">I")
MAX_COMMAND_SIZE: Final = 4096  # a READY's metadata is tens of bytes
MAX_PARTS: Final = 16  # the bus's frames have two


def ready(socket_type: str) -> bytes:
    """The READY command naming our socket type."""
    value = socket_type.encode()
    body = _READY + b"\x0bSocket-Type" + _PROPERTY_SIZE.pack(len(value)) + value
    return _frame(_COMMAND, body)


def message(parts: list[bytes]) -> bytes:
    """A multipart message's frames."""
    last = len(parts) - 1
    return b"".join(_frame(_MORE if k < last else 0, p) for k, p in enumerate(parts))


def _frame(flags: int, body: bytes) -> bytes:
    if len(body) > 255:
        return bytes((flags | _LONG,)) + _LONG_SIZE.pack(len(body)) + body
    return bytes((flags, len(body))) + body


def _properties(data: bytes) -> dict[str, bytes]:
    """A command's metadata: 1-byte name length, name, 4-byte value length, value."""
    props: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        n = data[at]
        name = data[at + 1 : at + 1 + n]
        at += 1 + n
        if len(name) != n or at + 4 > len(data):
            raise FrameError("garbage", "zmtp: truncated metadata")
        (size,) = _PROPERTY_SIZE.unpack_from(data, at)
        at += 4
        if at + size > len(data):
            raise FrameError("garbage", "zmtp: truncated metadata")
        props[name.decode("ascii", "replace").lower()] = data[at : at + size]
        at += size
    return props


class Reader:
    """The peer's side of one connection: greeting, READY, then whole messages."""

    def __init__(self, max_message_size: int, peer_types: frozenset[bytes]) -> None:
        self._max = max_message_size
        self._peer_types = peer_types
        self._buf = bytearray()
        self._greeted = False
        self.ready = False  # the peer's READY arrived: messages may follow
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Take received bytes; the messages they complete. FrameError if off the protocol."""
        self._buf += data
        out: list[list[bytes]] = []
        if not self._greeted:
            if len(self._buf) < GREETING_SIZE:
                if bytes(self._buf[:1]) not in (b"", b"\xff"):  # an HTTP server, say: say so now
                    raise FrameError("garbage", "zmtp: not a ZeroMQ peer")
                return out
            self._greet(bytes(self._buf[:GREETING_SIZE]))
            del self._buf[:GREETING_SIZE]
        at = 0
        while (got := self._next_frame(at)) is not None:
            flags, start, end = got
            body = bytes(self._buf[start:end])
            at = end
            if flags & _COMMAND:
                self._command(body)
            elif not self.ready:
                raise FrameError("garbage", "zmtp: a message before READY")
            else:
                self._parts.append(body)
                self._size += len(body)
                if not flags & _MORE:
                    out.append(self._parts)
                    self._parts, self._size = [], 0
        del self._buf[:at]
        return out

    def _greet(self, greeting: bytes) -> None:
        if greeting[0] != 0xFF or greeting[9] != 0x7F:
            raise FrameError("garbage", "zmtp: not a ZeroMQ peer")
        if greeting[10] < 3:
            raise FrameError("version", f"zmtp: version {greeting[10]}.{greeting[11]}")
        if greeting[12:32] != _MECHANISM:
            raise FrameError("version", "zmtp: a security mechanism other than NULL")
        self._greeted = True

    def _next_frame(self, at: int) -> tuple[int, int, int] | None:
        """(flags, body start, body end) of the frame at ``at``, None until it is whole."""
        buf = self._buf
        if len(buf) - at < 2:
            return None
        flags = buf[at]
        if flags & ~(_MORE | _LONG | _COMMAND):
            raise FrameError("garbage", f"zmtp: frame flags {flags:#x}")
        if flags & _LONG:
            if len(buf) - at < 9:
                return None
            (size,) = _LONG_SIZE.unpack_from(buf, at + 1)
            start = at + 9
        else:
            size, start = buf[at + 1], at + 2
        if flags & _COMMAND:
            if flags & _MORE:
                raise FrameError("garbage", "zmtp: a command marked MORE")
            if size > MAX_COMMAND_SIZE:
                raise FrameError("oversize", "zmtp: command too large")
        elif self._size + size > self._max:  # refused on its declared size, before buffering
            raise FrameError("oversize", f"zmtp: message over {self._max} bytes")
        elif len(self._parts) >= MAX_PARTS:
            raise FrameError("oversize", f"zmtp: over {MAX_PARTS} parts")
        if start + size > len(buf):
            return None
        return flags, start, start + size

    def _command(self, body: bytes) -> None:
        n = body[0] if body else 0
        name = body[1 : 1 + n]
        if name != b"READY":
            if name == b"ERROR":
                raise FrameError("garbage", "zmtp: the peer refused the connection")
            return  # PING and the like: a 3.0 peer sends none, and they ask nothing of us
        if self.ready:
            raise FrameError("garbage", "zmtp: a second READY")
        kind = _properties(body[1 + n :]).get("socket-type", b"")
        if kind not in self._peer_types:
            raise FrameError("garbage", f"zmtp: peer is a {kind.decode('ascii', 'replace')}")
        self.ready = True
