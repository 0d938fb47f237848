"""One backoff for every retry loop of a node: a doubling delay, capped, with jitter (sans-IO)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def delay(failures: int, initial: float, cap: float, jitter: float, rng: random.Random) -> float:
    """The wait after ``failures`` consecutive failures (1 = the first): doubled each time from
    ``initial``, at most ``cap``, then spread by ±``jitter`` (a fraction) so peers do not retry
    in step."""
    base = min(initial * 2 ** max(0, failures - 1), cap)
    return base * rng.uniform(1 - jitter, 1 + jitter)


@dataclass
class Backoff:
    """A retry loop's state: ``next()`` after a failure, ``reset()`` after a success."""

    initial: float = 1.0
    cap: float = 60.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next(self, at_least: float = 0.0) -> float:
        """Count a failure and return how long to wait (never less than ``at_least``,
        e.g. a server's Retry-After)."""
        self.failures += 1
        return max(at_least, delay(self.failures, self.initial, self.cap, self.jitter, self.rng))

    def reset(self) -> None:
        """A success: the next failure waits the initial delay again."""
        self.failures = 0


@dataclass
class Backoffs:
    """A backoff per key (an address, a circle), forgetting a key once it succeeds.

    Bounded: at most ``max_keys`` are kept, the ones waiting longest dropped first, so
    a peer naming many keys cannot grow it without bound.
    """

    initial: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2
    max_keys: int = 4096
    rng: random.Random = field(default_factory=random.Random)
    _until: dict[object, tuple[float, int]] = field(default_factory=dict)

    def failed(self, key: object, now: float) -> float:
        """Count a failure of ``key`` at ``now``; returns when it may be tried again."""
        _, failures = self._until.pop(key, (0.0, 0))
        failures += 1
        until = now + delay(failures, self.initial, self.cap, self.jitter, self.rng)
        self._until[key] = (until, failures)
        while len(self._until) > self.max_keys:
            del self._until[next(iter(self._until))]
        return until

    def succeeded(self, key: object) -> None:
        """``key`` worked: forget its failures."""
        self._until.pop(key, None)

    def failures(self, key: object) -> int:
        """How many times in a row ``key`` has failed (0 once it has worked)."""
        return self._until.get(key, (0.0, 0))[1]

    def ready(self, key: object, now: float) -> bool:
        """Whether ``key`` may be tried at ``now``."""
        got = self._until.get(key)
        return got is None or got[0] <= now

    def __len__(self) -> int:
        return len(self._until)
