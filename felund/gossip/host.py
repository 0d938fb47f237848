"""What a gossip session needs from its process: the index, the store, the peer table."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from felund.gossip.native_session import BoundedSet
from felund.gossip.reconcile import ItemSet


class GossipHost(Protocol):
    """The gossip process, as its sessions see it."""

    @property
    def index(self) -> Mapping[str, ItemSet]:
        """Per circle, the messages the store holds."""
        ...

    @property
    def control(self) -> Mapping[str, ItemSet]:
        """Per circle, the control events the store holds (what catch-up sessions compare)."""
        ...

    def turn(self, circle_id: str) -> asyncio.Lock:
        """Held by a session's own reconciliation round (one per circle at a time)."""
        ...

    async def fetch(self, msg_ids: list[str]) -> list[dict[str, Any]]:
        """Wire messages held among ``msg_ids``."""
        ...

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """As ``fetch``, packed (``wire.pack_wire``)."""
        ...

    async def receive(
        self,
        circle_id: str,
        raw_msgs: list[Any],
        came: BoundedSet | None = None,
        awaited: Collection[str] = (),
        control_only: bool = False,
    ) -> int:
        """Check and store messages from a peer; the number newly stored. ``came`` collects
        the ids not to push back to that peer; ``awaited`` ones are not pushed on;
        ``control_only``: anything but a control event is refused (a catch-up session)."""
        ...

    async def anchor_page(self, circle_id: str, since: int, after: int) -> list[dict[str, Any]]:
        """A circle's messages stored at ``since`` (Unix seconds) or later and after
        store_seq ``after``, oldest first (the store's ``store.anchor.page`` rows)."""
        ...

    def crossed(self, circle_id: str) -> None:
        """Messages of the circle went to a peer or came from one, now."""
        ...

    async def known_peers(self, circle_id: str) -> list[dict[str, Any]]:
        """Addresses known for a circle."""
        ...

    async def learn_peers(self, circle_id: str, teacher: str, peers: list[dict[str, Any]]) -> None:
        """Remember addresses the member ``teacher`` told us about."""
        ...
