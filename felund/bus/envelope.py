"""The bus envelope: ``[topic][FLND1 | header length | header | body]``, msgpack.

Sans-IO: bytes in, frames out. Two ZeroMQ parts, not four: every part costs
a libzmq call on each side, and four parts halved the bus's throughput
(README, architecture). The header length (2 bytes, big-endian) lets the
decoder check both sizes before unpacking anything. The header is a msgpack map with ``v``
(version), ``id`` (unique; the idempotency key of a request), ``src``
(service), ``inc`` (changes at every process start), ``seq`` (per src+inc),
``ts`` and ``corr`` (the request being answered). Decoding checks sizes
before unpacking, never unpickles and rejects anything off-form.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, NamedTuple

import msgpack

from felund.errors import FrameError
from felund.protocol import (
    ENVELOPE_MAGIC,
    ENVELOPE_VERSION,
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    MAX_TOPIC_SIZE,
)

_MAGIC_LEN = len(ENVELOPE_MAGIC)
_HEAD_LEN = struct.Struct(">H")
_PREFIX_LEN = _MAGIC_LEN + _HEAD_LEN.size


class Header(NamedTuple):
    """Who sent a frame, in what order, answering what."""

    # NamedTuples, not frozen dataclasses: built for every event, and a
    # frozen dataclass costs several times more to construct.

    v: int
    id: str
    src: str
    inc: str
    seq: int
    ts: float
    corr: str | None = None


class Frame(NamedTuple):
    """One decoded bus message."""

    topic: str
    header: Header
    body: Any


class Stamper:
    """Numbers the frames of one process: a fresh ``inc`` per start, ``seq`` per frame."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.inc = os.urandom(8).hex()
        self._seq = 0

    def next(self, corr: str | None = None) -> Header:
        """A header for the next frame this process sends."""
        self._seq += 1
        return Header(
            v=ENVELOPE_VERSION,
            id=f"{self.inc}.{self._seq}",
            src=self.src,
            inc=self.inc,
            seq=self._seq,
            ts=time.time(),
            corr=corr,
        )


def encode(topic: str, header: Header, body: Any) -> list[bytes]:
    """The frame's two parts, ready for ``send_multipart``."""
    head = msgpack.packb(
        {
            "v": header.v,
            "id": header.id,
            "src": header.src,
            "inc": header.inc,
            "seq": header.seq,
            "ts": header.ts,
            "corr": header.corr,
        }
    )
    return [
        topic.encode(),
        b"".join((ENVELOPE_MAGIC, _HEAD_LEN.pack(len(head)), head, msgpack.packb(body))),
    ]


def decode(parts: list[bytes]) -> Frame:
    """Parse received parts into a Frame, or raise FrameError with a bounded kind."""
    if len(parts) != 2:
        raise FrameError("garbage", f"{len(parts)} parts, expected 2")
    topic_b, payload = parts
    magic = payload[:_MAGIC_LEN]
    if magic != ENVELOPE_MAGIC:
        if magic.startswith(b"FLND"):
            raise FrameError("version", f"envelope {magic[:8]!r}")
        raise FrameError("garbage", "no envelope marker")
    if len(payload) < _PREFIX_LEN:
        raise FrameError("garbage", "truncated envelope")
    (head_len,) = _HEAD_LEN.unpack_from(payload, _MAGIC_LEN)
    body_len = len(payload) - _PREFIX_LEN - head_len
    if len(topic_b) > MAX_TOPIC_SIZE or head_len > MAX_HEADER_SIZE:
        raise FrameError("oversize", "topic or header too large")
    if body_len > MAX_BODY_SIZE:
        raise FrameError("oversize", f"body of {body_len} bytes")
    if body_len < 1:
        raise FrameError("garbage", "truncated envelope")
    try:
        topic = topic_b.decode()
        head = _unpack(payload[_PREFIX_LEN : _PREFIX_LEN + head_len])
        body = _unpack(payload[_PREFIX_LEN + head_len :])
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError("garbage", type(exc).__name__) from None
    return Frame(topic=topic, header=_header(head), body=body)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        # ExtraData, FormatError, StackError and bad map keys all land here.
        raise ValueError(str(exc)) from None


def _header(head: Any) -> Header:
    # Called for every frame received: positional construction and type()
    # identity checks keep it to about a microsecond.
    if type(head) is not dict:
        raise FrameError("header", "header is not a map")
    version = head.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise FrameError("version", f"header version {version!r}")
    try:
        id_, src, inc, seq, ts = head["id"], head["src"], head["inc"], head["seq"], head["ts"]
    except KeyError as exc:
        raise FrameError("header", f"missing {exc.args[0]}") from None
    corr = head.get("corr")
    if (
        type(id_) is not str
        or type(src) is not str
        or type(inc) is not str
        or type(seq) is not int
        or (type(ts) is not float and type(ts) is not int)
        or (corr is not None and type(corr) is not str)
    ):
        raise FrameError("header", "field of the wrong type")
    return Header(version, id_, src, inc, seq, ts, corr)
