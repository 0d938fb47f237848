"""The ICE servers (STUN, TURN) a relay's operator names for the browsers' calls.

- Served at ``GET /v1/ice`` as RTCPeerConnection's ``iceServers``; none by
  default: a relay never names an outside address by itself, and with none
  calls still connect on one network (host candidates).
- A URL is ``stun:``, ``stuns:``, ``turn:`` or ``turns:`` host[:port] (RFC 7064,
  7065), ``?transport=udp|tcp`` on TURN only. The one username and credential
  go with every TURN URL (browsers refuse a TURN entry without them) and never
  into a log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_ICE_URLS = 16
MAX_ICE_URL = 512  # characters
MAX_ICE_SECRET = 512  # characters of a username or credential

_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
_ICE_URL = re.compile(
    rf"(?P<scheme>stuns?|turns?):{_HOST}(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?P<query>\?transport=(?:udp|tcp))?"
)


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of ``iceServers``: its URLs, and for TURN the credentials."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""

    def as_json(self) -> dict[str, Any]:
        """The entry as RTCPeerConnection takes it."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username:
            entry["username"] = self.username
            entry["credential"] = self.credential
        return entry


def ice_url_problem(url: str) -> str:
    """What is wrong with a STUN or TURN URL, or "" when it is usable."""
    match = _ICE_URL.fullmatch(url) if len(url) <= MAX_ICE_URL else None
    if match is None:
        return (
            f"{url[:80]!r} is not an ICE server URL: stun:HOST[:PORT], stuns:, turn: or turns:"
            " HOST[:PORT][?transport=udp|tcp] (no //, no user name in it)"
        )
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        return f"{url[:80]!r}: the port must be 1 to 65535"
    if match["query"] and not match["scheme"].startswith("turn"):
        return f"{url[:80]!r}: ?transport= is for turn: and turns: URLs only"
    return ""


def ice_servers(urls: Sequence[str], username: str, credential: str) -> tuple[IceServer, ...]:
    """The operator's ICE servers: STUN URLs in one entry, TURN URLs with the credentials
    in another. Raises ValueError, with what is wrong, for a URL or credentials that
    cannot work."""
    if len(urls) > MAX_ICE_URLS:
        raise ValueError(f"at most {MAX_ICE_URLS} --ice-server URLs")
    for url in urls:
        if problem := ice_url_problem(url):
            raise ValueError(problem)
    stun = tuple(u for u in urls if u.startswith("stun"))
    turn = tuple(u for u in urls if u.startswith("turn"))
    if bool(username) != bool(credential):
        raise ValueError("--ice-username and --ice-credential go together")
    if max(len(username), len(credential)) > MAX_ICE_SECRET:
        raise ValueError(
            f"--ice-username and --ice-credential are at most {MAX_ICE_SECRET} characters"
        )
    if turn and not username:
        raise ValueError("a turn: or turns: URL needs --ice-username and --ice-credential")
    if username and not turn:
        raise ValueError("--ice-username and --ice-credential apply to turn: URLs: name one")
    servers = []
    if stun:
        servers.append(IceServer(stun))
    if turn:
        servers.append(IceServer(turn, username, credential))
    return tuple(servers)
