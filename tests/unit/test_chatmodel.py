"""The sans-IO fold of control events (felund.v1.chatmodel), and the store's use of it.

Every node that holds the same set of control events must derive the same
channels, members and names, whatever order the events arrived in; malformed
or hostile events change nothing and are counted by reason.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund import metrics
from felund.errors import RPCError
from felund.protocol import (
    ACCESS_MODES,
    CONTROL_CHANNEL,
    ERR_FORBIDDEN,
    OP_APPEND,
    OP_CHANNELS,
    OP_CONTROL,
    OP_POST,
    OP_WHO,
)
from felund.store.database import Circle, Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import VECTORS as _V1_VECTORS
from felund.testing import vector_cases
from felund.v1 import chatmodel, events, ids
from felund.v1.chatmodel import ControlEvent, derive, event_text, key_hash
from felund.v1.wire import compose_message, to_wire

N1, N2, N3 = "1a" * 12, "2b" * 12, "3c" * 16  # well-formed node ids; 32 hex as a browser's
AUTHORS = (N1, N2, N3)
# The key each signed event of an author verified with (the fold only compares them).
PK = {N1: b"\x01" * 32, N2: b"\x02" * 32, N3: b"\x03" * 32}
VECTORS = _V1_VECTORS.parent
KEYS = ("k-one", "k-two")
CHANNELS = ("general", "alpha", "beta", "gamma", "Bad!", "__control", "x" * 33)
NAMES = ("ann", "bob", "Bø 🚀", "", "x" * 65, "tab\there")


# --- helpers ------------------------------------------------------------------


def kh(key: str) -> str:
    """A key's hash as events carry it (the circle and channel do not matter here)."""
    return key_hash("0" * 24, "vault", key)


class Log:
    """Builds events with increasing time and unique msg ids."""

    def __init__(self, signed: bool = False) -> None:
        self.events: list[ControlEvent] = []
        self.ts = 1000
        self.signed = signed  # every event signed by its author's key (PK), or none

    def add(self, author: str, body: dict[str, Any] | str, ts: int | None = None) -> ControlEvent:
        self.ts = self.ts + 1 if ts is None else ts
        text = body if isinstance(body, str) else event_text(body)
        signer = PK[author] if self.signed else None
        ev = ControlEvent(f"{len(self.events):032x}", author, self.ts, text, signer)
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
        assert c.access_mode in ACCESS_MODES
        if c.access_mode == "key":
            assert chatmodel._HEX64_RE.fullmatch(c.key_hash) or c.key_hash == ""
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
        "target_node_id": st.sampled_from((*AUTHORS, "bad id!", "n1", "A" * 24)),
        "access_mode": st.sampled_from((*ACCESS_MODES, "secret")),
        "key_hash": st.sampled_from([kh(k) for k in KEYS] + ["nothex"]),
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
    # Few timestamps, so that ties are broken by hash; one far ahead, held.
    st.sampled_from((0, 1, 2, 3, 4, 5, 6, 2**41 - 1)),
)
# The reader's clock, as the last second due: some of the drawn events are held.
_now = st.integers(0, 8).map(lambda due: due - chatmodel.MAX_SKEW_S)


