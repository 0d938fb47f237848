"""Epochs in the fold (issue 16, SPEC-16 §2): which EPOCH_EVTs count, the winning chain,
the removals a losing branch leaves uncovered, the X25519 keys to wrap to, and what
our writers refuse for a removal. The store's sealing and opening are tested elsewhere."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.trust.identity import b64
from felund.trust.owner import owned_secret
from felund.v1 import chatmodel, events
from felund.v1.chatmodel import (
    MAX_EPOCH,
    MAX_EVENT_TEXT,
    MAX_WRAP_CHARS,
    ControlEvent,
    cannot_follow,
    derive,
    event_text,
    next_removed,
    who_can,
    writer_problem,
)

# Derived-form ids (they sign everything they write), and one from before keys.
OWNER, MOD, MOD2, PLAIN, C = ("fe" + h * 11 for h in ("0a", "0b", "0c", "0d", "0e"))
OLDER = "0f" * 12
PEOPLE = (OWNER, MOD, MOD2, PLAIN, C, OLDER)
PK = {n: bytes([i + 1]) * 32 for i, n in enumerate(PEOPLE)}
XPK = {n: bytes([i + 101]) * 32 for i, n in enumerate(PEOPLE)}
SALT = "5a" * 32
SECRET = owned_secret(PK[OWNER], SALT)
CIRCLE = "c1" * 12
WRAP = "w" * 124  # a wrap's length; the fold does not open it


def mid(tag: str) -> str:
    """A msg_id (32 hex) named by ``tag``; ``mid("a") < mid("b")`` is not implied."""
    return hashlib.sha256(tag.encode()).hexdigest()[:32]


def low(i: int) -> str:
    """A msg_id that sorts by ``i``: for contests decided on the smallest id."""
    return f"{i:032x}"


class Circle:
    """A circle with its owner proved and MOD, MOD2 (and OLDER, unsigned) moderators."""

    def __init__(self) -> None:
        self.events: list[ControlEvent] = []
        self.ts = 1000
        self.add(OWNER, events.owner_event(SALT))
        for m in (MOD, MOD2, OLDER):
            self.add(OWNER, events.role_event(m, "moderator"))

    def add(
        self, author: str, body: dict[str, Any], signed: bool = True, msg_id: str = ""
    ) -> ControlEvent:
        self.ts += 1
        ev = ControlEvent(
            msg_id or mid(f"ev{len(self.events)}"),
            author,
            self.ts,
            event_text(body),
            PK[author] if signed else None,
        )
        self.events.append(ev)
        return ev

    def epoch(
        self,
        author: str,
        n: int,
        parent: str,
        removed: list[str],
        *,
        msg_id: str = "",
        signed: bool = True,
    ) -> str:
        wraps = {p: WRAP for p in PEOPLE if p not in removed}
        body = events.epoch_event(n, parent, removed, wraps)
        return self.add(author, body, signed, msg_id).msg_id

    def announce(self, author: str, pk: bytes | None = None, signed: bool = True) -> str:
        body = events.key_announce_event(author, b64(pk or PK[author]), b64(XPK[author]))
        return self.add(author, body, signed).msg_id

    def state(self) -> chatmodel.CircleState:
        return derive(self.events, CIRCLE, now=self.ts, secret=SECRET)


# --- who may start an epoch ----------------------------------------------------------------


def test_the_owner_removes_a_member_in_epoch_1() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C])
    s = c.state()
    assert [(e.n, e.epoch_id, e.parent, e.author) for e in s.epochs] == [(1, e1, "", OWNER)]
    assert s.removed == {C} and s.uncovered == frozenset()
    assert set(s.epochs[0].wraps) == set(PEOPLE) - {C}
    assert s.epoch_events == {e1: s.epochs[0]}
    assert s.summary()["epochs"][0]["removed"] == [C]
    assert e1 not in s.refused


def test_a_moderator_removes_a_plain_member() -> None:
    c = Circle()
    c.epoch(MOD, 1, "", [PLAIN])
    assert c.state().removed == {PLAIN}


def test_a_plain_member_or_anyone_in_an_unowned_circle_removes_nobody() -> None:
    c = Circle()
    e1 = c.epoch(PLAIN, 1, "", [C])
    s = c.state()
    assert s.refused[e1] == "not_allowed" and s.epochs == [] and s.removed == frozenset()
    assert s.epoch_events == {} and s.uncovered == frozenset()
    unowned = derive(c.events, CIRCLE, now=c.ts, secret="77" * 32)  # no proof: no roles
    assert unowned.refused[e1] == "not_allowed"


def test_an_unsigned_epoch_counts_for_nothing() -> None:
    c = Circle()
    e_older = c.epoch(OLDER, 1, "", [C], signed=False)  # a moderator from before keys
    e_owner = c.epoch(OWNER, 1, "", [C], signed=False)  # the owner signs: a forgery
    s = c.state()
    assert s.refused[e_older] == "unsigned"
    assert s.refused[e_owner] == "unsigned_from_signer"
    assert s.epochs == []


def test_the_owner_cannot_be_removed() -> None:
    c = Circle()
    e1 = c.epoch(MOD, 1, "", [C, OWNER])
    assert c.state().refused[e1] == "removes_owner"


def test_a_moderator_cannot_remove_a_moderator_the_owner_can() -> None:
    c = Circle()
    by_mod = c.epoch(MOD, 1, "", [MOD2], msg_id=low(1))
    by_owner = c.epoch(OWNER, 1, "", [MOD2], msg_id=low(2))
    s = c.state()
    assert s.refused[by_mod] == "removes_moderator"
    assert [e.epoch_id for e in s.epochs] == [by_owner] and s.removed == {MOD2}


def test_a_moderator_keeps_a_moderator_the_owner_removed_before() -> None:
    """Only new removals are judged by the author's role: the parent's are carried."""
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [MOD2])
    e2 = c.epoch(MOD, 2, e1, [C, MOD2])
    assert [e.epoch_id for e in c.state().epochs] == [e1, e2]


def test_a_demotion_keeps_the_removals_built_on_and_drops_the_rest() -> None:
    c = Circle()
    e1 = c.epoch(MOD, 1, "", [C])
    e2 = c.epoch(OWNER, 2, e1, [C, PLAIN])
    tip = c.epoch(MOD, 3, e2, sorted([C, PLAIN, "ab" * 12]))  # nobody builds on it
    assert [e.epoch_id for e in c.state().epochs] == [e1, e2, tip]
    c.add(OWNER, events.role_event(MOD, "member"))
    s = c.state()
    assert [e.epoch_id for e in s.epochs] == [e1, e2] and s.removed == {C, PLAIN}
    assert s.refused[tip] == "not_allowed" and set(s.epoch_events) == {e1, e2}
    assert s.uncovered == frozenset()  # what only the dropped epoch removed is not asked for
    late = c.epoch(MOD, 3, e2, [C, MOD2, PLAIN])  # after its demotion
    assert c.state().refused[late] == "removes_moderator"


def test_a_removed_moderator_cannot_fork_from_before_its_removal() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C], msg_id=low(5))
    e2 = c.epoch(OWNER, 2, e1, [C, MOD], msg_id=low(6))
    # Still a moderator (never demoted): a sibling of e1 with a smaller id, wrapped to itself.
    fork = c.epoch(MOD, 1, "", [], msg_id=low(1))
    s = c.state()
    assert s.refused[fork] == "not_allowed"
    assert [e.epoch_id for e in s.epochs] == [e1, e2] and s.removed == {C, MOD}


def test_one_never_made_moderator_counts_even_when_built_on() -> None:
    c = Circle()
    e1 = c.epoch(PLAIN, 1, "", [C])
    e2 = c.epoch(OWNER, 2, e1, [C])
    s = c.state()
    assert s.refused[e1] == "not_allowed" and s.refused[e2] == "no_parent"


def test_removed_never_shrinks() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C])
    e2 = c.epoch(OWNER, 2, e1, [PLAIN])
    s = c.state()
    assert s.refused[e2] == "removed_shrinks" and [e.epoch_id for e in s.epochs] == [e1]


def test_a_removed_moderator_writes_no_epoch() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [MOD])
    e2 = c.epoch(MOD, 2, e1, [C, MOD])
    assert c.state().refused[e2] == "removed_author"


def test_the_parent_must_be_a_valid_epoch_just_before() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C])
    e2 = c.epoch(OWNER, 2, e1, [C])
    skips = c.epoch(OWNER, 3, e1, [C])  # epoch 3 whose parent is epoch 1
    orphan = c.epoch(OWNER, 2, mid("never seen"), [C])
    on_refused = c.epoch(OWNER, 2, c.epoch(PLAIN, 1, "", []), [])
    not_root = c.add(OWNER, {**events.epoch_event(2, e1, [C], {}), "epoch": 1})
    s = c.state()
    assert s.refused[skips] == "parent_mismatch"
    assert s.refused[orphan] == "no_parent"
    assert s.refused[on_refused] == "no_parent"
    assert s.refused[not_root.msg_id] == "bad_parent"
    assert [e.epoch_id for e in s.epochs] == [e1, e2]


def test_two_candidates_the_smallest_msg_id_wins_and_the_loser_is_uncovered() -> None:
    c = Circle()
    c.ts = 5000  # the loser is the earlier: no date steers the contest
    e1_late = c.epoch(MOD, 1, "", [C], msg_id=low(1))
    c.ts = 10
    e1_early = c.epoch(MOD2, 1, "", [PLAIN], msg_id=low(2))
    c.ts = 5000
    s = c.state()
    assert [e.epoch_id for e in s.epochs] == [e1_late]
    assert s.removed == {C} and s.uncovered == {PLAIN}
    assert set(s.epoch_events) == {e1_late, e1_early}  # the loser's secret is kept too
    # The next epoch covers the losing branch's removal.
    assert next_removed(s) == sorted([C, PLAIN])
    e2 = c.epoch(MOD, 2, e1_late, next_removed(s))
    s = c.state()
    assert [e.epoch_id for e in s.epochs] == [e1_late, e2]
    assert s.removed == {C, PLAIN} and s.uncovered == frozenset()


def test_a_losing_branch_grows_and_still_loses() -> None:
    c = Circle()
    win = c.epoch(OWNER, 1, "", [C], msg_id=low(1))
    lose = c.epoch(MOD, 1, "", [PLAIN], msg_id=low(2))
    lose2 = c.epoch(MOD, 2, lose, [PLAIN, "ab" * 12])
    s = c.state()
    assert [e.epoch_id for e in s.epochs] == [win]
    assert s.uncovered == {PLAIN, "ab" * 12}
    assert set(s.epoch_events) == {win, lose, lose2}


def test_a_chain_of_three() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C])
    e2 = c.epoch(MOD, 2, e1, [C, PLAIN])
    e3 = c.epoch(OWNER, 3, e2, [C, MOD2, PLAIN])
    s = c.state()
    assert [(e.n, e.epoch_id, e.parent) for e in s.epochs] == [
        (1, e1, ""),
        (2, e2, e1),
        (3, e3, e2),
    ]
    assert s.removed == {C, PLAIN, MOD2}
    assert [e["epoch_id"] for e in s.summary()["epochs"]] == [e1, e2, e3]


def test_epoch_link_is_known_and_derives_nothing() -> None:
    c = Circle()
    e1 = c.epoch(OWNER, 1, "", [C])
    before = c.state().summary()
    link = c.add(OWNER, events.epoch_link_event(e1, "ab" * 32))
    s = c.state()
    assert link.msg_id not in s.refused and s.summary() == before


# --- bounds ---------------------------------------------------------------------------------


def _epoch_body(**over: Any) -> dict[str, Any]:
    return {**events.epoch_event(1, "", [C], {PLAIN: WRAP}), **over}


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"epoch": 0}, "bad_epoch"),
        ({"epoch": MAX_EPOCH + 1}, "bad_epoch"),
        ({"epoch": True}, "bad_epoch"),
        ({"epoch": 1.0}, "bad_epoch"),
        ({"epoch": "1"}, "bad_epoch"),
        ({"parent": None}, "bad_parent"),
        ({"removed": [C, C]}, "bad_removed"),
        ({"removed": [C, PLAIN]}, "bad_removed"),  # not sorted
        ({"removed": ["C"]}, "bad_removed"),
        ({"removed": C}, "bad_removed"),
        ({"removed": [f"{i:024x}" for i in range(257)]}, "bad_removed"),
        ({"wraps": [WRAP]}, "bad_wraps"),
        ({"wraps": {"nobody": WRAP}}, "bad_wraps"),
        ({"wraps": {PLAIN: "w" * (MAX_WRAP_CHARS + 1)}}, "bad_wraps"),
        ({"wraps": {PLAIN: ""}}, "bad_wraps"),
        ({"wraps": {PLAIN: 1}}, "bad_wraps"),
        ({"wraps": {f"{i:024x}": "w" for i in range(257)}}, "bad_wraps"),
    ],
)
def test_a_malformed_epoch_is_refused_with_its_reason(
    over: dict[str, Any], why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 257 wraps do not fit in a message: the count's bound holds if the text's is raised.
    monkeypatch.setattr(chatmodel, "MAX_EPOCH_TEXT", 20_000)
    c = Circle()
    ev = c.add(OWNER, _epoch_body(**over))
    s = c.state()
    assert s.refused[ev.msg_id] == why and s.epochs == []


def test_an_epoch_s_id_is_a_32_hex_msg_id() -> None:
    c = Circle()
    ev = c.add(OWNER, _epoch_body(), msg_id="not-hex-" * 4)
    assert c.state().refused[ev.msg_id] == "bad_epoch"


def test_an_epoch_may_be_as_long_as_a_message_other_events_not() -> None:
    c = Circle()
    wraps = {f"{i:024x}": "w" * 120 for i in range(40)}  # about 6,000 characters
    long_epoch = c.add(OWNER, events.epoch_event(1, "", [C], wraps))
    assert MAX_EVENT_TEXT < len(long_epoch.text) <= chatmodel.MAX_EPOCH_TEXT
    too_long = c.add(OWNER, events.epoch_event(1, "", [C], wraps | {"ff" * 12: "w" * 2100}))
    name = c.add(OWNER, events.circle_name_event(CIRCLE, "x") | {"pad": "p" * 5000})
    s = c.state()
    assert [e.epoch_id for e in s.epochs] == [long_epoch.msg_id]
    assert s.refused[too_long.msg_id] == "too_long" and s.refused[name.msg_id] == "too_long"


# --- X25519 keys and who cannot follow ------------------------------------------------------


def test_xkeys_come_from_signed_announces_of_the_signer_s_own_key() -> None:
    c = Circle()
    c.announce(OWNER)
    forged = c.announce(MOD, pk=PK[PLAIN])  # pk not the key that signed it
    unsigned = c.announce(OLDER, signed=False)
    plain_v1 = c.add(PLAIN, {"node_id": PLAIN, "pk": b64(PK[PLAIN]), "t": "KEY_ANNOUNCE"})  # no xpk
    bad = c.add(C, events.key_announce_event(C, b64(PK[C]), "short"))
    s = c.state()
    assert s.xkeys == {OWNER: XPK[OWNER]}
    assert s.refused[forged] == "not_signer" and s.refused[unsigned] == "unsigned"
    assert s.refused[bad.msg_id] == "bad_key" and plain_v1.msg_id not in s.refused
    assert s.summary()["xkeys"] == {OWNER: b64(XPK[OWNER])}


def test_who_cannot_follow_is_who_is_seen_not_removed_without_an_xkey() -> None:
    c = Circle()
    for p in (OWNER, MOD, MOD2):
        c.announce(p)
    c.epoch(OWNER, 1, "", [C])
    assert cannot_follow(c.state(), [OWNER, MOD, MOD2, PLAIN, C, OLDER, PLAIN]) == sorted(
        [PLAIN, OLDER]
    )


# --- our writers ----------------------------------------------------------------------------


def _removal(s: chatmodel.CircleState, who: str) -> dict[str, Any]:
    parent = s.epochs[-1].epoch_id if s.epochs else ""
    return events.epoch_event(len(s.epochs) + 1, parent, next_removed(s, who), {})


def test_writers_refuse_a_removal_with_a_sentence() -> None:
    c = Circle()
    c.add(OWNER, events.rename_event(CIRCLE, OWNER, "Ana"))
    c.epoch(OWNER, 1, "", [C])
    s = c.state()

    def trial(who: str, writer: str) -> str | None:
        problem = writer_problem(s, _removal(s, who), writer)
        if problem == "not_allowed":
            return who_can(s, _removal(s, who))
        return chatmodel.REMOVAL_REFUSALS[problem] if problem else None

    assert trial(C, PLAIN) == "only the circle's owner (Ana) or a moderator can remove a member"
    assert trial(OWNER, MOD) == "the owner cannot be removed"
    assert trial(MOD, MOD) == "you cannot remove yourself: leave the circle instead"
    assert trial(C, MOD) == "already removed from this circle"
    assert trial(MOD2, MOD) == "only the circle's owner removes a moderator"
    assert trial(MOD2, OWNER) is None
    assert trial(PLAIN, MOD) is None
    unowned = derive([], CIRCLE, now=0)
    assert writer_problem(unowned, _removal(unowned, C), PLAIN) == "not_allowed"
    assert who_can(unowned, _removal(unowned, C)).startswith("this circle has no owner")


def test_what_a_writer_lets_through_the_fold_takes() -> None:
    c = Circle()
    s = c.state()
    for who, writer in ((C, OWNER), (PLAIN, MOD), (MOD2, OWNER)):
        event = _removal(s, who)
        assert writer_problem(s, event, writer) is None
        c.add(writer, event)
        s = c.state()
        assert who in s.removed and not s.refused.keys() & {e.epoch_id for e in s.epochs}
    assert len(s.epochs) == 3


def test_the_builders() -> None:
    assert events.epoch_event(2, mid("p"), [PLAIN, C, C], {PLAIN: "x"}) == {
        "epoch": 2,
        "parent": mid("p"),
        "removed": sorted([C, PLAIN]),
        "t": "EPOCH_EVT",
        "wraps": {PLAIN: "x"},
    }
    for n, parent in ((0, ""), (1, mid("p")), (2, "")):
        with pytest.raises(ValueError):
            events.epoch_event(n, parent, [], {})
    link = events.epoch_link_event(mid("e"), "ab" * 32)
    assert json.loads(event_text(link)) == {
        "epoch_id": mid("e"),
        "prev": "ab" * 32,
        "t": "EPOCH_LINK",
    }


# --- hypothesis: every order, with duplicates, derives one chain ------------------------------

_AUTHORS = (OWNER, OWNER, MOD, MOD, MOD2, PLAIN, OLDER)
# Mostly members anyone may remove: valid epochs, contests and uncovered removals are common.
_TARGETS = (C, C, PLAIN, PLAIN, OLDER, MOD, MOD2, OWNER)

_epoch_spec = st.tuples(
    st.sampled_from(_AUTHORS),
    st.sampled_from(("child",) * 8 + ("skip", "unknown")),  # how it names its parent
    st.integers(0, 30),  # which earlier event (or the root) is the parent
    st.sampled_from((True, True, True, False)),  # carries its parent's removals
    st.sets(st.sampled_from(_TARGETS), max_size=2),  # new removals
    st.sampled_from((True,) * 9 + (False,)),  # signed
)
_announce_spec = st.tuples(
    st.sampled_from(PEOPLE),
    st.sampled_from(("own", "own", "other", "bad")),
    st.booleans(),  # signed
    st.integers(0, 2),  # date: several announces of one author race on order
)


def _epoch_events(specs: list[tuple[Any, ...]], tag: int) -> list[ControlEvent]:
    out: list[ControlEvent] = []
    made: list[tuple[str, int, list[str]]] = [("", 0, [])]  # id, epoch, removed; the root
    for i, (author, shape, pick, carry, new, signed) in enumerate(specs):
        parent, before_n, before = made[pick % len(made)]
        n = before_n + (1 if shape == "child" else 2)
        if shape == "unknown" or (n == 2 and not parent):  # no such parent (an epoch 2 has one)
            parent = mid(f"unknown{pick}")
        removed = sorted(set(new) | (set(before) if carry else set()))
        body = events.epoch_event(n, parent, removed, dict.fromkeys(PEOPLE, WRAP))
        msg_id = mid(f"{tag}:{i}")
        made.append((msg_id, n, removed))
        out.append(
            ControlEvent(
                msg_id, author, 2000 + i % 3, event_text(body), PK[author] if signed else None
            )
        )
    return out


def _announces(specs: list[tuple[Any, ...]]) -> list[ControlEvent]:
    out = []
    for i, (author, kind, signed, ts) in enumerate(specs):
        pk = PK[author] if kind != "other" else PK[OWNER if author != OWNER else MOD]
        xpk = b64(XPK[author] if i % 2 else bytes([i]) * 32) if kind != "bad" else "x"
        body = events.key_announce_event(author, b64(pk), xpk)
        out.append(
            ControlEvent(
                mid(f"ka{i}"), author, 2000 + ts, event_text(body), PK[author] if signed else None
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(_epoch_spec, min_size=4, max_size=25),
    announces=st.lists(_announce_spec, max_size=8),
    tag=st.integers(0, 2**16),
    demote=st.booleans(),
    order=st.tuples(st.lists(st.integers(0, 2**16), max_size=6), st.integers(0, 2**32)),
)
def test_every_order_with_duplicates_derives_one_chain(
    specs: list[tuple[Any, ...]],
    announces: list[tuple[Any, ...]],
    tag: int,
    demote: bool,
    order: tuple[list[int], int],
) -> None:
    dupes, seed = order  # duplicates of some events, and a shuffle
    c = Circle()
    if demote:
        c.add(OWNER, events.role_event(MOD2, "member"))
    evs = c.events + _epoch_events(specs, tag) + _announces(announces)
    shuffled = evs + [evs[d % len(evs)] for d in dupes]
    random.Random(seed).shuffle(shuffled)
    first = derive(evs, CIRCLE, now=3000, secret=SECRET)
    second = derive(shuffled, CIRCLE, now=3000, secret=SECRET)
    assert first.summary() == second.summary()
    assert first.refused == second.refused
    assert first.epochs == second.epochs and first.epoch_events == second.epoch_events
    # What the chain is, whatever the order.
    for k, e in enumerate(first.epochs):
        assert e.n == k + 1 and e.parent == (first.epochs[k - 1].epoch_id if k else "")
        rivals = [v for v in first.epoch_events.values() if v.parent == e.parent]
        assert e.epoch_id == min(v.epoch_id for v in rivals)
        assert OWNER not in e.removed
    intents = set().union(*(e.removed for e in first.epoch_events.values()))
    assert first.uncovered == intents - first.removed
    assert first.removed == (first.epochs[-1].removed if first.epochs else frozenset())
