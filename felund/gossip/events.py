"""What a gossip session's state machine asks of its caller (v1 round and native session alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MsgsReceived:
    """Messages the peer sent: to be checked and stored, then reported back (``stored``)."""

    msgs: list[Any]


@dataclass(frozen=True, slots=True)
class PeersReceived:
    """Addresses the peer says members of the circle have (well-formed entries only)."""

    peers: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MsgsWanted:
    """Ids the peer lacks and this side holds: fetch them and send them (``send_msgs``)."""

    msg_ids: list[str]


Event = MsgsReceived | PeersReceived | MsgsWanted
