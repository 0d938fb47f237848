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
``WS_FRAME_MESSAGES`` and ``WS_FRAME_BYTES`` (or one message) a frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from felund.relay.protocol import WS_FRAME_BYTES, WS_FRAME_MESSAGES

PING = b'{"t":"PING"}'
PONG = b'{"t":"PONG"}'
_HEAD = b'{"t":"MESSAGES","messages":['


def _frame(payloads: Sequence[bytes], server_time: int) -> bytes:
    return b"".join((_HEAD, b",".join(payloads), b'],"server_time":%d}' % server_time))


def chunked_frames(
    payloads: Sequence[str], server_time: int, max_bytes: int = WS_FRAME_BYTES
) -> Iterator[bytes]:
    """MESSAGES frames of at most ``WS_FRAME_MESSAGES`` messages and about ``max_bytes``.

    A frame holds at least one message, so one larger than ``max_bytes`` goes alone.
    """
    chunk: list[bytes] = []
    size = 0
    for payload in payloads:
        raw = payload.encode()
        if chunk and (len(chunk) >= WS_FRAME_MESSAGES or size + len(raw) > max_bytes):
            yield _frame(chunk, server_time)
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw) + 1
    if chunk:
        yield _frame(chunk, server_time)


class SendBudget:
    """Bytes queued for clients across every connection, under one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes; False (and nothing counted) if over the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Release bytes counted by ``take``."""
        self.used -= size


class Subscriber:
    """One WebSocket connection's place in the hub."""

    def __init__(
        self, circle_hint: str, node_id: str, max_queue_bytes: int, budget: SendBudget
    ) -> None:
        self.circle_hint = circle_hint
        self.node_id = node_id
        self.max_queue_bytes = max_queue_bytes
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queued_bytes = 0  # held or queued, not yet handed to the socket
        self.overflowed = False
        self._budget = budget
        self._held: list[bytes] | None = []  # live frames held until the backlog is queued

    def _charge(self, frame: bytes) -> bool:
        size = len(frame)
        if self.queued_bytes + size > self.max_queue_bytes or not self._budget.take(size):
            self.overflowed = True
            self.queue.put_nowait(b"")  # wakes the writer, which then closes the connection
            return False
        self.queued_bytes += size
        return True

    def offer(self, frame: bytes) -> bool:
        """Queue a frame for sending; False (and ``overflowed``) if it does not fit."""
        if self.overflowed or not self._charge(frame):
            return False
        if self._held is not None:
            self._held.append(frame)
        else:
            self.queue.put_nowait(frame)
        return True

    def start(self, backlog: Sequence[bytes]) -> bool:
        """Queue the backlog frames, then whatever arrived while it was read; False if
        the backlog does not fit (``overflowed``)."""
        held, self._held = self._held or [], None
        for frame in backlog:
            if self.overflowed or not self._charge(frame):
                return False
            self.queue.put_nowait(frame)
        for frame in held:
            self.queue.put_nowait(frame)
        return not self.overflowed

    def sent(self, frame: bytes) -> None:
        """A frame taken from the queue has been handed to the socket."""
        self.queued_bytes -= len(frame)
        self._budget.give(len(frame))

    def release(self) -> None:
        """Give back what is still counted (the connection is gone)."""
        self._budget.give(self.queued_bytes)
        self.queued_bytes = 0
        self._held = None


class Hub:
    """Every subscriber, by circle_hint."""

    def __init__(self, max_queue_bytes: int, budget_bytes: int) -> None:
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
        self, circle_hint: str, poster: str, stored: Sequence[tuple[str, str]], server_time: int
    ) -> int:
        """Offer (author_node_id, payload) pairs to the circle's subscribers; messages sent."""
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
                frames[key] = (list(chunked_frames(payloads, server_time)), len(payloads))
            chunks, count = frames[key]
            if count and all(sub.offer(frame) for frame in chunks):
                sent += count
        return sent

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber (for shutdown)."""
        return [sub for room in self._rooms.values() for sub in room]
