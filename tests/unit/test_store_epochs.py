"""Epochs in the store (issue 16, SPEC-16 §3): sealing under the newest epoch held, opening
by key_id, rows kept sealed until their secret arrives, removals, the EPOCH_LINK walk of a
node that joined by an epoch's code, uncovered removals, and schema 3.

Each node is the store's operations on its own database file; what gossip carries between
two nodes is a snapshot of one handed to the other's append, as it came.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from felund.errors import RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    ERR_FORBIDDEN,
    OP_APPEND,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLE_KEYS,
    OP_CONTROL,
    OP_INBOX,
    OP_INVITE,
    OP_MEMBER_REMOVE,
    OP_POST,
    OP_SNAPSHOT,
    OP_STATS,
    OP_WHO,
)
from felund.store.database import DB_SUFFIXES, Database
from felund.store.ops import NodeInfo, Ops, Outcome
from felund.testing import handled
from felund.trust.identity import IdentityKey
from felund.v1 import chatmodel, events, ids
from felund.v1.invite import decode_invite
from felund.v1.wire import compose_message, to_wire


def _node(tmp_path: Path, name: str) -> Ops:
    key = IdentityKey.from_seed(name.encode().ljust(32, b"."))
    info = NodeInfo(key.node_id, name, True, "127.0.0.1:9999", key=key)
    return Ops(Database(tmp_path / f"{name}.db"), info)


def _call(ops: Ops, op: str, **body: Any) -> Any:
    return handled(ops, op, body).reply


def _wires(src: Ops) -> list[dict[str, Any]]:
    return [m["wire"] for m in _call(src, OP_SNAPSHOT, with_wire=True, limit=100_000)["msgs"]]


def _sync(src: Ops, dst: Ops) -> list[str]:
    """What ``src`` holds, handed to ``dst`` as gossip would; dst's verdicts."""
    wires = _wires(src)
    results: list[str] = []
    for i in range(0, len(wires), 500):
        results += _call(dst, OP_APPEND, origin="gossip", msgs=wires[i : i + 500])["results"]
    return results


def _mesh(*nodes: Ops) -> None:
    for _ in range(3):  # what one learns from another reaches the third in the next pass
        for src in nodes:
            for dst in nodes:
                if src is not dst:
                    _sync(src, dst)


def _post(ops: Ops, circle: str, text: str) -> str:
    now = int(time.time())
    msg_id = ids.new_msg_id(ops.node.node_id, now)
    _call(
        ops, OP_POST, circle_id=circle, msgs=[{"msg_id": msg_id, "created_ts": now, "text": text}]
    )
    return msg_id


def _texts(ops: Ops, circle: str) -> list[str]:
    return [m["text"] for m in _call(ops, OP_INBOX, circle_id=circle, limit=1000)["msgs"]]


def _epochs(ops: Ops, circle: str) -> list[int]:
    (item,) = [c for c in _call(ops, OP_CIRCLE_KEYS)["circles"] if c["circle_id"] == circle]
    return [e["n"] for e in item["epochs"]]


def _file_bytes(ops: Ops) -> bytes:
    ops.db.close()  # nothing held back in memory: what the disk holds
    raw = b"".join(
        Path(f"{ops.db.path}{s}").read_bytes()
        for s in DB_SUFFIXES
        if Path(f"{ops.db.path}{s}").exists()
    )
    ops.db = Database(ops.db.path)
    return raw


def _circle_of_three(tmp_path: Path) -> tuple[Ops, Ops, Ops, str, str]:
    a, b, c = (_node(tmp_path, n) for n in ("alice", "bob", "cy"))
    made = _call(a, OP_CIRCLE_CREATE, name="club")
    for n in (b, c):
        _call(n, OP_CIRCLE_JOIN, code=made["code"])
    _mesh(a, b, c)
    return a, b, c, made["circle_id"], made["code"]


def _circle_of_four(tmp_path: Path) -> tuple[Ops, Ops, Ops, Ops, str]:
    a, b, c, circle, _ = _circle_of_three(tmp_path)
    d = _node(tmp_path, "dee")
    _call(d, OP_CIRCLE_JOIN, code=_call(a, OP_INVITE, circle_id=circle)["code"])
    _mesh(a, b, c, d)
    return a, b, c, d, circle


