"""Calls on a real node (issue 17, addendum §1): the call events of a circle, as a browser
and our nodes write them, show in `felund calls` while the call runs and "no call" after
its host ends it; an end forged by anyone but the host changes nothing on the node."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from felund.errors import RPCError
from felund.protocol import OP_APPEND, OP_CONTROL
from felund.testing import Node, control_wire, wait_for
from felund.testing.nodes import metric_value
from felund.trust.identity import IdentityKey
from felund.v1 import events, ids
from felund.v1.invite import decode_invite
from tests.integration.test_channels import _started

WEB = "3c" * 16  # a v1 browser: a random 32-hex id, writes unsigned
SID = "5e" * 16


def _append(
    to: Node,
    secret: str,
    circle: str,
    author: str,
    event: dict[str, Any],
    *,
    key: IdentityKey | None = None,
) -> None:
    """A control event by ``author`` (signed with ``key``; None: unsigned, as a v1 browser
    writes), handed to ``to``'s store as gossip or the relay brings one."""
    wire = control_wire(secret, circle, author, event, key, name="web" if author == WEB else "host")
    assert to.call(OP_APPEND, {"origin": "gossip", "msgs": [wire]})["results"] == ["stored"]


def _write(node: Node, circle: str, event: dict[str, Any]) -> None:
    """A call event of the node itself, through its store's control op (as the ui would)."""
    me = node.status()["node_id"]
    now = int(time.time())
    body = {"circle_id": circle, "msg_id": ids.new_msg_id(me, now), "created_ts": now}
    node.call(OP_CONTROL, {**body, "event": event})


def test_a_call_shows_while_it_runs_and_a_forged_end_changes_nothing(
    make_node: Callable[..., Node],
) -> None:
    a = _started(make_node, "a")
    code = a.cli("invite").stdout.strip()
    secret = decode_invite(code).secret
    a.start()
    circle = a.json("circles")[0]["circle_id"]
    me = a.status()["node_id"]
    assert a.cli("calls", "--circle-id", circle).stdout.strip() == "no call"

    host = IdentityKey.generate()  # one of ours: every event it writes is signed
    h = host.node_id
    create = events.call_event("create", circle, h, SID, channel="general")
    _append(a, secret, circle, h, create, key=host)
    _append(a, secret, circle, WEB, events.call_event("view", circle, WEB, SID))
    _write(a, circle, events.call_event("join", circle, me, SID))
    running = a.json("calls", "--circle-id", circle)
    (call,) = running["calls"]
    assert call["host"] == h and call["participants"] == sorted([h, me])
    assert call["viewers"] == [WEB] and call["state"] == "active"
    assert running["names"][me] == "a" and running["relay_url"] == ""
    said = a.cli("calls", "--circle-id", circle).stdout
    assert "call in #general, started by host, 2 in it, 1 watching" in said
    assert "this node has none (felund relay url URL)" in said

    # Ends by anyone but the signed host: each is stored, and the call goes on.
    forged = {"t": "CALL_EVT", "op": "end", "session_id": SID, "host_node_id": h}
    _append(a, secret, circle, WEB, {**forged, "actor_node_id": WEB})  # v1's web takes it
    _append(a, secret, circle, WEB, forged)  # no actor: both v1 clients take it
    _append(a, secret, circle, h, {**forged, "actor_node_id": h})  # in its name, unsigned
    revoke = events.call_event("revoke", circle, WEB, SID, target=me)
    _append(a, secret, circle, WEB, revoke)
    with pytest.raises(RPCError, match="only the call's host"):
        _write(a, circle, events.call_event("end", circle, me, SID))
    assert a.json("calls", "--circle-id", circle) == running
    # Each refused once in the node's metrics, by why (ours was refused before it was stored).
    for kind, n in (("actor_mismatch", 2), ("unsigned_from_signer", 1), ("not_host", 1)):
        assert _refused(a, kind) == n, kind

    _append(a, secret, circle, h, events.call_event("end", circle, h, SID), key=host)
    assert a.json("calls", "--circle-id", circle)["calls"] == []
    assert a.cli("calls", "--circle-id", circle).stdout.strip() == "no call"


def test_a_call_one_node_starts_shows_on_its_peer_and_ends_there(
    make_node: Callable[..., Node],
) -> None:
    """Call events travel between nodes like any control event (gossip), and each node
    derives the same call from them."""
    a, b = _started(make_node, "a"), _started(make_node, "b")
    code = a.cli("invite").stdout.strip()
    circle = b.cli("join", "--code", code).stdout.strip()
    a.start()
    b.start()
    b_id = b.status()["node_id"]
    _write(b, circle, events.call_event("create", circle, b_id, SID, channel="general"))
    wait_for(
        lambda: a.json("calls", "--circle-id", circle)["calls"], timeout=60, what="b's call on a"
    )
    (call,) = a.json("calls", "--circle-id", circle)["calls"]
    assert call["host"] == b_id and call["participants"] == [b_id]
    assert a.json("calls", "--circle-id", circle) == b.json("calls", "--circle-id", circle)
    _write(b, circle, events.call_event("end", circle, b_id, SID))
    wait_for(
        lambda: a.cli("calls", "--circle-id", circle).stdout.strip() == "no call",
        timeout=60,
        what="no call on a after b's end",
    )


def _refused(node: Node, kind: str) -> float:
    """Call events this node refused, by why (felund_bad_input, source "call")."""
    return metric_value(node.metrics(), "felund_bad_input_total", source="call", kind=kind) or 0


def test_a_blocked_node_s_calls_are_refused_here_and_counted(
    make_node: Callable[..., Node],
) -> None:
    """`felund block` refuses the node's calls (issue 15): its call is not shown, its join
    to another call counts for nothing, and each refusal is counted once by why; an unblock
    shows them again."""
    a = _started(make_node, "a")
    secret = decode_invite(a.cli("invite").stdout.strip()).secret
    a.start()
    circle = a.json("circles")[0]["circle_id"]
    me = a.status()["node_id"]
    web_sid = "77" * 16
    _append(
        a, secret, circle, WEB, events.call_event("create", circle, WEB, web_sid, channel="dev")
    )
    _write(a, circle, events.call_event("create", circle, me, SID, channel="general"))
    _append(a, secret, circle, WEB, events.call_event("join", circle, WEB, SID))
    running = a.json("calls", "--circle-id", circle)
    assert [c["host"] for c in running["calls"]] == [WEB, me]  # the path is live: both shown
    assert running["calls"][1]["participants"] == sorted([me, WEB])
    assert _refused(a, "blocked") == 0

    a.cli("block", WEB)
    hidden = a.json("calls", "--circle-id", circle)["calls"]
    assert [(c["host"], c["participants"]) for c in hidden] == [(me, [me])]
    assert _refused(a, "blocked") == 2  # its create and its join
    with pytest.raises(RPCError, match="no such call"):  # its call is not there to join
        _write(a, circle, events.call_event("join", circle, me, web_sid))
    a.stop()  # counted once per event, across restarts too
    a.start()
    assert len(a.json("calls", "--circle-id", circle)["calls"]) == 1
    assert _refused(a, "blocked") == 0  # a new process: nothing counted again

    a.cli("unblock", WEB)
    assert a.json("calls", "--circle-id", circle) == running
