"""The v1 anchor exchange, served by this node (addendum §4.4), as a sans-IO state machine.

A v1 peer that opened a round with us, and read ``can_anchor: true`` in our
WELCOME, may go on after both MSGS_SEND frames: ANCHOR_PUSH (envelopes for us
to keep), our ANCHOR_PUSH_ACK, ANCHOR_PULL (``since``), our ANCHOR_MSGS. The
anchor's store is the node's store: pushed envelopes are checked and stored
like any peer's message, and pulls are answered from everything stored.

Where v1's anchor is weak, ours answers compatibly:

- ``since`` is compared with when *our store* received a message (whole
  seconds), not with the date its author chose, so a late old message is
  still pulled; ``server_time`` is the stored second of the last envelope
  sent. Seconds are coarse (a burst shares one), so each peer's last position
  within its second is kept (``AnchorCursors``): its next pull with that
  ``server_time`` goes on after it. Nothing is skipped; a peer we hold no
  position for gets that second again, and drops the repeats by msg_id.
- Every frame fits a v1 line (16,384 bytes, sealed or not): as many
  envelopes as fit, oldest first; the rest come with the next pull. One that
  could never fit a line is passed over.
- Control events travel too: every stored message that has an ``enc``.

Waits are bounded (``WAIT_S`` for each frame; a peer that sends nothing, or
closes, just ends the exchange), and so are envelopes per push and rows per
answer.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

from felund.errors import PeerError
from felund.gossip import v1_frames as v1proto

WAIT_S = 3.0  # for ANCHOR_PUSH, then for ANCHOR_PULL (v1's anchor waits as long)
MAX_ENVELOPES = 200  # per push; a 16 KB line holds far fewer real ones
RETAIN_S = 24 * 3600  # how far back a pull reaches (v1's anchor keeps a day)
MAX_CURSORS = 4096  # peers whose position is kept
# Store rows read for one answer: more than a v1 line can carry (an envelope is 250
# bytes at least), so the line is filled; not more, as each row comes whole.
PAGE_ROWS = 80
ENVELOPE_KEYS = ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts", "enc")
_SERVER_TIME_DIGITS = 20  # room kept in a frame for its server_time


@dataclass(frozen=True, slots=True)
class AnchorPushed:
    """Envelopes the peer pushed: to be stored (``Circles.receive``), then acknowledged."""

    envelopes: list[Any]


@dataclass(frozen=True, slots=True)
class AnchorPulled:
    """The peer asks for what was stored since ``since``: answer with ``answer``."""

    since: int


AnchorEvent = AnchorPushed | AnchorPulled


def envelope(wire: dict[str, Any]) -> dict[str, Any] | None:
    """The enc-only envelope of a stored message (v1's anchor form); None without ``enc``."""
    if not wire.get("enc"):
        return None
    return {k: wire[k] for k in ENVELOPE_KEYS}


class AnchorServer:
    """The anchor's side of one exchange, on the bytes the round left unread."""

    def __init__(
        self, circle_id: str, key: bytes | None, lines: v1proto.LineBuffer, now: float
    ) -> None:
        self.circle_id = circle_id
        self.done = False
        self.deadline = now + WAIT_S
        self.skipped = 0  # envelopes too large for any v1 line
        self._key = key
        self._lines = lines
        self._out = bytearray()
        self._expect: str | None = "ANCHOR_PUSH"  # None: waiting for the caller

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the connection (``b""``: it closed, which ends the exchange)."""
        if not data:
            self.done = True
            return
        self._lines.feed(data)

    def expire(self, now: float) -> None:
        """End the exchange if the peer has not sent its next frame in time."""
        if now >= self.deadline:
            self.done = True

    def next_event(self, now: float) -> AnchorEvent | None:
        """What the caller is to do next, or None; PeerError if the peer broke the exchange
        (an oversize line, a frame of another kind, a malformed one)."""
        if self.done or self._expect is None:
            return None
        line = self._lines.next_line()
        if line is None:
            return None
        frame = v1proto.expect(v1proto.decode(line, self._key), self._expect)
        if self._expect == "ANCHOR_PUSH":
            envelopes = frame.get("envelopes")
            if not isinstance(envelopes, list) or len(envelopes) > MAX_ENVELOPES:
                raise PeerError("frame", f"envelopes must be a list of at most {MAX_ENVELOPES}")
            self._expect = None
            return AnchorPushed(envelopes)
        since = frame.get("since")
        if not isinstance(since, int | float) or isinstance(since, bool):
            raise PeerError("frame", "ANCHOR_PULL.since must be a number of seconds")
        if not math.isfinite(since) or not 0 <= since < 2**62:
            raise PeerError("frame", "ANCHOR_PULL.since must be a number of seconds")
        self._expect = None
        return AnchorPulled(int(since))

    def ack(self, taken: int, now: float) -> None:
        """Acknowledge the push; wait for the pull. ``taken``: the envelopes handed to the
        store, as v1's anchor counts them (its initiators read nothing in the ack)."""
        self._send({"t": "ANCHOR_PUSH_ACK", "stored": taken})
        self._expect = "ANCHOR_PULL"
        self.deadline = now + WAIT_S

    def answer(self, rows: list[dict[str, Any]], since: int) -> tuple[int, int] | None:
        """Answer the pull with the envelopes of ``rows`` (the store's ``anchor_page``: each
        its ``seq``, stored second ``at`` and ``wire``, oldest first) that fit one line;
        the exchange is then done. The (second, seq) of the last row passed over or sent
        (where the peer's next pull goes on), or None if there was none."""
        empty = {"t": "ANCHOR_MSGS", "envelopes": [], "server_time": 0}
        size = v1proto.json_size(empty) + _SERVER_TIME_DIGITS
        sending: list[dict[str, Any]] = []
        last: dict[str, Any] | None = None
        for row in rows:
            env = envelope(row["wire"])
            if env is not None:
                grown = size + v1proto.json_size(env) + 1
                if v1proto.line_size(grown, self._key) > v1proto.MAX_LINE:
                    if sending:
                        break  # the next pull starts with it
                    self.skipped += 1  # alone over a line: no v1 peer can ever take it
                else:
                    size = grown
                    sending.append(env)
            last = row
        server_time = last["at"] if last is not None else since
        self._send({"t": "ANCHOR_MSGS", "envelopes": sending, "server_time": server_time})
        self.done = True
        return (last["at"], last["seq"]) if last is not None else None

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer (taken: each is returned once)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, frame: dict[str, Any]) -> None:
        self._out += v1proto.encode(frame, self._key)


class AnchorCursors:
    """Where each peer's pulls have got to: (circle, peer node) -> (server_time, store_seq).

    Bounded: the peers heard from longest ago are forgotten first (a forgotten
    peer is sent its last second again, nothing worse).
    """

    def __init__(self, limit: int = MAX_CURSORS) -> None:
        self.limit = limit
        self._at: collections.OrderedDict[tuple[str, str], tuple[int, int]] = (
            collections.OrderedDict()
        )

    def after(self, circle_id: str, peer: str, since: int) -> int:
        """The store_seq after which a pull with ``since`` goes on (0: from ``since`` on)."""
        at = self._at.get((circle_id, peer))
        return at[1] if at is not None and at[0] == since else 0

    def moved(self, circle_id: str, peer: str, position: tuple[int, int]) -> None:
        """The peer was sent everything up to ``position`` (server_time, store_seq)."""
        key = (circle_id, peer)
        self._at[key] = position
        self._at.move_to_end(key)
        while len(self._at) > self.limit:
            self._at.popitem(last=False)
