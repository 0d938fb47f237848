"""How far relay-sync holds one circle's log at the relay: its pull cursor (sans-IO).

The relay numbers a circle's messages with strictly increasing cursors. A
span ``(after, cursor]`` is *held* once every message of the circle in it is
in the node's store:

- a live feed frame's span, once the store acknowledged its messages (the
  relay leaves out the node's own, which the store has already);
- a ``POST /v1/messages`` answer's span: the node's own messages, just pushed;
- a ``GET /v1/messages`` page: ``(cursor asked, next_cursor]``.

``held`` is where the node holds everything before. A span that starts past
it waits (a bounded number of them), and while one waits a message between
is missing: ``gap`` says so, and a GET from ``held`` fills it. Only ``held``
is ever saved as the durable cursor, so a crash fetches again at worst what
the store already has (it drops duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MAX_WAITING: Final = 64  # spans kept past a gap; the furthest are forgotten (a GET passes them)


@dataclass(slots=True)
class PullCursor:
    """One circle's pull cursor: ``held`` in memory, ``saved`` in the store."""

    held: int = 0
    saved: int = 0
    _waiting: list[tuple[int, int]] = field(default_factory=list)

    def load(self, saved: int) -> None:
        """Start from the durable cursor the store kept."""
        self.held = self.saved = saved
        self._waiting.clear()

    def hold(self, after: int, cursor: int) -> None:
        """Every message of the circle in ``(after, cursor]`` is in the store."""
        if cursor <= self.held:
            return
        if after > self.held:
            self._waiting.append((after, cursor))
            if len(self._waiting) > MAX_WAITING:
                self._waiting.remove(max(self._waiting))  # the furthest: a GET covers it
            return
        self.held = cursor
        moved = True
        while moved:
            moved = False
            for span in list(self._waiting):
                if span[0] <= self.held:
                    self._waiting.remove(span)
                    if span[1] > self.held:
                        self.held, moved = span[1], True

    @property
    def gap(self) -> bool:
        """Whether a message the relay holds before a held span is missing here."""
        return bool(self._waiting)

    def to_save(self) -> int | None:
        """The cursor to make durable, if it moved since the last save."""
        return self.held if self.held > self.saved else None

    def saved_at(self, value: int) -> None:
        """The store acknowledged ``value`` as the durable cursor."""
        self.saved = max(self.saved, value)
