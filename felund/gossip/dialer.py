"""Dialling the known peers of every circle: native sessions kept open, v1 rounds every interval.

Bounded whatever the peer table holds: only addresses that could be a
felund peer (``addresses.refusal``: names and low ports only where the user
gave them), at most ``MAX_IN_FLIGHT`` connection attempts at a time and
``MAX_PER_ROUND`` started per round, and a backoff per address
(``felund.actor.backoff.Backoffs``). A learned address that may not be
dialled, or was never reached and keeps failing, is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from felund.actor.backoff import Backoffs
from felund.config import GossipConfig
from felund.epochs import CircleKeys
from felund.errors import PeerError, RPCError, RPCTimeout
from felund.gossip import addresses
from felund.gossip.link import Link, connect
from felund.gossip.native_session import BoundedSet
from felund.gossip.peertable import PeerTable
from felund.gossip.warn import Warnings

MAX_IN_FLIGHT = 16  # connection attempts at a time (each a file descriptor)
MAX_PER_ROUND = 16  # attempts started per round
FORGET_AFTER = 5  # failures in a row of a learned address never reached (about a minute)
# Kinds of failure that mean "it did not take the native offer": speak plain v1 to it.
_CHOKED_ON_NATIVE = ("closed", "garbage", "unexpected", "frame")


class Connect(Protocol):
    """``felund.gossip.link.connect``'s signature."""

    def __call__(
        self,
        host: str,
        port: int,
        *,
        keys: CircleKeys,
        node_id: str,
        listen_addr: str,
        offer_native: bool,
        can_anchor: bool = False,
    ) -> Awaitable[Link]: ...


RunLink = Callable[[Link, str, bool], Awaitable[None]]  # (link, addr, configured)
InTouch = Callable[[str, str, str], bool]  # (circle, addr, node_id): a session is open


class Dialer:
    """The dial loop: which addresses, how many at once, how often."""

    def __init__(
        self,
        cfg: GossipConfig,
        node_id: str,
        keys: Mapping[str, CircleKeys],
        *,
        peers: PeerTable,
        run_link: RunLink,
        in_touch: InTouch,
        warn: Warnings,
        clock: Callable[[], float] = time.monotonic,
        connect: Connect = connect,
    ) -> None:
        self.cfg, self.node_id, self.keys, self.peers = cfg, node_id, keys, peers
        self.run_link, self.in_touch, self.warn = run_link, in_touch, warn
        self.clock, self.connect = clock, connect
        self.listen_addr = ""  # ours, as HELLO advertises it (set once listening)
        self.wake = asyncio.Event()  # a round is due now
        self.backoffs = Backoffs(initial=1.0, cap=60.0, jitter=0.2)
        self.dialing: set[tuple[str, str]] = set()  # (circle, addr) being contacted
        self.v1_only = BoundedSet(4096)  # addresses that did not take the native offer
        # (circle, addr) the user gave -> the node met there (its row keeps no node id).
        self.met: dict[tuple[str, str], str] = {}

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """A round now, then one every ``round_interval_s`` or when woken; dials run in ``tg``."""
        while True:
            self.wake.clear()
            await self.round(tg)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.cfg.round_interval_s)

    async def round(self, tg: asyncio.TaskGroup) -> int:
        """Start dialling what is due; the number of dials started."""
        started = 0
        for circle_id, keys in list(self.keys.items()):
            try:
                rows = await self.peers.known(circle_id)
            except (RPCTimeout, RPCError):
                return started
            refused = []
            for row in rows:
                if len(self.dialing) >= MAX_IN_FLIGHT or started >= MAX_PER_ROUND:
                    break
                why = self._why_not(circle_id, row)
                if why == "refused":
                    refused.append(row["addr"])
                elif why is None:
                    key = (circle_id, row["addr"])
                    self.dialing.add(key)
                    tg.create_task(self.dial(keys, row))
                    started += 1
            if refused:
                await self._forget(circle_id, refused)
        return started

    def _why_not(self, circle_id: str, row: dict[str, Any]) -> str | None:
        """None if ``row`` is to be dialled now; else a word on why not."""
        addr, configured = row["addr"], not row["node_id"]
        key = (circle_id, addr)
        if addr in self.peers.own or addr == self.listen_addr or key in self.dialing:
            return "busy"
        if self.in_touch(circle_id, addr, row["node_id"] or self.met.get(key, "")):
            return "busy"
        problem = addresses.refusal(addr, configured)
        if problem is not None:
            self.warn("peer.undialable", circle_id=circle_id, peer=addr, reason=problem)
            return "refused" if not configured else "ignored"
        if not self.backoffs.ready(key, self.clock()):
            return "later"
        return None

    async def dial(self, keys: CircleKeys, row: dict[str, Any]) -> None:
        """Contact one known address of a circle and run the session it opens."""
        addr, configured = row["addr"], not row["node_id"]
        circle_id = keys.circle_id
        key = (circle_id, addr)
        # Once re-keyed, only the native protocol can carry a session at all.
        offer = self.cfg.offer_native and (addr not in self.v1_only or keys.rekeyed)
        where = addresses.parse(addr)
        assert where is not None  # checked by _why_not
        try:
            link = await self.connect(
                where.host,
                where.port,
                keys=keys,
                node_id=self.node_id,
                listen_addr=self.listen_addr,
                offer_native=offer,
                can_anchor=self.cfg.anchor,
            )
        except PeerError as exc:
            await self._failed(key, row, offer, exc)
            return
        finally:
            self.dialing.discard(key)
        self.backoffs.succeeded(key)
        if configured:
            self.met[key] = link.peer_node_id
        await self.run_link(link, addr, configured)

    async def _failed(
        self, key: tuple[str, str], row: dict[str, Any], offered: bool, exc: PeerError
    ) -> None:
        circle_id, addr = key
        if offered and exc.kind in _CHOKED_ON_NATIVE:
            self.v1_only.add_all([addr])  # it choked on the offer: speak plain v1 to it
            self.wake.set()
        self.backoffs.failed(key, self.clock())
        self.warn(
            "peer.unreachable" if exc.kind == "unreachable" else f"peer.{exc.kind}",
            peer=addr,
            circle_id=circle_id,
            detail=exc.detail,
        )
        never_reached = row["node_id"] and not row["last_seen"]
        if never_reached and self.backoffs.failures(key) >= FORGET_AFTER:
            # Its backoff stays: told of it again, the node waits as long before trying.
            await self._forget(circle_id, [addr])

    async def _forget(self, circle_id: str, addrs: list[str]) -> None:
        with contextlib.suppress(RPCTimeout, RPCError):  # it stays for now: no harm
            await self.peers.forget(circle_id, addrs)
