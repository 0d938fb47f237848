"""The sans-IO fold of control events (felund.v1.chatmodel), and the store's use of it.

Every node that holds the same set of control events must derive the same
channels, members and names, whatever order the events arrived in; malformed
or hostile events change nothing and are counted by reason.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund import metrics
from felund.errors import RPCError
from felund.protocol import CONTROL_CHANNEL, OP_APPEND, OP_CHANNELS, OP_CONTROL, OP_POST, OP_WHO
from felund.store.database import Circle, Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import vector_cases
from felund.v1 import chatmodel, ids
from felund.v1.chatmodel import ControlEvent, derive, event_text, key_hash
from felund.v1.wire import compose_message, to_wire

AUTHORS = ("n1", "n2", "n3")
KEYS = ("k-one", "k-two")
CHANNELS = ("general", "alpha", "beta", "gamma", "Bad!", "__control", "x" * 33)
NAMES = ("ann", "bob", "Bø 🚀", "", "x" * 65, "tab\there")


# --- helpers ------------------------------------------------------------------


class Log:
    """Builds events with increasing time and unique msg ids."""

    def __init__(self) -> None:
        self.events: list[ControlEvent] = []
        self.ts = 1000

    def add(self, author: str, body: dict[str, Any] | str, ts: int | None = None) -> ControlEvent:
        self.ts = self.ts + 1 if ts is None else ts
        text = body if isinstance(body, str) else event_text(body)
        ev = ControlEvent(f"{len(self.events):032x}", author, self.ts, text)
        self.events.append(ev)
        return ev

    def chan(self, author: str, op: str, channel_id: str = "", **fields: Any) -> ControlEvent:
        body: dict[str, Any] = {"t": "CHANNEL_EVT", "op": op, "actor_node_id": author, **fields}
        if channel_id:
            body["channel_id"] = channel_id
        return self.add(author, body)

    def state(self) -> chatmodel.CircleState:
        return derive(self.events)


def _invariants(state: chatmodel.CircleState) -> None:
    """What derived state can never hold, whatever events it saw."""
    assert "general" in state.channels
    assert state.channels["general"].access_mode == "public"
    for cid, c in state.channels.items():
        assert cid == c.channel_id
        assert chatmodel._CHANNEL_RE.fullmatch(cid)
        assert not cid.startswith("__")
        assert c.access_mode in chatmodel.ACCESS_MODES
        if c.access_mode == "key":
            assert chatmodel._HEX64_RE.fullmatch(c.key_hash)
        else:
            assert c.key_hash == ""
    for node, name in [*state.names.items(), ("circle", state.name or "x")]:
        assert isinstance(node, str)
        assert 0 < len(name) <= chatmodel.MAX_NAME
        assert name.isprintable()


# --- hypothesis: plausible and malformed events ---------------------------------

_channel_bodies = st.fixed_dictionaries(
    {
        "t": st.just("CHANNEL_EVT"),
        # create/join/approve weigh more: they build the state the other events act on.
        "op": st.sampled_from(
            (
                "create",
                "create",
                "join",
                "join",
                "approve",
                "approve",
                *chatmodel.CHANNEL_OPS,
                "delete",
            )
        ),
        "channel_id": st.sampled_from(("alpha", "beta", "gamma", "alpha", "beta", *CHANNELS)),
        "target_node_id": st.sampled_from((*AUTHORS, "bad id!")),
        "access_mode": st.sampled_from((*chatmodel.ACCESS_MODES, "secret")),
        "key_hash": st.sampled_from([key_hash(k) for k in KEYS] + ["nothex"]),
    },
    optional={"display_name": st.sampled_from(NAMES)},
)
_circle_bodies = st.fixed_dictionaries(
    {"t": st.just("CIRCLE_NAME_EVT"), "name": st.sampled_from(NAMES)},
)
_other_bodies = st.fixed_dictionaries(
    {"t": st.sampled_from(("ANCHOR_ANNOUNCE", "CALL_EVT", "NOPE", 7))},
)
_garbage = st.sampled_from(
    (
        "not json",
        "{",
        "[1, 2]",
        "null",
        '"CHANNEL_EVT"',
        "NaN",
        "[" * 3000 + "]" * 3000,
        '{"t":"CHANNEL_EVT","op":"create","channel_id":"' + "z" * 5000 + '"}',
        json.dumps({"t": "CHANNEL_EVT", "op": "rename", "display_name": "y" * 10_000_000}),
    )
)


_one_event = st.tuples(
    st.sampled_from(AUTHORS),
    # Rolls of 0..9 pick how plausible the event is (st.one_of would weigh branches evenly).
    st.integers(0, 9),
    _channel_bodies,
    st.one_of(_circle_bodies, _other_bodies),
    st.sampled_from(("actor_node_id", "node_id", None)),
    st.integers(0, 9),
    st.sampled_from(AUTHORS),
    st.integers(0, 9),
    _garbage,
    # Few timestamps, so that ties are broken by msg_id.
    st.integers(0, 6),
)


# Channels created early, so that most later events act on something.
_early_create = st.tuples(
    st.sampled_from(AUTHORS),
    st.sampled_from(("alpha", "beta", "gamma")),
    st.sampled_from(chatmodel.ACCESS_MODES),
    st.sampled_from(KEYS),
    st.integers(0, 1),
)


@st.composite
def _events(draw: st.DrawFn) -> list[ControlEvent]:
    drawn = draw(st.lists(_one_event, max_size=30))
    creates = draw(st.lists(_early_create, max_size=5))
    msg_ids = draw(st.permutations(range(len(drawn) + len(creates))))
    out = []
    for i, (author, cid, mode, key, ts) in enumerate(creates, start=len(drawn)):
        body = {
            "t": "CHANNEL_EVT",
            "op": "create",
            "channel_id": cid,
            "access_mode": mode,
            "key_hash": key_hash(key),
            "actor_node_id": author,
        }
        out.append(ControlEvent(f"{msg_ids[i]:032x}", author, ts, event_text(body)))
    for i, (author, kind, channel, other, field_, who, actor, bad, garbage, ts) in enumerate(drawn):
        body = dict(channel if kind < 8 else other)
        if field_ is not None:
            # One's own node id, or (roll 0) whoever was drawn: often someone else (refused).
            body[field_] = actor if who == 0 else author
        text = garbage if bad == 0 else event_text(body)
        out.append(ControlEvent(f"{msg_ids[i]:032x}", author, ts, text))
    return out


@settings(max_examples=200, deadline=None)
@given(events=_events(), seed=st.integers(0, 2**32))
def test_shuffled_arrival_orders_derive_identical_state(events, seed) -> None:
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    first, second = derive(events), derive(shuffled)
    assert first.summary() == second.summary()
    assert first.rejected == second.rejected
    assert sum(first.rejected.values()) <= len(events)
    _invariants(first)


@settings(max_examples=100, deadline=None)
@given(events=_events(), seed=st.integers(0, 2**32))
def test_incremental_arrival_ends_in_the_state_of_the_whole_set(events, seed) -> None:
    """A node re-derives after every arrival: whatever the order, it ends where derive(all) is."""
    order = list(events)
    random.Random(seed).shuffle(order)
    held: list[ControlEvent] = []
    for ev in order:
        held.append(ev)
        _invariants(derive(held))
    assert derive(held).summary() == derive(events).summary()


@settings(max_examples=100, deadline=None)
@given(events=_events(), junk=st.lists(_garbage, max_size=5), seed=st.integers(0, 2**32))
def test_malformed_events_change_nothing(events, junk, seed) -> None:
    rng = random.Random(seed)
    extra = [
        ControlEvent(f"junk{i:028x}", rng.choice(AUTHORS), rng.randrange(7), text)
        for i, text in enumerate(junk)
    ]
    before, after = derive(events), derive([*events, *extra])
    assert after.summary() == before.summary()
    assert sum(after.rejected.values()) == sum(before.rejected.values()) + len(extra)


# --- the rules, one by one -------------------------------------------------------


def test_general_always_exists_and_anyone_posts_there() -> None:
    state = derive([])
    assert list(state.channels) == ["general"]
    assert state.can_post("general", "anyone")
    assert not state.can_post("nowhere", "anyone")
    assert state.summary()["channels"]["general"]["access_mode"] == "public"


def test_first_create_wins_by_created_ts_then_msg_id() -> None:
    text = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "room"}
    late = ControlEvent("0" * 32, "n1", 20, event_text({**text, "access_mode": "invite"}))
    tie_b = ControlEvent("b" * 32, "n2", 10, event_text({**text, "access_mode": "public"}))
    tie_a = ControlEvent("a" * 32, "n3", 10, event_text({**text, "access_mode": "key"}))
    tie_a_ok = ControlEvent(
        "a" * 32, "n3", 10, event_text({**text, "access_mode": "key", "key_hash": key_hash("k")})
    )
    # tie_a is invalid (a key channel without key_hash): the next in order wins.
    state = derive([late, tie_b, tie_a])
    room = state.channels["room"]
    assert (room.creator, room.access_mode, room.created_ts) == ("n2", "public", 10)
    assert state.rejected == {"bad_key_hash": 1, "exists": 1}
    state = derive([late, tie_b, tie_a_ok])
    room = state.channels["room"]
    assert (room.creator, room.access_mode, room.key_hash) == ("n3", "key", key_hash("k"))
    assert room.members == {"n3"}
    assert state.rejected == {"exists": 2}


def test_creating_general_is_refused() -> None:
    log = Log()
    log.chan("n1", "create", "general", access_mode="invite")
    state = log.state()
    assert state.channels["general"].access_mode == "public"
    assert state.rejected == {"exists": 1}


def test_public_channel_anyone_posts_join_makes_member() -> None:
    log = Log()
    log.chan("n1", "create", "lobby")
    assert log.state().can_post("lobby", "n2")
    log.chan("n2", "join", "lobby")
    assert log.state().channels["lobby"].members == {"n1", "n2"}


def test_key_join_needs_the_right_hash() -> None:
    log = Log()
    log.chan("n1", "create", "vault", access_mode="key", key_hash=key_hash("open sesame"))
    log.chan("n2", "join", "vault", key_hash=key_hash("wrong"))
    log.chan("n2", "join", "vault")
    log.chan("n2", "join", "vault", key_hash="open sesame")  # the key itself, not its hash
    state = log.state()
    assert not state.can_post("vault", "n2")
    assert state.can_post("vault", "n1")
    assert state.rejected == {"wrong_key": 3}
    log.chan("n2", "join", "vault", key_hash=key_hash("open sesame"))
    state = log.state()
    assert state.can_post("vault", "n2")
    assert state.channels["vault"].members == {"n1", "n2"}
    # The key never appears in the state, only its hash.
    assert "open sesame" not in json.dumps(state.summary())


def test_key_channel_without_a_valid_hash_is_not_created() -> None:
    log = Log()
    log.chan("n1", "create", "vault", access_mode="key")
    log.chan("n1", "create", "vault2", access_mode="key", key_hash="ABC")
    log.chan("n1", "create", "vault3", access_mode="key", key_hash=key_hash("k").upper())
    log.chan("n1", "create", "odd", access_mode="private")
    state = log.state()
    assert list(state.channels) == ["general"]
    assert state.rejected == {"bad_key_hash": 3, "bad_access_mode": 1}


def test_invite_join_needs_approve_by_a_member() -> None:
    log = Log()
    log.chan("n1", "create", "club", access_mode="invite")
    log.chan("n2", "join", "club")
    assert log.state().rejected == {"not_approved": 1}
    log.chan("n2", "request", "club")
    state = log.state()
    assert state.channels["club"].requests == {"n2"}
    assert not state.can_post("club", "n2")
    # A non-member cannot approve (not even themselves).
    log.chan("n3", "approve", "club", target_node_id="n3")
    log.chan("n2", "approve", "club", target_node_id="n2")
    state = log.state()
    assert state.rejected["not_member"] == 2
    assert not state.can_post("club", "n3")
    log.chan("n1", "approve", "club", target_node_id="n2")
    state = log.state()
    club = state.channels["club"]
    assert club.members == {"n1", "n2"}
    assert club.requests == set()
    assert club.approved == {"n2"}
    assert state.can_post("club", "n2")
    # Once approved, leaving and joining again works without a new approve.
    log.chan("n2", "leave", "club")
    assert not log.state().can_post("club", "n2")
    log.chan("n2", "join", "club")
    assert log.state().can_post("club", "n2")
    # An approved member can approve others.
    log.chan("n2", "approve", "club", target_node_id="n3")
    assert log.state().can_post("club", "n3")


def test_request_only_for_invite_channels_and_approve_needs_a_target() -> None:
    log = Log()
    log.chan("n1", "create", "lobby")
    log.chan("n1", "create", "club", access_mode="invite")
    log.chan("n2", "request", "lobby")
    log.chan("n1", "approve", "club")
    log.chan("n1", "approve", "club", target_node_id="has space")
    log.chan("n1", "approve", "club", target_node_id=["n2"])
    log.chan("n2", "join", "nowhere")
    assert log.state().rejected == {"not_invite": 1, "bad_target": 3, "no_channel": 1}


def test_leave_general_is_refused_and_leave_removes_membership() -> None:
    log = Log()
    log.chan("n1", "leave", "general")
    log.chan("n1", "create", "vault", access_mode="key", key_hash=key_hash("k"))
    log.chan("n1", "leave", "vault")
    state = log.state()
    assert state.rejected == {"general": 1}
    assert state.channels["vault"].members == set()
    assert not state.can_post("vault", "n1")
    assert state.can_post("general", "n1")


def test_rename_sets_the_authors_name_latest_wins() -> None:
    log = Log()
    log.chan("n1", "rename", display_name="ann")
    log.chan("n2", "rename", display_name="bob")
    log.chan("n1", "rename", display_name="Anne-Marie 🚀")
    log.chan("n1", "rename", display_name="")
    log.chan("n1", "rename", display_name="x" * 65)
    log.chan("n1", "rename", display_name="line\nbreak")
    log.chan("n1", "rename", display_name=42)
    log.chan("n1", "rename")
    state = log.state()
    assert state.names == {"n1": "Anne-Marie 🚀", "n2": "bob"}
    assert state.rejected == {"bad_name": 5}


def test_circle_name_event() -> None:
    log = Log()
    log.add("n1", {"t": "CIRCLE_NAME_EVT", "circle_id": "c" * 24, "name": "the crew"})
    assert log.state().name == "the crew"
    log.add("n2", {"t": "CIRCLE_NAME_EVT", "name": "renamed"})
    log.add("n2", {"t": "CIRCLE_NAME_EVT", "name": ""})
    log.add("n2", {"t": "CIRCLE_NAME_EVT"})
    state = log.state()
    assert state.name == "renamed"
    assert state.rejected == {"bad_name": 2}
    assert state.summary()["name"] == "renamed"


def test_events_of_other_authors_are_ignored() -> None:
    """actor_node_id (or node_id) must be the message's author: only one's own actions."""
    log = Log()
    log.chan("n1", "create", "club", access_mode="invite")
    log.add(
        "n2",
        {
            "t": "CHANNEL_EVT",
            "op": "approve",
            "channel_id": "club",
            "actor_node_id": "n1",
            "target_node_id": "n2",
        },
    )
    log.add("n2", {"t": "CHANNEL_EVT", "op": "rename", "node_id": "n1", "display_name": "evil"})
    log.add("n2", {"t": "CHANNEL_EVT", "op": "leave", "channel_id": "club", "actor_node_id": None})
    log.add("n2", {"t": "CIRCLE_NAME_EVT", "name": "x", "actor_node_id": "n3"})
    state = log.state()
    assert state.rejected == {"actor_mismatch": 4}
    assert state.channels["club"].members == {"n1"}
    assert state.names == {}
    assert state.name == ""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json at all", "not_json"),
        ('{"t":"CHANNEL_EVT",', "not_json"),
        ("\ud800", "not_json"),
        ("[" * 100_000, "too_long"),
        ("[" * 4000 + "]" * 4000, "too_long"),
        ("[" * 2000 + "]" * 2000, "not_json"),
        ("[" * 500 + "]" * 500, "not_object"),
        ('["CHANNEL_EVT"]', "not_object"),
        ("null", "not_object"),
        ("1e999", "not_object"),
        ('{"t":"CHANNEL_EVT","op":"explode","channel_id":"x"}', "unknown_op"),
        ('{"t":"CHANNEL_EVT","channel_id":"x"}', "unknown_op"),
        ('{"t":"CHANNEL_EVT","op":["create"],"channel_id":"x"}', "unknown_op"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":"Bad Room"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":"__control"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":"__x"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":""}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":"' + "a" * 33 + '"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":7}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"create","channel_id":"room\\n"}', "bad_channel"),
        ('{"t":"CHANNEL_EVT","op":"rename","display_name":"' + "n" * 7000 + '"}', "too_long"),
        ('{"t":"CHANNEL_EVT","op":"rename","display_name":"' + "n" * 4000 + '"}', "bad_name"),
        ('{"t":"CIRCLE_NAME_EVT","name":"' + "n" * 65 + '"}', "bad_name"),
        ('{"t":"SOMETHING_NEW"}', "unknown_type"),
        ('{"op":"create","channel_id":"x"}', "unknown_type"),
        ('{"t":{"a":1}}', "unknown_type"),
        ('{"t":["CHANNEL_EVT"]}', "unknown_type"),
    ],
)
def test_malformed_event_is_ignored_with_its_reason(text: str, reason: str) -> None:
    log = Log()
    log.chan("n1", "create", "room")
    before = log.state().summary()
    log.add("n1", text)
    state = log.state()
    assert state.summary() == before
    assert state.rejected == {reason: 1}


def test_a_ten_megabyte_name_is_ignored_quickly() -> None:
    huge = "N" * (10 * 1024 * 1024)
    log = Log()
    log.chan("n1", "rename", display_name="ann")
    log.chan("n1", "rename", display_name=huge)
    log.add("n1", {"t": "CIRCLE_NAME_EVT", "name": huge})
    log.chan("n1", "create", huge)
    state = log.state()
    assert state.names == {"n1": "ann"}
    assert state.name == ""
    assert list(state.channels) == ["general"]
    assert state.rejected == {"too_long": 3}


def test_known_types_without_channel_effect_are_accepted_and_change_nothing() -> None:
    log = Log()
    log.add("n1", {"t": "ANCHOR_ANNOUNCE", "can_anchor": True})
    log.add("n1", {"t": "CALL_EVT", "op": "create", "call_id": "abc"})
    state = log.state()
    assert state.rejected == {}
    assert state.summary() == derive([]).summary()


def test_event_text_is_compact_and_key_sorted() -> None:
    body = {"t": "CHANNEL_EVT", "op": "rename", "display_name": "Bø 🚀", "actor_node_id": "n1"}
    text = event_text(body)
    assert text == '{"actor_node_id":"n1","display_name":"Bø 🚀","op":"rename","t":"CHANNEL_EVT"}'
    assert json.loads(text) == body
    assert key_hash("k") == "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"


def test_the_spec_vectors_control_event_derives_channel_ops() -> None:
    cases = vector_cases()["message_mac"]
    control = [c["message"] for c in cases if c["message"]["channel_id"] == CONTROL_CHANNEL]
    assert len(control) == 1
    msg = control[0]
    ev = ControlEvent(msg["msg_id"], msg["author_node_id"], msg["created_ts"], msg["text"])
    state = derive([ev])
    assert state.rejected == {}
    ops = state.channels["ops"]
    assert (ops.access_mode, ops.creator, ops.created_ts) == ("public", "b7", 1764000200)
    assert ops.members == {"b7"}
    # Our writer produces exactly the bytes the reference implementation wrote.
    assert event_text(json.loads(msg["text"])) == msg["text"]


# --- the store's fold: Ops on a real database ---------------------------------------


class Member:
    """One node's store (Ops on its own database), in a shared circle."""

    def __init__(self, path: Path, secret: str, name: str) -> None:
        self.db = Database(path)
        self.node_id = ids.new_node_id()
        self.ops = Ops(self.db, NodeInfo(self.node_id, name, False, ""))
        self.secret = secret
        self.circle_id = ids.circle_id(secret)
        with self.db.transaction():
            self.db.add_circle(Circle(self.circle_id, secret, "", 0))

    def call(self, op: str, body: dict[str, Any]) -> Any:
        with self.db.transaction():
            out = self.ops.handle(op, {"circle_id": self.circle_id, **body})
        # Stored rows carry their wire form when gossip would push them on:
        # always for this node's own messages, which are what a test sends on.
        self.sent = [row["wire"] for row in out.stored if row["origin"] == "local"]
        return out.reply

    def control(self, event: dict[str, Any], ts: int, msg_id: str) -> list[dict[str, Any]]:
        self.call(OP_CONTROL, {"event": event, "created_ts": ts, "msg_id": msg_id})
        return self.sent

    def receive(self, wires: list[dict[str, Any]]) -> list[str]:
        results: list[str] = self.call(OP_APPEND, {"origin": "gossip", "msgs": wires})["results"]
        return results

    def channel(self, cid: str) -> dict[str, Any]:
        return next(c for c in self.call(OP_CHANNELS, {})["channels"] if c["channel_id"] == cid)


