"""The operator's ICE servers (felund.relay.server.ice): which URLs pass, how they are served."""

from __future__ import annotations

import pytest

from felund.relay.server.ice import MAX_ICE_URLS, IceServer, ice_servers, ice_url_problem


@pytest.mark.parametrize(
    "url",
    [
        "stun:stun.example.org",
        "stun:192.0.2.1:3478",
        "stuns:stun.example.org:5349",
        "stun:[2001:db8::1]:3478",
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
    ],
)
def test_ice_urls_that_pass(url: str) -> None:
    assert ice_url_problem(url) == ""


@pytest.mark.parametrize(
    "url",
    [
        "",
        "stun:",
        "http://stun.example.org",
        "stun://stun.example.org",
        "turn:user@turn.example.org",
        "stun:stun.example.org:0",
        "stun:stun.example.org:70000",
        "stun:stun.example.org?transport=udp",
        "turn:turn.example.org?transport=sctp",
        "stun:stun.example.org/path",
        "stun:stun example.org",
        "stun:" + "a" * 600,
    ],
)
def test_ice_urls_that_are_refused(url: str) -> None:
    assert ice_url_problem(url)


def test_stun_in_one_entry_turn_with_its_credentials_in_another() -> None:
    servers = ice_servers(["stun:a.example", "turn:b.example", "stun:c.example"], "u", "c")
    assert [s.as_json() for s in servers] == [
        {"urls": ["stun:a.example", "stun:c.example"]},
        {"urls": ["turn:b.example"], "username": "u", "credential": "c"},
    ]
    assert ice_servers([], "", "") == ()
    assert ice_servers(["stun:a.example"], "", "") == (IceServer(("stun:a.example",)),)


@pytest.mark.parametrize(
    ("urls", "username", "credential"),
    [
        (["turn:b.example"], "", ""),  # browsers refuse TURN without credentials
        (["turn:b.example"], "u", ""),
        ([], "u", "c"),  # credentials with no TURN URL to go with
        (["stun:a.example"] * (MAX_ICE_URLS + 1), "", ""),
        (["ftp:a.example"], "", ""),
    ],
)
def test_ice_servers_that_cannot_work_are_refused(
    urls: list[str], username: str, credential: str
) -> None:
    with pytest.raises(ValueError, match=r".+"):
        ice_servers(urls, username, credential)