# Channels created early, so that most later events act on something.
_early_create = st.tuples(
    st.sampled_from(AUTHORS),
    st.sampled_from(("alpha", "beta", "gamma")),
    st.sampled_from(ACCESS_MODES),
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
            "key_hash": kh(key),
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


@settings(max_examples=300, deadline=None)
@given(events=_events(), now=_now, seed=st.integers(0, 2**32))
def test_shuffled_arrival_orders_derive_identical_state(events, now, seed) -> None:
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    first, second = derive(events, now=now), derive(shuffled, now=now)
    assert first.summary() == second.summary()
    assert first.rejected == second.rejected
    assert first.refused == second.refused
    assert first.due_at == second.due_at
    assert sum(first.rejected.values()) <= len(events)
    for ev in events:  # what is held changes nothing
        if ev.created_ts > now + chatmodel.MAX_SKEW_S:
            assert first.refused[ev.msg_id] == "future"
    _invariants(first)


@settings(max_examples=100, deadline=None)
@given(events=_events(), now=_now, seed=st.integers(0, 2**32))
def test_incremental_arrival_ends_in_the_state_of_the_whole_set(events, now, seed) -> None:
    """A node re-derives after every arrival: whatever the order, it ends where derive(all) is."""
    order = list(events)
    random.Random(seed).shuffle(order)
    held: list[ControlEvent] = []
    for ev in order:
        held.append(ev)
        _invariants(derive(held, now=now))
    assert derive(held, now=now).summary() == derive(events, now=now).summary()


@settings(max_examples=100, deadline=None)
@given(events=_events(), now=_now)
def test_held_events_change_nothing_until_due(events, now) -> None:
    horizon = now + chatmodel.MAX_SKEW_S
    due = [ev for ev in events if ev.created_ts <= horizon]
    assert derive(events, now=now).summary() == derive(due, now=now).summary()


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


def _create(msg_id: str, author: str, ts: int, **fields: Any) -> ControlEvent:
    body = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "room", **fields}
    return ControlEvent(msg_id, author, ts, event_text(body))


def test_of_two_creates_the_smaller_hash_wins_whatever_the_dates() -> None:
    later_won = 0
    for ts in range(1, 30):
        a = _create("a" * 32, N1, 1000, access_mode="key", key_hash=kh("k"))
        b = _create("b" * 32, N2, ts, access_mode="public")
        winner = min((a, b), key=chatmodel.event_hash)
        for order in ([a, b], [b, a]):
            state = derive(order)
            assert state.channels["room"].creator == winner.author
            assert state.channels["room"].created_ts == winner.created_ts
            assert state.rejected == {"exists": 1}
        later_won += winner is a
    assert 0 < later_won < 29  # the earlier date is no advantage


def test_an_invalid_create_does_not_take_part() -> None:
    bad = _create("a" * 32, N3, 10, access_mode="key", key_hash="not hex")
    good = _create("b" * 32, N2, 20, access_mode="public")
    state = derive([bad, good])
    assert (state.channels["room"].creator, state.channels["room"].created_ts) == (N2, 20)
    assert state.rejected == {"bad_key_hash": 1}


def test_a_backdated_create_does_not_take_over_a_key_channel() -> None:
    """The issue's attack: `create ops public` dated created_ts=1 for an existing key channel.

    By its date it won on every node; now it wins only where its hash is the
    smaller (a member trying msg_ids, until events are signed), never by date.
    """
    log = Log()
    honest = log.chan(N1, "create", "ops", access_mode="key", key_hash=kh("k"))
    log.chan(N2, "join", "ops", key_hash=kh("k"))
    body = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "ops", "access_mode": "public"}
    won = 0
    for i in range(40):
        attack = ControlEvent(f"{i:032x}", N3, 1, event_text(body))
        ops = derive([*log.events, attack]).channels["ops"]
        by_hash = chatmodel.event_hash(attack) < chatmodel.event_hash(honest)
        assert (ops.creator, ops.access_mode) == ((N3, "public") if by_hash else (N1, "key"))
        won += by_hash
    assert 0 < won < 40


def test_creating_general_is_refused() -> None:
    log = Log()
    log.chan(N1, "create", "general", access_mode="invite")
    state = log.state()
    assert state.channels["general"].access_mode == "public"
    assert state.rejected == {"exists": 1}


def test_public_channel_anyone_posts_join_makes_member() -> None:
    log = Log()
    log.chan(N1, "create", "lobby")
    assert log.state().can_post("lobby", N2)
    log.chan(N2, "join", "lobby")
    assert log.state().channels["lobby"].members == {N1, N2}


def test_key_join_needs_the_right_hash_or_none() -> None:
    """A join with another key's hash is refused; a v1 join carries none (its sender
    checked the key, addendum §2.3) and counts."""
    log = Log()
    log.chan(N1, "create", "vault", access_mode="key", key_hash=kh("open sesame"))
    log.chan(N2, "join", "vault", key_hash=kh("wrong"))
    log.chan(N2, "join", "vault", key_hash="open sesame")  # the key itself, not its hash
    log.chan(N2, "join", "vault", key_hash="")
    state = log.state()
    assert not state.can_post("vault", N2)
    assert state.can_post("vault", N1)
    assert state.rejected == {"wrong_key": 3}
    log.chan(N2, "join", "vault", key_hash=kh("open sesame"))
    log.chan(N3, "join", "vault")
    state = log.state()
    assert state.can_post("vault", N2) and state.can_post("vault", N3)
    assert state.channels["vault"].members == {N1, N2, N3}
    # The key never appears in the state, only its hash.
    assert "open sesame" not in json.dumps(state.summary())


