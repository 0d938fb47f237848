"""Store operations that stay on this node: the block list, and the anchor's page by store time."""

from __future__ import annotations

import time

import pytest

from felund.errors import RPCError
from felund.protocol import (
    ERR_BAD_REQUEST,
    OP_ANCHOR_PAGE,
    OP_APPEND,
    OP_BLOCKS,
    OP_CIRCLE_CREATE,
    OP_INBOX,
    OP_POST,
)
from felund.store.ops import Ops
from felund.testing import handled
from felund.v1 import ids
from felund.v1.wire import compose_message, to_wire
from tests.unit.conftest import ME

ANN, ANNA, BOB = "1" * 24, "2" * 24, "3" * 24


def _circle(ops: Ops) -> str:
    circle_id: str = handled(ops, OP_CIRCLE_CREATE, {"name": "c"}).reply["circle_id"]
    return circle_id


def _says(ops: Ops, circle_id: str, author: str, name: str, *, text: str, ts: int) -> None:
    secret = ops.db.circle(circle_id).secret  # type: ignore[union-attr]
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id="general",
        author_node_id=author,
        display_name=name,
        text=text,
        created_ts=ts,
        msg_id=ids.new_msg_id(author, ts),
        encrypt=True,
    )
    answer = handled(ops, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]}).reply
    assert answer["results"] == ["stored"]


def _refusal(ops: Ops, body: dict[str, str]) -> str:
    with pytest.raises(RPCError) as refused:
        handled(ops, OP_BLOCKS, body)
    assert refused.value.code == ERR_BAD_REQUEST
    return refused.value.message


def test_block_by_name_or_prefix_hides_nothing_it_should_not(ops: Ops) -> None:
    c = _circle(ops)
    now = int(time.time())
    _says(ops, c, ANN, "ann", text="hi from ann", ts=now)
    _says(ops, c, ANNA, "ann", text="hi from the other ann", ts=now)
    _says(ops, c, BOB, "bob", text="hi from bob", ts=now)
    assert handled(ops, OP_BLOCKS, {}).reply["blocked"] == []
    assert "could be 2 people" in _refusal(ops, {"block": "ann"})
    assert "no one in your circles" in _refusal(ops, {"block": "carol"})
    assert "this node" in _refusal(ops, {"block": ME})
    assert handled(ops, OP_BLOCKS, {}).reply["blocked"] == []  # nothing stored by a refusal
    out = handled(ops, OP_BLOCKS, {"block": "bob"})
    assert out.settings_changed
    assert out.reply == {"node_id": BOB, "blocked": [{"node_id": BOB, "display_name": "bob"}]}
    assert handled(ops, OP_BLOCKS, {"block": "22"}).reply["node_id"] == ANNA  # a unique prefix
    assert not handled(ops, OP_BLOCKS, {"block": BOB}).settings_changed  # already
    inbox = handled(ops, OP_INBOX, {"circle_id": c}).reply["msgs"]
    assert {m["text"]: m["blocked"] for m in inbox} == {
        "hi from ann": False,
        "hi from the other ann": True,
        "hi from bob": True,
    }
    handled(ops, OP_BLOCKS, {"unblock": "bob"})
    assert [b["node_id"] for b in handled(ops, OP_BLOCKS, {}).reply["blocked"]] == [ANNA]


def test_a_blocked_node_without_a_name_is_unblocked_by_its_id(ops: Ops) -> None:
    stranger = "9" * 32  # a well-formed id, never seen here
    handled(ops, OP_BLOCKS, {"block": stranger})
    assert _refusal(ops, {"block": "x", "unblock": "y"})
    handled(ops, OP_BLOCKS, {"unblock": "999"})
    assert handled(ops, OP_BLOCKS, {}).reply["blocked"] == []


def test_the_anchor_page_follows_store_time_and_position(ops: Ops) -> None:
    c = _circle(ops)
    now = int(time.time())
    old = now - 86_400 * 30  # dated a month ago, stored now: still "since" a pull of now
    body = {"circle_id": c, "channel_id": "general"}
    texts = [
        {"msg_id": ids.new_msg_id(ME, old), "created_ts": old, "text": f"m{i}"} for i in range(5)
    ]
    handled(ops, OP_POST, {**body, "msgs": texts})
    rows = handled(ops, OP_ANCHOR_PAGE, {"circle_id": c, "since": now - 1}).reply["rows"]
    # The circle's name (a control event, as the circle was made) first, then the five.
    assert rows[0]["wire"]["channel_id"] == "__control"
    assert [r["wire"]["msg_id"] for r in rows[1:]] == [t["msg_id"] for t in texts]
    assert all(r["at"] >= now - 1 for r in rows)
    seqs = [r["seq"] for r in rows]
    after = handled(ops, OP_ANCHOR_PAGE, {"circle_id": c, "since": now - 1, "after": seqs[2]})
    assert [r["seq"] for r in after.reply["rows"]] == seqs[3:]  # after a position
    later = handled(ops, OP_ANCHOR_PAGE, {"circle_id": c, "since": now + 3600}).reply["rows"]
    assert later == []
    for bad in ({"since": -1}, {"since": 0, "limit": 0}, {"since": 0, "after": -5}):
        with pytest.raises(RPCError):
            handled(ops, OP_ANCHOR_PAGE, {"circle_id": c, **bad})
