"""The bus envelope: ``[topic][FLND1][header][body]``, msgpack, versioned.

Sans-IO: bytes in, frames out. The header is a msgpack map with ``v``
(version), ``id`` (unique; the idempotency key of a request), ``src``
(service), ``inc`` (changes at every process start), ``seq`` (per src+inc),
``ts`` and ``corr`` (the request being answered). Decoding checks sizes
before unpacking, never unpickles and rejects anything off-form.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from felund.errors import FrameError
from felund.protocol import (
    ENVELOPE_MAGIC,
    ENVELOPE_VERSION,
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    MAX_TOPIC_SIZE,
)


@dataclass(frozen=True, slots=True)
class Header:
    """Who sent a frame, in what order, answering what."""

    v: int
    id: str
    src: str
    inc: str
    seq: int
    ts: float
    corr: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
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
    """The frame's parts, ready for ``send_multipart``."""
    head = {
        "v": header.v,
        "id": header.id,
        "src": header.src,
        "inc": header.inc,
        "seq": header.seq,
        "ts": header.ts,
        "corr": header.corr,
    }
    return [topic.encode(), ENVELOPE_MAGIC, msgpack.packb(head), msgpack.packb(body)]


def decode(parts: list[bytes]) -> Frame:
    """Parse received parts into a Frame, or raise FrameError with a bounded kind."""
    if len(parts) != 4:
        raise FrameError("garbage", f"{len(parts)} parts, expected 4")
    topic_b, magic, head_b, body_b = parts
    if magic != ENVELOPE_MAGIC:
        if magic.startswith(b"FLND"):
            raise FrameError("version", f"envelope {magic[:8]!r}")
        raise FrameError("garbage", "no envelope marker")
    if len(topic_b) > MAX_TOPIC_SIZE or len(head_b) > MAX_HEADER_SIZE:
        raise FrameError("oversize", "topic or header too large")
    if len(body_b) > MAX_BODY_SIZE:
        raise FrameError("oversize", f"body of {len(body_b)} bytes")
    try:
        topic = topic_b.decode()
        head = _unpack(head_b)
        body = _unpack(body_b)
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
    if not isinstance(head, dict):
        raise FrameError("header", "header is not a map")
    version = head.get("v")
    if version != ENVELOPE_VERSION:
        raise FrameError("version", f"header version {version!r}")
    try:
        header = Header(
            v=version,
            id=head["id"],
            src=head["src"],
            inc=head["inc"],
            seq=head["seq"],
            ts=head["ts"],
            corr=head.get("corr"),
        )
    except KeyError as exc:
        raise FrameError("header", f"missing {exc.args[0]}") from None
    if not (
        isinstance(header.id, str)
        and isinstance(header.src, str)
        and isinstance(header.inc, str)
        and type(header.seq) is int
        and isinstance(header.ts, int | float)
        and (header.corr is None or isinstance(header.corr, str))
    ):
        raise FrameError("header", "field of the wrong type")
    return header