def test_a_key_channel_made_with_an_empty_hash_checks_no_key() -> None:
    """The v1 TUI makes key channels with key_hash "" (addendum §2.2): accepted, any join counts."""
    log = Log()
    log.chan(N1, "create", "tui", access_mode="key", key_hash="")
    log.chan(N1, "create", "tui2", access_mode="key")
    log.chan(N2, "join", "tui", key_hash=kh("anything"))
    log.chan(N3, "join", "tui")
    state = log.state()
    assert state.channels["tui"].access_mode == state.channels["tui2"].access_mode == "key"
    assert state.channels["tui"].members == {N1, N2, N3}
    assert state.rejected == {}


def test_key_channel_without_a_valid_hash_is_not_created() -> None:
    log = Log()
    log.chan(N1, "create", "vault2", access_mode="key", key_hash="ABC")
    log.chan(N1, "create", "vault3", access_mode="key", key_hash=kh("k").upper())
    log.chan(N1, "create", "vault4", access_mode="key", key_hash=int("9" * 64))
    log.chan(N1, "create", "odd", access_mode="private")
    state = log.state()
    assert list(state.channels) == ["general"]
    assert state.rejected == {"bad_key_hash": 3, "bad_access_mode": 1}


def test_the_key_hash_is_the_addendum_s() -> None:
    """SHA-256 of circle_id|channel_id|key (addendum §2.1), with the addendum's vectors."""
    cases = json.loads((VECTORS / "felund-v1-addendum.json").read_text())["cases"]
    assert len(cases["channel_key_hash"]) == 2
    for c in cases["channel_key_hash"]:
        assert key_hash(c["circle_id"], c["channel_id"], c["key"]) == c["key_hash"]


def test_invite_join_needs_approve_by_the_channels_creator() -> None:
    log = Log(signed=True)
    log.chan(N1, "create", "club", access_mode="invite")
    log.chan(N2, "join", "club")
    assert log.state().rejected == {"not_approved": 1}
    log.chan(N2, "request", "club")
    state = log.state()
    assert state.channels["club"].requests == {N2}
    assert not state.can_post("club", N2)
    # Nobody but its creator (in a circle without owner) approves, not even themselves.
    log.chan(N3, "approve", "club", target_node_id=N3)
    log.chan(N2, "approve", "club", target_node_id=N2)
    state = log.state()
    assert state.rejected["not_allowed"] == 2
    assert not state.can_post("club", N3)
    log.chan(N1, "approve", "club", target_node_id=N2)
    state = log.state()
    club = state.channels["club"]
    assert club.members == {N1, N2}
    assert club.requests == set()
    assert club.approved == {N2}
    assert state.can_post("club", N2)
    # Once approved, leaving and joining again works without a new approve.
    log.chan(N2, "leave", "club")
    assert not log.state().can_post("club", N2)
    log.chan(N2, "join", "club")
    assert log.state().can_post("club", N2)
    # An approved member cannot approve others.
    log.chan(N2, "approve", "club", target_node_id=N3)
    assert not log.state().can_post("club", N3)
    assert log.state().rejected["not_allowed"] == 3


def test_request_only_for_invite_channels_and_approve_needs_a_target() -> None:
    log = Log()
    log.chan(N1, "create", "lobby")
    log.chan(N1, "create", "club", access_mode="invite")
    log.chan(N2, "request", "lobby")
    log.chan(N1, "approve", "club")
    log.chan(N1, "approve", "club", target_node_id="has space")
    log.chan(N1, "approve", "club", target_node_id=[N2])
    log.chan(N2, "join", "nowhere")
    assert log.state().rejected == {"not_invite": 1, "bad_target": 3, "no_channel": 1}


