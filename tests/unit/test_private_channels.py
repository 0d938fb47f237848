"""Private channels (issue 16, second half): the channel secrets and key ids, the fold of
the private flag and of CHANNEL_KEY_EVT chains, and the store sealing a private channel's
messages under its channel key, keeping them sealed on non-members, opening them when a
key arrives, and writing a new channel epoch on create, approve, leave and removal.

Each node is the store's operations on its own database file (as tests/unit/
test_store_epochs.py): what gossip carries is one's snapshot handed to the other's append.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.errors import RPCError
from felund.protocol import (
    ERR_BAD_REQUEST,
    ERR_FORBIDDEN,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CONTROL,
    OP_INBOX,
    OP_MEMBER_REMOVE,
    OP_POST,
)
from felund.store import channelkeys
from felund.store.database import DB_SUFFIXES, Database
from felund.store.ops import Ops
from felund.trust import channels as chan
from felund.trust.identity import IdentityKey
from felund.v1 import chatmodel, events, ids
from felund.v1.chatmodel import ControlEvent, derive, event_text
from felund.v1.wire import MAX_KEY_ID_CHARS
from tests.unit import test_epochs as ep
from tests.unit.test_store_epochs import _call, _mesh, _node

EPOCH_SECRET = "5a" * 32
CIRCLE = "c" * 24


# --- secrets and key ids -----------------------------------------------------


def test_channel_secrets_are_bound_to_key_circle_epoch_and_channel() -> None:
    base = chan.key_channel_secret("hunter2", EPOCH_SECRET, CIRCLE, "ops")
    assert len(bytes.fromhex(base)) == 32
    assert base == chan.key_channel_secret("hunter2", EPOCH_SECRET, CIRCLE, "ops")
    others = {
        chan.key_channel_secret("hunter3", EPOCH_SECRET, CIRCLE, "ops"),
        chan.key_channel_secret("hunter2", "5b" * 32, CIRCLE, "ops"),
        chan.key_channel_secret("hunter2", EPOCH_SECRET, "d" * 24, "ops"),
        chan.key_channel_secret("hunter2", EPOCH_SECRET, CIRCLE, "dev"),
        chan.invite_channel_secret("ab" * 32, EPOCH_SECRET, CIRCLE, "ops"),
        chan.invite_channel_secret("ab" * 32, "5b" * 32, CIRCLE, "ops"),
    }
    assert base not in others and len(others) == 6


def test_channel_key_ids_parse_back_and_the_wire_carries_the_longest() -> None:
    epoch = f"e{2**31}.{'f' * 32}"
    longest = chan.channel_key_id(epoch, chan.invite_part(2**31, "a" * 32))
    assert len(longest) == chan.MAX_CHANNEL_KEY_ID_LEN <= MAX_KEY_ID_CHARS
    assert chan.parse_channel_key_id(longest) == (epoch, f"i{2**31}.{'a' * 32}")
    assert chan.parse_channel_key_id("epoch-0/k") == ("epoch-0", "k")
    assert chan.epoch_of_key_id("epoch-0/k") == "epoch-0"
    for bad in (
        "epoch-0",  # a circle epoch's own
        "epoch-0/",
        "epoch-0/x",
        "e0.{'a' * 32}/k",
        f"e1.{'a' * 32}/i0.{'b' * 32}",
        f"e1.{'a' * 32}/i{2**31 + 1}.{'b' * 32}",
        f"e1.{'a' * 32}/i1.{'B' * 32}",
        "nope/k",
        None,
        "x" * 200,
    ):
        assert chan.parse_channel_key_id(bad) is None, bad


# --- the fold ----------------------------------------------------------------

OWNER = IdentityKey.from_seed(b"owner".ljust(32, b"."))
MOD = IdentityKey.from_seed(b"mod".ljust(32, b"."))
PEER = IdentityKey.from_seed(b"peer".ljust(32, b"."))


def _ev(i: int, who: IdentityKey, body: dict[str, Any], signed: bool = True) -> ControlEvent:
    return ControlEvent(
        f"{i:032x}", who.node_id, 1000 + i, event_text(body), who.public if signed else None
    )


def _create(who: IdentityKey, access: str, private: bool) -> dict[str, Any]:
    key = "k" if access == "key" else ""
    event = events.channel_event("create", "", "ops", who.node_id, access=access, key=key)
    return events.made_private(event) if private else event


def test_the_private_flag_is_kept_per_channel_and_only_for_key_or_invite() -> None:
    assert _create(PEER, "invite", True)["private"] is True
    assert "private" not in _create(PEER, "invite", False)
    with pytest.raises(ValueError, match="only a key or invite channel"):
        _create(PEER, "public", True)
    for access, private in (("invite", True), ("key", True), ("invite", False)):
        state = derive([_ev(1, PEER, _create(PEER, access, private))], now=2000)
        assert state.channels["ops"].private is private
        assert state.summary()["channels"]["ops"]["private"] is private
    forged = {**events.channel_event("create", "", "ops", PEER.node_id), "private": True}
    assert derive([_ev(1, PEER, forged)], now=2000).channels["ops"].private is False


def test_channel_epochs_follow_the_winner_rule_of_circle_epochs() -> None:
    create = _ev(1, PEER, _create(PEER, "invite", True))
    first = events.channel_key_event("ops", 1, "", {PEER.node_id: "w" * 124})
    evs = [
        create,
        _ev(10, PEER, first),
        _ev(9, MOD, first),  # a moderator? no: none named here, and not the creator
        _ev(11, PEER, events.channel_key_event("ops", 2, f"{10:032x}", {})),
        _ev(12, PEER, events.channel_key_event("ops", 2, f"{10:032x}", {})),
        _ev(13, PEER, events.channel_key_event("ops", 3, f"{12:032x}", {})),  # losing branch
        _ev(14, PEER, events.channel_key_event("ops", 3, f"{99:032x}", {})),
        _ev(15, PEER, events.channel_key_event("ops", 3, f"{10:032x}", {})),
        _ev(16, PEER, events.channel_key_event("ops", 2, f"{10:032x}", {}), signed=False),
        _ev(17, PEER, {**first, "channel_id": "nope"}),
        _ev(18, PEER, {**first, "epoch": 0}),
    ]
    state = derive(evs, now=5000)
    assert [k.epoch_id for k in state.channels["ops"].keys] == [f"{10:032x}", f"{11:032x}"]
    assert sorted(state.channel_keys) == [f"{n:032x}" for n in (10, 11, 12, 13)]
    whys = ("not_allowed", "no_parent", "parent_mismatch", "unsigned", "no_channel", "bad_epoch")
    ids_ = [f"{n:032x}" for n in (9, 14, 15, 16, 17, 18)]
    assert [state.refused.get(i) for i in ids_] == list(whys)
    # The same under any order, and with duplicates.
    for shift in range(len(evs)):
        again = derive(evs[shift:] + evs[:shift] + evs[:3], now=5000)
        assert again.summary() == state.summary()


# Random trees of channel epochs of a private invite channel made by PLAIN (written by its
# creator, moderators, or others; signed or not; parents known or not), with approves
# and leaves around them: every order of arrival, with duplicates, derives one chain.
_CHAN_AUTHORS = (ep.PLAIN, ep.PLAIN, ep.OWNER, ep.MOD, ep.C)
_chan_spec = st.tuples(
    st.sampled_from(_CHAN_AUTHORS),
    st.sampled_from(("child",) * 8 + ("skip", "unknown")),
    st.integers(0, 30),  # which earlier one (or none) is the parent
    st.sampled_from((True,) * 9 + (False,)),  # signed
    st.sampled_from(("sec",) * 9 + ("pub",)),  # the channel: the private one, or a public one
)


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(_chan_spec, min_size=3, max_size=20),
    joins=st.lists(st.tuples(st.sampled_from((ep.C, ep.MOD)), st.booleans()), max_size=4),
    order=st.tuples(st.lists(st.integers(0, 2**16), max_size=6), st.integers(0, 2**32)),
)
def test_every_order_with_duplicates_derives_one_channel_chain(
    specs: list[tuple[Any, ...]], joins: list[tuple[str, bool]], order: tuple[list[int], int]
) -> None:
    c = ep.Circle()
    made = events.channel_event("create", ep.CIRCLE, "sec", ep.PLAIN, access="invite")
    c.add(ep.PLAIN, events.made_private(made))
    c.add(ep.MOD, events.channel_event("create", ep.CIRCLE, "pub", ep.MOD))
    for who, leaves in joins:
        c.add(ep.PLAIN, events.channel_event("approve", ep.CIRCLE, "sec", ep.PLAIN, target=who))
        if leaves:
            c.add(who, events.channel_event("leave", ep.CIRCLE, "sec", who))
    tree: list[tuple[str, int]] = [("", 0)]
    keyed = []
    for i, (author, shape, pick, signed, channel) in enumerate(specs):
        parent, before = tree[pick % len(tree)]
        n = before + (1 if shape == "child" else 2)
        if shape == "unknown" or (n == 2 and not parent):
            parent = ep.mid(f"unknown{pick}")
        body = events.channel_key_event(channel, n, parent, dict.fromkeys(ep.PEOPLE, ep.WRAP))
        keyed.append(c.add(author, body, signed, ep.mid(f"ck{i}")))
        tree.append((keyed[-1].msg_id, n))
    dupes, seed = order  # (a store holds one row per msg_id: a create is never twice)
    shuffled = c.events + [keyed[d % len(keyed)] for d in dupes]
    random.Random(seed).shuffle(shuffled)
    first = derive(c.events, ep.CIRCLE, now=c.ts, secret=ep.SECRET)
    second = derive(shuffled, ep.CIRCLE, now=c.ts, secret=ep.SECRET)
    assert first.summary() == second.summary() and first.refused == second.refused
    chain = first.channels["sec"].keys
    for k, key in enumerate(chain):
        assert key.n == k + 1 and key.parent == (chain[k - 1].epoch_id if k else "")
        rivals = [v for v in first.channel_keys.values() if v.parent == key.parent]
        assert key.epoch_id == min(v.epoch_id for v in rivals)
        assert key.author in (ep.PLAIN, ep.OWNER, ep.MOD)  # its creator or a moderator
    assert first.channels["pub"].keys == [] and first.channels["sec"].private


# --- the store ---------------------------------------------------------------


def _channel(
    ops: Ops, circle: str, op: str, name: str, *, private: bool = False, **what: Any
) -> None:
    """A channel event of ``ops`` (``key``: a key channel's key, given to the store)."""
    typed = what.get("key", "")
    event = events.channel_event(op, circle, name, ops.node.node_id, **what)
    event = events.made_private(event) if private else event
    now = int(time.time())
    _call(
        ops,
        OP_CONTROL,
        circle_id=circle,
        msg_id=ids.new_msg_id(ops.node.node_id, now),
        created_ts=now,
        event=event,
        **({"channel_key": typed} if typed else {}),
    )


def _post(ops: Ops, circle: str, channel: str, text: str) -> None:
    now = int(time.time())
    msg = {"msg_id": ids.new_msg_id(ops.node.node_id, now), "created_ts": now, "text": text}
    _call(ops, OP_POST, circle_id=circle, channel_id=channel, msgs=[msg])


def _texts(ops: Ops, circle: str, channel: str) -> list[str]:
    return [
        m["text"]
        for m in _call(ops, OP_INBOX, circle_id=circle, limit=1000)["msgs"]
        if m["channel_id"] == channel
    ]


def _file_bytes(ops: Ops) -> bytes:
    ops.db.close()
    raw = b"".join(
        Path(f"{ops.db.path}{s}").read_bytes()
        for s in DB_SUFFIXES
        if Path(f"{ops.db.path}{s}").exists()
    )
    ops.db = Database(ops.db.path)
    return raw


def _three(tmp_path: Path) -> tuple[Ops, Ops, Ops, str]:
    a, b, c = (_node(tmp_path, n) for n in ("alice", "bob", "cy"))
    made = _call(a, OP_CIRCLE_CREATE, name="club")
    for n in (b, c):
        _call(n, OP_CIRCLE_JOIN, code=made["code"])
    _mesh(a, b, c)
    return a, b, c, made["circle_id"]


def test_an_invite_channel_is_sealed_from_non_members_until_approved(tmp_path: Path) -> None:
    a, b, c, circle = _three(tmp_path)
    _channel(a, circle, "create", "ops", access="invite", private=True)
    _post(a, circle, "ops", "before bob, secret-one")
    _mesh(a, b, c)
    assert _texts(b, circle, "ops") == [] and _texts(c, circle, "ops") == []
    assert b"secret-one" not in _file_bytes(b)
    (ops,) = [
        ch
        for ch in _call(b, OP_CHANNELS, circle_id=circle)["channels"]
        if ch["channel_id"] == "ops"
    ]
    assert ops["private"] is True
    _channel(a, circle, "approve", "ops", target=b.node.node_id)
    _post(a, circle, "ops", "after bob, secret-two")
    _mesh(a, b, c)
    # bob reads what was written since he was approved; cy nothing; neither the earlier one.
    assert _texts(b, circle, "ops") == ["after bob, secret-two"]
    _post(b, circle, "ops", "bob here")
    _mesh(a, b, c)
    assert _texts(a, circle, "ops") == [
        "before bob, secret-one",
        "after bob, secret-two",
        "bob here",
    ]
    assert _texts(c, circle, "ops") == []
    assert b"secret-two" not in _file_bytes(c)
    with pytest.raises(RPCError) as refused:
        _post(c, circle, "ops", "cy?")
    assert refused.value.code == ERR_FORBIDDEN
    # bob leaves: the next message is under a channel epoch he is not wrapped to.
    # Dated after the approve it undoes, though a's events run seconds ahead of b's clock.
    _channel(b, circle, "leave", "ops")
    _mesh(a, b, c)
    _post(a, circle, "ops", "bob gone, secret-three")
    _mesh(a, b, c)
    assert "bob gone, secret-three" in _texts(a, circle, "ops")
    assert "bob gone, secret-three" not in _texts(b, circle, "ops")
    assert b"secret-three" not in _file_bytes(b)


def test_a_key_channel_is_read_by_who_joins_with_its_key(tmp_path: Path) -> None:
    a, b, c, circle = _three(tmp_path)
    _channel(a, circle, "create", "den", access="key", key="hunter2", private=True)
    _post(a, circle, "den", "in the den, secret-four")
    _mesh(a, b, c)
    assert _texts(b, circle, "den") == [] and b"secret-four" not in _file_bytes(b)
    _channel(b, circle, "join", "den", key="hunter2")
    assert _texts(b, circle, "den") == ["in the den, secret-four"]  # the history opens
    _post(b, circle, "den", "bob in the den")
    _mesh(a, b, c)
    assert _texts(a, circle, "den") == ["in the den, secret-four", "bob in the den"]
    assert _texts(c, circle, "den") == []
    with pytest.raises(RPCError) as wrong:
        _call(
            c,
            OP_CONTROL,
            circle_id=circle,
            msg_id=ids.new_msg_id(c.node.node_id, 1),
            created_ts=int(time.time()),
            event=events.channel_event("join", circle, "den", c.node.node_id, key="hunter2"),
            channel_key="hunter3",
        )
    assert wrong.value.code == ERR_BAD_REQUEST


def test_a_circle_removal_makes_a_new_channel_epoch_without_the_removed(tmp_path: Path) -> None:
    a, b, c, circle = _three(tmp_path)
    _channel(a, circle, "create", "ops", access="invite", private=True)
    for n in (b, c):
        _channel(a, circle, "approve", "ops", target=n.node.node_id)
    _mesh(a, b, c)
    state = a.state(circle)
    before = state.channels["ops"].keys[-1]
    assert set(before.wraps) == {a.node.node_id, b.node.node_id, c.node.node_id}
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    _mesh(a, b, c)
    after = a.state(circle).channels["ops"].keys[-1]
    assert set(after.wraps) == {a.node.node_id, b.node.node_id}
    _post(a, circle, "ops", "without cy")
    _mesh(a, b, c)
    assert _texts(b, circle, "ops")[-1] == "without cy"
    assert "without cy" not in _texts(c, circle, "ops")


def test_a_private_channel_key_event_is_refused_from_a_plain_member(tmp_path: Path) -> None:
    a, b, _c, circle = _three(tmp_path)
    _channel(a, circle, "create", "ops", access="invite", private=True)
    _mesh(a, b)
    tip = b.state(circle).channels["ops"].keys[-1]
    event = events.channel_key_event("ops", tip.n + 1, tip.epoch_id, {})
    with pytest.raises(RPCError) as refused:
        _call(
            b,
            OP_CONTROL,
            circle_id=circle,
            msg_id=ids.new_msg_id(b.node.node_id, 1),
            created_ts=int(time.time()),
            event=event,
        )
    assert refused.value.code == ERR_FORBIDDEN
    assert chatmodel.MAX_EVENT_TEXT  # the refusal left no trace
    assert b.state(circle).channels["ops"].keys[-1] == tip


def test_a_channel_epoch_is_due_for_a_missing_wrap_or_one_to_who_is_gone() -> None:
    me, bob, cy = (k.node_id for k in (OWNER, MOD, PEER))
    xpk = {
        n: IdentityKey.from_seed(n.encode()[:32].ljust(32, b".")).x_public for n in (me, bob, cy)
    }

    def due(
        members: set[str], wrapped: set[str], seen: set[str], removed: frozenset[str] = frozenset()
    ) -> bool:
        tip = chatmodel.ChannelKey(1, "a" * 32, "", me, "ops", dict.fromkeys(wrapped, "w"))
        channel = chatmodel.Channel("ops", "invite", "", me, 0, members, private=True, keys=[tip])
        state = chatmodel.CircleState(channels={"ops": channel}, removed=removed)
        state.xkeys = {n: xpk[n] for n in seen}
        return channelkeys.rekeys_due(state, me) == ["ops"]

    everyone = {me, bob, cy}
    assert not due(everyone, everyone, everyone)
    assert due(everyone, {me, bob}, everyone)  # cy approved: a wrap for cy is missing
    assert due({me, bob}, everyone, everyone)  # cy left
    assert due(everyone, everyone, everyone, removed=frozenset({cy}))  # cy removed from the circle
    # cy's key not seen here yet: another writer wrapped to cy, and that stands.
    assert not due(everyone, everyone, {me, bob})
    assert not due(everyone, {me, bob}, {me, bob})
