"""Removing a member for real, between real nodes on 127.0.0.1 (issue 16).

The owner removes a member: the circle moves to a new epoch whose secret every other
member unwraps; what is written after reaches them and not the removed one (its node
holds at most the ciphertext: its database file has no plaintext of it); what it writes
is refused; history stays readable; its old invite code lets a newcomer read nothing new.
A member whose node was stopped through two re-keys catches up when it starts again.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from felund.protocol import OP_APPEND, OP_CIRCLE_KEYS, OP_WHO
from felund.store.database import DB_SUFFIXES
from felund.testing import Node
from felund.trust.identity import IdentityKey, unb64
from felund.v1 import ids
from felund.v1.invite import decode_invite
from felund.v1.wire import compose_message, to_wire
from tests.integration.test_channels import _join, _refused, _started, _wait


def _texts(node: Node, circle: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle)}


def _has(node: Node, circle: str, texts: set[str]) -> bool:
    return texts <= _texts(node, circle)


def _epochs(node: Node, circle: str) -> list[int]:
    for c in node.call(OP_CIRCLE_KEYS)["circles"]:
        if c["circle_id"] == circle:
            return [e["n"] for e in c["epochs"]]
    return []


def _people(node: Node, circle: str) -> dict[str, dict[str, Any]]:
    return {p["node_id"]: p for p in node.call(OP_WHO, {"circle_id": circle})["people"]}


def _all_follow(node: Node, circle: str, ids_: list[str]) -> bool:
    people = _people(node, circle)
    return all(i in people and people[i]["can_follow"] for i in ids_)


def _db_bytes(node: Node) -> bytes:
    """The bytes of a node's database file and its companions, as the disk holds them."""
    path = node.home / "felund.db"
    return b"".join(
        Path(f"{path}{s}").read_bytes() for s in DB_SUFFIXES if Path(f"{path}{s}").exists()
    )


def _key(node: Node) -> IdentityKey:
    seed = unb64(json.loads((node.home / "identity.json").read_text())["ed25519_seed"], 32)
    assert seed is not None
    return IdentityKey.from_seed(seed)


def _signed_by(node: Node, secret: str, circle: str, text: str) -> dict[str, Any]:
    """A message signed with ``node``'s own key under ``secret``: what its node would write
    if it did not know it was removed."""
    key, now = _key(node), int(time.time())
    return to_wire(
        compose_message(
            secret,
            circle_id=circle,
            channel_id="general",
            author_node_id=key.node_id,
            display_name="c",
            text=text,
            created_ts=now,
            msg_id=ids.new_msg_id(key.node_id, now),
            encrypt=True,
            key=key,
        )
    )


def _refused_or_caught_up(node: Node, circle: str, removed: str) -> bool:
    refused = any(e.get("event") == "peer.refused" for e in node.log_events())
    return refused or bool(_people(node, circle).get(removed, {}).get("removed"))


def _circle(make_node: Callable[..., Node], names: str) -> tuple[list[Node], str, str]:
    nodes = [_started(make_node, n) for n in names]
    code = nodes[0].cli("invite").stdout.strip()
    circle = ""
    for n in nodes[1:]:
        circle = _join(n, code)
    for n in nodes:
        n.start()
    everyone = [n.status()["node_id"] for n in nodes]
    for n in nodes:
        # Every member's X25519 key is known everywhere: a re-key wraps to each.
        _wait(functools.partial(_all_follow, n, circle, everyone), f"keys on {n.home.name}")
    return nodes, circle, code


def test_a_removed_member_reads_and_writes_nothing_new(make_node) -> None:
    (a, b, c), circle, code = _circle(make_node, "abc")
    c_id = c.status()["node_id"]
    old = {f"before the removal, from {n.home.name}" for n in (a, b, c)}
    for n in (a, b, c):
        n.cli("send", "--circle-id", circle, f"before the removal, from {n.home.name}")
    for n in (a, b, c):
        _wait(functools.partial(_has, n, circle, old), f"the old messages on {n.home.name}")

    # A plain member may not remove; without a terminal nor --yes nobody is removed.
    _refused(
        b, "member", "remove", "c", "--circle-id", circle, "--yes",
        says="only the circle's owner (a) or a moderator can remove a member",
    )  # fmt: skip
    asked = a.cli("member", "remove", "c", "--circle-id", circle, stdin=b"", check=False)
    assert asked.returncode == 2 and "give --yes" in asked.stderr, asked.stderr
    assert "this removes c" in asked.stderr  # what it would have done, said first
    _refused(a, "member", "remove", "nobody", "--circle-id", circle, "--yes", says="no one")
    assert _epochs(a, circle) == [0]
    said = a.cli("member", "remove", "c", "--circle-id", circle, "--yes").stderr
    assert "this removes c" in said and "removed c" in said
    _wait(lambda: _epochs(b, circle) == [1, 0], "b on epoch 1")

    text = f"after the removal {secrets.token_hex(8)}"
    a.cli("send", "--circle-id", circle, text)
    _wait(lambda: text in _texts(b, circle), "a's new message on b")
    # C's node hears of the re-key (the EPOCH_EVT is sealed under the root it holds): its
    # link to the others is live, and it knows itself removed.
    _wait(lambda: _people(c, circle)[c_id]["removed"], "c to read its removal")
    assert _epochs(c, circle) == [0]
    assert text not in _texts(c, circle)
    assert text.encode() not in _db_bytes(c)
    assert text.encode() in _db_bytes(a)  # (what a file holds is read: a's holds it)

    # C's node writes nothing more; what it would have written, A and B refuse.
    _refused(c, "send", "--circle-id", circle, "still here", says="you were removed")
    root = decode_invite(code).secret
    forged = _signed_by(c, root, circle, "still here, by hand")
    for n in (a, b):
        verdict = n.call(OP_APPEND, {"origin": "gossip", "msgs": [forged]})["results"]
        assert verdict == ["rejected:removed"], n.home.name
    for n in (a, b):
        assert old | {text} <= _texts(n, circle), n.home.name

    # C's old code: a new node D joins with it, and reads nothing of the new epoch. Its
    # gossip reaches A and is refused (A's gossip is under epoch 1 now; with epoch
    # negotiation, a catch-up of control events only: then D reads the re-key).
    d = _started(make_node, "d")
    _join(d, code)
    d.start()
    later = f"later still {secrets.token_hex(8)}"
    a.cli("send", "--circle-id", circle, later)
    _wait(lambda: later in _texts(b, circle), "the later message on b")
    _wait(lambda: _refused_or_caught_up(d, circle, c_id), "d's gossip to reach a")
    assert not ({text, later} & _texts(d, circle))
    assert text.encode() not in _db_bytes(d) and later.encode() not in _db_bytes(d)
    assert _epochs(d, circle) == [0]


def test_a_member_offline_through_two_rekeys_catches_up(make_node) -> None:
    (a, b, _, _), circle, _ = _circle(make_node, "abcd")
    a.cli("send", "--circle-id", circle, "epoch 0")
    _wait(lambda: "epoch 0" in _texts(b, circle), "the first message on b")
    b.stop()
    a.cli("member", "remove", "c", "--circle-id", circle, "--yes")
    a.cli("send", "--circle-id", circle, "epoch 1")
    a.cli("member", "remove", "d", "--circle-id", circle, "--yes")
    a.cli("send", "--circle-id", circle, "epoch 2")
    b.start()
    _wait(lambda: _epochs(b, circle) == [2, 1, 0], "b on epoch 2")
    _wait(lambda: {"epoch 0", "epoch 1", "epoch 2"} <= _texts(b, circle), "b to read it all")
