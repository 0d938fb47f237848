"""What a gossip session needs from its process: the index, the store, peers."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from felund.gossip.handshake import Link
from felund.gossip.reconcile import ItemSet


class GossipHost(Protocol):
    """The gossip process, as its sessions see it."""

    index: dict[str, ItemSet]

    def turn(self, circle_id: str) -> asyncio.Lock:
        """Held by a session's own reconciliation round (one per circle at a time)."""
        ...

    async def fetch(self, msg_ids: list[str]) -> list[dict[str, Any]]:
        """Wire messages held among ``msg_ids``."""
        ...

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """As ``fetch``, packed (``wire.pack_wire``)."""
        ...

    async def receive(self, link: Link, raw_msgs: list[Any]) -> int:
        """Check and store messages from a peer; the number newly stored."""
        ...

    async def known_peers(self, circle_id: str) -> list[dict[str, Any]]:
        """Addresses known for a circle."""
        ...

    async def learn_peers(self, circle_id: str, peers: list[dict[str, Any]]) -> None:
        """Remember addresses a peer told us about."""
        ...
