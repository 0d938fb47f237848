"""What the relay read of signing keys and realms, kept for a second.

Every signed call needs its circle's keys and its realm; reading them is two
trips to a store thread per request, as much time as a 50-message batch's
checks. They change only on a registration, an unregistration, a succession
or a purge, rarely: this process forgets what it kept of a circle on each of
its own, and another instance's (PostgreSQL) is seen within ``TTL_S``. A cached
key list is only a first try: a signature none of them verifies is checked
again against a fresh read, so a key registered elsewhere is never refused.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

TTL_S: Final = 1.0
MAX_CIRCLES: Final = 10_000
MAX_PER_CIRCLE: Final = 1_000  # nodes or keys of one circle kept


class Recent(Generic[K, V]):
    """Values per circle_hint, kept for ``ttl_s`` seconds from the circle's first read, of at
    most ``size`` circles (the least recently read go first)."""

    def __init__(self, ttl_s: float = TTL_S, size: int = MAX_CIRCLES) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._circles: OrderedDict[str, tuple[dict[K, V], float]] = OrderedDict()

    def get(self, circle_hint: str, key: K, now: float) -> V | None:
        """The value kept for ``key`` of a circle if it is fresh."""
        kept = self._circles.get(circle_hint)
        if kept is None or now - kept[1] > self.ttl_s:
            return None
        return kept[0].get(key)

    def put(self, circle_hint: str, key: K, value: V, now: float) -> None:
        """Keep ``value`` (a circle's values expire together)."""
        kept = self._circles.pop(circle_hint, None)
        if kept is None or now - kept[1] > self.ttl_s:
            kept = ({}, now)
        if len(kept[0]) < MAX_PER_CIRCLE:
            kept[0][key] = value
        self._circles[circle_hint] = kept
        while len(self._circles) > self.size:
            self._circles.popitem(last=False)

    def forget(self, circle_hint: str) -> None:
        """Forget a circle's values (its keys or realms changed here)."""
        self._circles.pop(circle_hint, None)

    def clear(self) -> None:
        """Forget everything."""
        self._circles.clear()
