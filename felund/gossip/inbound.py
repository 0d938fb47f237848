"""Peers that connect to us: capped per address and in all, authenticated, then run.

A connection over the caps is closed at once (no slot is held by a peer
that never speaks: the handshake has a deadline).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable, Mapping

from felund import metrics
from felund.config import GossipConfig
from felund.epochs import CircleKeys
from felund.errors import PeerError
from felund.gossip import addresses
from felund.gossip.link import Link, Stream, accept
from felund.gossip.warn import Warnings

RunLink = Callable[[Link, str, bool], Awaitable[None]]  # (link, addr, configured)


class Inbound:
    """Accepts connections to the gossip port."""

    def __init__(
        self,
        cfg: GossipConfig,
        node_id: str,
        keys: Mapping[str, CircleKeys],
        *,
        run_link: RunLink,
        warn: Warnings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.node_id, self.keys = cfg, node_id, keys
        self.run_link, self.warn, self.clock = run_link, warn, clock
        self.per_ip: collections.Counter[str] = collections.Counter()

    def admit(self, stream: Stream) -> bool:
        """Whether there is room for a connection from ``stream``'s address (then it
        holds a slot until ``serve`` ends); closes it if not."""
        host = _host(stream)
        if (
            self.per_ip[host] >= self.cfg.max_connections_per_ip
            or sum(self.per_ip.values()) >= self.cfg.max_connections
        ):
            metrics.BAD_INPUT.labels("gossip", "too_many_connections").inc()
            self.warn("peer.too_many_connections", peer=stream.address)
            stream.close()
            return False
        self.per_ip[host] += 1
        return True

    async def serve(self, stream: Stream) -> None:
        """Run an admitted connection to its end."""
        host = _host(stream)
        try:
            try:
                link = await accept(stream, self.keys, self.node_id, self.clock, self.cfg.anchor)
            except PeerError as exc:
                metrics.BAD_INPUT.labels("gossip", exc.kind).inc()
                metrics.GOSSIP_SESSIONS.labels("handshake", exc.kind).inc()
                self.warn(f"peer.{exc.kind}", peer=stream.address, detail=exc.detail)
                stream.close()
                return
            await self.run_link(link, stream.address, False)
        finally:
            self.per_ip[host] -= 1
            if not self.per_ip[host]:
                del self.per_ip[host]


def _host(stream: Stream) -> str:
    where = addresses.parse(stream.address)
    return where.host if where is not None else "?"
