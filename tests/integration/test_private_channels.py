"""Private channels between real nodes on 127.0.0.1 (issue 16, second half).

A private channel's messages are sealed under its own key: a member of the circle who is
not a member of the channel stores and relays the ciphertext and reads nothing of it (its
database file holds no plaintext of it); approved into an invite channel it reads what is
written since, and joined to a key channel with the key it reads the channel's history;
a member who leaves reads nothing written after.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from felund.protocol import OP_SNAPSHOT
from felund.testing import Node
from tests.integration.test_channels import _channels, _wait, _with_v1
from tests.integration.test_epochs import _circle, _db_bytes
from tests.v1peer import V1Peer


@pytest.fixture
def v1() -> Iterator[V1Peer]:
    peer = V1Peer(secrets.token_hex(32))
    yield peer
    peer.stop()


def _texts(node: Node, circle: str, channel: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle, channel)}


def _sealed(node: Node, circle: str, channel: str) -> int:
    """How many rows of ``channel`` ``node`` holds sealed (relayed, shown nowhere)."""
    rows: list[dict[str, Any]] = node.call(OP_SNAPSHOT, {"circle_id": circle, "limit": 10_000})[
        "msgs"
    ]
    return sum(1 for r in rows if r["channel_id"] == channel and r.get("sealed"))


def _send(node: Node, circle: str, channel: str, text: str) -> None:
    node.cli("send", "--circle-id", circle, "--channel", channel, text)


def test_an_invite_channel_is_read_by_its_members_only(make_node) -> None:
    (a, b, c), circle, _ = _circle(make_node, "abc")
    b_id = b.status()["node_id"]
    said = a.cli("channel", "create", "ops", "--circle-id", circle, "--access", "invite").stderr
    assert "(private)" in said  # every member can read one: nobody asked
    listed = a.cli("channels", "--circle-id", circle).stdout.split()
    assert listed[listed.index("#ops") :][:3] == ["#ops", "invite", "private"]
    before = f"before b was approved {secrets.token_hex(8)}"
    _send(a, circle, "ops", before)
    for n in (b, c):  # a non-member holds the ciphertext, shows nothing of it
        _wait(functools.partial(lambda n: _sealed(n, circle, "ops") == 1, n), "sealed on b, c")
        assert _texts(n, circle, "ops") == set()
        assert before.encode() not in _db_bytes(n)
    assert before.encode() in _db_bytes(a)  # (what a file holds is read: a's holds it)

    a.cli("channel", "approve", "ops", "--circle-id", circle, "--node", "b")
    since = f"after b was approved {secrets.token_hex(8)}"
    _send(a, circle, "ops", since)
    _wait(lambda: since in _texts(b, circle, "ops"), "b to read what is written since")
    assert before not in _texts(b, circle, "ops")  # sealed under a channel epoch before b
    _send(b, circle, "ops", f"b in ops {secrets.token_hex(4)}")
    _wait(lambda: len(_texts(a, circle, "ops")) == 3, "b's message on a")
    _wait(lambda: _sealed(c, circle, "ops") == 3, "c to hold all three, sealed")
    assert _texts(c, circle, "ops") == set() and since.encode() not in _db_bytes(c)

    b.cli("channel", "leave", "ops", "--circle-id", circle)
    _wait(lambda: b_id not in _channels(a, circle)["ops"]["members"], "b's leave on a")
    after = f"after b left {secrets.token_hex(8)}"
    _send(a, circle, "ops", after)
    _wait(lambda: _sealed(b, circle, "ops") == 2, "b to hold a's next message sealed")
    assert after not in _texts(b, circle, "ops")
    assert after.encode() not in _db_bytes(b)


def test_a_key_channel_joined_later_opens_its_history(make_node) -> None:
    (a, b, c), circle, _ = _circle(make_node, "abc")
    key = secrets.token_hex(6)
    a.cli(
        "channel", "create", "den", "--circle-id", circle, "--access", "key", "--key", key,
        "--private",
    )  # fmt: skip
    texts = {f"in the den {i} {secrets.token_hex(8)}" for i in range(2)}
    for t in sorted(texts):
        _send(a, circle, "den", t)
    _wait(lambda: _sealed(b, circle, "den") == 2, "b to hold the den's messages sealed")
    assert not any(t.encode() in _db_bytes(b) for t in texts)

    b.cli("channel", "join", "den", "--circle-id", circle, "--key", key)
    assert _texts(b, circle, "den") == texts  # opened at once: the key opens the history
    mine = f"b in the den {secrets.token_hex(4)}"
    _send(b, circle, "den", mine)
    _wait(lambda: mine in _texts(a, circle, "den"), "b's message on a")
    _wait(lambda: _sealed(c, circle, "den") == 3, "c to hold the den's messages sealed")
    assert _texts(c, circle, "den") == set()
    assert not any(t.encode() in _db_bytes(c) for t in (*texts, mine))


def test_create_says_who_cannot_read_a_private_channel_and_asks(make_node, v1: V1Peer) -> None:
    node, circle, _ = _with_v1(make_node, v1)
    v1.post("hello from v1")  # a member seen, with no X25519 key: it cannot read one
    _wait(lambda: {m["text"] for m in node.inbox(circle)} == {"hello from v1"}, "v1's message")
    asked = node.cli(
        "channel", "create", "ops", "--circle-id", circle, "--access", "invite",
        stdin=b"", check=False,
    )  # fmt: skip
    assert asked.returncode == 2, asked
    assert "1 member(s) use a client that cannot read a private channel" in asked.stderr
    assert "give --private" in asked.stderr and "ops" not in _channels(node, circle)
    node.cli("channel", "create", "ops", "--circle-id", circle, "--access", "invite", "--shared")
    node.cli("channel", "create", "den", "--circle-id", circle, "--access", "invite", "--private")
    listed = _channels(node, circle)
    assert (listed["ops"]["private"], listed["den"]["private"]) == (False, True)
    both = node.cli(
        "channel", "create", "x", "--circle-id", circle, "--access", "invite", "--private",
        "--shared", check=False,
    )  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr
