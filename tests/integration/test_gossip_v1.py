"""Our node and a v1 peer written from the spec (tests/v1peer.py) sync both ways."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from felund.testing import Node, metric_value, wait_for
from felund.v1.invite import encode_invite
from tests.v1peer import V1Peer


def _texts(node: Node, circle_id: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle_id)}


@pytest.fixture
def peers() -> Iterator[list[V1Peer]]:
    made: list[V1Peer] = []
    yield made
    for p in made:
        p.stop()


def _node(make_node: Callable[..., Node], code: str, **env: str) -> tuple[Node, str]:
    node = make_node("node", FELUND_GOSSIP_ROUND_INTERVAL_S="0.5", **env)
    node.cli("init", "--bind", "127.0.0.1", "--name", "ours")
    circle = node.cli("join", "--code", code).stdout.strip()
    node.start()
    return node, circle


@pytest.mark.parametrize(("session_enc", "message_enc"), [(True, False), (False, True)])
def test_node_dials_a_v1_peer(make_node, peers, session_enc: bool, message_enc: bool) -> None:
    v1 = V1Peer(secrets.token_hex(32), encrypt_session=session_enc, encrypt_messages=message_enc)
    peers.append(v1)
    port = v1.start_server()
    v1.post("from the v1 peer")
    node, circle = _node(make_node, encode_invite(v1.secret.hex(), f"127.0.0.1:{port}"))
    assert circle == v1.circle_id
    wait_for(lambda: "from the v1 peer" in _texts(node, circle), what="the v1 message")
    node.cli("send", "--circle-id", circle, "from our node")
    wait_for(lambda: "from our node" in v1.texts(), what="our message on the v1 peer")
    assert not v1.dropped, v1.dropped  # every message we sent passed its checks
    assert metric_value(node.metrics(), "felund_gossip_sessions_total", protocol="v1", outcome="ok")


def test_v1_peer_dials_our_node(make_node, peers) -> None:
    secret = secrets.token_hex(32)
    node, circle = _node(make_node, encode_invite(secret, ""))
    node.cli("send", "--circle-id", circle, "waiting on our node")
    v1 = V1Peer(secret)
    peers.append(v1)
    v1.post("brought by the v1 client")
    result = v1.sync_with("127.0.0.1", int(node.env["FELUND_GOSSIP_PORT"]))
    assert result.ok, result.error
    assert "waiting on our node" in v1.texts()
    wait_for(
        lambda: "brought by the v1 client" in _texts(node, circle), what="the v1 client's message"
    )
    # Our node learned the v1 peer as (observed ip, advertised port) — here none advertised.
    assert result.encrypted


def test_a_message_from_a_v1_client_is_pushed_on_to_native_peers(make_node, peers) -> None:
    """B takes a message from a v1 client (which has no listening port, so only B has it)
    and pushes it to C at once: C dials only at start and reconciles once an hour."""
    slow = {
        "FELUND_GOSSIP_ROUND_INTERVAL_S": "3600",
        "FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S": "3600",
    }
    secret = secrets.token_hex(32)
    b, circle = _node(make_node, encode_invite(secret, ""))
    c = make_node("c", **slow)
    c.cli("init", "--bind", "127.0.0.1", "--name", "c")
    c.cli("join", "--code", b.cli("invite", "--circle-id", circle).stdout.strip())
    c.start()
    b.cli("send", "--circle-id", circle, "before")
    wait_for(lambda: "before" in _texts(c, circle), what="c's session with b")
    # B holds "before" and both nodes' key announcements: each goes to the v1 client.
    wait_for(lambda: b.status()["messages"] == 3, what="c's key announcement at b")
    sent = metric_value(b.metrics(), "felund_gossip_messages_total", direction="out") or 0
    v1 = V1Peer(secret)
    peers.append(v1)
    v1.post("from the v1 client")
    result = v1.sync_with("127.0.0.1", int(b.env["FELUND_GOSSIP_PORT"]))
    assert result.ok, result.error
    wait_for(lambda: "from the v1 client" in _texts(c, circle), timeout=10, what="the push to c")
    # B's three to the v1 client, and the push to c: not back to the client it came from.
    assert metric_value(b.metrics(), "felund_gossip_messages_total", direction="out") == sent + 4


def test_v1_history_arrives_newest_first_in_fitting_frames(make_node, peers) -> None:
    v1 = V1Peer(secrets.token_hex(32))
    peers.append(v1)
    port = v1.start_server()
    node, circle = _node(make_node, encode_invite(v1.secret.hex(), f"127.0.0.1:{port}"))
    lines = [f"history line {i:04d} " + "x" * 60 for i in range(1500)]
    node.cli("send", "--circle-id", circle, "--stdin", stdin="\n".join(lines).encode())
    # A v1 peer caps frames at 16 KB: it gets the newest first, a frame at a time.
    wait_for(lambda: len(v1.texts()) >= 100, timeout=30, what="history on the v1 peer")
    assert not v1.dropped, v1.dropped
    assert all(s.ok for s in v1.server_sessions), [s.error for s in v1.server_sessions]
    assert max(len(m["text"]) for m in v1.messages()) < 100
