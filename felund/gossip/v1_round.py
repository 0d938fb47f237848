"""One v1 gossip round over an authenticated connection, either side, as a sans-IO state machine.

The spec's order, the same for both sides: send PEERS and MSGS_HAVE, read
the other's two, send MSGS_REQ, read it, send MSGS_SEND, read it. Every
frame fits the v1 peer's 16 KB line: ids and messages newest first, so the
rest follows in later rounds.

The caller (``felund.gossip.sessions``) feeds bytes to ``receive_data``, acts
on each ``next_event()``, and writes ``data_to_send()``; the round is over
(``done``) once the peer's MSGS_SEND has been handed out.
"""

from __future__ import annotations

from typing import Any

from felund.errors import PeerError
from felund.gossip import v1_frames as v1proto
from felund.gossip.events import Event, MsgsReceived, MsgsWanted, PeersReceived
from felund.gossip.reconcile import MAX_BOUND, MIN_BOUND, ItemSet

MAX_IDS = 2000  # more cannot fit a 16 KB line; a longer list is not v1
_EXPECTED = ("PEERS", "MSGS_HAVE", "MSGS_REQ", "MSGS_SEND")


class V1Round:
    """One round with a v1 peer (or a peer that took no native offer)."""

    def __init__(
        self,
        circle_id: str,
        key: bytes | None,
        index: ItemSet,
        peers: list[dict[str, Any]],
        now: float,
    ) -> None:
        self.circle_id = circle_id
        self.index = index  # the circle's, shared with the process: read only here
        self.done = False
        self.deadline = now + v1proto.READ_TIMEOUT_S
        self._key = key
        self._lines = v1proto.LineBuffer()
        self._out = bytearray()
        self._read = 0  # frames of the peer's read so far (index into _EXPECTED)
        self._send(v1proto.peers_frame(circle_id, peers))
        newest_first = index.ids(MIN_BOUND, MAX_BOUND)[::-1]
        have = v1proto.fit_ids("MSGS_HAVE", circle_id, newest_first, key)
        self._send({"t": "MSGS_HAVE", "circle_id": circle_id, "msg_ids": have})

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the connection (``b""``: it closed)."""
        if not data:
            raise self._lines.closed()
        self._lines.feed(data)

    def next_event(self, now: float) -> Event | None:
        """The next thing for the caller to do, or None until more bytes come;
        PeerError if the peer broke the protocol."""
        while not self.done:
            line = self._lines.next_line()
            if line is None:
                return None
            self.deadline = now + v1proto.READ_TIMEOUT_S
            event = self._on_frame(v1proto.decode(line, self._key))
            if event is not None:
                return event
        return None

    def expire(self, now: float) -> None:
        """PeerError if the peer has not sent its next frame in time at ``now``."""
        if now >= self.deadline:
            raise PeerError("timeout", f"nothing read for {v1proto.READ_TIMEOUT_S:g} s")

    def send_msgs(self, held: list[dict[str, Any]]) -> int:
        """Answer the peer's MSGS_REQ with the messages held of it (what ``MsgsWanted``
        asked for); the number that fit the line and were sent."""
        held = sorted(held, key=lambda m: (m["created_ts"], m["msg_id"]), reverse=True)
        sending = v1proto.fit_messages(self.circle_id, held, self._key)
        self._send({"t": "MSGS_SEND", "circle_id": self.circle_id, "messages": sending})
        return len(sending)

    def leftover(self) -> v1proto.LineBuffer:
        """What the peer sent beyond the round (the anchor exchange reads on from it)."""
        return self._lines

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer (taken: each is returned once)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, frame: dict[str, Any]) -> None:
        self._out += v1proto.encode(frame, self._key)

    def _on_frame(self, frame: dict[str, Any]) -> Event | None:
        t = _EXPECTED[self._read]
        self._read += 1
        if t == "PEERS":
            return PeersReceived(v1proto.peer_list(v1proto.expect(frame, t)))
        if t == "MSGS_HAVE":
            theirs = v1proto.id_list(v1proto.expect(frame, t), "msg_ids", MAX_IDS)
            lacking = [i for i in theirs if i not in self.index]
            want = v1proto.fit_ids("MSGS_REQ", self.circle_id, lacking, self._key)
            self._send({"t": "MSGS_REQ", "circle_id": self.circle_id, "msg_ids": want})
            return None
        if t == "MSGS_REQ":
            asked = v1proto.id_list(v1proto.expect(frame, t), "msg_ids", MAX_IDS)
            return MsgsWanted([i for i in asked if i in self.index][:MAX_IDS])
        self.done = True
        return MsgsReceived(v1proto.expect(frame, t, messages=list)["messages"])
