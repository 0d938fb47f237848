"""Roles in the fold (felund.v1.chatmodel): the owner's proof, moderators, who may
approve or rename, and unsigned events, which never grant or use a role.

The fold trusts ``signer`` as the store set it (the key that verified the
event): here keys are stand-in bytes, and an owner's proof is made with them.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.errors import RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    ERR_FORBIDDEN,
    OP_APPEND,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CONTROL,
    OP_SNAPSHOT,
    OP_WHO,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops, Outcome
from felund.testing import handled
from felund.trust.identity import IdentityKey, fingerprint
from felund.trust.owner import new_owned_secret, owned_secret
from felund.v1 import chatmodel, events, ids
from felund.v1.chatmodel import ControlEvent, derive, event_text
from felund.v1.ids import new_secret
from felund.v1.wire import compose_message, to_wire

from .conftest import ME

# Ids of the derived form (they sign everything they write), as nodes made with keys have.
OWNER, MOD, PLAIN, NEW = ("fe" + h * 11 for h in ("0a", "0b", "0c", "0d"))
OLDER = "0e" * 12  # an id from before keys
PEOPLE = (OWNER, MOD, PLAIN, NEW, OLDER)
PK = {n: bytes([i + 1]) * 32 for i, n in enumerate(PEOPLE)}
SALT = "5a" * 32
SECRET = owned_secret(PK[OWNER], SALT)
CIRCLE = "c1" * 12


class Circle:
    """Events of one circle, dated one second apart, signed unless asked not to be."""

    def __init__(self, secret: str = SECRET) -> None:
        self.events: list[ControlEvent] = []
        self.secret = secret
        self.ts = 1000

    def add(self, author: str, body: dict[str, Any], signed: bool = True) -> ControlEvent:
        self.ts += 1
        signer = PK[author] if signed else None
        ev = ControlEvent(f"{len(self.events):032x}", author, self.ts, event_text(body), signer)
        self.events.append(ev)
        return ev

    def own(self, author: str = OWNER, salt: str = SALT, signed: bool = True) -> ControlEvent:
        return self.add(author, events.owner_event(salt), signed)

    def role(self, author: str, target: str, role: str, signed: bool = True) -> ControlEvent:
        return self.add(author, events.role_event(target, role), signed)

    def chan(
        self, author: str, op: str, cid: str, signed: bool = True, **what: str
    ) -> ControlEvent:
        return self.add(author, events.channel_event(op, CIRCLE, cid, author, **what), signed)

    def name(self, author: str, name: str, signed: bool = True) -> ControlEvent:
        return self.add(author, events.circle_name_event(CIRCLE, name), signed)

    def state(self) -> chatmodel.CircleState:
        return derive(self.events, CIRCLE, now=self.ts, secret=self.secret)


def owned() -> Circle:
    """A circle with its owner proved, an invite channel #vip of the owner's, MOD a moderator."""
    c = Circle()
    c.own()
    c.chan(OWNER, "create", "vip", access="invite")
    c.role(OWNER, MOD, "moderator")
    return c


# --- the owner -------------------------------------------------------------------


def test_the_owner_is_who_shows_the_salt_of_the_secret_with_its_key() -> None:
    c = Circle()
    c.own()
    state = c.state()
    assert (state.owner, state.role_of(OWNER), state.role_of(PLAIN)) == (OWNER, "owner", "member")
    assert state.summary()["owner"] == OWNER


def test_a_proof_with_another_salt_or_key_proves_nothing() -> None:
    c = Circle()
    c.own(salt="77" * 32)
    c.own(author=PLAIN)  # the right salt, but PLAIN's key
    state = c.state()
    assert state.owner == ""
    assert state.rejected == {"bad_proof": 2}


def test_an_unsigned_proof_is_ignored() -> None:
    c = Circle()
    c.own(signed=False)
    state = c.state()
    assert (state.owner, state.rejected) == ("", {"unsigned": 1})


def test_a_v1_made_circle_has_no_owner() -> None:
    c = Circle(secret=new_secret())  # 32 random bytes: commits to no key
    c.own()
    assert c.state().owner == ""
    assert Circle(secret="").state().owner == ""  # no secret given: nothing is proved


