"""Epochs over gossip between real nodes on 127.0.0.1: re-keys made apart settle on one epoch
once the network heals, and a member that slept through re-keys catches up, each through a
catch-up session (control events only, under the newest epoch both hold)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from felund.protocol import OP_CIRCLE_KEYS, OP_PEERS_ADD, OP_WHO
from felund.testing import Node, Relay, wait_for

UNREACHABLE_HOST = "127.0.0.2"  # loopback, but nothing listens there
FAST = {
    "FELUND_GOSSIP_ROUND_INTERVAL_S": "0.5",
    "FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S": "1",
    "FELUND_SUPERVISOR_BACKOFF_INITIAL_S": "0.2",
}
WAIT_S = 90.0  # five or six nodes of ~5 processes each, on a shared machine


def _wait(check: Callable[[], Any], what: str) -> Any:
    return wait_for(check, timeout=WAIT_S, interval=0.2, what=what)


def _epochs(node: Node, circle: str) -> list[tuple[int, str]]:
    """(n, epoch id) of the epochs the node holds, newest winner first."""
    for c in node.call(OP_CIRCLE_KEYS)["circles"]:
        if c["circle_id"] == circle:
            return [(e["n"], e["id"]) for e in c["epochs"]]
    return []


def _people(node: Node, circle: str) -> dict[str, dict[str, Any]]:
    return {p["node_id"]: p for p in node.call(OP_WHO, {"circle_id": circle})["people"]}


def _knows(node: Node, circle: str, roles: dict[str, str]) -> bool:
    """Whether ``node`` knows every one of ``roles`` (node id -> role), and each can follow
    a re-key (its X25519 key announced)."""
    people = _people(node, circle)
    return all(
        i in people and people[i]["role"] == role and people[i]["can_follow"]
        for i, role in roles.items()
    )


def _add_peers(node: Node, circle: str, others: list[Node]) -> None:
    """Tell a node where others listen, as the user would (``felund join``'s address)."""
    peers = [{"circle_id": circle, "addr": _address(o), "node_id": ""} for o in others]
    node.call(OP_PEERS_ADD, {"peers": peers, "reached": True})


def _address(node: Node) -> str:
    return f"127.0.0.1:{node.env['FELUND_GOSSIP_PORT']}"


def _catch_up_sessions(node: Node, peers: list[Node] | None = None) -> int:
    """Catch-up sessions the node has logged (ended), with any peer or those it dialled."""
    dialled = None if peers is None else {_address(p) for p in peers}
    return sum(
        1
        for e in node.log_events()
        if e.get("event") == "gossip.session"
        and e.get("catch_up")
        and (dialled is None or e.get("peer") in dialled)
    )


def _texts(node: Node, circle: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle)}


def _has(node: Node, circle: str, text: str) -> bool:
    return text in _texts(node, circle)


