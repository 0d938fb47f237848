"""Whose address a request is: the peer's, or behind a trusted proxy, the one it names."""

from __future__ import annotations

import ipaddress

import pytest

from felund.relay.server.recent import Recent
from felund.relay.server.state import named_client


def _address(peer: str, proxies: tuple[str, ...], headers: dict[str, str]) -> str:
    return named_client(peer, headers, tuple(ipaddress.ip_network(p) for p in proxies))


XFF = "X-Forwarded-For"


@pytest.mark.parametrize(
    ("peer", "proxies", "headers", "client"),
    [
        # No proxy trusted: the headers are anyone's to write.
        ("127.0.0.1", (), {"X-Real-IP": "203.0.113.1", XFF: "203.0.113.2"}, "127.0.0.1"),
        ("198.51.100.7", ("127.0.0.1/32",), {"X-Real-IP": "203.0.113.1"}, "198.51.100.7"),
        # A trusted proxy: its X-Real-IP, else the last hop that is not a proxy of ours.
        ("127.0.0.1", ("127.0.0.1/32",), {"X-Real-IP": "203.0.113.1"}, "203.0.113.1"),
        ("127.0.0.1", ("127.0.0.0/8",), {XFF: "192.0.2.9, 203.0.113.2, 127.0.0.5"}, "203.0.113.2"),
        ("10.0.0.2", ("10.0.0.0/24",), {XFF: "2001:db8::1"}, "2001:db8::1"),
        ("::ffff:10.0.0.2", ("10.0.0.0/24",), {"X-Real-IP": "192.0.2.3"}, "192.0.2.3"),
        # What is not an address names nobody: the peer it is.
        ("127.0.0.1", ("127.0.0.1/32",), {"X-Real-IP": "nope"}, "127.0.0.1"),
        ("127.0.0.1", ("127.0.0.1/32",), {XFF: "192.0.2.9, junk"}, "127.0.0.1"),
        ("127.0.0.1", ("127.0.0.0/8",), {XFF: "127.0.0.2"}, "127.0.0.1"),
    ],
)
def test_client_address(
    peer: str, proxies: tuple[str, ...], headers: dict[str, str], client: str
) -> None:
    assert _address(peer, proxies, headers) == client


def test_recent_values_expire_together_and_are_forgotten_per_circle() -> None:
    recent: Recent[str, int] = Recent(ttl_s=1.0, size=2)
    recent.put("c1", "a", 1, now=0.0)
    recent.put("c1", "b", 2, now=0.5)
    assert (recent.get("c1", "a", 0.9), recent.get("c1", "b", 0.9)) == (1, 2)
    assert recent.get("c1", "b", 1.1) is None  # the circle's values expire with its first
    recent.put("c2", "a", 3, now=2.0)
    recent.forget("c2")
    assert recent.get("c2", "a", 2.0) is None
    recent.put("c2", "a", 3, now=2.0)
    recent.put("c3", "a", 4, now=2.0)
    recent.put("c4", "a", 5, now=2.0)
    assert recent.get("c2", "a", 2.0) is None  # bounded: the least recently kept went