def test_a_fresh_owned_secret_proves_its_key() -> None:
    secret, salt = new_owned_secret(PK[MOD])
    c = Circle(secret)
    c.own(author=MOD, salt=salt)
    assert c.state().owner == MOD


# --- moderators --------------------------------------------------------------------


def test_the_owner_grants_and_revokes_a_moderator() -> None:
    c = owned()
    state = c.state()
    assert (state.moderators, state.role_of(MOD)) == ({MOD}, "moderator")
    c.role(OWNER, MOD, "member")
    state = c.state()
    assert (state.moderators, state.role_of(MOD)) == (set(), "member")
    assert state.summary()["moderators"] == []


def test_nobody_else_grants_or_revokes() -> None:
    c = owned()
    c.role(MOD, PLAIN, "moderator")  # a moderator names no moderator
    c.role(PLAIN, PLAIN, "moderator")
    c.role(PLAIN, MOD, "member")
    c.role(OWNER, PLAIN, "moderator", signed=False)  # unsigned: never a role
    state = c.state()
    assert state.moderators == {MOD}
    assert state.rejected == {"not_allowed": 3, "unsigned_from_signer": 1}


def test_no_moderators_without_an_owner() -> None:
    c = Circle(secret=new_secret())
    c.own()
    c.role(OWNER, MOD, "moderator")
    assert c.state().moderators == set()


# --- approvals -----------------------------------------------------------------------


def test_a_plain_members_signed_approve_changes_nothing() -> None:
    c = owned()
    c.chan(OWNER, "approve", "vip", target=PLAIN)  # a member of #vip, and no more
    before = c.state().summary()
    assert before["channels"]["vip"]["members"] == sorted([OWNER, PLAIN])
    c.chan(PLAIN, "approve", "vip", target=NEW)
    state = c.state()
    assert state.summary() == before
    assert state.rejected == {"not_allowed": 1}


def test_a_moderators_approve_counts_and_after_demotion_no_longer() -> None:
    c = owned()
    c.chan(MOD, "approve", "vip", target=PLAIN)
    assert c.state().channels["vip"].members == {OWNER, PLAIN}
    c.role(OWNER, MOD, "member")
    state = c.state()
    assert state.channels["vip"].members == {OWNER}
    assert state.rejected == {"not_allowed": 1}


def test_the_channels_creator_approves_without_being_a_moderator() -> None:
    c = owned()
    c.chan(PLAIN, "create", "den", access="invite")
    c.chan(PLAIN, "approve", "den", target=NEW)
    c.chan(OWNER, "approve", "den", target=MOD)  # the circle's owner may, too
    assert c.state().channels["den"].members == {PLAIN, NEW, MOD}


def test_an_unsigned_approve_never_counts_even_from_the_creator_of_a_v1_circle() -> None:
    c = Circle(secret=new_secret())
    c.chan(PLAIN, "create", "den", access="invite", signed=False)
    c.chan(PLAIN, "approve", "den", target=NEW, signed=False)
    state = c.state()
    assert state.channels["den"].members == {PLAIN}
    assert state.rejected == {"unsigned": 1}


# --- the circle's name ------------------------------------------------------------------


def test_in_an_owned_circle_only_owner_or_moderator_names_it() -> None:
    c = owned()
    c.name(OWNER, "ours")
    c.name(PLAIN, "mine")
    assert c.state().name == "ours"
    c.name(MOD, "moderated")
    assert c.state().name == "moderated"
    c.name(NEW, "v1", signed=False)
    state = c.state()
    assert state.name == "moderated"
    assert state.rejected == {"not_allowed": 1, "unsigned": 1}


def test_in_a_circle_without_owner_anyone_names_it_unsigned_too() -> None:
    c = Circle(secret=new_secret())
    c.name(PLAIN, "plain")
    c.name(NEW, "v1", signed=False)
    assert c.state().name == "v1"


# --- unsigned events ----------------------------------------------------------------------


