"""A circle's epoch secrets as the transports see them (the store's circles answer), sans-IO.

The store answers ``store.circle.keys`` with, per circle, ``secret`` (the
newest winning epoch's: what transports use) and ``epochs``: every epoch
secret it holds, ``{"id", "n", "secret"}``, newest winner first, the root
(id ``""``, n 0) last when held. A store that predates epochs answers only
``secret``: that is the root. Gossip offers and picks epochs from this
(``felund.gossip.handshake``); relay-sync signs with the newest and proves
the succession with the one before (``felund.relay.presence``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

ROOT: Final = ""  # the root epoch's id: the invite's secret, epoch 0
MAX_OFFERED: Final = 8  # epoch ids a native HELLO carries
_EPOCH_ID = re.compile(r"[0-9a-f]{32}")


def is_epoch_id(value: object) -> bool:
    """Whether ``value`` is an epoch id as the wire carries it: "" (root) or 32 hex."""
    return isinstance(value, str) and (value == ROOT or _EPOCH_ID.fullmatch(value) is not None)


@dataclass(frozen=True, slots=True)
class CircleKeys:
    """The epoch secrets of one circle that this node holds: (epoch id, secret hex),
    newest winner first."""

    circle_id: str
    held: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> CircleKeys:
        """One circle of the store's answer (the store is ours: its answer is trusted)."""
        circle_id, newest = item["circle_id"], item["secret"]
        epochs = item.get("epochs") or [{"id": ROOT, "n": 0, "secret": newest}]
        held = tuple((e["id"], e["secret"]) for e in epochs)
        return cls(circle_id, held)

    @property
    def newest(self) -> str:
        """The id of the newest epoch held (the one this node writes under)."""
        return self.held[0][0]

    @property
    def secret(self) -> str:
        """The newest epoch's secret."""
        return self.held[0][1]

    @property
    def previous(self) -> str | None:
        """The secret of the epoch before the newest, if held (relay succession's proof)."""
        return self.held[1][1] if len(self.held) > 1 else None

    @property
    def rekeyed(self) -> bool:
        """Whether the circle has moved past its root epoch (v1 peers cannot follow)."""
        return self.newest != ROOT

    def secret_of(self, epoch_id: str) -> str | None:
        """The secret of an epoch, if held."""
        return next((s for e, s in self.held if e == epoch_id), None)

    def offer(self) -> list[str]:
        """The epoch ids a HELLO offers: the newest ``MAX_OFFERED`` held."""
        return [e for e, _ in self.held[:MAX_OFFERED]]

    def choose(self, offered: list[str]) -> str | None:
        """The first of a peer's ``offered`` epochs that this node holds, if any."""
        return next((e for e in offered if self.secret_of(e) is not None), None)


def circle_keys(answer: Mapping[str, Any]) -> dict[str, CircleKeys]:
    """The store's circles answer, by circle id."""
    return {c["circle_id"]: CircleKeys.of(c) for c in answer["circles"]}


def root_only(circle_id: str, secret: str) -> CircleKeys:
    """The keys of a circle that has only its root epoch (tests, tools)."""
    return CircleKeys(circle_id, ((ROOT, secret),))