def _give_role(owner: Ops, circle: str, target: Ops, role: str) -> Outcome:
    """The owner's ROLE_EVT making ``target`` a "moderator" or a "member" again."""
    now = int(time.time())
    event = events.role_event(target.node.node_id, role)
    body = {"circle_id": circle, "msg_id": ids.new_msg_id("a", now), "created_ts": now}
    return handled(owner, OP_CONTROL, {**body, "event": event})


def test_a_removed_member_reads_and_writes_nothing_new_and_history_stays(tmp_path: Path) -> None:
    a, b, c, circle, code = _circle_of_three(tmp_path)
    for n in (a, b, c):
        _post(n, circle, f"before, from {n.node.display_name}")
    _mesh(a, b, c)
    old = sorted(f"before, from {n}" for n in ("alice", "bob", "cy"))
    plan = _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy", dry_run=True)
    assert (plan["node_id"], plan["epoch"], plan["cannot_follow"]) == (c.node.node_id, 1, [])
    assert _epochs(a, circle) == [0]  # a dry run writes nothing
    done = _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    assert done["removed"] and _epochs(a, circle) == [1, 0]
    secret_text = "after the removal: only alice and bob"
    _post(a, circle, secret_text)
    _mesh(a, b, c)

    assert _epochs(b, circle) == [1, 0]
    assert secret_text in _texts(b, circle)
    assert sorted(t for t in _texts(b, circle) if t.startswith("before")) == old
    # C got the ciphertext (relayed like any other) and shows nothing of it.
    assert _epochs(c, circle) == [0]
    assert secret_text not in _texts(c, circle)
    assert any(m.get("sealed") for m in _call(c, OP_SNAPSHOT, limit=1000)["msgs"])
    assert secret_text.encode() not in _file_bytes(c)
    assert secret_text.encode() in _file_bytes(b)  # the check reads what a file holds
    # C's node knows it was removed (it reads the EPOCH_EVT under the root) and writes
    # nothing; what it writes by hand, signed, under the root, the others refuse.
    with pytest.raises(RPCError) as refused:
        _post(c, circle, "still here?")
    assert refused.value.code == ERR_FORBIDDEN and "removed" in refused.value.message
    forged = _by_hand(c, circle, a.keys(circle).root or "", "still here, by hand")
    for n in (a, b):
        assert _call(n, OP_APPEND, origin="gossip", msgs=[forged])["results"] == [
            "rejected:removed"
        ]
    who = {p["node_id"]: p for p in _call(b, OP_WHO, circle_id=circle)["people"]}
    assert who[c.node.node_id]["removed"] and not who[a.node.node_id]["removed"]
    # The old code names the root: a node joining with it reads no message of epoch 1.
    d = _node(tmp_path, "dee")
    _call(d, OP_CIRCLE_JOIN, code=code)
    _sync(a, d)
    assert secret_text not in _texts(d, circle)
    assert sorted(t for t in _texts(d, circle) if t.startswith("before")) == old


def _by_hand(ops: Ops, circle: str, secret: str, text: str) -> dict[str, Any]:
    """A message signed by ``ops``'s key under ``secret``, as its node would not write it."""
    key = ops.node.key
    assert key is not None
    now = int(time.time())
    msg = compose_message(
        secret,
        circle_id=circle,
        channel_id="general",
        author_node_id=key.node_id,
        display_name="cy",
        text=text,
        created_ts=now,
        msg_id=ids.new_msg_id(key.node_id, now),
        encrypt=True,
        key=key,
    )
    return to_wire(msg)


def test_a_member_offline_through_two_rekeys_opens_everything_whatever_the_order(
    tmp_path: Path,
) -> None:
    a, b, _, _, circle = _circle_of_four(tmp_path)
    _post(a, circle, "epoch 0")
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    _post(a, circle, "epoch 1")
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="dee")
    _post(a, circle, "epoch 2")
    # Bob gets the messages before the events that carry their secrets: kept sealed.
    wires = _wires(a)
    control = [w for w in wires if w["channel_id"] == CONTROL_CHANNEL]
    chat = [w for w in wires if w["channel_id"] != CONTROL_CHANNEL]
    results = _call(b, OP_APPEND, origin="gossip", msgs=chat)["results"]
    assert results.count("stored") == 3  # sealed ones are stored too
    assert _texts(b, circle) == ["epoch 0"]
    assert [r["text"] for r in b.db.circle_rows(circle, "general")] == ["epoch 0"]  # export
    assert _call(b, OP_STATS)["messages"] < len(_wires(b))  # sealed rows are not counted
    _call(b, OP_APPEND, origin="gossip", msgs=list(reversed(control)))
    assert _epochs(b, circle) == [2, 1, 0]
    assert _texts(b, circle) == ["epoch 0", "epoch 1", "epoch 2"]
    assert not any(m.get("sealed") for m in _call(b, OP_SNAPSHOT, limit=1000)["msgs"])


