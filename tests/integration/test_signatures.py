"""Who said it, between real nodes: a member cannot write as another, through gossip or
the relay; a v1 writer's messages are kept and shown unverified; a node whose id came
before keys signs with the key added to its identity, pinned where it is first seen; lines
sent together are signed in a batch and verified one by one."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from felund.testing import Node, Relay, metric_value, signed_call, wait_for, wire_message
from felund.trust.identity import IdentityKey, is_derived_form
from felund.v1 import ids
from felund.v1.invite import decode_invite
from felund.v1.wire import open_message, parse_message
from tests.integration.native_member import send_frames

OLDER = "0123456789abcdef01234567"  # B's id, made before keys
FAST = {"FELUND_GOSSIP_ROUND_INTERVAL_S": "0.5", "FELUND_RELAY_POLL_INTERVAL_S": "0.5"}


def _identity(node: Node) -> tuple[str, IdentityKey]:
    data = json.loads((node.home / "identity.json").read_text())
    return data["node_id"], IdentityKey.from_seed(base64.b64decode(data["ed25519_seed"]))


def _circle(make_node: Callable[..., Node], **env: str) -> tuple[Node, Node, Node, str]:
    """A (a new node: derived id), B (an id from before keys) and C in one circle, A and C
    running; the circle's secret."""
    a, b, c = (make_node(n, **FAST, **env) for n in "abc")
    b.home.mkdir(parents=True)
    (b.home / "identity.json").write_text(json.dumps({"node_id": OLDER}) + "\n")
    for n, name in ((a, "a"), (b, "b"), (c, "c")):
        n.cli("init", "--bind", "127.0.0.1", "--name", name)
    code = a.cli("invite").stdout.strip()
    for n in (b, c):
        n.circle_id = n.cli("join", "--code", code).stdout.strip()
    a.circle_id = c.circle_id
    a.start()
    c.start()
    return a, b, c, decode_invite(code).secret


def _verified(node: Node) -> dict[str, bool]:
    """Text -> verified of the circle's messages at ``node``."""
    return {m["text"]: m["verified"] for m in node.json("inbox", "--circle-id", node.circle_id)}


def _shows(node: Node, want: dict[str, bool]) -> bool:
    return _verified(node) == want


def _shows_verified(node: Node, text: str) -> bool:
    return _verified(node).get(text) is True


def _refused(node: Node, source: str, count: int) -> bool:
    """Whether ``node`` counted ``count`` messages from ``source`` refused as key_mismatch."""
    text = node.metrics()
    return (
        metric_value(text, "felund_bad_input_total", source=source, kind="key_mismatch") or 0
    ) >= count


def test_a_member_cannot_write_as_another_over_gossip(make_node: Callable[..., Node]) -> None:
    a, b, c, secret = _circle(make_node)
    b_id, b_key = _identity(b)
    assert b_id == OLDER and not is_derived_form(OLDER)  # the older id kept, a key added
    a_id, _ = _identity(a)
    assert is_derived_form(a_id)
    stranger = IdentityKey.generate()
    frames: list[dict[str, Any]] = [
        {
            "t": "MSGS",
            "msgs": [
                wire_message(secret, OLDER, "b, signed", name="b", key=b_key),  # pins B's key
                wire_message(secret, a_id, "a, forged by b", name="a", key=b_key),
                wire_message(secret, OLDER, "b, by another key", name="b", key=stranger),
                wire_message(secret, "v1writer" + "0" * 16, "from a v1 writer", name="old"),
            ],
        }
    ]
    for node in (a, c):
        port = int(node.env["FELUND_GOSSIP_PORT"])
        asyncio.run(send_frames(port, secret, node.circle_id, OLDER, frames))
    a.cli("send", "--circle-id", a.circle_id, "a, really")
    want = {"b, signed": True, "from a v1 writer": False, "a, really": True}
    for node in (a, c):
        wait_for(partial(_shows, node, want), timeout=60, what="the good messages")
        wait_for(partial(_refused, node, "gossip", 1), timeout=60, what="the refusals counted")
        refused = [
            e
            for e in node.log_events()
            if e.get("event") == "peer.bad_message" and "key_mismatch" in str(e.get("detail"))
        ]
        assert refused and refused[0]["peer_node_id"] == OLDER, refused
        assert "2 key_mismatch" in refused[0]["detail"]
    texts = a.cli("inbox", "--circle-id", a.circle_id).stdout
    assert "<?old> from a v1 writer" in texts and "<b> b, signed" in texts
    assert "<a> a, really" in texts
    assert c.stop() == 0
    exported = [
        json.loads(line) for line in c.cli("export", "--circle-id", c.circle_id).stdout.splitlines()
    ]
    assert {r["text"]: r["verified"] for r in exported if r["channel_id"] == "general"} == want
    lines = c.cli("export", "--circle-id", c.circle_id, "--format", "txt").stdout
    assert "<?old> from a v1 writer" in lines and "<b> b, signed" in lines