def test_leave_general_is_refused_and_leave_removes_membership() -> None:
    log = Log()
    log.chan(N1, "leave", "general")
    log.chan(N1, "create", "vault", access_mode="key", key_hash=kh("k"))
    log.chan(N1, "leave", "vault")
    state = log.state()
    assert state.rejected == {"general": 1}
    assert state.channels["vault"].members == set()
    assert not state.can_post("vault", N1)
    assert state.can_post("general", N1)


def test_rename_sets_the_authors_name_latest_wins() -> None:
    log = Log()
    log.chan(N1, "rename", display_name="ann")
    log.chan(N2, "rename", display_name="bob")
    log.chan(N1, "rename", display_name="Anne-Marie 🚀")
    log.chan(N1, "rename", display_name="")
    log.chan(N1, "rename", display_name="x" * 65)
    log.chan(N1, "rename", display_name="line\nbreak")
    log.chan(N1, "rename", display_name=42)
    log.chan(N1, "rename")
    state = log.state()
    assert state.names == {N1: "Anne-Marie 🚀", N2: "bob"}
    assert state.rejected == {"bad_name": 5}


def test_circle_name_event() -> None:
    log = Log()
    log.add(N1, {"t": "CIRCLE_NAME_EVT", "circle_id": "c" * 24, "name": "the crew"})
    assert log.state().name == "the crew"
    log.add(N2, {"t": "CIRCLE_NAME_EVT", "name": "renamed"})
    log.add(N2, {"t": "CIRCLE_NAME_EVT", "name": ""})
    log.add(N2, {"t": "CIRCLE_NAME_EVT"})
    state = log.state()
    assert state.name == "renamed"
    assert state.rejected == {"bad_name": 2}
    assert state.summary()["name"] == "renamed"


def test_events_of_other_authors_are_ignored() -> None:
    """actor_node_id (or node_id) must be the message's author: only one's own actions."""
    log = Log()
    log.chan(N1, "create", "club", access_mode="invite")
    log.add(
        N2,
        {
            "t": "CHANNEL_EVT",
            "op": "approve",
            "channel_id": "club",
            "actor_node_id": N1,
            "target_node_id": N2,
        },
    )
    log.add(N2, {"t": "CHANNEL_EVT", "op": "rename", "node_id": N1, "display_name": "evil"})
    log.add(N2, {"t": "CHANNEL_EVT", "op": "leave", "channel_id": "club", "actor_node_id": None})
    log.add(N2, {"t": "CIRCLE_NAME_EVT", "name": "x", "actor_node_id": N3})
    state = log.state()
    assert state.rejected == {"actor_mismatch": 4}
    assert state.channels["club"].members == {N1}
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
    log.chan(N1, "create", "room")
    before = log.state().summary()
    log.add(N1, text)
    state = log.state()
    assert state.summary() == before
    assert state.rejected == {reason: 1}


def test_a_ten_megabyte_name_is_ignored_quickly() -> None:
    huge = "N" * (10 * 1024 * 1024)
    log = Log()
    log.chan(N1, "rename", display_name="ann")
    log.chan(N1, "rename", display_name=huge)
    log.add(N1, {"t": "CIRCLE_NAME_EVT", "name": huge})
    log.chan(N1, "create", huge)
    state = log.state()
    assert state.names == {N1: "ann"}
    assert state.name == ""
    assert list(state.channels) == ["general"]
    assert state.rejected == {"too_long": 3}


def test_known_types_without_channel_effect_are_accepted_and_change_nothing() -> None:
    log = Log()
    log.add(N1, {"t": "ANCHOR_ANNOUNCE", "can_anchor": True})
    log.add(N1, {"t": "CALL_EVT", "op": "create", "call_id": "abc"})
    state = log.state()
    assert state.rejected == {}
    assert state.summary() == derive([]).summary()


def test_event_text_is_compact_and_key_sorted() -> None:
    body = {"t": "CHANNEL_EVT", "op": "rename", "display_name": "Bø 🚀", "actor_node_id": "n1"}
    text = event_text(body)
    assert text == '{"actor_node_id":"n1","display_name":"Bø 🚀","op":"rename","t":"CHANNEL_EVT"}'
    assert json.loads(text) == body


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