def test_two_moderators_remove_two_members_apart_and_the_healed_circle_agrees(
    make_node: Callable[..., Node], relay: Relay
) -> None:
    """The circle forms through a relay only (every gossip address advertised is 127.0.0.2,
    which nothing listens at), so everyone learns everyone's keys and roles and no node
    meets another. The relay stops: two halves, each told only its own addresses. In one
    a moderator removes x, in the other a moderator removes y. Healed (the peers added),
    every member still in holds the same newest epoch, and it removes both."""
    nodes = {}
    for name in ("o", "m1", "x", "m2", "y"):
        n = make_node(
            name,
            FELUND_RELAY_URL=relay.url,
            FELUND_RELAY_POLL_INTERVAL_S="0.5",
            FELUND_RELAY_REGISTER_INTERVAL_S="2",
            FELUND_GOSSIP_ADVERTISE_HOST=UNREACHABLE_HOST,
            **FAST,
        )
        n.cli("init", "--bind", "127.0.0.1", "--name", name)
        nodes[name] = n
    o, m1, x, m2, y = nodes.values()
    code = o.cli("invite").stdout.strip()
    circle = ""
    for n in (m1, x, m2, y):
        circle = n.cli("join", "--code", code).stdout.strip()
    for n in nodes.values():
        n.start()
    ids = {name: n.status()["node_id"] for name, n in nodes.items()}
    o.cli("role", "moderator", ids["m1"], "--circle-id", circle)
    o.cli("role", "moderator", ids["m2"], "--circle-id", circle)
    roles = {ids["o"]: "owner", ids["m1"]: "moderator", ids["m2"]: "moderator"}
    roles |= {ids["x"]: "member", ids["y"]: "member"}
    for name, n in nodes.items():
        _wait(functools.partial(_knows, n, circle, roles), f"{name} to know everyone")

    relay.stop()  # the partition
    half_a, half_b = [o, m1, x], [m2, y]
    for half in (half_a, half_b):
        for n in half:
            _add_peers(n, circle, [p for p in half if p is not n])
    m1.cli("member", "remove", "x", "--circle-id", circle, "--yes")
    m2.cli("member", "remove", "y", "--circle-id", circle, "--yes")
    _wait(lambda: len(_epochs(o, circle)) == 2, "o to follow m1's re-key")
    a_epoch, b_epoch = _epochs(m1, circle)[0], _epochs(m2, circle)[0]
    assert _epochs(o, circle)[0] == a_epoch
    assert a_epoch != b_epoch and a_epoch[0] == b_epoch[0] == 1  # apart: two epochs 1
    assert _catch_up_sessions(o, half_b) == _catch_up_sessions(m2, half_a) == 0

    _add_peers(o, circle, half_b)  # the heal
    _add_peers(m2, circle, half_a)

    def agreed() -> bool:
        newest = {_epochs(n, circle)[0] for n in (o, m1, m2)}
        if len(newest) != 1:
            return False
        removed = {i for i, p in _people(o, circle).items() if p["removed"]}
        return removed == {ids["x"], ids["y"]}

    _wait(agreed, "o, m1 and m2 on one epoch that removes x and y")
    # One branch won epoch 1; the other's removal was covered again by a later epoch.
    assert _epochs(o, circle)[0][0] >= 2
    for member in (m1, m2):
        assert {i for i, p in _people(member, circle).items() if p["removed"]} == {
            ids["x"],
            ids["y"],
        }
    # The halves met through a catch-up session under the root (their newest differed).
    _wait(
        lambda: _catch_up_sessions(o, half_b) + _catch_up_sessions(m2, half_a) >= 1,
        "a catch-up session between the halves",
    )

    # What a member writes now reaches the others still in, and neither removed node.
    m2.cli("send", "--circle-id", circle, "after the heal")
    for member in (o, m1):
        _wait(functools.partial(_has, member, circle, "after the heal"), "the message")
    assert "after the heal" not in _texts(x, circle) | _texts(y, circle)


def test_a_member_offline_through_two_re_keys_catches_up_through_a_catch_up_session(
    make_node: Callable[..., Node],
) -> None:
    nodes = {}
    for name in ("a", "b", "c", "d"):
        n = make_node(name, **FAST)
        n.cli("init", "--bind", "127.0.0.1", "--name", name)
        nodes[name] = n
    a, b, c, d = nodes.values()
    code = a.cli("invite").stdout.strip()
    circle = ""
    for n in (b, c, d):
        circle = n.cli("join", "--code", code).stdout.strip()
    for n in nodes.values():
        n.start()
    roles = {n.status()["node_id"]: "member" for n in (b, c, d)}
    for name, n in nodes.items():
        _wait(functools.partial(_knows, n, circle, roles), f"{name} to know everyone")
    a.cli("send", "--circle-id", circle, "epoch 0")
    _wait(lambda: "epoch 0" in _texts(b, circle), "the first message on b")
    assert _catch_up_sessions(b) == 0
    b.stop()
    a.cli("member", "remove", "c", "--circle-id", circle, "--yes")
    a.cli("send", "--circle-id", circle, "epoch 1")
    a.cli("member", "remove", "d", "--circle-id", circle, "--yes")
    a.cli("send", "--circle-id", circle, "epoch 2")
    newest = _epochs(a, circle)
    assert [n for n, _ in newest] == [2, 1, 0]

    b.start()
    _wait(lambda: _epochs(b, circle) == newest, "b on a's epoch 2")
    _wait(lambda: {"epoch 0", "epoch 1", "epoch 2"} <= _texts(b, circle), "b to read it all")
    # b met the others holding the root only: its first sessions were catch-up ones.
    _wait(lambda: _catch_up_sessions(b) >= 1, "b's catch-up session")