def test_an_unsigned_event_of_an_author_who_signs_is_ignored() -> None:
    c = owned()
    c.chan(PLAIN, "join", "general")  # PLAIN signs
    c.chan(PLAIN, "create", "forged", signed=False)
    c.chan(NEW, "create", "v1s", signed=False)  # NEW never signed: today's rules
    state = c.state()
    assert "forged" not in state.channels
    assert state.channels["v1s"].members == {NEW}
    assert state.rejected == {"unsigned_from_signer": 1}


def test_an_older_id_keeps_what_it_wrote_before_its_key() -> None:
    # Only a derived-form id is known to sign all it writes; an older id's
    # unsigned events from before its key still count once it signs.
    c = owned()
    c.chan(OLDER, "create", "oldroom", signed=False)
    c.chan(OLDER, "join", "general")
    state = c.state()
    assert state.channels["oldroom"].creator == OLDER
    assert "unsigned_from_signer" not in state.rejected


def test_a_signed_create_beats_an_unsigned_one_whatever_the_hashes() -> None:
    for n in range(8):  # different hashes each time, the signed one always wins
        c = Circle(secret=new_secret())
        c.ts += n
        c.chan(NEW, "create", "den", signed=False, access="invite")
        c.chan(PLAIN, "create", "den")
        state = c.state()
        assert state.channels["den"].creator == PLAIN
        assert state.channels["den"].access_mode == "public"
        assert state.rejected == {"exists": 1}


# --- what writers refuse, and say ---------------------------------------------------------


def test_writers_refuse_by_role_with_a_sentence_that_says_who_can() -> None:
    c = owned()
    c.add(OWNER, events.rename_event(CIRCLE, OWNER, "ana"))
    state = c.state()
    approve = events.channel_event("approve", CIRCLE, "vip", PLAIN, target=NEW)
    rename = events.circle_name_event(CIRCLE, "x")
    grant = events.role_event(NEW, "moderator")
    for event in (approve, rename, grant):
        assert chatmodel.writer_problem(state, event, PLAIN) == "not_allowed"
    assert chatmodel.writer_problem(state, approve, MOD) is None
    assert chatmodel.writer_problem(state, rename, MOD) is None
    assert chatmodel.writer_problem(state, grant, MOD) == "not_allowed"
    assert chatmodel.writer_problem(state, grant, OWNER) is None
    assert chatmodel.writer_problem(state, events.role_event(OWNER, "member"), OWNER) == (
        "owner_role"
    )
    assert chatmodel.who_can(state, approve) == (
        "only #vip's owner (ana), the circle's owner or a moderator can approve into #vip"
    )
    assert chatmodel.who_can(state, rename) == (
        "only the circle's owner (ana) or a moderator can rename this circle"
    )
    assert chatmodel.who_can(state, grant, {}) == (
        f"only the circle's owner ({OWNER[:8]}) can name moderators"
    )


def test_a_demotion_keeps_what_only_the_demoted_gave() -> None:
    c = owned()
    c.chan(MOD, "approve", "vip", target=PLAIN)
    c.chan(OWNER, "approve", "vip", target=NEW)
    c.chan(MOD, "approve", "vip", target=NEW)
    c.name(MOD, "by the moderator")
    before = c.state()
    c.role(OWNER, MOD, "member")
    after = c.state()
    kept = events.kept_by_owner(before, after, CIRCLE, OWNER)
    assert [(e.get("op"), e.get("target_node_id"), e.get("name")) for e in kept] == [
        ("approve", PLAIN, None),
        (None, None, "by the moderator"),
    ]
    for event in kept:
        c.add(OWNER, event)
    assert c.state().summary() == {**before.summary(), "moderators": []}


# --- hypothesis: every order of a generated set derives one state ---------------------------