def test_a_node_joining_by_an_epochs_code_walks_back_and_reads_all_history(
    tmp_path: Path,
) -> None:
    a, b, c, circle, _ = _circle_of_three(tmp_path)
    _post(b, circle, "epoch 0, from bob")
    _mesh(a, b, c)
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    _post(a, circle, "epoch 1")
    code = _call(a, OP_INVITE, circle_id=circle)["code"]
    invite = decode_invite(code)
    assert (invite.circle_id, invite.epoch) == (circle, 1)
    d = _node(tmp_path, "dee")
    joined = _call(d, OP_CIRCLE_JOIN, code=code)
    assert joined["circle_id"] == circle
    _sync(a, d)
    assert sorted(_texts(d, circle)) == ["epoch 0, from bob", "epoch 1"]
    assert _epochs(d, circle) == [1, 0]  # the root found by the walk
    assert d.keys(circle).root == a.keys(circle).root
    # D writes under epoch 1, and A and B read it.
    _post(d, circle, "hello from dee")
    _mesh(a, b, d)
    assert "hello from dee" in _texts(b, circle)


def test_keys_not_held_are_kept_sealed_only_when_plausible(tmp_path: Path) -> None:
    a, b, _, circle, _ = _circle_of_three(tmp_path)
    msg = _by_hand(a, circle, a.keys(circle).root or "", "under some epoch")
    for key_id, verdict in (
        (f"e3.{'ab' * 16}", "stored"),  # not held, and plausible: kept sealed
        (f"e99.{'ab' * 16}", "rejected:unknown_key"),  # too far ahead
        ("epoch-7", "rejected:unknown_key"),
    ):
        wire = {**msg, "msg_id": ids.new_msg_id("x", len(key_id)), "enc": {**msg["enc"]}}
        wire["enc"]["key_id"] = key_id
        assert _call(b, OP_APPEND, origin="gossip", msgs=[wire])["results"] == [verdict]


def test_an_uncovered_removal_is_covered_by_the_next_epoch(tmp_path: Path) -> None:
    a, b, c, d, circle = _circle_of_four(tmp_path)
    _give_role(a, circle, b, "moderator")
    _mesh(a, b, c, d)
    # A and B remove C and D at once, each unaware of the other's removal.
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    _call(b, OP_MEMBER_REMOVE, circle_id=circle, node="dee")
    _mesh(a, b)
    _mesh(a, b)
    assert len(a.state(circle).epoch_events) == 3  # two epochs 1, and the one covering both
    for n in (a, b):
        state = n.state(circle)
        assert state.removed == {c.node.node_id, d.node.node_id}, n.node.display_name
        assert not state.uncovered
    assert a.keys(circle).newest == b.keys(circle).newest
    # The answer lists the newest, then the chain back (the one before it second: what
    # relay succession proves with), then the losing epoch 1, the root last.
    (item,) = _call(a, OP_CIRCLE_KEYS)["circles"]
    chain = [e.epoch_id for e in a.state(circle).epochs]
    assert [(e["n"], e["id"]) for e in item["epochs"]][:2] == [(2, chain[1]), (1, chain[0])]
    assert [e["n"] for e in item["epochs"]] == [2, 1, 1, 0]


def test_a_demotion_that_moves_the_newest_epoch_back_says_the_circle_changed(
    tmp_path: Path,
) -> None:
    a, b, c, d, circle = _circle_of_four(tmp_path)
    assert _give_role(a, circle, b, "moderator").circles_changed is False  # no epoch moved
    _mesh(a, b, c, d)
    _call(b, OP_MEMBER_REMOVE, circle_id=circle, node="dee")
    _mesh(a, b, c)
    assert a.keys(circle).newest.n == 1  # type: ignore[union-attr]
    # Undone with the demotion (nobody built on it): A's newest is the root's again, a
    # secret it held all along, and gossip and relay-sync must move back to it.
    assert _give_role(a, circle, b, "member").circles_changed is True
    assert a.keys(circle).newest.n == 0  # type: ignore[union-attr]


