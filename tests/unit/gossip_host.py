"""A gossip process in memory, for running sessions without a store: ``MemoryHost``.

It answers a session's calls (``felund.gossip.host.GossipHost``) from a
dict of messages per circle, as the real process answers them from the
store: what it is given is stored, indexed and counted; nothing is checked
but the shape the index needs. Messages are minimal wire-like maps made by
``messages()``. Shared by the tests/unit/test_gossip_*.py files.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Collection, Iterable
from typing import Any

from felund.errors import PeerError
from felund.gossip.native_session import BoundedSet
from felund.gossip.reconcile import ItemSet
from felund.protocol import CONTROL_CHANNEL, MAX_ANCHOR_PAGE
from felund.v1 import ids
from felund.v1.wire import pack_wire

CIRCLE = "c" * 24
Msg = dict[str, Any]


def messages(count: int, author: str, start: int = 1_700_000_000) -> list[Msg]:
    """``count`` messages of CIRCLE by ``author``, one a second."""
    return [
        {"msg_id": ids.new_msg_id(author, start + i), "circle_id": CIRCLE, "created_ts": start + i}
        for i in range(count)
    ]


class MemoryHost:
    """The process side of sessions, over a dict."""

    def __init__(self, held: Iterable[Msg] = ()) -> None:
        self.index: collections.defaultdict[str, ItemSet] = collections.defaultdict(ItemSet)
        self.control: collections.defaultdict[str, ItemSet] = collections.defaultdict(ItemSet)
        self.held: dict[str, Msg] = {}
        self.received: list[str] = []  # msg_ids given to receive(), in order, repeats included
        self.learned: list[tuple[str, dict[str, Any]]] = []  # (teacher, entry)
        self.peers: list[dict[str, Any]] = []
        self.now = int(time.time())  # the second what is stored now is stored at
        self.stored_at: dict[str, int] = {}
        self.crossings: collections.Counter[str] = collections.Counter()  # circle -> sends
        self._turns: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self.store(list(held))

    def store(self, msgs: list[Msg]) -> int:
        """Hold and index messages; the number new."""
        fresh = [m for m in msgs if m["msg_id"] not in self.held]
        for m in fresh:
            self.held[m["msg_id"]] = m
            self.stored_at[m["msg_id"]] = self.now
        self.index[CIRCLE].add_many((m["created_ts"], m["msg_id"]) for m in fresh)
        self.control[CIRCLE].add_many(
            (m["created_ts"], m["msg_id"]) for m in fresh if m.get("channel_id") == CONTROL_CHANNEL
        )
        return len(fresh)

    def turn(self, circle_id: str) -> asyncio.Lock:
        """One round of ours per circle at a time."""
        return self._turns[circle_id]

    async def fetch(self, msg_ids: list[str]) -> list[Msg]:
        """Held messages among ``msg_ids``."""
        return [self.held[i] for i in msg_ids if i in self.held]

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """As ``fetch``, packed."""
        return [pack_wire(m) for m in await self.fetch(msg_ids)]

    async def receive(
        self,
        circle_id: str,
        raw_msgs: list[Any],
        came: BoundedSet | None = None,
        awaited: Collection[str] = (),
        control_only: bool = False,
    ) -> int:
        """Store what came (``control_only``: refuse what is not a control event, after
        storing the rest, as ``Circles.receive`` does); the number new."""
        self.received.extend(m["msg_id"] for m in raw_msgs)
        if came is not None:
            came.add_all(m["msg_id"] for m in raw_msgs)
        await asyncio.sleep(0)  # a store answers later
        good = [m for m in raw_msgs if not control_only or m.get("channel_id") == CONTROL_CHANNEL]
        stored = self.store(good)
        if len(good) < len(raw_msgs):
            raise PeerError("bad_message", f"{len(raw_msgs) - len(good)} not_control")
        return stored

    async def anchor_page(self, circle_id: str, since: int, after: int) -> list[dict[str, Any]]:
        """Held messages in the order stored (seq 1, 2, ...), from ``since`` and after ``after``."""
        rows = [
            {"seq": seq, "at": self.stored_at[msg_id], "wire": self.held[msg_id]}
            for seq, msg_id in enumerate(self.held, 1)
            if self.stored_at[msg_id] >= since and seq > after
        ]
        return rows[:MAX_ANCHOR_PAGE]

    def crossed(self, circle_id: str) -> None:
        """Count messages sent to the peer (receive's are counted by ``received``)."""
        self.crossings[circle_id] += 1

    async def known_peers(self, circle_id: str) -> list[dict[str, Any]]:
        """The addresses given to ``peers``."""
        return self.peers

    async def learn_peers(self, circle_id: str, teacher: str, peers: list[dict[str, Any]]) -> None:
        """Record what a member taught."""
        self.learned.extend((teacher, p) for p in peers)
