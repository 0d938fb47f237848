"""The relay's WebSocket feed: who listens to which circle, and what each one is sent.

- A ``Subscriber`` is one ``/v1/relay/ws`` connection: its circle_hint, its
  node_id and a queue of text frames (UTF-8 bytes) that the connection's
  writer drains. The queue is bounded in bytes twice: per connection
  (``max_queue_bytes``) and across every connection (the hub's
  ``SendBudget``). A frame that does not fit marks the subscriber
  ``overflowed``: its connection is closed (it polls, and reconnects,
  instead); nothing waits for a slow reader.
- Live frames that arrive while a new subscriber's backlog is being read
  are held (and counted) and sent after the backlog, so nothing stored
  meanwhile is lost.
- ``publish`` sends a stored batch to every subscriber of the circle except
  the posting node (``X-Felund-Node``), and never sends a node the messages
  it wrote itself: it has them already.

Frames are the existing relay's: ``{"t":"MESSAGES","messages":[...],
"server_time":T}``, ``{"t":"PING"}`` and ``{"t":"PONG"}``. The messages are
the stored JSON text, spliced in without decoding, at most
``WS_FRAME_MESSAGES`` and ``WS_FRAME_BYTES`` (or one message) a frame. The
last live frame of a stored batch adds ``"after":A,"cursor":C``: with it the
receiver holds every message of the circle with a cursor in (A, C] but its
own, so a node that held A holds C, and one that held less knows what to
fetch (other clients ignore the two fields).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Sequence

from felund.relay.protocol import (
    SEND_BUDGET_BYTES,
    WS_FRAME_BYTES,
    WS_FRAME_MESSAGES,
    WS_QUEUE_BYTES,
)

PING = b'{"t":"PING"}'
PONG = b'{"t":"PONG"}'
_HEAD = b'{"t":"MESSAGES","messages":['


def _frame(payloads: Sequence[bytes], server_time: int, span: tuple[int, int] | None) -> bytes:
    tail = b',"after":%d,"cursor":%d}' % span if span else b"}"
    return b"".join((_HEAD, b",".join(payloads), b'],"server_time":%d' % server_time, tail))


def chunked_frames(
    payloads: Sequence[str],
    server_time: int,
    span: tuple[int, int] | None = None,
    max_bytes: int = WS_FRAME_BYTES,
) -> Iterator[bytes]:
    """MESSAGES frames of at most ``WS_FRAME_MESSAGES`` messages and about ``max_bytes``.

    A frame holds at least one message, so one larger than ``max_bytes`` goes
    alone. The ``span`` goes on the last frame only: frames arrive in order,
    so by then the receiver holds all of it.
    """
    chunks: list[list[bytes]] = [[]]
    size = 0
    for payload in payloads:
        raw = payload.encode()
        if chunks[-1] and (len(chunks[-1]) >= WS_FRAME_MESSAGES or size + len(raw) > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(raw)
        size += len(raw) + 1
    if chunks[-1]:
        last = len(chunks) - 1
        for n, chunk in enumerate(chunks):
            yield _frame(chunk, server_time, span if n == last else None)


class SendBudget:
    """Bytes of the frames queued for clients, under one limit.

    A frame published to many subscribers is one object: it is counted once,
    from its first holder's ``take`` to its last holder's ``give``, so that a
    large circle's fast readers are not refused for memory never spent.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._holders: dict[int, int] = {}  # id(frame) -> holders; each holder keeps it alive

    def take(self, frame: bytes) -> bool:
        """Hold ``frame`` once more; False (and nothing held) if it does not fit."""
        key = id(frame)
        holders = self._holders.get(key, 0)
        if not holders:
            if self.used + len(frame) > self.limit:
                return False
            self.used += len(frame)
        self._holders[key] = holders + 1
        return True

    def give(self, frame: bytes) -> None:
        """Release one hold of ``frame`` taken by ``take``."""
        key = id(frame)
        holders = self._holders.pop(key) - 1
        if holders:
            self._holders[key] = holders
        else:
            self.used -= len(frame)


