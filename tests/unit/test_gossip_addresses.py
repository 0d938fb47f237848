"""Which addresses gossip may dial: a member's word gets a felund peer's addresses only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felund.gossip import addresses


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        # What a member sent in the attack, each refused for what it is.
        ("169.254.169.254:80", "link_local"),
        ("169.254.169.254:9999", "link_local"),
        ("[fd00:ec2::254]:9999", "metadata"),
        ("100.100.100.200:9999", "metadata"),
        ("8.8.8.8:53", "service_port"),
        ("192.168.1.1:80", "service_port"),
        ("224.0.0.1:9999", "multicast"),
        ("[ff02::1]:9999", "multicast"),
        ("255.255.255.255:9999", "broadcast"),
        ("0.0.0.0:22", "unspecified"),
        ("0.1.2.3:9999", "unspecified"),
        ("[::]:9999", "unspecified"),
        ("127.0.0.1:22", "service_port"),
        ("240.0.0.1:9999", "reserved"),
        ("[fe80::1]:9999", "link_local"),
        ("[::ffff:169.254.169.254]:9999", "link_local"),
        ("evil.example:9999", "name"),
        ("localhost:9999", "name"),
        ("10.0.0.1", "malformed"),
        ("10.0.0.1:0", "malformed"),
        ("10.0.0.1:65536", "malformed"),
        ("[not-an-ip]:9999", "malformed"),
        ("a b:9999", "malformed"),
    ],
)
def test_what_a_member_names_that_is_refused(addr: str, why: str) -> None:
    assert addresses.refusal(addr, configured=False) == why


@pytest.mark.parametrize(
    "addr",
    ["10.1.2.3:9999", "192.168.1.1:9999", "127.0.0.1:9999", "127.0.0.2:40000", "[::1]:9999",
     "203.0.113.7:1024", "[2001:db8::1]:9999", "8.8.8.8:9999"],
)  # fmt: skip
def test_what_could_be_a_felund_peer(addr: str) -> None:
    assert addresses.refusal(addr, configured=False) is None


def test_what_the_user_gave_may_be_a_name_or_a_low_port_never_a_bad_class() -> None:
    assert addresses.refusal("chat.example.org:443", configured=True) is None
    assert addresses.refusal("127.0.0.1:22", configured=True) is None
    assert addresses.refusal("169.254.169.254:80", configured=True) == "link_local"
    assert addresses.refusal("224.0.0.1:9999", configured=True) == "multicast"


def test_addresses_come_apart_and_back() -> None:
    v6 = addresses.parse("[2001:db8::1]:9999")
    assert v6 is not None and (v6.host, v6.port, v6.text) == (
        "2001:db8::1",
        9999,
        "[2001:db8::1]:9999",
    )
    name = addresses.parse("chat.example.org:443")
    assert name is not None and name.ip is None


@given(st.text(max_size=80))
def test_refusal_takes_any_text(text: str) -> None:
    assert addresses.refusal(text, configured=False) in (
        None, "malformed", "name", "service_port", "unspecified", "multicast", "broadcast",
        "link_local", "metadata", "reserved",
    )  # fmt: skip
