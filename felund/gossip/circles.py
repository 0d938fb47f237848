"""The circles this node is in, and what the store holds of each: gossip's index, and its writes.

The index (an ``ItemSet`` of (created_ts, msg_id) per circle) is what
reconciliation and v1 rounds compare with peers; it is filled from the store
(``AsyncCatchUp``) and by what this process stores for its peers. The store
is the only writer: messages from peers go to it as they came, and count as
received once it has answered.

A second ``ItemSet`` per circle, ``control``, holds the control events
alone (channel ``__control``): what a catch-up session reconciles
(``felund.gossip.handshake``). It is fed from the same rows as the index,
so it costs a set of the (few) control events, and no other read of the store.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Collection
from typing import Any

from felund import metrics
from felund.bus.aio import AsyncRPCClient
from felund.epochs import CircleKeys, circle_keys
from felund.errors import InvalidMessage, PeerError
from felund.gossip.native_session import BoundedSet
from felund.gossip.reconcile import ItemSet
from felund.protocol import (
    CONTROL_CHANNEL,
    MAX_POST_BATCH,
    OP_APPEND,
    OP_CIRCLE_KEYS,
    OP_FETCH,
    PUSH_FRESH_S,
)
from felund.v1.wire import check_shape

MAX_MSGS_PER_FRAME = 5000
Row = dict[str, Any]
Push = Callable[[str, list[Row]], None]  # (circle, wire messages): send to its native peers


class Circles:
    """Circles, their epoch secrets and their index; storing what peers send."""

    def __init__(
        self,
        rpc: AsyncRPCClient,
        appenders: list[AsyncRPCClient],
        push: Push,
        on_local_post: Callable[[], None],
    ) -> None:
        self.rpc = rpc
        # Appends from two sessions (or two batches of one) wait on the store
        # together, so it can commit them in one transaction.
        self.appenders = appenders
        self.push = push
        self.on_local_post = on_local_post  # v1 peers have no push: a round is due
        self.keys: dict[str, CircleKeys] = {}
        self.index: collections.defaultdict[str, ItemSet] = collections.defaultdict(ItemSet)
        self.control: collections.defaultdict[str, ItemSet] = collections.defaultdict(ItemSet)
        self._turns: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._pending: set[str] = set()  # msg_ids sent to the store, not yet answered

    async def load(self) -> None:
        """Circles and their epoch secrets, from the store."""
        fresh = circle_keys(await self.rpc.call(OP_CIRCLE_KEYS, {}))
        # In place: the dialer and the inbound side hold this mapping.
        self.keys.clear()
        self.keys.update(fresh)

    def turn(self, circle_id: str) -> asyncio.Lock:
        """Held by a session's own reconciliation round (one per circle at a time)."""
        return self._turns[circle_id]

    def apply_stored(self, rows: list[Row]) -> None:
        """Messages the store has stored: index them, push on what is to be pushed."""
        by_circle: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
        wires: dict[str, list[Row]] = collections.defaultdict(list)
        local = False
        for r in rows:
            by_circle[r["circle_id"]].append((r["created_ts"], r["msg_id"]))
            if r.get("channel_id") == CONTROL_CHANNEL:  # pruned rows have none: never control
                self.control[r["circle_id"]].add(r["created_ts"], r["msg_id"])
            # The store attaches the wire form only to what is worth pushing
            # on (ours, and peers' fresh ones: protocol.PUSH_FRESH_S).
            if "wire" in r:
                wires[r["circle_id"]].append(r["wire"])
            local |= r.get("origin") == "local"
        for circle_id, items in by_circle.items():
            self.index[circle_id].add_many(items)
        for circle_id, wire in wires.items():
            self.push(circle_id, wire)
        if local:
            self.on_local_post()

    async def fetch(self, msg_ids: list[str]) -> list[Row]:
        """Wire messages held among ``msg_ids``."""
        return await self._fetch(msg_ids, packed=False)

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """Wire messages held among ``msg_ids``, packed (``wire.pack_wire``)."""
        return await self._fetch(msg_ids, packed=True)

    async def _fetch(self, msg_ids: list[str], packed: bool) -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(msg_ids), MAX_POST_BATCH):
            chunk = msg_ids[i : i + MAX_POST_BATCH]
            answer = await self.rpc.call(OP_FETCH, {"msg_ids": chunk, "packed": packed})
            out.extend(answer["msgs"])
        return out

    async def receive(
        self,
        circle_id: str,
        raw_msgs: list[Any],
        came: BoundedSet | None = None,
        awaited: Collection[str] = (),
        control_only: bool = False,
    ) -> int:
        """Store messages from a peer; PeerError (after storing the good ones) if any
        was malformed, forged, of another circle, or (``control_only``: a catch-up
        session) not a control event. ``came`` collects the ids not to push back to
        that peer; ``awaited`` ones (a reconciliation brought them) are not pushed on.

        Checked once, by the store: here only their shape (check_shape: what the
        index needs, and that the map can go on the bus), then they go to the
        store as they came, which parses and authenticates every one before
        storing it and answers each refusal with its kind, counted here as the
        peer's bad input. The store is the only writer and must check whatever
        it is given (relay-sync's messages too), so checking fully here as well
        would be the same work twice (it was a third of this process's CPU in a
        backlog). Trusting a check made here instead would let one buggy
        producer put a bad row in the database.
        """
        if len(raw_msgs) > MAX_MSGS_PER_FRAME:
            raise PeerError("frame", f"more than {MAX_MSGS_PER_FRAME} messages in one frame")
        problems: collections.Counter[str] = collections.Counter()
        fresh: list[Row] = []
        index, pending = self.index[circle_id], self._pending
        unknown = []
        for raw in raw_msgs:
            try:
                msg_id, msg_circle, _ = check_shape(raw)
            except InvalidMessage as exc:
                problems[exc.kind] += 1
                continue
            if msg_circle != circle_id:
                problems["other_circle"] += 1
            elif control_only and raw.get("channel_id") != CONTROL_CHANNEL:
                problems["not_control"] += 1
            elif msg_id not in index:
                unknown.append(msg_id)
                # Another session (or this frame) is storing it already: two peers
                # sending one backlog would otherwise have every message appended
                # twice. If that append fails, reconciliation brings it again.
                if msg_id not in pending:
                    pending.add(msg_id)
                    fresh.append(raw)
        if came is not None:  # not to be pushed back to this peer, whenever stored
            came.add_all(unknown)
        stored, push = 0, []
        try:
            for i in range(0, len(fresh), MAX_POST_BATCH):
                chunk = fresh[i : i + MAX_POST_BATCH]
                appender = min(self.appenders, key=lambda c: c.busy)
                answer = await appender.call(OP_APPEND, {"origin": "gossip", "msgs": chunk})
                now = time.time()
                fresh_since = now - PUSH_FRESH_S
                held, control, latencies = [], [], []
                for raw, result in zip(chunk, answer["results"], strict=True):
                    if result.startswith("rejected:"):
                        problems[result.removeprefix("rejected:")] += 1
                        continue
                    held.append((raw["created_ts"], raw["msg_id"]))
                    if raw.get("channel_id") == CONTROL_CHANNEL:
                        control.append(held[-1])
                    if result == "stored":
                        stored += 1
                        # Live traffic only: a catch-up's history is days old, which is no
                        # delivery latency (it would fill the +Inf bucket past the last,
                        # PUSH_FRESH_S), and observing each was 4.5 us of a backlog's message.
                        if raw["created_ts"] >= fresh_since:
                            latencies.append(max(0.0, now - raw["created_ts"]))
                            if raw["msg_id"] not in awaited:
                                push.append(raw)
                metrics.observe_all(metrics.DELIVERY_LATENCY, latencies)
                index.add_many(held)
                self.control[circle_id].add_many(control)
        finally:
            pending.difference_update(raw["msg_id"] for raw in fresh)
        # Stored, so pushing on loses nothing if this process dies now (the store's
        # event does not carry gossip's own messages: protocol.PUSH_FRESH_S). Not
        # what a reconciliation brought (NativeSession.awaiting).
        if push:
            self.push(circle_id, push)
        metrics.GOSSIP_MESSAGES.labels("in").inc(stored)
        if problems:
            for kind, n in problems.items():
                metrics.BAD_INPUT.labels("gossip", kind).inc(n)
            raise PeerError("bad_message", ", ".join(f"{n} {k}" for k, n in problems.items()))
        return stored