@pytest.fixture
def circle(tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    secret = ids.new_secret()
    a = Member(tmp_path / "a.db", secret, "alice")
    b = Member(tmp_path / "b.db", secret, "bob")
    yield a, b
    a.db.close()
    b.db.close()


def _raw_control(author: Member, text: str, ts: int, msg_id: str) -> dict[str, Any]:
    """A valid control message of ``author`` with any text: what a hostile member can send."""
    msg = compose_message(
        author.secret,
        circle_id=author.circle_id,
        channel_id=CONTROL_CHANNEL,
        author_node_id=author.node_id,
        display_name="",
        text=text,
        created_ts=ts,
        msg_id=msg_id,
        encrypt=False,
    )
    return to_wire(msg)


def _bad_control_total(reason: str) -> float:
    value = metrics.BAD_INPUT.labels("control", reason)._value.get()
    return float(value)


def test_store_refuses_a_control_event_its_rules_refuse(circle) -> None:
    a, b = circle
    a.control(
        {
            "t": "CHANNEL_EVT",
            "op": "create",
            "channel_id": "club",
            "access_mode": "invite",
            "actor_node_id": a.node_id,
        },
        100,
        "a" * 32,
    )
    b.receive(a.sent)
    with pytest.raises(RPCError, match="invitation"):
        b.control(
            {"t": "CHANNEL_EVT", "op": "join", "channel_id": "club", "actor_node_id": b.node_id},
            101,
            "b" * 32,
        )
    with pytest.raises(RPCError, match="you may not post"):
        b.call(
            OP_POST,
            {"channel_id": "club", "msgs": [{"msg_id": "c" * 32, "created_ts": 102, "text": "hi"}]},
        )
    assert b.channel("club")["members"] == [a.node_id]


def test_store_counts_hostile_events_received_once_each(circle) -> None:
    a, b = circle
    a.control(
        {"t": "CHANNEL_EVT", "op": "create", "channel_id": "room", "actor_node_id": a.node_id},
        100,
        "a" * 32,
    )
    good = a.sent
    # A hostile member writes raw control texts (the store's own check is bypassed).
    hostile = [
        _raw_control(a, text, 200 + i, f"{i:032x}")
        for i, text in enumerate(["nope{", '{"t":"CHANNEL_EVT","op":"zap"}'])
    ]
    before = {r: _bad_control_total(r) for r in ("not_json", "unknown_op")}
    assert b.receive(good + hostile) == ["stored"] * 3
    summary = b.call(OP_CHANNELS, {})
    assert [c["channel_id"] for c in summary["channels"]] == ["general", "room"]
    b.call(OP_WHO, {})  # derived once more: nothing counted twice
    b.receive(hostile)  # duplicates: nothing new
    # A new event makes the store derive the circle again: old rejections are not recounted.
    a.control(
        {"t": "CHANNEL_EVT", "op": "rename", "display_name": "al", "actor_node_id": a.node_id},
        300,
        "e" * 32,
    )
    assert b.receive(a.sent) == ["stored"]
    b.call(OP_CHANNELS, {})
    assert _bad_control_total("not_json") == before["not_json"] + 1
    assert _bad_control_total("unknown_op") == before["unknown_op"] + 1


def test_store_ignores_a_circle_name_event_for_another_circle(circle) -> None:
    """An event whose circle_id field names another circle is ignored and counted.

    The spec gives CIRCLE_NAME_EVT a ``circle_id`` field; an event naming another
    circle (copied, or replayed from elsewhere) must not rename this one.
    """
    a, b = circle
    text = event_text({"t": "CIRCLE_NAME_EVT", "circle_id": "0" * 24, "name": "hijacked"})
    assert b.receive([_raw_control(a, text, 100, "a" * 32)]) == ["stored"]
    assert b.call(OP_CHANNELS, {})["name"] == ""
    assert sum(b.ops.state(b.circle_id).rejected.values()) == 1
    # Our own store does not write one either.
    with contextlib.suppress(RPCError):
        a.control({"t": "CIRCLE_NAME_EVT", "circle_id": "0" * 24, "name": "mine"}, 101, "b" * 32)
    assert a.call(OP_CHANNELS, {})["name"] == ""


def test_store_ignores_a_channel_event_for_another_circle(circle) -> None:
    a, b = circle
    event = {
        "t": "CHANNEL_EVT",
        "op": "create",
        "channel_id": "elsewhere",
        "circle_id": "0" * 24,
        "actor_node_id": a.node_id,
    }
    assert b.receive([_raw_control(a, event_text(event), 100, "a" * 32)]) == ["stored"]
    assert [c["channel_id"] for c in b.call(OP_CHANNELS, {})["channels"]] == ["general"]
    assert sum(b.ops.state(b.circle_id).rejected.values()) == 1


def test_a_join_accepted_by_the_store_stays_accepted_in_the_same_second(circle) -> None:
    """What the store accepted at write time, the fold must accept too.

    Both events carry the same created_ts (Unix seconds) and msg_ids are random,
    so the join can sort before the create it depends on.
    """
    a, b = circle
    a.control(
        {
            "t": "CHANNEL_EVT",
            "op": "create",
            "channel_id": "vault",
            "access_mode": "key",
            "key_hash": key_hash("k"),
            "actor_node_id": a.node_id,
        },
        100,
        "f" * 32,
    )
    b.receive(a.sent)
    b.control(
        {
            "t": "CHANNEL_EVT",
            "op": "join",
            "channel_id": "vault",
            "key_hash": key_hash("k"),
            "actor_node_id": b.node_id,
        },
        100,
        "0" * 32,
    )
    assert b.channel("vault")["can_post"], "b's join was accepted, yet b may not post"


def test_a_restarted_store_does_not_count_old_rejections_again(circle) -> None:
    """felund_bad_input_total counts each rejected event once, not once per store process.

    A new Ops on the same database is what a store restart (or kill -9) gives.
    """
    a, b = circle
    assert b.receive([_raw_control(a, "nope{", 100, "a" * 32)]) == ["stored"]
    start = _bad_control_total("not_json")
    b.call(OP_CHANNELS, {})
    assert _bad_control_total("not_json") == start + 1
    b.ops = Ops(b.db, NodeInfo(b.node_id, "bob", False, ""))
    b.call(OP_CHANNELS, {})
    assert _bad_control_total("not_json") == start + 1


def test_members_text() -> None:
    assert chatmodel.members_text("general", []) == "everyone"
    assert chatmodel.members_text("ops", ["a"]) == "1 member"
    assert chatmodel.members_text("ops", ["a", "b", "a"]) == "2 members"
    assert chatmodel.members_text("ops", []) == "0 members"