# --- dates: held when far ahead, never deciding a tie or a contest ---------------------

NOW = 1_764_000_000


def test_events_dated_far_ahead_are_held_and_change_nothing() -> None:
    """The issue's attack: a rename at 2**41-1 and a circle name at 2**41-2 from a member."""
    log = Log()
    log.add(N1, {"t": "CIRCLE_NAME_EVT", "name": "ours"}, ts=NOW - 10)
    log.chan(N1, "rename", display_name="ann")
    log.add(N2, {"t": "CIRCLE_NAME_EVT", "name": "pwned"}, ts=2**41 - 2)
    log.add(N2, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "evil"}, ts=2**41 - 1)
    log.add(N2, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "x"}, ts=NOW + 3600)
    state = derive(log.events, now=NOW)
    assert (state.name, state.names, list(state.channels)) == ("ours", {N1: "ann"}, ["general"])
    assert state.rejected == {"future": 3}
    assert state.due_at == NOW + 3600 - chatmodel.MAX_SKEW_S
    # An hour later the create falls due; the others never do.
    later = derive(log.events, now=NOW + 3600)
    assert list(later.channels) == ["general", "x"]
    assert later.rejected == {"future": 2}


def test_an_event_within_the_skew_counts_at_once() -> None:
    log = Log()
    log.add(N1, {"t": "CIRCLE_NAME_EVT", "name": "fast clock"}, ts=NOW + chatmodel.MAX_SKEW_S)
    assert derive(log.events, now=NOW).name == "fast clock"
    assert derive(log.events, now=NOW - 1).name == ""


def test_a_tie_in_time_breaks_by_hash_not_by_msg_id() -> None:
    """msg_ids are the author's choice: "0"*32 would sort first by msg_id every time."""
    wins = 0
    for i in range(20):
        names = [
            ControlEvent(
                f"{i:02x}" + "0" * 30, N1, NOW, event_text({"t": "CIRCLE_NAME_EVT", "name": "zero"})
            ),
            ControlEvent(
                f"{i:02x}" + "f" * 30, N2, NOW, event_text({"t": "CIRCLE_NAME_EVT", "name": "eff"})
            ),
        ]
        last = max(names, key=chatmodel.event_hash)
        assert derive(names, now=NOW).name == json.loads(last.text)["name"]
        wins += last is names[0]
    assert 0 < wins < 20


def test_an_event_waits_across_seconds_for_what_it_needs() -> None:
    """A join dated by a clock two minutes behind its channel's creator still counts,
    as do an approve and a join dated before the channel was made."""
    log = Log(signed=True)
    log.chan(N2, "join", "lobby")  # dated 1001: before the create
    log.chan(N3, "join", "club")  # before the invite channel exists and before its approve
    log.chan(N1, "approve", "club", target_node_id=N3)  # before the channel exists
    log.ts += 120
    log.chan(N1, "create", "lobby")
    log.chan(N1, "create", "club", access_mode="invite")
    log.chan(N1, "approve", "club", target_node_id=N2)
    state = log.state()
    assert state.channels["lobby"].members == {N1, N2}
    assert state.channels["club"].members == {N1, N2, N3}
    assert state.rejected == {}


def test_a_leave_before_a_join_in_time_stays_before_it() -> None:
    log = Log()
    log.chan(N2, "leave", "lobby")
    log.chan(N2, "join", "lobby")
    log.chan(N3, "join", "lobby")
    log.chan(N3, "leave", "lobby")
    log.chan(N1, "create", "lobby")
    assert log.state().channels["lobby"].members == {N1, N2}


def test_an_approve_names_a_well_formed_node_id() -> None:
    """Strings are not members: an approve naming anything but 24 or 32 lowercase hex is ignored."""
    log = Log(signed=True)
    log.chan(N1, "create", "vip", access_mode="invite")
    for target in ("bob", "8bd55a18", "totally-bogus-node", N2.upper(), N2 + "0", N3[:30]):
        log.chan(N1, "approve", "vip", target_node_id=target)
    log.chan(N1, "approve", "vip", target_node_id=N3)  # 32 hex, as a v1 browser's id
    state = log.state()
    assert state.channels["vip"].members == {N1, N3}
    assert state.rejected == {"bad_target": 6}


