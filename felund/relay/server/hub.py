"""The relay's WebSocket feed: who listens to which circle, and what each one is sent.

- A ``Subscriber`` is one ``/v1/relay/ws`` connection: its circle_hint, its
  node_id and a bounded queue of text frames that the connection's writer
  drains. A subscriber that falls more than ``max_queue`` frames behind is
  marked ``overflowed`` and dropped (it polls, and reconnects, instead).
- Live frames that arrive while a new subscriber's backlog is being read
  are held and sent after the backlog, so nothing stored meanwhile is lost.
- ``publish`` sends a stored batch to every subscriber of the circle except
  the posting node (``X-Felund-Node``), and never sends a node the messages
  it wrote itself: it has them already.

Frames are the existing relay's: ``{"t":"MESSAGES","messages":[...],
"server_time":T}``, ``{"t":"PING"}`` and ``{"t":"PONG"}``. The messages are
the stored JSON text, spliced in without decoding. A live frame adds
``"after":A,"cursor":C``: it holds every message of the circle with a cursor
in (A, C] but the receiver's own, so a node that held A holds C, and one that
held less knows what to fetch (other clients ignore the two fields).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from felund.relay.protocol import WS_FRAME_MESSAGES

PING = '{"t":"PING"}'
PONG = '{"t":"PONG"}'


def messages_frame(
    payloads: Sequence[str], server_time: int, span: tuple[int, int] | None = None
) -> str:
    """A MESSAGES frame around stored message texts, with the cursor ``span`` they cover."""
    tail = f',"after":{span[0]},"cursor":{span[1]}' if span else ""
    return f'{{"t":"MESSAGES","messages":[{",".join(payloads)}],"server_time":{server_time}{tail}}}'


def chunked_frames(payloads: Sequence[str], server_time: int) -> Iterator[str]:
    """MESSAGES frames of at most ``WS_FRAME_MESSAGES`` messages each."""
    for start in range(0, len(payloads), WS_FRAME_MESSAGES):
        yield messages_frame(payloads[start : start + WS_FRAME_MESSAGES], server_time)


class Subscriber:
    """One WebSocket connection's place in the hub."""

    def __init__(self, circle_hint: str, node_id: str, max_queue: int) -> None:
        self.circle_hint = circle_hint
        self.node_id = node_id
        self.max_queue = max_queue
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.overflowed = False
        self._held: list[str] | None = []  # live frames held until the backlog is queued

    def offer(self, frame: str) -> bool:
        """Queue a frame for sending; False (and ``overflowed``) if the client is too slow."""
        if self.overflowed:
            return False
        pending = len(self._held) if self._held is not None else self.queue.qsize()
        if pending >= self.max_queue:
            self.overflowed = True
            self.queue.put_nowait("")  # wakes the writer, which then closes the connection
            return False
        if self._held is not None:
            self._held.append(frame)
        else:
            self.queue.put_nowait(frame)
        return True

    def start(self, backlog: Sequence[str]) -> None:
        """Queue the backlog frames, then whatever arrived while it was read."""
        held, self._held = self._held or [], None
        for frame in [*backlog, *held]:
            self.queue.put_nowait(frame)


class Hub:
    """Every subscriber, by circle_hint."""

    def __init__(self, max_queue: int = 256) -> None:
        self.max_queue = max_queue
        self._rooms: dict[str, set[Subscriber]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def subscribe(self, circle_hint: str, node_id: str) -> Subscriber:
        """Add a subscriber; it holds live frames until ``start``."""
        sub = Subscriber(circle_hint, node_id, self.max_queue)
        self._rooms.setdefault(circle_hint, set()).add(sub)
        self._count += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a subscriber (idempotent)."""
        room = self._rooms.get(sub.circle_hint)
        if room is None or sub not in room:
            return
        room.discard(sub)
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
        frames: dict[str, tuple[str, int]] = {}  # by the node left out ("" = nobody)
        sent = 0
        for sub in list(room):
            if poster and sub.node_id == poster:
                continue
            own = any(author == sub.node_id for author, _ in stored)
            key = sub.node_id if own else ""
            if key not in frames:
                payloads = [p for author, p in stored if not own or author != sub.node_id]
                frames[key] = (messages_frame(payloads, server_time, span), len(payloads))
            frame, count = frames[key]
            if count and sub.offer(frame):
                sent += count
        return sent

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber (for shutdown)."""
        return [sub for room in self._rooms.values() for sub in room]
