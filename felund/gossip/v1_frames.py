"""The v1 gossip session's frames: newline-delimited JSON, plain or sealed.

Sans-IO: frames in, bytes out, and back. Frames sent to a v1 peer never
exceed its 16,384-byte line limit: id lists and message batches are cut to
what fits, newest first, and later rounds bring the rest.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from felund.errors import AuthError, PeerError
from felund.v1 import crypto

MAX_LINE = 16_384  # the existing client refuses longer plain frames; we send no longer line
# A sealed line carrying a full-size plain frame is base64 of it plus nonce and tag.
MAX_READ_LINE = 4 * -(-(MAX_LINE + 28) // 3) + 1
READ_TIMEOUT_S = 30.0
MAX_PEERS = 64
_SEALED_OVERHEAD = crypto.NONCE_LEN + crypto.TAG_LEN


def _json(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":")).encode("ascii")


def encode(frame: dict[str, Any], key: bytes | None) -> bytes:
    """One line (with its newline) carrying ``frame``, sealed when ``key`` is set."""
    if key is None:
        return _json(frame) + b"\n"
    return crypto.seal_session_frame(key, frame).encode("ascii") + b"\n"


def json_size(obj: dict[str, Any]) -> int:
    """The bytes of ``obj`` as a frame (or a part of one) carries it."""
    return len(_json(obj))


def line_size(plain_json_size: int, key: bytes | None) -> int:
    """The size of the line that carries a frame of this JSON size."""
    if key is None:
        return plain_json_size + 1
    return 4 * -(-(plain_json_size + _SEALED_OVERHEAD) // 3) + 1


def decode(line: bytes, key: bytes | None) -> dict[str, Any]:
    """The frame of one received line; PeerError if it is not one."""
    if len(line) > (MAX_LINE + 1 if key is None else MAX_READ_LINE):
        raise PeerError("too_long", f"line of {len(line)} bytes")
    if key is not None:
        try:
            return crypto.open_session_frame(key, line.strip())
        except AuthError as exc:
            raise PeerError("auth", str(exc)) from None
    try:
        frame = json.loads(line)
    except (ValueError, RecursionError):
        raise PeerError("garbage", "line is not JSON") from None
    if not isinstance(frame, dict):
        raise PeerError("garbage", "frame is not a JSON object")
    return frame


def expect(frame: dict[str, Any], t: str, **fields: type) -> dict[str, Any]:
    """``frame`` if it is of type ``t`` with ``fields`` of the given types; else PeerError."""
    got = frame.get("t")
    if got == "ERROR":
        err = frame.get("err")
        raise PeerError("refused", str(err)[:120] if isinstance(err, str) else "ERROR")
    if got != t:
        raise PeerError("unexpected", f"expected {t}, got {str(got)[:32]!r}")
    for name, typ in fields.items():
        value = frame.get(name)
        if type(value) is not typ:
            raise PeerError("frame", f"{t}.{name} must be {typ.__name__}")
    return frame


def id_list(frame: dict[str, Any], field: str, limit: int) -> list[str]:
    """A list of message ids from a frame, each checked; PeerError otherwise."""
    value = frame.get(field)
    if not isinstance(value, list) or len(value) > limit:
        raise PeerError("frame", f"{field} must be a list of at most {limit} ids")
    for item in value:
        if not isinstance(item, str) or not 8 <= len(item) <= 64 or "|" in item:
            raise PeerError("frame", f"{field} holds an invalid id")
    return value


class LineBuffer:
    """Bytes in, whole lines out (each with its newline): v1's framing.

    A line longer than ``limit`` is refused as soon as that many bytes have come
    without a newline, not buffered on.
    """

    def __init__(self, limit: int = MAX_READ_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Bytes read from the connection."""
        self._buf += data

    def next_line(self) -> bytes | None:
        """The next whole line, or None until more bytes come; PeerError if too long."""
        end = self._buf.find(b"\n", 0, self.limit)
        if end < 0:
            if len(self._buf) >= self.limit:
                raise PeerError("too_long", f"line over {self.limit} bytes")
            return None
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    def closed(self) -> PeerError:
        """The error for a connection that ended here (mid-line or between lines)."""
        if self._buf:
            return PeerError("closed", "connection closed mid-line")
        return PeerError("closed", "connection closed")

    def rest(self) -> bytes:
        """What was read beyond the last line taken (for whoever reads on)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest


def nonce() -> str:
    """A fresh 32-hex nonce."""
    return secrets.token_hex(16)


def fit_ids(t: str, circle_id: str, newest_first: Sequence[str], key: bytes | None) -> list[str]:
    """The longest prefix of ``newest_first`` whose frame fits one v1 line."""
    base = len(_json({"t": t, "circle_id": circle_id, "msg_ids": []}))
    chosen: list[str] = []
    size = base
    for msg_id in newest_first:
        size += len(msg_id) + 3  # quotes and comma
        if line_size(size, key) > MAX_LINE:
            break
        chosen.append(msg_id)
    return chosen


def fit_messages(
    circle_id: str, newest_first: Sequence[dict[str, Any]], key: bytes | None
) -> list[dict[str, Any]]:
    """The longest prefix of ``newest_first`` whose MSGS_SEND frame fits one v1 line."""
    size = len(_json({"t": "MSGS_SEND", "circle_id": circle_id, "messages": []}))
    chosen: list[dict[str, Any]] = []
    for msg in newest_first:
        size += len(_json(msg)) + 1
        if line_size(size, key) > MAX_LINE:
            break
        chosen.append(msg)
    return chosen


def peers_frame(circle_id: str, peers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A PEERS frame with the addresses known for a circle."""
    entries = [
        {"node_id": p["node_id"], "addr": p["addr"], "last_seen": p["last_seen"]}
        for p in peers[:MAX_PEERS]
    ]
    return {"t": "PEERS", "circle_id": circle_id, "peers": entries}


def peer_list(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed entries of a received PEERS frame (others are skipped)."""
    value = frame.get("peers")
    if not isinstance(value, list):
        raise PeerError("frame", "PEERS.peers must be a list")
    out = []
    for p in value[:MAX_PEERS]:
        if not isinstance(p, dict):
            continue
        addr, node_id, seen = p.get("addr"), p.get("node_id", ""), p.get("last_seen", 0)
        if isinstance(addr, str) and isinstance(node_id, str) and type(seen) in (int, float):
            out.append({"addr": addr[:300], "node_id": node_id[:128], "last_seen": int(seen)})
    return out