class Subscriber:
    """One WebSocket connection's place in the hub."""

    def __init__(
        self, circle_hint: str, node_id: str, max_queue_bytes: int, budget: SendBudget
    ) -> None:
        self.circle_hint = circle_hint
        self.node_id = node_id
        self.max_queue_bytes = max_queue_bytes
        self.queued_bytes = 0  # held or queued, not yet handed to the socket
        self.overflowed = False
        self._budget = budget
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()  # a frame is queued, or the subscriber overflowed
        self._held: list[bytes] | None = []  # live frames held until the backlog is queued

    def _charge(self, frame: bytes) -> bool:
        if self.queued_bytes + len(frame) > self.max_queue_bytes or not self._budget.take(frame):
            self.overflowed = True
            self._ready.set()  # wakes the writer, which then closes the connection
            return False
        self.queued_bytes += len(frame)
        return True

    def _queue_frame(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._ready.set()

    def offer(self, frame: bytes) -> bool:
        """Queue a frame for sending; False (and ``overflowed``) if it does not fit."""
        if self.overflowed or not self._charge(frame):
            return False
        if self._held is not None:
            self._held.append(frame)
        else:
            self._queue_frame(frame)
        return True

    def start(self, backlog: Sequence[bytes]) -> bool:
        """Queue the backlog frames, then whatever arrived while it was read; False if
        the backlog does not fit (``overflowed``)."""
        held, self._held = self._held or [], None
        for frame in backlog:
            if self.overflowed or not self._charge(frame):
                self._queue.extend(held)  # counted already: ``release`` gives them back
                return False
            self._queue_frame(frame)
        for frame in held:
            self._queue_frame(frame)
        return not self.overflowed

    def drop(self) -> None:
        """Have the connection closed as if it had overflowed (it may have missed frames)."""
        self.overflowed = True
        self._ready.set()

    def pop_nowait(self) -> bytes | None:
        """The next queued frame, if any; the caller reports it ``sent`` once written."""
        if not self._queue:
            self._ready.clear()
            return None
        return self._queue.popleft()

    async def wait_frame(self, timeout_s: float) -> bytes | None:
        """The next queued frame, waiting up to ``timeout_s``; None if none came."""
        frame = self.pop_nowait()
        if frame is None and not self.overflowed:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return None
            frame = self.pop_nowait()
        return frame

    def sent(self, frame: bytes) -> None:
        """A frame taken from the queue has been handed to the socket."""
        self.queued_bytes -= len(frame)
        self._budget.give(frame)

    def release(self) -> None:
        """Give back every frame still held (the connection is gone)."""
        for frame in [*self._queue, *(self._held or [])]:
            self.sent(frame)
        self._queue.clear()
        self._held = None


class Hub:
    """Every subscriber, by circle_hint."""

    def __init__(
        self, max_queue_bytes: int = WS_QUEUE_BYTES, budget_bytes: int = SEND_BUDGET_BYTES
    ) -> None:
        self.max_queue_bytes = max_queue_bytes
        self.budget = SendBudget(budget_bytes)
        self._rooms: dict[str, set[Subscriber]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def subscribe(self, circle_hint: str, node_id: str) -> Subscriber:
        """Add a subscriber; it holds live frames until ``start``."""
        sub = Subscriber(circle_hint, node_id, self.max_queue_bytes, self.budget)
        self._rooms.setdefault(circle_hint, set()).add(sub)
        self._count += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a subscriber and release its queued bytes (idempotent)."""
        room = self._rooms.get(sub.circle_hint)
        if room is None or sub not in room:
            return
        room.discard(sub)
        sub.release()
        self._count -= 1
        if not room:
            del self._rooms[sub.circle_hint]

    def publish(
        self,
        circle_hint: str,
        poster: str,
        stored: Sequence[tuple[str, str]],
        server_time: int,
        span: tuple[int, int] | None = None,
    ) -> int:
        """Offer (author_node_id, payload) pairs to the circle's subscribers; messages sent.

        ``span``: the cursors (after, last) the pairs cover, all of the circle's in between.
        """
        room = self._rooms.get(circle_hint)
        if not room or not stored:
            return 0
        # Built once per node left out ("" = nobody), shared by every subscriber.
        frames: dict[str, tuple[list[bytes], int]] = {}
        sent = 0
        for sub in list(room):
            if poster and sub.node_id == poster:
                continue
            own = any(author == sub.node_id for author, _ in stored)
            key = sub.node_id if own else ""
            if key not in frames:
                payloads = [p for author, p in stored if not own or author != sub.node_id]
                frames[key] = (list(chunked_frames(payloads, server_time, span)), len(payloads))
            chunks, count = frames[key]
            if count and all(sub.offer(frame) for frame in chunks):
                sent += count
        return sent

    def listens(self, circle_hint: str) -> bool:
        """Whether any subscriber follows the circle here."""
        return circle_hint in self._rooms

    def drop(self, circle_hint: str | None = None) -> None:
        """Close the feeds of a circle (None: all): they may have missed frames, and a
        client that reconnects gets the backlog it needs."""
        rooms = (
            self._rooms.values() if circle_hint is None else [self._rooms.get(circle_hint, set())]
        )
        for room in rooms:
            for sub in room:
                sub.drop()

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber (for shutdown)."""
        return [sub for room in self._rooms.values() for sub in room]
