"""A native gossip session as a sans-IO state machine: bytes in, events and bytes out.

The client starts range reconciliation at once and again every
anti-entropy interval; each side answers RECON frames and sends (MSGS) what
its steps find the other lacks, so nothing is ever asked for and nothing
travels twice. New messages are pushed as they are stored. The send queue
is bounded in bytes: bulk answers wait for room (``has_room``), a live push
to a peer that cannot keep up ends the session.

The caller (``felund.gossip.sessions``) feeds what it reads to
``receive_data``, acts on each ``next_event()`` (the store's part), writes
``data_to_send()``, and starts a round (``start_round``) when the circle's
turn is its own. Time is the caller's clock, passed in.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from felund import metrics
from felund.errors import InvalidMessage, PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.gossip.events import Event, MsgsReceived, MsgsWanted, PeersReceived
from felund.gossip.reconcile import ItemSet, Reconciler

IDLE_TIMEOUT_S = 120.0
# A round of ours is settled once its exchange is over, what it found missing
# has come and the peer has been quiet this long, or after ROUND_STALL_S without
# a frame of it: then the round goes on, but another session of the circle may
# start its own.
ROUND_QUIET_S = 0.3
ROUND_STALL_S = 10.0
QUEUE_BYTES = 8 * 1024 * 1024
CAME_LIMIT = 50_000
T = TypeVar("T")


class BoundedSet(collections.OrderedDict[str, None]):
    """The most recent keys, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def add_all(self, keys: Iterable[str]) -> None:
        """Add keys (a frame's worth at once: this runs for every message received)."""
        self.update(dict.fromkeys(keys))
        for _ in range(len(self) - self.limit):
            self.popitem(last=False)