_bodies = st.one_of(
    st.builds(events.owner_event, st.sampled_from((SALT, "77" * 32))),
    st.builds(events.role_event, st.sampled_from(PEOPLE), st.sampled_from(("moderator", "member"))),
    st.builds(
        lambda op, cid, target, access: (op, cid, target, access),
        st.sampled_from(("create", "create", "join", "request", "approve", "approve", "leave")),
        st.sampled_from(("vip", "den")),
        st.sampled_from(PEOPLE),
        st.sampled_from(("public", "invite")),
    ),
    st.sampled_from(PEOPLE).map(lambda target: ("approve", "vip", target, "invite")),
    st.builds(events.circle_name_event, st.just(CIRCLE), st.sampled_from(("a", "b", "c"))),
    st.builds(events.rename_event, st.just(CIRCLE), st.just(""), st.sampled_from(("x", "y"))),
)
_one = st.tuples(
    st.sampled_from((OWNER, OWNER, MOD, MOD, PLAIN, NEW)),
    _bodies,
    st.sampled_from((True, True, False)),  # signed, mostly
    st.integers(0, 6),  # few dates: ties break on the hash
)


def _event(i: int, author: str, body: Any, signed: bool, ts: int) -> ControlEvent:
    if isinstance(body, tuple):
        op, cid, target, access = body
        body = events.channel_event(op, CIRCLE, cid, author, access=access, target=target)
    elif body.get("op") == "rename":
        body = {**body, "node_id": author, "actor_node_id": author}
    return ControlEvent(f"{i:032x}", author, ts, event_text(body), PK[author] if signed else None)


# Most circles are owned, name and unname a moderator and have contested creates, so
# that roles are used as often as refused and their order matters if anything does.
_prelude = st.lists(
    st.sampled_from(
        (
            (OWNER, events.owner_event(SALT), True, 0),
            (OWNER, events.role_event(MOD, "moderator"), True, 1),
            (OWNER, events.role_event(MOD, "member"), True, 2),
            (OWNER, events.role_event(MOD, "moderator"), True, 3),
            (OWNER, ("create", "vip", NEW, "invite"), True, 0),
            (NEW, ("create", "vip", NEW, "public"), False, 0),
        )
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(prelude=_prelude, drawn=st.lists(_one, min_size=4, max_size=40), seed=st.integers(0, 2**32))
def test_every_order_of_signed_unsigned_roles_approvals_creates_derives_one_state(
    prelude: list[tuple[str, Any, bool, int]], drawn: list[tuple[str, Any, bool, int]], seed: int
) -> None:
    evs = [_event(i, *d) for i, d in enumerate(prelude + drawn)]
    shuffled = list(evs)
    random.Random(seed).shuffle(shuffled)
    first = derive(evs, CIRCLE, now=10, secret=SECRET)
    second = derive(shuffled, CIRCLE, now=10, secret=SECRET)
    assert first.summary() == second.summary()
    assert (first.rejected, first.refused) == (second.rejected, second.refused)
    assert first.owner in ("", OWNER)
    assert first.owner not in first.moderators
    if not first.owner:
        assert not first.moderators


# --- the store: who writes what, and what it refuses ----------------------------------------

B_KEY, C_KEY = IdentityKey.from_seed(b"\x0b" * 32), IdentityKey.from_seed(b"\x0c" * 32)
B, C = B_KEY.node_id, C_KEY.node_id


def _peer(ops: Ops, circle_id: str, key: IdentityKey, event: dict[str, Any]) -> None:
    """A member's signed control event, as gossip brings it."""
    secret = ops.db.circle(circle_id).secret  # type: ignore[union-attr]
    now = int(time.time())
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id=CONTROL_CHANNEL,
        author_node_id=key.node_id,
        display_name="",
        text=event_text(event),
        created_ts=now,
        msg_id=ids.new_msg_id(key.node_id, now),
        encrypt=True,
        key=key,
    )
    answer = handled(ops, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(msg)]}).reply
    assert answer["results"] == ["stored"]


def _ours(ops: Ops, circle_id: str, event: dict[str, Any]) -> Outcome:
    now = int(time.time())
    body = {"circle_id": circle_id, "msg_id": ids.new_msg_id(ME, now), "created_ts": now}
    return handled(ops, OP_CONTROL, {**body, "event": event})


