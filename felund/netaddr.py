"""The address other members should use to reach this node.

Taken from the config when it says (``gossip.advertise_host``, or a bind
address that is not a wildcard); otherwise read from the machine's own
interfaces. Never learned by sending packets anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import struct
from typing import TYPE_CHECKING

from felund import lazy
from felund.config import GossipConfig

if TYPE_CHECKING:
    import socket
else:  # only reading the interfaces needs it, never a command's start (``felund.lazy``)
    socket = lazy.module("socket")

_SIOCGIFADDR = 0x8915
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - names of the wildcard, not a bind


def invite_peer(cfg: GossipConfig) -> str:
    """``host:port`` for invite codes."""
    host = cfg.advertise_host or ("" if cfg.bind in _WILDCARDS else cfg.bind)
    if not host:
        host = first_interface_ipv4() or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{cfg.port}"


def interface_ipv4s() -> list[str]:
    """IPv4 addresses of this machine's interfaces (Linux ioctl), loopback last."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(answer[20:24]))
    return sorted(found, key=lambda a: ipaddress.ip_address(a).is_loopback)


def first_interface_ipv4() -> str | None:
    """The first non-loopback IPv4 address, if the machine has one."""
    for addr in interface_ipv4s():
        if not ipaddress.ip_address(addr).is_loopback:
            return addr
    return None


def reach_note(peer: str) -> str:
    """One sentence for `felund invite`: which address the code names, and who can reach it."""
    host, _, port = peer.rpartition(":")
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"the code names {peer}"  # a name the user configured: theirs to keep right
    fix = "set gossip.advertise_host (or FELUND_GOSSIP_ADVERTISE_HOST) to"
    if addr.is_loopback or addr.is_unspecified:
        return (
            f"the code names {peer}, reachable from this machine only: {fix} an address "
            "others reach"
        )
    if addr.is_private or addr.is_link_local:
        return (
            f"the code names {peer}, a private address: members on this network reach it; for "
            f"members elsewhere, {fix} this home's public name or address and forward TCP port "
            f"{port} to this machine"
        )
    return f"the code names {peer}"
