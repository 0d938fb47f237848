"""Warnings about peers, at most one per kind every few seconds: a flood of bad peers
fills no disk (the counters count them all)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EVERY_S = 10.0


class Warnings:
    """A rate-limited warning log."""

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        """Log ``event`` at warning level unless one of its kind was logged lately."""
        now = self._clock()
        if now - self._last.get(event, -EVERY_S) >= EVERY_S:
            self._last[event] = now
            self._log.warning(event, **fields)
