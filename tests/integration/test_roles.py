"""Owners and moderators between real nodes on 127.0.0.1 (issue 15).

The circle's creator owns it; it names moderators; only the channel's
creator, the owner or a moderator approves into an invite channel. A member's
own node refuses what its role does not allow, with a sentence that says who
can; an approval written by hand past that refusal, signed with the member's
own key, reaches every node and changes nothing on any.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

from felund.protocol import CONTROL_CHANNEL, OP_APPEND
from felund.testing import Node, metric_value
from felund.trust.identity import IdentityKey, fingerprint, unb64
from felund.v1 import events, ids
from felund.v1.chatmodel import event_text
from felund.v1.invite import decode_invite
from felund.v1.wire import compose_message, to_wire
from tests.integration.test_channels import _channels, _join, _refused, _started, _wait

D = "d4" * 12  # someone no node knows
# An event handed to a store by hand is pushed on by no gossip (none received it): the
# nodes' anti-entropy spreads it, every second here (at the default 30 s, a wait of 30 s
# for it was a race).
SPREAD = {"FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S": "1"}


def _key(node: Node) -> IdentityKey:
    seed = json.loads((node.home / "identity.json").read_text())["ed25519_seed"]
    raw = unb64(seed, 32)
    assert raw is not None
    return IdentityKey.from_seed(raw)


def _members(node: Node, circle: str) -> dict[str, dict[str, Any]]:
    return {p["node_id"]: p for p in node.json("members", "--circle-id", circle)}


def _roles(node: Node, circle: str) -> dict[str, str]:
    return {n: p["role"] for n, p in _members(node, circle).items()}


def _vip(node: Node, circle: str) -> list[str]:
    return list(_channels(node, circle)["vip"]["members"])


def _control_ids(node: Node, circle: str) -> set[str]:
    return {m["msg_id"] for m in node.inbox(circle, CONTROL_CHANNEL)}


def _by_hand(to: Node, secret: str, circle: str, key: IdentityKey, event: dict[str, Any]) -> str:
    """A control event signed with ``key``, handed to ``to``'s store as gossip brings one:
    what a member's node would write if it did not refuse it first."""
    now = int(time.time())
    msg = compose_message(
        secret,
        circle_id=circle,
        channel_id=CONTROL_CHANNEL,
        author_node_id=key.node_id,
        display_name="",
        text=event_text(events.dated(event, now)),
        created_ts=now,
        msg_id=ids.new_msg_id(key.node_id, now),
        encrypt=True,
        key=key,
    )
    assert to.call(OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]})["results"] == ["stored"]
    return msg.msg_id


def _everywhere(nodes: tuple[Node, ...], check: Callable[[Node], Any], what: str) -> None:
    for n in nodes:
        _wait(functools.partial(check, n), f"{what} on {n.home.name}")


def _not_allowed(node: Node) -> float:
    text = node.metrics()
    return metric_value(text, "felund_bad_input_total", source="control", kind="not_allowed") or 0


def test_a_moderator_approves_a_member_does_not_and_a_demoted_one_no_longer(make_node) -> None:
    a, b, c = (_started(make_node, n, **SPREAD) for n in "abc")
    code = a.cli("invite").stdout.strip()
    secret = decode_invite(code).secret
    circle = _join(b, code)
    _join(c, code)
    for n in (a, b, c):
        n.start()
    nodes = (a, b, c)
    a_id, b_id, c_id = (n.status()["node_id"] for n in nodes)
    a.cli("channel", "create", "vip", "--circle-id", circle, "--access", "invite")
    b.cli("rename", "bob")
    c.cli("rename", "cy")
    everyone = {a_id: "owner", b_id: "member", c_id: "member"}
    _everywhere(nodes, lambda n: _roles(n, circle) == everyone, "the owner and two members")
    _everywhere(nodes, lambda n: "vip" in _channels(n, circle), "#vip")

    # Only the owner names moderators; a name that matches nobody writes nothing.
    held = _control_ids(a, circle)
    _refused(
        b, "role", "moderator", "bob", "--circle-id", circle,
        says="only the circle's owner (a) can name moderators",
    )  # fmt: skip
    _refused(a, "role", "moderator", "nobody", "--circle-id", circle, says="no one in this circle")
    assert _control_ids(a, circle) == held
    a.cli("role", "moderator", "bob", "--circle-id", circle)
    everyone[b_id] = "moderator"
    _everywhere(nodes, lambda n: _roles(n, circle) == everyone, "bob a moderator")

    # The moderator approves: C is in #vip on every node.
    b.cli("channel", "approve", "vip", "--circle-id", circle, "--node", "cy")
    _everywhere(nodes, lambda n: _vip(n, circle) == sorted([a_id, c_id]), "cy in #vip")
    assert _channels(c, circle)["vip"]["can_post"]

    # A plain member's approval: its node refuses it, saying who can...
    _refused(
        c, "channel", "approve", "vip", "--circle-id", circle, "--node", D,
        says="only #vip's owner (a), the circle's owner or a moderator can approve into #vip",
    )  # fmt: skip
    # ... and written past that, signed with C's key, it reaches every node, changing nothing.
    refused_before = _not_allowed(a)
    forged = _by_hand(a, secret, circle, _key(c), events.channel_event(
        "approve", circle, "vip", c_id, target=D
    ))  # fmt: skip
    _everywhere(nodes, lambda n: forged in _control_ids(n, circle), "c's approve")
    for n in nodes:
        assert _vip(n, circle) == sorted([a_id, c_id]), n.home.name
    assert _not_allowed(a) == refused_before + 1

    # The owner demotes B: C stays in #vip (A approves it again), B's later approvals count
    # for nothing, on any node.
    a.cli("role", "member", "bob", "--circle-id", circle)
    everyone[b_id] = "member"
    _everywhere(nodes, lambda n: _roles(n, circle) == everyone, "bob a member again")
    for n in nodes:
        assert _vip(n, circle) == sorted([a_id, c_id]), n.home.name
    _refused(b, "channel", "approve", "vip", "--circle-id", circle, "--node", D, says="only #vip")
    late = _by_hand(b, secret, circle, _key(b), events.channel_event(
        "approve", circle, "vip", b_id, target=D
    ))  # fmt: skip
    _everywhere(nodes, lambda n: late in _control_ids(n, circle), "b's late approve")
    for n in nodes:
        assert _vip(n, circle) == sorted([a_id, c_id]), n.home.name

    # members --json: roles and the keys every message verified with, alike on every node.
    want = {
        n_id: {"role": everyone[n_id], "verified": True, "fingerprint": fingerprint(_key(n).public)}
        for n_id, n in zip((a_id, b_id, c_id), nodes, strict=True)
    }
    for n in nodes:
        got = {
            n_id: {k: p[k] for k in ("role", "verified", "fingerprint")}
            for n_id, p in _members(n, circle).items()
        }
        assert got == want, n.home.name
    names = {p["node_id"]: p["display_name"] for p in _members(a, circle).values()}
    assert names == {a_id: "a", b_id: "bob", c_id: "cy"}
