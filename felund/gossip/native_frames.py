"""The native gossip protocol's frames: length-prefixed, sealed msgpack.

Sans-IO. A frame on the wire is a 4-byte big-endian length and an
AES-256-GCM ciphertext of a msgpack map with a ``t`` key. Nonces are a
direction tag and a counter, so a replayed, dropped or reordered frame does
not decrypt. The length is checked before a byte of the body is read.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.errors import PeerError
from felund.v1.crypto import TAG_LEN

VERSION = 2
MAX_FRAME = 1 << 20
MAX_MSGS_BYTES = 512 * 1024  # a MSGS frame is cut at about this much wire JSON
HEADER = struct.Struct(">I")
FRAME_TYPES = ("PEERS", "RECON", "MSGS", "PING", "PONG", "BYE")
_TO_SERVER, _TO_CLIENT = b"c2s\x00", b"s2c\x00"
_PACKER = msgpack.Packer()
# {"t": "MSGS", "msgs": [...]} up to the array's header, for Channel.seal_msgs.
_MSGS_HEAD = b"".join(
    (_PACKER.pack_map_header(2), _PACKER.pack("t"), _PACKER.pack("MSGS"), _PACKER.pack("msgs"))
)


class Channel:
    """Seals frames one way and opens them the other, for one side of a session."""

    def __init__(self, key: bytes, is_client: bool) -> None:
        self._aead = AESGCM(key)
        self._out, self._in = (_TO_SERVER, _TO_CLIENT) if is_client else (_TO_CLIENT, _TO_SERVER)
        self._sent = 0
        self._received = 0

    def seal(self, frame: dict[str, Any]) -> bytes:
        """The bytes of one frame, length prefix included."""
        return self._seal(msgpack.packb(frame))

    def seal_msgs(self, packed: list[bytes]) -> bytes:
        """A MSGS frame of messages packed already (``wire.pack_wire``), as ``seal`` would
        make it of their dicts: msgpack is concatenative, so each is packed only once."""
        return self._seal(_MSGS_HEAD + _PACKER.pack_array_header(len(packed)) + b"".join(packed))

    def _seal(self, plain: bytes) -> bytes:
        nonce = self._out + self._sent.to_bytes(8, "big")
        self._sent += 1
        sealed = self._aead.encrypt(nonce, plain, None)
        if len(sealed) > MAX_FRAME:
            raise ValueError(f"frame of {len(sealed)} bytes exceeds {MAX_FRAME}")
        return HEADER.pack(len(sealed)) + sealed

    def open(self, sealed: bytes) -> dict[str, Any]:
        """The frame in ``sealed`` (the bytes after the length prefix); PeerError if bad."""
        nonce = self._in + self._received.to_bytes(8, "big")
        self._received += 1
        try:
            plain = self._aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise PeerError("auth", "frame does not decrypt") from None
        try:
            frame = msgpack.unpackb(plain, raw=False, strict_map_key=True)
        except (msgpack.UnpackException, ValueError, TypeError):
            raise PeerError("garbage", "frame is not msgpack") from None
        if not isinstance(frame, dict) or frame.get("t") not in FRAME_TYPES:
            raise PeerError("frame", "not a frame of the native protocol")
        return frame


class FrameBuffer:
    """Bytes in, opened frames out, for one side of a session."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._buf = bytearray()
        self._length: int | None = None  # of the body being read, once its header came

    def feed(self, data: bytes) -> None:
        """Bytes read from the connection."""
        self._buf += data

    def next_frame(self) -> dict[str, Any] | None:
        """The next whole frame, or None until more bytes come; PeerError if it is bad
        (a length over the cap is refused from its header, before its body comes)."""
        if self._length is None:
            if len(self._buf) < HEADER.size:
                return None
            self._length = frame_length(bytes(self._buf[: HEADER.size]))
            del self._buf[: HEADER.size]
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[: self._length])
        del self._buf[: self._length]
        self._length = None
        return self._channel.open(body)


def msgs_chunks(packed: list[bytes]) -> list[list[bytes]]:
    """Split packed messages into MSGS frames of about ``MAX_MSGS_BYTES`` each."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for item in packed:
        if current and size + len(item) > MAX_MSGS_BYTES:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item)
    if current:
        chunks.append(current)
    return chunks


def frame_length(header: bytes) -> int:
    """The body length announced by a header; PeerError before reading a huge one."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise PeerError("oversize", f"frame of {length} bytes announced")
    if length < TAG_LEN:
        raise PeerError("garbage", "frame too short")
    return length


def field(frame: dict[str, Any], name: str, typ: type, limit: int | None = None) -> Any:
    """A field of a received frame, checked for type (and length); PeerError otherwise."""
    value: Any = frame.get(name)
    if type(value) is not typ:
        raise PeerError("frame", f"{frame.get('t')}.{name} must be {typ.__name__}")
    if limit is not None and len(frame[name]) > limit:
        raise PeerError("frame", f"{frame.get('t')}.{name} is too long")
    return value
