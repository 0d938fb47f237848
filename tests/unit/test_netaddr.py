"""What `felund invite` says of the address its code names."""

from __future__ import annotations

import pytest

from felund.netaddr import reach_note


@pytest.mark.parametrize(
    ("peer", "says"),
    [
        ("127.0.0.1:9999", "reachable from this machine only"),
        ("[::1]:9999", "reachable from this machine only"),
        ("192.168.1.20:9999", "a private address"),
        ("10.0.0.7:4000", "forward TCP port 4000"),
        ("[fd00::1]:9999", "a private address"),
    ],
)
def test_a_local_address_says_how_to_be_reached_from_outside(peer: str, says: str) -> None:
    note = reach_note(peer)
    assert note.startswith(f"the code names {peer}")
    assert says in note and "gossip.advertise_host" in note


# Strings only: nothing is dialled.
@pytest.mark.parametrize("peer", ["1.2.3.4:9999", "home.example.org:9999"])
def test_a_public_address_or_a_name_is_only_named(peer: str) -> None:
    assert reach_note(peer) == f"the code names {peer}"
