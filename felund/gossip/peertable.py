"""The store's table of peer addresses, as gossip reads and teaches it.

What members say is bounded before it reaches the store: only addresses
that could be a felund peer (``felund.gossip.addresses``), each with the
node it is said to be, at most ``LEARNED_PER_TEACHER`` distinct ones from
any one member while the process runs, and undated (``last_seen`` 0: a
member's word on when it saw an address counts for nothing). The store
keeps at most ``MAX_PEERS_PER_CIRCLE`` per circle, dropping the ones never
reached first. An address is dated when this node reaches it, and
forgotten when it never was and keeps failing (``Dialer``).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from felund import metrics
from felund.bus.aio import AsyncRPCClient
from felund.gossip import addresses
from felund.protocol import (
    MAX_PEERS_PAGE,
    OP_PEERS,
    OP_PEERS_ADD,
    OP_PEERS_FORGET,
)

LEARNED_PER_TEACHER = 64  # distinct addresses taken from one member (a v1 PEERS frame's worth)
MAX_TEACHERS = 4096  # members remembered for that count; the oldest forgotten first
# One page holds a circle's whole table; a table from before the per-circle cap
# may be longer, and shrinks to the cap at the next address learned for it.
KNOWN_PAGES = 4
PER_REQUEST = 256  # entries the store takes in one store.peers.add or .forget


class PeerTable:
    """Reads and writes of the peer table, bounded on the way in."""

    def __init__(self, rpc: AsyncRPCClient, clock: Callable[[], float] = time.time) -> None:
        self.rpc = rpc
        self.clock = clock  # wall time: last_seen is shown to the user
        self.own: set[str] = set()  # addresses of this node (ours, and where we met ourselves)
        # (circle, member) -> the addresses taken from it, most recent member last.
        self._taught: collections.OrderedDict[tuple[str, str], set[str]] = collections.OrderedDict()

    async def known(self, circle_id: str) -> list[dict[str, Any]]:
        """The addresses known for a circle (bounded by the store's per-circle cap)."""
        rows: list[dict[str, Any]] = []
        after: list[str] = []
        for _ in range(KNOWN_PAGES):
            answer = await self.rpc.call(
                OP_PEERS, {"circle_id": circle_id, "after": after, "limit": MAX_PEERS_PAGE}
            )
            rows.extend(answer["peers"])
            if not answer["more"] or not answer["peers"]:
                break
            after = [circle_id, rows[-1]["addr"]]
        return rows

    def take(
        self, circle_id: str, teacher: str, peers: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The entries of ``peers`` worth storing, as the store is to get them (sans-IO)."""
        key = (circle_id, teacher)
        taught = self._taught.pop(key, set())
        self._taught[key] = taught
        while len(self._taught) > MAX_TEACHERS:
            self._taught.popitem(last=False)
        out = []
        refused = flood = 0
        for p in peers:
            addr, node_id = p["addr"], p["node_id"]
            if addr in self.own:
                continue
            if not node_id or addresses.refusal(addr, configured=False) is not None:
                refused += 1
            elif addr in taught or len(taught) < LEARNED_PER_TEACHER:
                taught.add(addr)
                out.append({"circle_id": circle_id, "addr": addr, "node_id": node_id})
            else:
                flood += 1
        if refused:
            metrics.BAD_INPUT.labels("gossip", "peer_address").inc(refused)
        if flood:
            metrics.BAD_INPUT.labels("gossip", "peer_flood").inc(flood)
        return out

    async def learn(
        self, circle_id: str, teacher: str, peers: list[dict[str, Any]], seen: bool = False
    ) -> None:
        """Remember addresses the member ``teacher`` told us about (bounded: ``take``);
        ``seen``: at an address this node saw it at (an inbound peer's), so dated now."""
        entries = self.take(circle_id, teacher, peers)
        if entries:
            await self._add(entries, seen)

    async def reached(self, circle_id: str, addr: str, node_id: str) -> None:
        """This node completed a handshake at ``addr`` (``node_id`` "" keeps an address
        the user gave as such)."""
        await self._add([{"circle_id": circle_id, "addr": addr, "node_id": node_id}], True)

    async def _add(self, entries: list[dict[str, Any]], seen: bool) -> None:
        if seen:
            now = int(self.clock())
            entries = [{**e, "last_seen": now} for e in entries]
        await self.rpc.call(OP_PEERS_ADD, {"peers": entries, "reached": seen})

    async def forget(self, circle_id: str, addrs: list[str]) -> None:
        """Drop learned addresses for good (the store keeps the user's own)."""
        for i in range(0, len(addrs), PER_REQUEST):
            entries = [{"circle_id": circle_id, "addr": a} for a in addrs[i : i + PER_REQUEST]]
            await self.rpc.call(OP_PEERS_FORGET, {"peers": entries})
