"""What one client may spend: requests, messages and bytes, per signing key or per address.

- Who pays: a request whose signature verified pays from its signing key's
  budget (the key names a circle's realm: its members, whichever address
  they come from, share it); any other request pays from its client
  address's (the IPv4 address or the IPv6 /64, ``client_key``). The
  defaults let a member's relay-sync push a 100k backlog in seconds and a
  browser poll freely, while an unsigned client stays at what a browser
  needs.
- A request that carries a signature which does not verify (or that no key
  verifies) pays from its address's ``unverified`` budget, checked before
  its body is read: forged signatures cost a signature check each, so they
  are bounded too, and a member never pays for them.
- Each unit is a token bucket with debt: a request is admitted while every
  bucket it draws on has a token (or its whole cost, if smaller), then pays
  its whole cost, so one large batch goes through and the next ones wait
  for the debt to refill. A rate of 0 turns that bucket off.
- Bytes are request bodies (what a client makes the relay parse and store);
  what GETs answer is bounded by their page size and the send budget.
- The web app's files (the page, its modules, styles and icons) pay from
  their address's ``web_files`` budget, not from its API budget: a page
  load is about 45 of them, and several browsers behind one address (a
  home, an office) loading the app must not lock them out of the chat.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

UNITS: Final = ("requests", "messages", "bytes")
Unit = Literal["requests", "messages", "bytes"]
Payer = Literal["key", "address", "unverified", "web_files"]


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_s`` tokens a second, at most ``burst`` saved; ``per_s`` 0: no limit."""

    per_s: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``RATE`` or ``RATE/BURST`` (a burst of twice the rate if left out); 0 turns it off."""
        per_s_text, _, burst_text = text.partition("/")
        per_s = float(per_s_text)
        burst = float(burst_text) if burst_text else 2 * per_s
        if not (math.isfinite(per_s) and math.isfinite(burst)) or per_s < 0 or burst < 0:
            raise ValueError(f"{text!r}: a rate and a burst are numbers of 0 or more")
        if per_s > 0 and burst < 1:
            raise ValueError(f"{text!r}: a burst of at least 1")
        return cls(per_s, burst)

    def __str__(self) -> str:
        return f"{self.per_s:g}/{self.burst:g}" if self.per_s > 0 else "0"


OFF: Final = Rate(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Budget:
    """A client's rates of requests, messages and bytes."""

    requests: Rate
    messages: Rate
    bytes: Rate

    def describe(self) -> dict[str, str]:
        """The rates as the start line shows them: ``{"requests": "50/200", ...}``."""
        return {unit: str(getattr(self, unit)) for unit in UNITS}


# The defaults (see the module docstring): an address gets what a browser
# polling and posting by hand needs, with room for a page load's burst; a
# signing key what a circle's members and their relay-syncs push together.
ADDRESS_BUDGET: Final = Budget(Rate(50, 200), Rate(200, 2000), Rate(512 * 1024, 8 * 1024 * 1024))
KEY_BUDGET: Final = Budget(
    Rate(5_000, 20_000), Rate(50_000, 200_000), Rate(64 * 1024 * 1024, 256 * 1024 * 1024)
)
UNVERIFIED_RATE: Final = Rate(10, 50)
WEB_FILES_RATE: Final = Rate(100, 1000)  # about 20 page loads at once, then 2 a second
NO_BUDGET: Final = Budget(OFF, OFF, OFF)


class TokenBuckets:
    """One token bucket per key (least recently used forgotten beyond ``max_keys``)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def level(self, key: str, now: float) -> float:
        """The tokens ``key`` holds now (negative: in debt)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def wait(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 if a request of ``cost`` may go now, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        need = min(cost, self.burst)
        tokens = self.level(key, now)
        return 0.0 if tokens >= need else (need - tokens) / self.rate

    def spend(self, key: str, now: float, cost: float = 1.0) -> None:
        """Take ``cost`` tokens, into debt if need be."""
        if self.rate <= 0 or cost == 0:
            return
        tokens = self.level(key, now) - cost
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` if it may go now: 0.0, else the seconds to wait (nothing spent)."""
        wait = self.wait(key, now, cost)
        if wait == 0.0:
            self.spend(key, now, cost)
        return wait

    def prune(self, now: float) -> int:
        """Forget buckets that have refilled (they equal a new one); how many went."""
        full = [k for k in self._buckets if self.level(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


class Budgets:
    """The buckets of one kind of payer, one per unit."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.buckets = {
            unit: TokenBuckets(getattr(budget, unit).per_s, getattr(budget, unit).burst)
            for unit in UNITS
        }

    def wait(self, who: str, now: float, costs: dict[Unit, float]) -> tuple[float, Unit | None]:
        """(0.0, None) if every cost may go now, else (seconds, the unit short)."""
        for unit, cost in costs.items():
            wait = self.buckets[unit].wait(who, now, cost)
            if wait > 0:
                return wait, unit
        return 0.0, None

    def spend(self, who: str, now: float, costs: dict[Unit, float]) -> None:
        """Spend every cost, into debt if need be."""
        for unit, cost in costs.items():
            self.buckets[unit].spend(who, now, cost)

    def prune(self, now: float) -> None:
        """Forget what has refilled."""
        for buckets in self.buckets.values():
            buckets.prune(now)


@dataclass
class Limits:
    """The relay's budgets: per signing key, per address, and per address for signatures
    that do not verify and for the web app's files."""

    key: Budgets
    address: Budgets
    unverified: TokenBuckets
    web_files: TokenBuckets
    # A key costs nothing to make (a registration names its own), so the signed calls of
    # one address, whatever keys they verify under, together spend at most one key's budget.
    keys_of_address: Budgets

    @classmethod
    def of(cls, per_key: Budget, per_address: Budget, unverified: Rate, web_files: Rate) -> Limits:
        """The budgets of a configuration."""
        return cls(
            Budgets(per_key),
            Budgets(per_address),
            TokenBuckets(unverified.per_s, unverified.burst),
            TokenBuckets(web_files.per_s, web_files.burst),
            Budgets(per_key),
        )

    def prune(self, now: float) -> None:
        """Forget what has refilled."""
        self.key.prune(now)
        self.address.prune(now)
        self.unverified.prune(now)
        self.web_files.prune(now)
        self.keys_of_address.prune(now)
