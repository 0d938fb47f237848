"""One circle's state in relay-sync: its relay identity, cursors, wake-ups and feed inbox."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from felund.epochs import CircleKeys
from felund.relay.auth import succeeds_field
from felund.relay.connectivity import Connectivity
from felund.relay.pullcursor import PullCursor
from felund.v1 import crypto, ids

# Feed frames waiting for the store: beyond this the frame is dropped and a GET
# fetches it instead, so a fast relay and a slow store never grow memory.
MAX_INBOX_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FeedMessages:
    """A MESSAGES frame of the feed: its messages, and the cursor span they cover if given."""

    messages: list[Any]
    span: tuple[int, int] | None
    size: int  # bytes of the frame's text


@dataclass(slots=True)
class CircleSync:
    """One circle at the relay: what its loops share."""

    circle_id: str
    hint: str
    key: str  # the relay signing key every member derives from the newest epoch's secret
    # The key of the epoch before (a re-keyed circle): registrations say the new realm
    # succeeds its realm (``felund.relay.presence``).
    previous_key: str | None = None
    push_now: asyncio.Event = field(default_factory=asyncio.Event)
    pull_now: asyncio.Event = field(default_factory=asyncio.Event)
    push_cursor: int = 0  # a store_seq: every message of the circle up to it is at the relay
    pull: PullCursor = field(default_factory=PullCursor)
    want_get: bool = False  # a GET is due even with the feed up: it (re)connected, a failure
    health: Connectivity = field(default_factory=Connectivity)
    inbox: deque[FeedMessages] = field(default_factory=deque)
    inbox_bytes: int = 0
    task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, keys: CircleKeys) -> CircleSync:
        """The state of a circle, keyed as every member derives it from the newest epoch's
        secret (and the one before)."""
        previous = keys.previous
        return cls(
            keys.circle_id,
            ids.circle_hint(keys.circle_id),
            crypto.api_signing_key(keys.secret),
            crypto.api_signing_key(previous) if previous is not None else None,
        )

    @property
    def succeeds(self) -> dict[str, str] | None:
        """A registration's ``succeeds`` field, if the circle was re-keyed."""
        if self.previous_key is None:
            return None
        return succeeds_field(self.key, self.previous_key)

    def offer(self, frame: FeedMessages) -> None:
        """Queue a feed frame for the pull loop (or, when too much waits, ask for a GET)."""
        if self.inbox and self.inbox_bytes + frame.size > MAX_INBOX_BYTES:
            self.want_get = True
        else:
            self.inbox.append(frame)
            self.inbox_bytes += frame.size
        self.pull_now.set()

    def take(self) -> FeedMessages | None:
        """The oldest queued feed frame, if any."""
        if not self.inbox:
            return None
        frame = self.inbox.popleft()
        self.inbox_bytes -= frame.size
        return frame
