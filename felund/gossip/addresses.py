"""Which peer addresses gossip may dial: what could be a felund peer, not whatever a member names.

Sans-IO. An address a member told us about (a PEERS frame, an inbound
peer's advertised port, the relay) is dialled only if it is an IP literal
of a unicast class a peer can have, on a port above the well-known
services. An address the user gave (an invite code, the config) may also
be a name, resolved when dialled, or a low port. Link-local, multicast,
broadcast, unspecified, reserved and cloud metadata addresses are never
dialled: no felund peer lives there, and a member must not make the node
knock on them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from felund.v1.invite import is_tcp_peer

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MIN_LEARNED_PORT = 1024  # below: ssh, dns, http and the like
# Cloud metadata services outside the link-local ranges (which are refused whole).
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "fd00:ec2::23")
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A ``host:port`` taken apart."""

    host: str  # an IPv6 literal without its brackets
    port: int
    ip: IP | None  # None: a name

    @property
    def text(self) -> str:
        """The address as stored and sent (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse(addr: str) -> PeerAddress | None:
    """``addr`` taken apart, or None if it is not a ``host:port``."""
    if not is_tcp_peer(addr):
        return None
    host, _, port = addr.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip: IP | None = ipaddress.ip_address(bare)
    except ValueError:
        if bare != host:
            return None  # in brackets, yet no IPv6 address
        ip = None
    return PeerAddress(bare, int(port), ip)


def refusal(addr: str, configured: bool) -> str | None:
    """Why ``addr`` must not be dialled, or None if it may be. ``configured``: the user
    gave it (invite code, config); otherwise a member did."""
    parsed = parse(addr)
    if parsed is None:
        return "malformed"
    if parsed.ip is None:
        return None if configured else "name"
    problem = ip_refusal(parsed.ip)
    if problem is not None:
        return problem
    if parsed.port < MIN_LEARNED_PORT and not configured:
        return "service_port"
    return None


def ip_refusal(ip: IP) -> str | None:
    """Why no felund peer can be at ``ip``, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None  # this machine: other nodes on it, and every test
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if ip.is_link_local:
        return "link_local"
    if ip in _METADATA:
        return "metadata"
    if ip.is_reserved:
        return "reserved"
    return None
