"""Store operations on a real database: control-event timing, retries, relay invites."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from felund.errors import RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    OP_APPEND,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLES,
    OP_CONTROL,
    OP_SETTINGS,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import handled
from felund.v1 import chatmodel, events, ids
from felund.v1.invite import encode_invite
from felund.v1.wire import compose_message, to_wire

ME = "a" * 24
PEER = "b" * 24


_do = handled


def _from_peer(ops: Ops, circle_id: str, event: dict[str, Any], ts: int) -> None:
    """A peer's control event, arrived by gossip, stamped with the peer's clock."""
    secret = ops.db.circle(circle_id).secret  # type: ignore[union-attr]
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id=CONTROL_CHANNEL,
        author_node_id=PEER,
        display_name="peer",
        text=chatmodel.event_text(event),
        created_ts=ts,
        msg_id=ids.new_msg_id(PEER, ts),
        encrypt=False,
    )
    answer = _do(ops, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]}).reply
    assert answer["results"] == ["stored"]


def _peer_creates(ops: Ops, circle_id: str, channel: str, ts: int) -> None:
    _from_peer(ops, circle_id, events.channel_event("create", circle_id, channel, PEER), ts)


def _ours(ops: Ops, circle_id: str, event: dict[str, Any]) -> Any:
    """Write a control event of ours, dated now."""
    now = int(time.time())
    body = {"circle_id": circle_id, "msg_id": ids.new_msg_id(ME, now), "created_ts": now}
    return _do(ops, OP_CONTROL, {**body, "event": event}).reply


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
    circle = _do(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
    now = int(time.time())
    _peer_creates(ops, circle, "dev", now + 120)  # the peer's clock is two minutes ahead
    _do(ops, OP_CONTROL, _join_body(circle, "dev", now))
    assert _member(ops, circle, "dev")
    ours = [row for row in ops.db.control_events(circle, CONTROL_CHANNEL) if row[1] == ME]
    assert [ts for _, _, ts, *_ in ours] == [now]  # our clock, not the creator's


def test_a_retried_control_request_is_answered_as_stored(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
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


def test_an_event_dated_far_ahead_does_not_lock_our_controls(ops: Ops) -> None:
    """Issue 14: a member's rename dated 2**41-1 made every later control event of ours
    fail (`msgs[0]: size: created_ts`); a circle name at 2**41-2 renamed the circle."""
    circle = _do(ops, OP_CIRCLE_CREATE, {"name": "ours"}).reply["circle_id"]
    _from_peer(ops, circle, events.rename_event(circle, PEER, "evil"), 2**41 - 1)
    _from_peer(ops, circle, events.circle_name_event(circle, "pwned"), 2**41 - 2)
    assert _do(ops, OP_CIRCLES, {}).reply["circles"][0]["name"] == "ours"
    _ours(ops, circle, events.channel_event("create", circle, "dev", ME))
    _ours(ops, circle, events.channel_event("leave", circle, "dev", ME))
    _ours(ops, circle, events.channel_event("join", circle, "dev", ME))
    _ours(ops, circle, events.rename_event(circle, ME, "me again"))
    _ours(ops, circle, events.circle_name_event(circle, "renamed"))
    assert _member(ops, circle, "dev")
    state = ops.state(circle)
    assert (state.name, state.names) == ("renamed", {ME: "me again"})
    assert state.rejected["future"] == 2
    ours = [
        ts for _, author, ts, *_ in ops.db.control_events(circle, CONTROL_CHANNEL) if author == ME
    ]
    assert max(ours) < time.time() + 60


def test_our_events_keep_their_order_and_say_their_date(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
    now = int(time.time())
    for i in range(3):  # one second: dated now, now + 1, now + 2
        _ours(ops, circle, events.rename_event(circle, ME, f"me {i}"))
    rows = sorted(ops.db.control_events(circle, CONTROL_CHANNEL), key=lambda r: r[2])
    assert [ts - now for _, _, ts, *_ in rows] in ([0, 1, 2], [1, 2, 3])
    for _, _, ts, text, _ in rows:  # v1 reads the date in the text (addendum §2.3)
        assert json.loads(text)["created_ts"] == ts


def test_a_keyless_join_of_a_key_channel_is_refused_and_writes_nothing(ops: Ops) -> None:
    circle = _do(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
    secret_create = events.channel_event("create", circle, "vault", PEER, access="key", key="k")
    _from_peer(ops, circle, secret_create, int(time.time()))
    before = len(ops.db.control_events(circle, CONTROL_CHANNEL))
    with pytest.raises(RPCError, match="that channel has a key"):
        _ours(ops, circle, events.channel_event("join", circle, "vault", ME))
    with pytest.raises(RPCError, match="wrong key"):
        _ours(ops, circle, events.channel_event("join", circle, "vault", ME, key="K"))
    assert len(ops.db.control_events(circle, CONTROL_CHANNEL)) == before
    _ours(ops, circle, events.channel_event("join", circle, "vault", ME, key="k"))
    assert _member(ops, circle, "vault")


def test_an_approve_names_a_person_by_id_its_start_or_name(signing_ops: Ops) -> None:
    """Issue 13: `approve --node bob`, `--node 8bd55a18` and `--node totally-bogus-node`
    stored those strings as members. Now: resolved, or refused with nothing written."""
    ops = signing_ops  # only a signed approve counts
    circle = _do(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
    _ours(ops, circle, events.channel_event("create", circle, "vip", ME, access="invite"))
    _from_peer(ops, circle, events.rename_event(circle, PEER, "bob"), int(time.time()))
    before = len(ops.db.control_events(circle, CONTROL_CHANNEL))
    for who, says in [
        ("totally-bogus-node", "no one in this circle"),
        ("carol", "no one in this circle"),
        ("", "name someone"),
    ]:
        with pytest.raises(RPCError, match=says):
            _ours(
                ops, circle, events.channel_event("approve", circle, "vip", ME, target=who or " ")
            )
    assert len(ops.db.control_events(circle, CONTROL_CHANNEL)) == before
    for who in ("bob", PEER[:8], PEER):
        _ours(ops, circle, events.channel_event("approve", circle, "vip", ME, target=who))
    members = _do(ops, OP_CHANNELS, {"circle_id": circle}).reply["channels"]
    assert next(c for c in members if c["channel_id"] == "vip")["members"] == sorted([ME, PEER])
    targets = [
        json.loads(t).get("target_node_id")
        for _, _, _, t, _ in ops.db.control_events(circle, CONTROL_CHANNEL)
    ]
    assert [t for t in targets if t] == [PEER] * 3


def test_a_circle_s_name_travels_with_it(ops: Ops, tmp_path: Path) -> None:
    """Issue 13: `felund invite --name friends` showed as an id to whoever joined."""
    made = _do(ops, OP_CIRCLE_CREATE, {"name": "friends"})
    circle = made.reply["circle_id"]
    assert [row["channel_id"] for row in made.stored] == [CONTROL_CHANNEL]
    db = Database(tmp_path / "joiner.db")
    joiner = Ops(db, NodeInfo(PEER, "peer", False, "127.0.0.1:9998"))
    try:
        _do(joiner, OP_CIRCLE_JOIN, {"code": made.reply["code"]})
        assert _do(joiner, OP_CIRCLES, {}).reply["circles"][0]["name"] == ""
        _do(joiner, OP_APPEND, {"origin": "gossip", "msgs": [row["wire"] for row in made.stored]})
        assert _do(joiner, OP_CIRCLES, {}).reply["circles"] == [
            {"circle_id": circle, "name": "friends", "joined_ts": ANY}
        ]
    finally:
        db.close()
    unnamed = _do(ops, OP_CIRCLE_CREATE, {})
    assert unnamed.stored == []