def test_a_member_cannot_write_as_another_through_the_relay(
    make_node: Callable[..., Node], relay: Relay
) -> None:
    a, b, c, secret = _circle(make_node, FELUND_RELAY_URL=relay.url)
    b_id, b_key = _identity(b)
    b.start()  # B writes as itself, with its older id: A and C pin its key at first sight
    b.cli("send", "--circle-id", b.circle_id, "b, for real")
    for node in (a, c):
        wait_for(
            partial(_shows_verified, node, "b, for real"),
            timeout=60,
            what="B's own message, verified",
        )
    a_id, _ = _identity(a)
    body = {
        "circle_hint": ids.circle_hint(a.circle_id),
        "messages": [
            wire_message(secret, a_id, "a, forged by b", name="a", key=b_key),
            wire_message(secret, b_id, "b, by another key", key=IdentityKey.generate()),
            wire_message(secret, b_id, "b, again", name="b", key=b_key),
        ],
    }
    assert signed_call(relay, secret, "POST", "/messages", body)["stored"] == 3
    # The relay does not hand A what claims A's own id (it is A's to have sent): C has both.
    for node, forged in ((a, 1), (c, 2)):
        wait_for(
            partial(_shows_verified, node, "b, again"),
            timeout=60,
            what="the good message through the relay",
        )
        wait_for(partial(_refused, node, "relay", forged), timeout=60, what="the refusals counted")
        assert set(_verified(node)) == {"b, for real", "b, again"}
        assert any(
            e.get("event") == "relay.pull_rejected" and e.get("reasons") == ["key_mismatch"]
            for e in node.log_events()
        )


def test_lines_sent_together_are_signed_in_a_batch_each_verified(
    make_node: Callable[..., Node],
) -> None:
    a, b, c, secret = _circle(make_node)
    b.start()
    a.cli("send", "--circle-id", a.circle_id, "--stdin", stdin=b"one\ntwo\nthree\n")
    # B's older id: its key is pinned at first sight from a message of a batch.
    b.cli("send", "--circle-id", b.circle_id, "--stdin", stdin=b"b one\nb two\n")
    want = dict.fromkeys(("one", "two", "three", "b one", "b two"), True)
    for node in (a, b, c):
        wait_for(partial(_shows, node, want), timeout=60, what="both batches, verified")
    assert c.stop() == 0
    exported = [
        json.loads(line) for line in c.cli("export", "--circle-id", c.circle_id).stdout.splitlines()
    ]
    leaves = {
        r["text"]: open_message(secret, c.circle_id, parse_message(r["wire"])).signed
        for r in exported
        if r["channel_id"] == "general"
    }
    assert {t: s.leaf for t, s in leaves.items() if s is not None} == {
        "one": 0,
        "two": 1,
        "three": 2,
        "b one": 0,
        "b two": 1,
    }