def test_node_id_names_the_actor_of_a_join_leave_request_or_rename() -> None:
    """v1 readers take the member from node_id (addendum §2.4): it must be the author's."""
    log = Log()
    log.chan(N1, "create", "lobby")
    log.chan(N2, "join", "lobby")
    for op in ("leave", "join", "request"):
        log.add(
            N3,
            {
                "t": "CHANNEL_EVT",
                "op": op,
                "channel_id": "lobby",
                "node_id": N2,
                "actor_node_id": N3,
            },
        )
    log.add(N3, {"t": "CHANNEL_EVT", "op": "rename", "node_id": N2, "display_name": "x"})
    state = log.state()
    assert state.channels["lobby"].members == {N1, N2}
    assert state.names == {}
    assert state.rejected == {"actor_mismatch": 4}


def test_v1_event_forms_apply() -> None:
    """What the other implementation writes (addendum §2.3, §3.1) counts here, but an
    approve: unsigned, it uses a role (the channel's owner's) that it cannot show."""
    log = Log()
    cli = {"t": "CHANNEL_EVT", "circle_id": "", "created_ts": 5}
    log.add(
        N1,
        {
            **cli,
            "op": "create",
            "channel_id": "ops",
            "access_mode": "key",
            "key_hash": kh("k"),
            "actor_node_id": N1,
            "created_by": N1,
        },
    )
    log.add(N2, {**cli, "op": "join", "channel_id": "ops", "node_id": N2, "actor_node_id": N2})
    log.add(N3, {"t": "CHANNEL_EVT", "op": "rename", "node_id": N3, "display_name": "tui"})
    log.add(
        N1,
        {
            "t": "CHANNEL_EVT",
            "op": "approve",
            "channel_id": "ops",
            "actor_node_id": N1,
            "target_node_id": N3,
        },
    )
    log.add(N2, {"t": "CIRCLE_NAME_EVT", "name": "from a browser"})
    state = derive(
        [
            ControlEvent(e.msg_id, e.author, e.created_ts, e.text.replace(',"circle_id":""', ""))
            for e in log.events
        ]
    )
    assert state.channels["ops"].members == {N1, N2}
    assert (state.names, state.name) == ({N3: "tui"}, "from a browser")
    assert state.rejected == {"unsigned": 1}


def test_the_writer_refuses_a_contest_and_a_keyless_join() -> None:
    log = Log()
    log.chan(N1, "create", "vault", access_mode="key", key_hash=kh("k"))
    log.chan(N1, "create", "tui", access_mode="key", key_hash="")
    state = log.state()
    join = events.channel_event("join", "c" * 24, "vault", N2)
    assert chatmodel.writer_problem(state, join) == "needs_key"
    assert chatmodel.writer_problem(state, {**join, "channel_id": "tui"}) is None
    assert chatmodel.writer_problem(state, {**join, "key_hash": kh("x")}) is None  # the fold says
    create = events.channel_event("create", "c" * 24, "vault", N2)
    assert chatmodel.writer_problem(state, create) == "exists"
    assert chatmodel.writer_problem(state, {**create, "channel_id": "new"}) is None


# --- the builder, names of channels and of people ---------------------------------------

CIRCLE_ID = "0123456789abcdef01234567"