class NativeSession:
    """One side of a native session with a member of one circle."""

    def __init__(
        self, channel: nativeproto.Channel, is_client: bool, index: ItemSet, now: float
    ) -> None:
        self.is_client = is_client
        self.index = index  # the circle's, shared with the process: read only here
        self.ended = False  # the peer said BYE
        # Ids this peer sent us or its reconciliation says it holds: not pushed to it.
        self.came = BoundedSet(CAME_LIMIT)
        # Ids our round found missing, which the peer is to send: what the round
        # waits for, and what is not pushed on to others (their own rounds bring
        # it them: pushing a joiner's whole history back doubled a join's bytes).
        self.awaiting: set[str] = set()
        self.last_received = now
        self._round_activity = now
        self._channel = channel
        self._frames = nativeproto.FrameBuffer(channel)
        self._out: collections.deque[bytes] = collections.deque()
        self.queued = 0  # bytes in _out
        self._recon: Reconciler | None = None

    # --- in -------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the connection (``b""``: it closed)."""
        if not data:
            raise PeerError("closed", "connection closed")
        self._frames.feed(data)
        self.last_received = now

    def next_event(self, now: float) -> Event | None:
        """The next thing for the caller to do, or None until more bytes come;
        PeerError if the peer broke the protocol. Frames that need nothing of the
        caller (PING, RECON steps) are answered here."""
        while not self.ended:
            frame = self._frames.next_frame()
            if frame is None:
                return None
            event = self._on_frame(frame, now)
            if event is not None:
                return event
        return None

    def expire(self, now: float) -> None:
        """PeerError if the peer has sent nothing for too long at ``now``."""
        if now >= self.deadline:
            raise PeerError("timeout", f"nothing read for {IDLE_TIMEOUT_S:g} s")

    @property
    def deadline(self) -> float:
        """When the session times out unless the peer sends something."""
        return self.last_received + IDLE_TIMEOUT_S

    def stored(self, msgs: list[Any], now: float) -> None:
        """The caller is done with a MsgsReceived (stored or refused): no longer awaited."""
        if self.awaiting:
            self.awaiting.difference_update(
                m["msg_id"] for m in msgs if isinstance(m, dict) and type(m.get("msg_id")) is str
            )
        self._round_activity = now

    # --- out ------------------------------------------------------------------
    def data_to_send(self, limit: int = QUEUE_BYTES) -> bytes:
        """Bytes queued for the peer, whole frames of about ``limit`` bytes at most (at
        least one frame): taken, each is returned once."""
        taken: list[bytes] = []
        size = 0
        while self._out and (not taken or size + len(self._out[0]) <= limit):
            taken.append(self._out.popleft())
            size += len(taken[-1])
        self.queued -= size
        return b"".join(taken)

    @property
    def has_room(self) -> bool:
        """Whether the send queue is below its cap (bulk sends wait for this)."""
        return self.queued < QUEUE_BYTES

    def send_peers(self, circle_id: str, peers: list[dict[str, Any]]) -> None:
        """Queue a PEERS frame (each side sends one at the start)."""
        self._queue(v1proto.peers_frame(circle_id, peers))

    def send_msgs(self, packed: list[bytes]) -> None:
        """Queue messages (``wire.pack_wire``), in MSGS frames of a bounded size."""
        for chunk in nativeproto.msgs_chunks(packed):
            self._append(self._channel.seal_msgs, chunk)

    def push(self, packed: list[bytes]) -> bool:
        """Queue new messages without waiting; False if the peer is too slow for them
        (the caller ends the session)."""
        if not self.has_room:
            return False
        self.send_msgs(packed)
        return True

    # --- rounds (the client's) ---------------------------------------------------
    def start_round(self, now: float) -> None:
        """Queue the start of a reconciliation round (the caller holds the circle's turn)."""
        self._recon = Reconciler(self.index)
        self.awaiting.clear()
        self._round_activity = now
        self._queue({"t": "RECON", "start": True, "ranges": self._recon.initiate()})
        metrics.GOSSIP_RECONCILE_ROUNDS.inc()

    def settled_in(self, now: float) -> float:
        """Seconds until the round counts as settled at the earliest (0: it is)."""
        exchanging = self._recon is not None and not self._recon.over
        wait = ROUND_STALL_S if exchanging or self.awaiting else ROUND_QUIET_S
        return max(0.0, self._round_activity + wait - now)

    # --- frames ---------------------------------------------------------------
    def _on_frame(self, frame: dict[str, Any], now: float) -> Event | None:
        t = frame["t"]
        if t == "MSGS":
            return MsgsReceived(nativeproto.field(frame, "msgs", list))
        if t == "RECON":
            return self._on_recon(frame, now)
        if t == "PEERS":
            return PeersReceived(v1proto.peer_list(frame))
        if t == "PING":
            self._queue({"t": "PONG"})
        elif t == "BYE":
            self.ended = True
        return None

    def _on_recon(self, frame: dict[str, Any], now: float) -> Event | None:
        if frame.get("start") is True:
            if self.is_client:
                raise PeerError("frame", "only the client starts reconciliation")
            self._recon = Reconciler(self.index)
            self.awaiting.clear()
            metrics.GOSSIP_RECONCILE_ROUNDS.inc()
        if self._recon is None:
            raise PeerError("frame", "RECON outside a reconciliation")
        try:
            step = self._recon.receive(frame.get("ranges"))
        except InvalidMessage as exc:
            raise PeerError("recon", exc.detail) from None
        if step.reply is not None:
            self._queue({"t": "RECON", "start": False, "ranges": step.reply})
        # What we lack (step.need) the peer's own step lists under "have" and
        # sends: asking too would double it. Nor is it pushed to this peer when
        # another peer's copy is stored first.
        self.came.add_all(step.need)
        self.awaiting.update(m for m in step.need if m not in self.index)
        self._round_activity = now
        return MsgsWanted(step.have) if step.have else None

    def _queue(self, frame: dict[str, Any]) -> None:
        self._append(self._channel.seal, frame)

    def _append(self, seal: Callable[[T], bytes], content: T) -> None:
        try:
            data = seal(content)
        except ValueError as exc:  # a frame of ours over the cap: a bug, end the session
            raise PeerError("local_frame", str(exc)) from None
        self._out.append(data)
        self.queued += len(data)