def test_a_database_of_schema_2_gains_sealed_rows_and_epoch_keys(tmp_path: Path) -> None:
    a = _node(tmp_path, "alice")
    circle = _call(a, OP_CIRCLE_CREATE, name="")["circle_id"]
    _post(a, circle, "kept across the migration")
    path = a.db.path
    a.db.close()
    raw = sqlite3.connect(path)  # as schema 2 left it
    raw.execute("DROP INDEX messages_sealed")
    raw.execute("ALTER TABLE messages DROP COLUMN sealed_key")
    raw.execute("DROP TABLE epoch_keys")
    raw.execute("PRAGMA user_version=2")
    raw.commit()
    raw.close()
    for _ in range(2):  # twice: the migration is idempotent
        a.db = Database(path)
        assert _texts(a, circle) == ["kept across the migration"]
        assert _epochs(a, circle) == [0]
        a.db.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_remover_whose_link_is_missing_writes_it_at_its_next_start(tmp_path: Path) -> None:
    """The EPOCH_EVT and its EPOCH_LINK are written in one transaction; were the link lost
    (a remover stopped between the two, as another writer could be), the start writes it."""
    a, _, _, circle, _ = _circle_of_three(tmp_path)
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")

    def links(ops: Ops) -> int:
        return sum('"EPOCH_LINK"' in e.text for e in ops._control_events(circle))

    assert links(a) == 1
    with a.db.transaction():
        a.db._db.execute("DELETE FROM messages WHERE text LIKE '%EPOCH_LINK%'")
    restarted = Ops(a.db, a.node)
    with restarted.db.transaction():
        out = restarted.follow_all()
    assert links(restarted) == 1 and [r["channel_id"] for r in out.stored] == [CONTROL_CHANNEL]


def test_an_unsigned_message_under_an_older_epoch_is_refused(tmp_path: Path) -> None:
    """v1 peers write unsigned: once the circle has a newer epoch, an unsigned message under
    an older one is refused (a removed member could forge it with its old secret); under
    the newest it is stored, unverified."""
    a, b, _, circle, _ = _circle_of_three(tmp_path)
    root = a.keys(circle).root or ""
    _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    _sync(a, b)
    newest = b.keys(circle).newest
    assert newest is not None and newest.n == 1
    v1_peer, now = "0e" * 12, int(time.time())  # an id of the other implementation's form

    def unsigned(secret: str, key_id: str, text: str) -> dict[str, Any]:
        msg = to_wire(
            compose_message(
                secret,
                circle_id=circle,
                channel_id="general",
                author_node_id=v1_peer,
                display_name="v1",
                text=text,
                created_ts=now,
                msg_id=ids.new_msg_id(v1_peer, len(text)),
                encrypt=True,
            )
        )
        msg["enc"]["key_id"] = key_id
        return msg

    old = unsigned(root, "epoch-0", "under the root")
    new = unsigned(newest.secret, newest.key_id, "under epoch 1")
    assert _call(b, OP_APPEND, origin="gossip", msgs=[old, new])["results"] == [
        "rejected:stale_epoch",
        "stored",
    ]


def test_a_member_announcing_a_key_nothing_can_be_wrapped_to_stops_no_removal(
    tmp_path: Path,
) -> None:
    """A low-order X25519 point parses as 32 bytes (the fold keeps it, as the page's does)
    but no secret can be wrapped to it: its announcer gets no wrap, the removal goes on."""
    a, b, _, circle, _ = _circle_of_three(tmp_path)
    key = b.node.key
    assert key is not None
    low = base64.b64encode(bytes(32)).decode()
    event = events.key_announce_event(b.node.node_id, base64.b64encode(key.public).decode(), low)
    now, text = int(time.time()) + 1, chatmodel.event_text(event)
    held = b.db.circle(circle)
    assert held is not None
    with b.db.transaction():  # what a hostile node writes, past its own checks
        b._write(held, CONTROL_CHANNEL, [(ids.new_msg_id(b.node.node_id, now), now, text)])
    _mesh(a, b)
    assert a.state(circle).xkeys[b.node.node_id] == bytes(32)
    done = _call(a, OP_MEMBER_REMOVE, circle_id=circle, node="cy")
    assert done["removed"] and _epochs(a, circle) == [1, 0]
    assert b.node.node_id not in a.state(circle).epochs[-1].wraps
