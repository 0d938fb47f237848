"""A set of message ids held as their 64-bit hashes in one array; ids are only added.

The reconciliation set answers ``in`` for every id a peer offers or asks for.
A Python set of the ids kept each id's string alive (88 bytes for a 32-hex
id) and a slot of 16 bytes in a table at most 60 % full: most of what a
message cost gossip. Here an id costs 8 bytes in a table at most half full:
its ``hash()``, which is SipHash keyed at random per process (unless
``PYTHONHASHSEED`` says otherwise), found by linear probing. Two ids of equal
64-bit hashes read as one, a chance of about n / 2**64 per lookup; a peer
cannot aim at one of our ids without a second preimage of 64 bits.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

_EMPTY = 0  # a hash of 0 is kept as 1: an empty slot is 0


class IdTable:
    """Which ids were added (``in``), without keeping them."""

    __slots__ = ("_len", "_mask", "_slots")

    def __init__(self) -> None:
        self._slots = array("q", bytes(8 * 8))
        self._mask = 7
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, msg_id: object) -> bool:
        if not isinstance(msg_id, str):
            return False
        h = hash(msg_id) or 1
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            held = slots[i]
            if held == h:
                return True
            if held == _EMPTY:
                return False
            i = (i + 1) & mask

    def add(self, msg_id: str) -> bool:
        """Add an id; False if it was there."""
        return bool(self.take((msg_id,)))

    def take(self, msg_ids: Iterable[str]) -> list[str]:
        """Add every id (the bulk path of ``add``); those that were not there, in order."""
        slots, mask = self._slots, self._mask
        new: list[str] = []
        for msg_id in msg_ids:
            h = hash(msg_id) or 1
            i = h & mask
            while True:
                held = slots[i]
                if held == h:
                    break
                if held == _EMPTY:
                    slots[i] = h
                    new.append(msg_id)
                    self._len += 1
                    if 2 * self._len > len(slots):  # past half full: grown at once
                        self._grow(self._len)
                        slots, mask = self._slots, self._mask
                    break
                i = (i + 1) & mask
        return new

    def _grow(self, count: int) -> None:
        """Room for ``count`` ids, the table at most half full."""
        size = len(self._slots)
        while 2 * count > size:
            size *= 2
        old = self._slots
        self._slots = array("q", bytes(8 * size))
        self._mask = size - 1
        slots, mask = self._slots, self._mask
        for h in old:
            if h != _EMPTY:
                i = h & mask
                while slots[i] != _EMPTY:
                    i = (i + 1) & mask
                slots[i] = h
