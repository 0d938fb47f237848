"""The store's answers to a user's mistakes: one clear sentence each, nothing written."""

from __future__ import annotations

import time
from typing import Any

import pytest

from felund.errors import RPCError
from felund.protocol import CONTROL_CHANNEL, OP_APPEND, OP_CIRCLE_CREATE, OP_INBOX, OP_POST
from felund.store.ops import Ops
from felund.testing import handled
from felund.v1 import chatmodel, ids
from felund.v1.wire import compose_message, to_wire

ME = "a" * 24
PEER = "b" * 24


def _do(ops: Ops, op: str, body: dict[str, Any]) -> Any:
    return handled(ops, op, body).reply


def _post(ops: Ops, circle: str, text: str, channel: str = "general") -> Any:
    now = int(time.time())
    msg = {"msg_id": ids.new_msg_id(ME, now), "created_ts": now, "text": text}
    return _do(ops, OP_POST, {"circle_id": circle, "channel_id": channel, "msgs": [msg]})


def test_a_blank_message_is_refused_and_nothing_is_stored(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"})["circle_id"]
    for blank in ("", "   ", "\t\n"):
        with pytest.raises(RPCError, match="the message is empty"):
            _post(ops, circle, blank)
    _post(ops, circle, "a real one")  # the path is live
    msgs = _do(ops, OP_INBOX, {"circle_id": circle})["msgs"]
    assert [m["text"] for m in msgs] == ["a real one"]


def test_inbox_of_a_channel_that_does_not_exist_says_so(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"})["circle_id"]
    _post(ops, circle, "hello")
    with pytest.raises(RPCError, match="there is no channel #nosuch"):
        _do(ops, OP_INBOX, {"circle_id": circle, "channel_id": "nosuch"})
    assert len(_do(ops, OP_INBOX, {"circle_id": circle, "channel_id": "general"})["msgs"]) == 1


def test_posting_in_an_invite_channel_not_joined_reads_right(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"})["circle_id"]
    secret = ops.db.circle(circle).secret  # type: ignore[union-attr]
    ts = int(time.time())
    event = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "vip", "actor_node_id": PEER}
    msg = compose_message(
        secret,
        circle_id=circle,
        channel_id=CONTROL_CHANNEL,
        author_node_id=PEER,
        display_name="peer",
        text=chatmodel.event_text(event | {"access_mode": "invite"}),
        created_ts=ts,
        msg_id=ids.new_msg_id(PEER, ts),
        encrypt=False,
    )
    assert _do(ops, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]})["results"] == [
        "stored"
    ]
    with pytest.raises(RPCError, match="it is an invite channel you have not joined"):
        _post(ops, circle, "let me in", channel="vip")
