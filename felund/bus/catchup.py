"""Catching up with the store after a (re)start: the Clone pattern.

1. Subscribe first and buffer ``chat.msg.stored`` events.
2. Page through ``store.snapshot`` from the last store_seq applied.
3. Apply the snapshot, drop buffered events it covers, apply the rest.
4. Live: each event must continue at ``last + 1``; on a gap, a new store
   incarnation or a heartbeat showing a higher seq, snapshot again.

``Follower`` is the sans-IO core (events in, messages out); ``CatchUp``
drives it over the bus, and ``AsyncCatchUp`` over the asyncio bus: one
reading of events (``follow_event``), one paging of snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from felund.bus.aio import AsyncRPCClient, AsyncSubscriber, until_answered
from felund.bus.sockets import Bus, Received, RPCClient, Subscriber
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    MAX_SNAPSHOT_PAGE,
    OP_SNAPSHOT,
    SVC_STORE,
    TOPIC_HEARTBEAT,
    TOPIC_MSG_STORED,
)

Row = dict[str, Any]


@dataclass(slots=True)
class Follower:
    """Applies stored messages exactly once and in store_seq order."""

    last: int = 0
    syncing: bool = True  # buffering until a snapshot has been applied
    buffer: list[Row] = field(default_factory=list)
    store_inc: str | None = None

    def on_event(self, inc: str, rows: list[Row]) -> list[Row]:
        """A ``chat.msg.stored`` event; the rows to apply now (possibly none)."""
        if self.store_inc is not None and inc != self.store_inc:
            self.syncing = True  # the store restarted: events may have been lost
        self.store_inc = inc
        if self.syncing:
            self.buffer.extend(rows)
            return []
        fresh = [r for r in rows if r["store_seq"] > self.last]
        if fresh and fresh[0]["store_seq"] != self.last + 1:
            self.syncing = True
            self.buffer.extend(fresh)
            return []
        if fresh:
            self.last = fresh[-1]["store_seq"]
        return fresh

    def on_heartbeat(self, inc: str, last_seq: int) -> None:
        """A store heartbeat: a seq beyond ours means events were lost."""
        if self.store_inc is not None and inc != self.store_inc:
            self.syncing = True
        self.store_inc = inc
        if last_seq > self.last:
            self.syncing = True

    def on_snapshot(self, rows: list[Row], covers: int) -> list[Row]:
        """A snapshot page; the rows to apply (the page, then buffered events it leaves)."""
        out = [r for r in rows if r["store_seq"] > self.last]
        if out:
            self.last = out[-1]["store_seq"]
        self.last = max(self.last, covers)
        return out

    def finish_snapshot(self) -> list[Row]:
        """The snapshot is complete: apply what was buffered beyond it, go live."""
        rest = sorted(
            (r for r in self.buffer if r["store_seq"] > self.last), key=lambda r: r["store_seq"]
        )
        self.buffer = []
        self.syncing = False
        out: list[Row] = []
        for r in rest:
            if r["store_seq"] == self.last + 1:
                out.append(r)
                self.last += 1
            elif r["store_seq"] > self.last + 1:
                self.syncing = True  # still a hole: the next poll snapshots again
                break
        return out


def follow_event(follower: Follower, got: Received) -> list[Row]:
    """What one bus event means to ``follower``: the rows to apply now (possibly none)."""
    frame = got.frame
    body = frame.body if isinstance(frame.body, dict) else {}
    if frame.header.src == SVC_STORE and frame.topic == TOPIC_MSG_STORED:
        rows = body.get("msgs")
        if isinstance(rows, list):
            if got.missed:
                follower.syncing = True
            return follower.on_event(frame.header.inc, rows)
    elif body.get("service") == SVC_STORE and type(body.get("last_seq")) is int:
        follower.on_heartbeat(str(body.get("inc")), body["last_seq"])
    return []


def snapshot_request(follower: Follower, **options: Any) -> dict[str, Any]:
    """The ``store.snapshot`` request for the next page (``options``: the op's others)."""
    return {"since": follower.last, "limit": MAX_SNAPSHOT_PAGE, **options}


def snapshot_page(follower: Follower, answer: dict[str, Any]) -> tuple[list[Row], bool]:
    """A snapshot answer's rows to apply, and whether the snapshot is complete (then the
    rows include what was buffered beyond it)."""
    rows = follower.on_snapshot(answer["msgs"], answer["covers"])
    if answer["more"]:
        return rows, False
    return rows + follower.finish_snapshot(), True


class CatchUp:
    """Follows the store's messages over the bus, from ``since`` on."""

    def __init__(self, bus: Bus, since: int = 0) -> None:
        self.sub: Subscriber = bus.subscriber(TOPIC_MSG_STORED, TOPIC_HEARTBEAT)
        self.rpc: RPCClient = bus.rpc_client(ENDPOINT_STORE_CTL)
        self.follower = Follower(last=since)

    def poll(self, timeout_ms: int, apply: Callable[[list[Row]], None]) -> None:
        """Apply every message stored since the last call; wait up to ``timeout_ms``."""
        if self.follower.syncing:
            self._snapshot(apply)
        got = self.sub.recv(timeout_ms)
        while got is not None:
            ready = follow_event(self.follower, got)
            if ready:
                apply(ready)
            got = self.sub.recv(0)
        if self.follower.syncing:
            self._snapshot(apply)

    def _snapshot(self, apply: Callable[[list[Row]], None]) -> None:
        done = False
        while not done:
            answer = self.rpc.call(OP_SNAPSHOT, snapshot_request(self.follower))
            rows, done = snapshot_page(self.follower, answer)
            if rows:
                apply(rows)


class AsyncCatchUp:
    """Follows the store's messages over the asyncio bus, from ``since`` on; the store
    is waited for whenever it does not answer (``on_store_down`` says so). ``options``
    go with every ``store.snapshot`` request (e.g. ``with_pruned``)."""

    def __init__(
        self,
        bus: Bus,
        rpc: AsyncRPCClient,
        on_store_down: Callable[[], None],
        since: int = 0,
        **options: Any,
    ) -> None:
        self.sub = AsyncSubscriber(bus, TOPIC_MSG_STORED, TOPIC_HEARTBEAT)
        self.rpc = rpc
        self.on_store_down = on_store_down
        self.follower = Follower(last=since)
        self.options = options

    async def snapshot(self, apply: Callable[[list[Row]], None], **extra: Any) -> None:
        """Apply what the store holds beyond what was applied, until current (``extra``:
        more of the op's options, for this snapshot)."""
        options = self.options | extra
        done = False
        while not done:
            answer = await until_answered(
                lambda: self.rpc.call(OP_SNAPSHOT, snapshot_request(self.follower, **options)),
                self.on_store_down,
            )
            rows, done = snapshot_page(self.follower, answer)
            if rows:
                apply(rows)

    async def follow(self, apply: Callable[[list[Row]], None]) -> NoReturn:
        """Apply every message stored, in order and once, for as long as the process runs
        (after ``snapshot``: events meanwhile wait in the subscription)."""
        while True:
            ready = follow_event(self.follower, await self.sub.recv())
            if ready:
                apply(ready)
            if self.follower.syncing:
                # The rows of a gap come as their events would have (as_stored): a
                # message whose event was lost or set aside while syncing (a store's
                # restart) is pushed on all the same, not left to anti-entropy.
                await self.snapshot(apply, as_stored=True)
