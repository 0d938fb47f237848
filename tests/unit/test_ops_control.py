"""Store operations on a real database: control-event timing, retries, relay invites."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felund.protocol import (
    CONTROL_CHANNEL,
    OP_APPEND,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CONTROL,
    OP_SETTINGS,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.v1 import chatmodel, ids
from felund.v1.invite import encode_invite
from felund.v1.wire import compose_message, to_wire

ME = "a" * 24
PEER = "b" * 24


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    db = Database(tmp_path / "felund.db")
    yield Ops(db, NodeInfo(ME, "me", False, "127.0.0.1:9999"))
    db.close()


def _do(ops: Ops, op: str, body: dict[str, Any]) -> Any:
    with ops.db.transaction():
        return ops.handle(op, body)


def _peer_creates(ops: Ops, circle_id: str, channel: str, ts: int) -> None:
    """A peer's create event, arrived by gossip, stamped with the peer's clock."""
    secret = ops.db.circle(circle_id).secret  # type: ignore[union-attr]
    event = {"t": "CHANNEL_EVT", "op": "create", "channel_id": channel, "actor_node_id": PEER}
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id=CONTROL_CHANNEL,
        author_node_id=PEER,
        display_name="peer",
        text=chatmodel.event_text(event | {"access_mode": "public"}),
        created_ts=ts,
        msg_id=ids.new_msg_id(PEER, ts),
        encrypt=False,
    )
    answer = _do(ops, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]}).reply
    assert answer["results"] == ["stored"]


def _join_body(circle_id: str, channel: str, ts: int) -> dict[str, Any]:
    return {
        "circle_id": circle_id,
        "msg_id": ids.new_msg_id(ME, ts),
        "created_ts": ts,
        "event": {"t": "CHANNEL_EVT", "op": "join", "channel_id": channel, "actor_node_id": ME},
    }


def _member(ops: Ops, circle_id: str, channel: str) -> bool:
    channels = _do(ops, OP_CHANNELS, {"circle_id": circle_id}).reply["channels"]
    return bool(next(c for c in channels if c["channel_id"] == channel)["member"])


def test_a_join_from_a_clock_behind_the_creator_still_counts(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"}).reply["circle_id"]
    now = int(time.time())
    _peer_creates(ops, circle, "dev", now + 120)  # the peer's clock is two minutes ahead
    _do(ops, OP_CONTROL, _join_body(circle, "dev", now))
    assert _member(ops, circle, "dev")
    stored = ops.db.control_events(circle, CONTROL_CHANNEL)
    assert max(row[2] for row in stored) == now + 121  # dated after the create


def test_a_retried_control_request_is_answered_as_stored(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"}).reply["circle_id"]
    now = int(time.time())
    body = {
        "circle_id": circle,
        "msg_id": ids.new_msg_id(ME, now),
        "created_ts": now,
        "event": {
            "t": "CHANNEL_EVT",
            "op": "create",
            "channel_id": "dev",
            "actor_node_id": ME,
            "access_mode": "public",
        },
    }
    first = _do(ops, OP_CONTROL, body)
    again = _do(ops, OP_CONTROL, body)  # the RPC client retried: the first try was stored
    assert again.reply["seqs"] == first.reply["seqs"]
    assert again.stored == []
    assert len(ops.db.control_events(circle, CONTROL_CHANNEL)) == 1


def test_a_relay_invite_gives_a_node_without_a_relay_that_relay(ops: Ops) -> None:
    code = encode_invite(ids.new_secret(), "http://127.0.0.1:8787/api")
    joined = _do(ops, OP_CIRCLE_JOIN, {"code": code})
    assert joined.reply["relay_url"] == "http://127.0.0.1:8787/api"
    assert joined.settings_changed
    assert _do(ops, OP_SETTINGS, {}).reply["relay_url"] == "http://127.0.0.1:8787/api"
    # A node that has a relay keeps it: the circle is synced there (the code holds the secret).
    other = _do(ops, OP_CIRCLE_JOIN, {"code": encode_invite(ids.new_secret(), "//relay.example")})
    assert other.reply["relay_url"] == "" and not other.settings_changed
    assert _do(ops, OP_SETTINGS, {}).reply["relay_url"] == "http://127.0.0.1:8787/api"


def test_a_protocol_relative_relay_invite_is_taken_as_https(ops: Ops) -> None:
    joined = _do(ops, OP_CIRCLE_JOIN, {"code": encode_invite(ids.new_secret(), "//relay.example")})
    assert joined.reply["relay_url"] == "https://relay.example"


def test_an_invite_code_copied_over_line_breaks_still_joins(ops: Ops) -> None:
    secret = ids.new_secret()
    code = encode_invite(secret, "127.0.0.1:9999")
    pasted = "  " + code[:40] + "\n" + code[40:80] + "\r\n  " + code[80:] + "\n"
    joined = _do(ops, OP_CIRCLE_JOIN, {"code": pasted})
    assert joined.reply["circle_id"] == ids.circle_id(secret)


def test_renames_in_one_second_end_with_the_last(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "c"}).reply["circle_id"]
    now = int(time.time())
    for i in range(8):  # one clock second: ordered by msg_id alone, 8 would rarely end in order
        _do(
            ops,
            OP_CONTROL,
            {
                "circle_id": circle,
                "msg_id": ids.new_msg_id(ME, now),
                "created_ts": now,
                "event": {
                    "t": "CHANNEL_EVT",
                    "op": "rename",
                    "actor_node_id": ME,
                    "display_name": f"me {i}",
                },
            },
        )
    assert ops.state(circle).names[ME] == "me 7"