def test_the_store_makes_its_creator_owner_and_names_moderators(signing_ops: Ops) -> None:
    ops = signing_ops
    made = handled(ops, OP_CIRCLE_CREATE, {"name": "club"}).reply
    cid = made["circle_id"]
    assert (ops.state(cid).owner, ops.state(cid).name) == (ME, "club")
    _peer(ops, cid, B_KEY, events.rename_event(cid, B, "bob"))
    _peer(ops, cid, C_KEY, events.rename_event(cid, C, "cy"))
    before = len(ops.db.control_events(cid, CONTROL_CHANNEL))
    with pytest.raises(RPCError, match="no one in this circle"):
        _ours(ops, cid, events.role_event("carol", "moderator"))
    assert len(ops.db.control_events(cid, CONTROL_CHANNEL)) == before
    _ours(ops, cid, events.role_event("bob", "moderator"))
    people = handled(ops, OP_WHO, {"circle_id": cid}).reply["people"]
    assert {p["node_id"]: (p["role"], p["verified"]) for p in people} == {
        ME: ("owner", True),
        B: ("moderator", True),
        C: ("member", True),
    }
    assert {p["node_id"]: p["fingerprint"] for p in people}[B] == fingerprint(B_KEY.public)


def test_a_demotion_re_approves_whom_only_the_demoted_let_in(signing_ops: Ops) -> None:
    ops = signing_ops
    cid = handled(ops, OP_CIRCLE_CREATE, {}).reply["circle_id"]
    _ours(ops, cid, events.channel_event("create", cid, "vip", ME, access="invite"))
    _peer(ops, cid, B_KEY, events.rename_event(cid, B, "bob"))
    _ours(ops, cid, events.role_event(B, "moderator"))
    _peer(ops, cid, B_KEY, events.channel_event("approve", cid, "vip", B, target=C))
    assert ops.state(cid).channels["vip"].members == {ME, C}
    out = _ours(ops, cid, events.role_event("bob", "member"))
    written = [json.loads(row["text"]) for row in out.stored]
    assert [(e["t"], e["op"], e["target_node_id"]) for e in written] == [
        ("ROLE_EVT", "revoke", B),
        ("CHANNEL_EVT", "approve", C),
    ]
    state = ops.state(cid)
    assert (state.moderators, state.channels["vip"].members) == (set(), {ME, C})
    _peer(ops, cid, B_KEY, events.channel_event("approve", cid, "vip", B, target=NEW))
    assert NEW not in ops.state(cid).channels["vip"].members


def test_a_member_s_store_refuses_what_its_role_does_not_allow(
    signing_ops: Ops, tmp_path: Path
) -> None:
    made = handled(signing_ops, OP_CIRCLE_CREATE, {"name": "club"})
    cid = made.reply["circle_id"]
    handled(
        signing_ops,
        OP_CONTROL,
        {
            "circle_id": cid,
            "msg_id": ids.new_msg_id(ME, int(time.time())),
            "created_ts": int(time.time()),
            "event": events.channel_event("create", cid, "vip", ME, access="invite"),
        },
    )
    db = Database(tmp_path / "b.db")
    b = Ops(db, NodeInfo(B, "bob", True, "127.0.0.1:9998", key=B_KEY))
    try:
        handled(b, OP_CIRCLE_JOIN, {"code": made.reply["code"]})
        wires = [
            r["wire"] for r in handled(signing_ops, OP_SNAPSHOT, {"with_wire": True}).reply["msgs"]
        ]
        handled(b, OP_APPEND, {"origin": "gossip", "msgs": wires})
        assert b.state(cid).owner == ME
        held = db.control_events(cid, CONTROL_CHANNEL)
        for event, says in [
            (events.role_event(ME, "member"), "only the circle's owner (me) can name moderators"),
            (events.circle_name_event(cid, "mine"), "only the circle's owner (me) or a moderator"),
            (
                events.channel_event("approve", cid, "vip", B, target=ME),
                "only #vip's owner (me), the circle's owner or a moderator can approve into #vip",
            ),
        ]:
            with pytest.raises(RPCError, match=re.escape(says)) as refused:
                now = int(time.time())
                body = {"circle_id": cid, "msg_id": ids.new_msg_id(B, now), "created_ts": now}
                handled(b, OP_CONTROL, {**body, "event": event})
            assert refused.value.code == ERR_FORBIDDEN
        assert db.control_events(cid, CONTROL_CHANNEL) == held
    finally:
        db.close()