def test_the_builder_writes_what_both_implementations_read() -> None:
    me = N1
    create = events.channel_event("create", CIRCLE_ID, "#secret", me, access="key", key="hunter2")
    assert create == {
        "t": "CHANNEL_EVT",
        "op": "create",
        "circle_id": CIRCLE_ID,
        "channel_id": "secret",
        "access_mode": "key",
        "key_hash": "b98815cd36f50d86a94634bf27b653fef1f7a5cca6cff63d37a5d5cb49b492b9",
        "actor_node_id": me,
        "created_by": me,
    }
    join = events.channel_event("join", CIRCLE_ID, "secret", me, key="hunter2")
    assert join["key_hash"] == create["key_hash"] and join["node_id"] == me
    assert events.channel_event("create", CIRCLE_ID, "lobby", me)["key_hash"] == ""
    assert events.channel_event("leave", CIRCLE_ID, "lobby", me)["node_id"] == me
    approve = events.channel_event("approve", CIRCLE_ID, "vip", me, target=N2)
    assert (approve["target_node_id"], "node_id" in approve) == (N2, False)
    assert events.rename_event(CIRCLE_ID, me, "ann")["node_id"] == me
    assert events.circle_name_event(CIRCLE_ID, "c") == {
        "t": "CIRCLE_NAME_EVT",
        "circle_id": CIRCLE_ID,
        "name": "c",
    }
    assert events.dated(join, 7)["created_ts"] == 7
    assert events.dated(events.circle_name_event(CIRCLE_ID, "c"), 7) == events.circle_name_event(
        CIRCLE_ID, "c"
    )
    # Every event we build applies.
    evs = [
        ControlEvent(f"{i:032x}", me, NOW + i, event_text(events.dated(e, NOW + i)))
        for i, e in enumerate([create, join, events.rename_event(CIRCLE_ID, me, "ann")])
    ]
    assert derive(evs, CIRCLE_ID, now=NOW).rejected == {}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("create", "Bad!"), chatmodel.CHANNEL_RULE),
        (("join", "__control"), chatmodel.CHANNEL_RULE),
        (("join", "x" * 33), chatmodel.CHANNEL_RULE),
        (("create", "vault", {"access": "key"}), events.NEEDS_KEY),
        (("create", "vault", {"access": "secret"}), "access is one of public, key, invite"),
        (("approve", "vip"), "approve whom? name the person"),
        (("rename", "vip"), "no channel operation 'rename'"),
    ],
)
def test_the_builder_refuses_with_one_text(args: tuple[Any, ...], problem: str) -> None:
    op, name, *extra = args
    with pytest.raises(ValueError, match="^" + re.escape(problem) + "$"):
        events.channel_event(op, CIRCLE_ID, name, N1, **(extra[0] if extra else {}))


PEOPLE = [(N1, "ann"), (N2, "bob"), ("2b" + "9" * 22, "bobby"), (N3, "1a"), ("b7", "old")]


@pytest.mark.parametrize(
    ("who", "found"),
    [
        (N1, N1),
        ("f" * 24, "f" * 24),  # a full id: taken as given
        ("e" * 32, "e" * 32),
        (" ann ", N1),
        ("bob", N2),
        ("3c3c", N3),
        ("2b2b", N2),
        ("b7", "b7"),
        ("bobby", "2b" + "9" * 22),
        ("2b", '"2b" could be 2 people: give more of a node id'),
        ("1a", '"1a" could be 2 people: give more of a node id'),  # a name and an id's start
        ("carol", 'no one in this circle is "carol" (by node id, its start, or name)'),
        (
            "totally-bogus-node",
            'no one in this circle is "totally-bogus-node" (by node id, its start, or name)',
        ),
        ("Ann", 'no one in this circle is "Ann" (by node id, its start, or name)'),
        ("  ", "name someone: a node id, its start, or a name"),
    ],
)
def test_a_person_is_named_by_id_its_start_or_name(who: str, found: str) -> None:
    if " " in found or '"' in found:
        with pytest.raises(ValueError, match="^" + re.escape(found) + "$"):
            events.resolve_person(PEOPLE, who)
    else:
        assert events.resolve_person(PEOPLE, who) == found


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
    # Our own store refuses to write one.
    with pytest.raises(RPCError, match="other_circle") as refused:
        a.control({"t": "CIRCLE_NAME_EVT", "circle_id": "0" * 24, "name": "mine"}, 101, "b" * 32)
    assert refused.value.code == ERR_FORBIDDEN
    assert a.call(OP_CHANNELS, {})["name"] == ""
    assert a.db.seq_of("b" * 32) is None


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
            "key_hash": kh("k"),
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
            "key_hash": kh("k"),
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
    start = _bad_control_total("not_json")
    # The store folds a circle's events as soon as one arrives (it follows its epochs).
    assert b.receive([_raw_control(a, "nope{", 100, "a" * 32)]) == ["stored"]
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
