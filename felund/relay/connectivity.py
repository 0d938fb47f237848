"""One circle's connectivity to the relay, as relay-sync's heartbeat reports it (sans-IO).

Fed with the outcome of every HTTP call made for the circle (the clock is an
argument). ``reachable`` once a call has succeeded and while none is failing;
``last_error`` and ``error_since`` describe the current trouble (cleared when
every failing call has succeeded again). The feed is reported on its own
(``feed``): without it messages still arrive, by polling. So is the last time
the relay said it had removed messages (its retention) this node had not read
yet (``history_expired_ts``): a gap the relay cannot fill, which gossip may.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

MAX_ERROR_CHARS: Final = 120


@dataclass(slots=True)
class Connectivity:
    """Reachability of the relay for one circle, and when a message last crossed."""

    last_ok_ts: float | None = None
    last_error: str = ""
    error_since: float | None = None
    last_message_ts: float | None = None
    feed: bool = False
    history_expired_ts: float | None = None
    _failing: set[str] = field(default_factory=set)

    @property
    def reachable(self) -> bool:
        """Whether the relay answered and no kind of call is failing now."""
        return self.last_ok_ts is not None and not self._failing

    def ok(self, op: str, now: float) -> None:
        """A call ``op`` (register, peers, push, pull) succeeded."""
        self.last_ok_ts = now
        self._failing.discard(op)
        if not self._failing:
            self.last_error, self.error_since = "", None

    def failed(self, op: str, error: str, now: float) -> None:
        """A call ``op`` failed with ``error`` (a short text without secrets)."""
        if self.error_since is None:
            self.error_since = now
        self._failing.add(op)
        self.last_error = error[:MAX_ERROR_CHARS]

    def exchanged(self, now: float) -> None:
        """A message crossed: pushed to the relay, or pulled from it and stored."""
        self.last_message_ts = now

    def history_expired(self, now: float) -> None:
        """The relay removed messages after this node's cursor before it read them."""
        self.history_expired_ts = now

    def report(self) -> dict[str, Any]:
        """The heartbeat's record of the circle."""
        return {
            "reachable": self.reachable,
            "last_ok_ts": self.last_ok_ts,
            "last_error": self.last_error,
            "error_since": self.error_since,
            "last_message_ts": self.last_message_ts,
            "feed": self.feed,
            "history_expired_ts": self.history_expired_ts,
        }
