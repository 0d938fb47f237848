"""The database and the store's operations, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from felund.errors import RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    ERR_BAD_INVITE,
    ERR_BAD_REQUEST,
    ERR_UNKNOWN_CIRCLE,
    MAX_POST_BATCH,
    OP_APPEND,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLES,
    OP_CONTROL,
    OP_FETCH,
    OP_INBOX,
    OP_PEERS,
    OP_POST,
    OP_SNAPSHOT,
    OP_STATS,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing.vectors import wire_message
from felund.v1 import ids
from felund.v1.invite import encode_invite
from felund.v1.wire import (
    MAX_TEXT_CHARS,
    WireMessage,
    compose_message,
    pack_wire,
    parse_message,
    to_wire,
)

TS = 1764000000


@dataclass
class Store:
    """A database, the operations on it, and this node's identity."""

    path: Path
    db: Database
    ops: Ops
    node: NodeInfo

    def call(self, op: str, body: dict[str, Any]) -> Any:
        """One request in a transaction of its own, as the offline client does."""
        with self.db.transaction():
            return self.ops.handle(op, body).reply

    def reopen(self) -> None:
        self.db.close()
        self.db = Database(self.path)
        self.ops = Ops(self.db, self.node)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    node = NodeInfo(
        node_id=ids.new_node_id(), display_name="alice", encrypt=True, invite_peer="127.0.0.1:9999"
    )
    path = tmp_path / "felund.db"
    db = Database(path)
    s = Store(path, db, Ops(db, node), node)
    yield s
    s.db.close()


@pytest.fixture
def circle(store: Store) -> str:
    # No name: a name is the circle's first control event, and store_seqs here count posts.
    reply = store.call(OP_CIRCLE_CREATE, {})
    circle_id: str = reply["circle_id"]
    return circle_id


def new_msgs(store: Store, n: int, prefix: str = "hello") -> list[dict[str, Any]]:
    return [
        {"msg_id": ids.new_msg_id(store.node.node_id, TS + i), "text": f"{prefix} {i}",
         "created_ts": TS + i}
        for i in range(n)
    ]  # fmt: skip


def post(store: Store, circle_id: str, msgs: list[dict[str, Any]], **extra: Any) -> Any:
    return store.call(OP_POST, {"circle_id": circle_id, "msgs": msgs, **extra})


def all_seqs(store: Store) -> list[int]:
    return [r["store_seq"] for r in store.db.since(0, 100_000)]


def refused_code(store: Store, op: str, body: Any) -> str:
    with pytest.raises(RPCError) as info:
        store.call(op, body)
    return info.value.code


# --- store.post and store_seq -------------------------------------------------------------


def test_circle_create_answers_an_id_and_an_invite(store: Store) -> None:
    reply = store.call(OP_CIRCLE_CREATE, {"name": "friends"})
    assert ids.is_hex(reply["circle_id"], 24)
    assert reply["code"].startswith("felund1.")
    assert reply["name"] == "friends"
    circles = store.call(OP_CIRCLES, {})["circles"]
    assert [c["circle_id"] for c in circles] == [reply["circle_id"]]
    assert "secret" not in circles[0]


def test_post_numbers_messages_without_gaps(store: Store, circle: str) -> None:
    first = post(store, circle, new_msgs(store, 5))
    assert first == {"seqs": [1, 2, 3, 4, 5], "stored": 5, "last_seq": 5}
    second = post(store, circle, new_msgs(store, 3, "again"))
    assert second["seqs"] == [6, 7, 8]
    assert all_seqs(store) == list(range(1, 9))
    assert store.db.last_seq == 8
    texts = [r["text"] for r in store.db.since(0, 100)]
    assert texts[:2] == ["hello 0", "hello 1"]  # stored readable though sent encrypted
    assert {r["origin"] for r in store.db.since(0, 100)} == {"local"}


def test_posting_the_same_messages_again_is_idempotent(store: Store, circle: str) -> None:
    msgs = new_msgs(store, 4)
    first = post(store, circle, msgs)
    again = post(store, circle, msgs)
    assert again == {"seqs": first["seqs"], "stored": 0, "last_seq": 4}
    assert store.db.message_count() == 4
    # A batch of old and new: only the new one takes a seq.
    mixed = post(store, circle, [msgs[2], *new_msgs(store, 1, "new")])
    assert mixed == {"seqs": [3, 5], "stored": 1, "last_seq": 5}
    assert all_seqs(store) == [1, 2, 3, 4, 5]


def test_a_message_twice_in_one_batch_is_stored_once(store: Store, circle: str) -> None:
    (msg,) = new_msgs(store, 1)
    reply = post(store, circle, [msg, msg])
    assert reply == {"seqs": [1, 1], "stored": 1, "last_seq": 1}


def test_a_failed_transaction_rolls_back_rows_and_the_counter(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 2))
    lost = new_msgs(store, 3, "lost")
    with pytest.raises(RuntimeError), store.db.transaction():
        reply = store.ops.handle(OP_POST, {"circle_id": circle, "msgs": lost}).reply
        assert reply["seqs"] == [3, 4, 5]
        raise RuntimeError("crash before commit")
    assert store.db.last_seq == 2
    assert store.db.message_count() == 2
    assert all(store.db.seq_of(m["msg_id"]) is None for m in lost)
    reply = post(store, circle, new_msgs(store, 1, "next"))
    assert reply["seqs"] == [3]  # the seq is reused: no gap
    assert all_seqs(store) == [1, 2, 3]
    store.reopen()
    assert store.db.last_seq == 3


def test_the_work_given_to_a_commit_runs_in_the_transactions_thread(
    store: Store, circle: str
) -> None:
    ran: list[int] = []
    with store.db.transaction() as commit:
        store.ops.handle(OP_POST, {"circle_id": circle, "msgs": new_msgs(store, 2)})
        commit.meanwhile = lambda: ran.append(threading.get_ident())
    assert ran == [threading.get_ident()]
    store.reopen()
    assert (store.db.last_seq, store.db.message_count()) == (2, 2)


def test_what_the_work_beside_a_commit_raises_comes_once_it_committed(
    store: Store, circle: str
) -> None:
    def fail() -> None:
        raise RuntimeError("beside the commit")

    with pytest.raises(RuntimeError, match="beside the commit"), store.db.transaction() as commit:
        store.ops.handle(OP_POST, {"circle_id": circle, "msgs": new_msgs(store, 2)})
        commit.meanwhile = fail
    assert store.db.last_seq == 2  # committed: the counter is not taken back
    store.reopen()
    assert (store.db.last_seq, store.db.message_count()) == (2, 2)


def test_a_commit_failing_beside_its_work_rolls_back_and_raises_its_own_error(
    store: Store, circle: str
) -> None:
    # A deferred foreign key fails at COMMIT, as a full disk does.
    store.db._db.executescript(
        "PRAGMA foreign_keys = ON;"
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    ran: list[str] = []

    def fail() -> None:
        ran.append("beside")
        raise RuntimeError("not this one")

    with pytest.raises(sqlite3.IntegrityError), store.db.transaction() as commit:
        store.ops.handle(OP_POST, {"circle_id": circle, "msgs": new_msgs(store, 2)})
        store.db._db.execute("INSERT INTO child VALUES (7)")
        commit.meanwhile = fail
    assert ran == ["beside"]
    assert (store.db.last_seq, store.db.message_count()) == (0, 0)
    assert post(store, circle, new_msgs(store, 1))["seqs"] == [1]  # usable, no gap


def test_messages_parsed_ahead_are_taken_by_their_append_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = ids.new_secret()
    store.call(OP_CIRCLE_JOIN, {"code": encode_invite(secret, "127.0.0.1:1")})
    author = ids.new_node_id()
    wires = [wire_message(secret, author, f"line {i}") for i in range(3)]
    bad = {**wires[2], "created_ts": "soon"}
    parsed: list[object] = []

    def counted(raw: object) -> WireMessage:
        parsed.append(raw)
        return parse_message(raw)

    monkeypatch.setattr("felund.store.ops.parse_message", counted)
    store.ops.parse_ahead([[wires[0], bad]])
    assert parsed == [wires[0], bad]
    # An equal map that is not the one parsed ahead is parsed anew: taken by identity only.
    twin = dict(wires[0])
    results = store.call(OP_APPEND, {"origin": "gossip", "msgs": [twin, bad, wires[1]]})
    assert results["results"] == ["stored", "rejected:type", "stored"]
    assert parsed[2:] == [twin, wires[1]]  # bad's parse (a refusal) was taken
    results = store.call(OP_APPEND, {"origin": "gossip", "msgs": [wires[0], bad]})
    assert results["results"] == ["duplicate", "rejected:type"]
    assert parsed[4:] == [bad]  # wires[0]'s was taken; bad's was, once


def test_a_savepoint_undoes_only_its_request(store: Store, circle: str) -> None:
    a, b, c = (new_msgs(store, 2, p) for p in ("a", "b", "c"))
    with store.db.transaction():
        with store.db.savepoint():
            assert store.ops.handle(OP_POST, {"circle_id": circle, "msgs": a}).reply["seqs"] == [
                1,
                2,
            ]
        with pytest.raises(RuntimeError), store.db.savepoint():
            store.ops.handle(OP_POST, {"circle_id": circle, "msgs": b})
            raise RuntimeError("this request fails")
        assert store.db.last_seq == 2
        with store.db.savepoint():
            reply = store.ops.handle(OP_POST, {"circle_id": circle, "msgs": c}).reply
        assert reply["seqs"] == [3, 4]
    assert all_seqs(store) == [1, 2, 3, 4]
    assert all(store.db.seq_of(m["msg_id"]) is None for m in b)
    assert [store.db.seq_of(m["msg_id"]) for m in a + c] == [1, 2, 3, 4]
    store.reopen()
    assert store.db.last_seq == 4


def test_reopening_keeps_last_seq_and_continues_it(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 7))
    store.reopen()
    assert store.db.last_seq == 7
    assert store.db.message_count() == 7
    assert post(store, circle, new_msgs(store, 2, "later"))["seqs"] == [8, 9]
    store.reopen()
    assert store.db.last_seq == 9
    assert all_seqs(store) == list(range(1, 10))
    assert store.db.integrity_check() == "ok"


# --- store.append ------------------------------------------------------------------------


def wire_for(circle_id: str, secret: str, text: str, encrypt: bool, **kw: Any) -> dict[str, Any]:
    author = kw.pop("author", "b0b0b0b0b0b0b0b0b0b0b0b0")
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id=kw.pop("channel_id", "general"),
        author_node_id=author,
        display_name="bob",
        text=text,
        created_ts=kw.pop("created_ts", TS),
        msg_id=kw.pop("msg_id", ids.new_msg_id(author, TS)),
        encrypt=encrypt,
    )
    return to_wire(msg)


def test_append_answers_each_message_in_order(store: Store, circle: str) -> None:
    known = store.db.circle(circle)
    assert known is not None
    secret = known.secret
    other_secret = ids.new_secret()
    stranger = ids.new_secret()
    good_plain = wire_for(circle, secret, "plain", encrypt=False)
    good_enc = wire_for(circle, secret, "sealed", encrypt=True)
    bad_mac = wire_for(circle, secret, "forged", encrypt=False)
    bad_mac["mac"] = "0" * 64
    wrong_secret = wire_for(circle, other_secret, "wrong key", encrypt=False)
    wrong_secret_enc = wire_for(circle, other_secret, "wrong key", encrypt=True)
    unknown = wire_for(ids.circle_id(stranger), stranger, "elsewhere", encrypt=False)
    ts_as_text = wire_for(circle, secret, "ts", encrypt=False)
    ts_as_text["created_ts"] = str(TS)
    no_id = wire_for(circle, secret, "no id", encrypt=False)
    del no_id["msg_id"]
    extra_key = {**wire_for(circle, secret, "extra", encrypt=False), "color": "red"}
    msgs: list[Any] = [
        good_plain, bad_mac, good_enc, wrong_secret, wrong_secret_enc, unknown, ts_as_text,
        no_id, extra_key, "not a message", good_plain,
    ]  # fmt: skip
    reply = store.call(OP_APPEND, {"origin": "gossip", "msgs": msgs})
    assert reply["results"] == [
        "stored", "rejected:auth", "stored", "rejected:auth", "rejected:auth",
        "rejected:unknown_circle", "rejected:type", "rejected:missing_field",
        "rejected:unknown_key", "rejected:not_object", "duplicate",
    ]  # fmt: skip
    assert reply["last_seq"] == 2
    rows = store.db.since(0, 10)
    assert [(r["store_seq"], r["text"], r["origin"]) for r in rows] == [
        (1, "plain", "gossip"),
        (2, "sealed", "gossip"),
    ]
    again = store.call(OP_APPEND, {"origin": "relay", "msgs": [good_enc, good_plain]})
    assert again == {"results": ["duplicate", "duplicate"], "last_seq": 2}


def test_append_of_posted_messages_is_a_duplicate(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 3))
    snap = store.call(OP_SNAPSHOT, {"since": 0, "with_wire": True})
    wires = [r["wire"] for r in snap["msgs"]]
    reply = store.call(OP_APPEND, {"origin": "gossip", "msgs": wires})
    assert reply == {"results": ["duplicate"] * 3, "last_seq": 3}


@pytest.mark.parametrize(
    "body",
    [
        {"origin": "local", "msgs": []},
        {"origin": "elsewhere", "msgs": []},
        {"msgs": []},
        {"origin": "gossip", "msgs": {}},
        {"origin": "gossip", "msgs": [{}] * (MAX_POST_BATCH + 1)},
    ],
)
def test_append_refuses_bad_requests(store: Store, body: dict[str, Any]) -> None:
    assert refused_code(store, OP_APPEND, body) == ERR_BAD_REQUEST


# --- refusals -------------------------------------------------------------------------------


def test_post_to_an_unknown_circle(store: Store, circle: str) -> None:
    msgs = new_msgs(store, 1)
    assert refused_code(store, OP_POST, {"circle_id": "ab" * 12, "msgs": msgs}) == (
        ERR_UNKNOWN_CIRCLE
    )
    assert refused_code(store, OP_POST, {"circle_id": "not-hex", "msgs": msgs}) == (
        ERR_UNKNOWN_CIRCLE
    )
    assert store.db.last_seq == 0


def bad_posts(store: Store) -> list[dict[str, Any]]:
    msgs = new_msgs(store, 1)
    long_text = {**new_msgs(store, 1)[0], "text": "x" * (MAX_TEXT_CHARS + 1)}
    return [
        {"msgs": "hello"},
        {"msgs": {"text": "hi"}},
        {"msgs": None},
        {},
        {"msgs": []},
        {"msgs": msgs * (MAX_POST_BATCH + 1)},
        {"msgs": msgs, "channel_id": CONTROL_CHANNEL},
        {"msgs": msgs, "channel_id": "__secret"},
        {"msgs": msgs, "channel_id": "Not Valid"},
        {"msgs": msgs, "channel_id": 5},
        {"msgs": [long_text]},
        {"msgs": [*new_msgs(store, 2, "ok"), long_text]},
        {"msgs": ["text"]},
        {"msgs": [{"text": "hi", "created_ts": TS}]},
        {"msgs": [{**msgs[0], "created_ts": str(TS)}]},
        {"msgs": [{**msgs[0], "created_ts": True}]},
        {"msgs": [{**msgs[0], "msg_id": "short"}]},
        {"msgs": [{**msgs[0], "text": 5}]},
    ]


def test_post_refuses_bad_requests_leaving_no_trace(store: Store, circle: str) -> None:
    cases = bad_posts(store)
    for body in cases:
        assert refused_code(store, OP_POST, {"circle_id": circle, **body}) == ERR_BAD_REQUEST, body
    assert store.db.last_seq == 0
    assert store.db.message_count() == 0
    assert post(store, circle, new_msgs(store, 1))["seqs"] == [1]


def test_non_map_body_and_unknown_op(store: Store) -> None:
    with pytest.raises(RPCError) as info:
        store.ops.handle(OP_POST, ["not", "a", "map"])
    assert info.value.code == ERR_BAD_REQUEST
    with pytest.raises(RPCError) as info:
        store.ops.handle("store.nosuch", {})
    assert info.value.code == "unknown_op"


# --- reads ------------------------------------------------------------------------------------


def test_snapshot_pages(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 5))

    def snap(since: int, limit: int) -> tuple[list[int], int, bool]:
        r = store.call(OP_SNAPSHOT, {"since": since, "limit": limit})
        return [m["store_seq"] for m in r["msgs"]], r["covers"], r["more"]

    assert snap(0, 2) == ([1, 2], 2, True)
    assert snap(2, 2) == ([3, 4], 4, True)
    assert snap(4, 2) == ([5], 5, False)
    assert snap(0, 5) == ([1, 2, 3, 4, 5], 5, False)  # a full page that reaches the end
    assert snap(0, 100) == ([1, 2, 3, 4, 5], 5, False)
    assert snap(5, 2) == ([], 5, False)
    assert snap(9, 2) == ([], 5, False)
    # Paging until "more" is false sees every message once.
    seen: list[int] = []
    since = 0
    for _ in range(10):
        page, covers, more = snap(since, 3)
        seen += page
        since = covers
        if not more:
            break
    assert seen == [1, 2, 3, 4, 5]
    assert since == 5


def test_snapshot_rows_carry_the_event_keys(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 1))
    (row,) = store.call(OP_SNAPSHOT, {})["msgs"]
    assert set(row) == {
        "store_seq", "msg_id", "circle_id", "channel_id", "author_node_id", "display_name",
        "created_ts", "text", "origin", "verified",
    }  # fmt: skip
    assert (row["circle_id"], row["author_node_id"], row["display_name"]) == (
        circle,
        store.node.node_id,
        "alice",
    )


def test_a_snapshot_as_stored_gives_rows_as_their_events_did(store: Store, circle: str) -> None:
    # What a follower that lost events takes instead: the wire form of what gossip pushes
    # on (ours, and the relay's fresh ones), none of the rest.
    known = store.db.circle(circle)
    assert known is not None
    now = int(time.time())
    events: list[dict[str, Any]] = []
    requests: list[tuple[str, dict[str, Any]]] = [
        (OP_POST, {"circle_id": circle, "msgs": new_msgs(store, 1)})
    ]
    for origin, ts in (("gossip", now), ("relay", now), ("relay", TS)):
        wire = wire_for(circle, known.secret, f"{origin} {ts}", True, created_ts=ts)
        requests.append((OP_APPEND, {"origin": origin, "msgs": [wire]}))
    for op, body in requests:
        with store.db.transaction():
            events += store.ops.handle(op, body).stored
    assert [("wire" in e, e["origin"]) for e in events] == [
        (True, "local"), (False, "gossip"), (True, "relay"), (False, "relay"),
    ]  # fmt: skip
    assert store.call(OP_SNAPSHOT, {"as_stored": True})["msgs"] == events
    assert all("wire" in r for r in store.call(OP_SNAPSHOT, {"with_wire": True})["msgs"])


_BAD_SNAPSHOTS = [{"since": -1}, {"limit": 0}, {"since": "0"}, {"limit": 2.0}, {"with_wire": 1}]


@pytest.mark.parametrize("body", [*_BAD_SNAPSHOTS, {"as_stored": 1}])
def test_snapshot_refuses_bad_requests(store: Store, body: dict[str, Any]) -> None:
    assert refused_code(store, OP_SNAPSHOT, body) == ERR_BAD_REQUEST


def test_fetch_gives_wire_forms_or_the_packed_bytes_kept(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 3))
    held = [r["msg_id"] for r in store.db.since(0, 100) if r["channel_id"] == "general"]
    asked = [*reversed(held), "unknownmsgid000"]  # answered in store order, unknown ids skipped
    wires = store.call(OP_FETCH, {"msg_ids": asked})["msgs"]
    assert [w["msg_id"] for w in wires] == held
    packed = store.call(OP_FETCH, {"msg_ids": asked, "packed": True})["msgs"]
    assert packed == [pack_wire(w) for w in wires]


@pytest.mark.parametrize(
    "body", [{}, {"msg_ids": "x"}, {"msg_ids": [1]}, {"msg_ids": [], "packed": "yes"}]
)
def test_fetch_refuses_bad_requests(store: Store, body: dict[str, Any]) -> None:
    assert refused_code(store, OP_FETCH, body) == ERR_BAD_REQUEST


def test_inbox_gives_the_newest_oldest_first(store: Store, circle: str) -> None:
    store.call(
        OP_CONTROL,
        {  # seq 1, never shown in an inbox
            "circle_id": circle,
            "msg_id": new_msgs(store, 1, "x")[0]["msg_id"],
            "created_ts": 1764000000,
            "event": {"t": "CHANNEL_EVT", "op": "create", "channel_id": "random"},
        },
    )
    post(store, circle, new_msgs(store, 5, "general"))  # seqs 2-6
    post(store, circle, new_msgs(store, 3, "random"), channel_id="random")  # 7-9
    post(store, circle, new_msgs(store, 1, "general late"))  # 10
    other = store.call(OP_CIRCLE_CREATE, {})["circle_id"]
    post(store, other, new_msgs(store, 2, "other"))  # 11-12

    def inbox(**body: Any) -> list[tuple[int, str]]:
        r = store.call(OP_INBOX, {"circle_id": circle, **body})
        return [(m["store_seq"], m["channel_id"]) for m in r["msgs"]]

    assert inbox(limit=4) == [(7, "random"), (8, "random"), (9, "random"), (10, "general")]
    assert inbox(limit=3, channel_id="general") == [(5, "general"), (6, "general"), (10, "general")]
    assert inbox(limit=2, channel_id="random") == [(8, "random"), (9, "random")]
    with pytest.raises(RPCError, match="there is no channel #nosuch"):  # not an empty answer
        inbox(channel_id="nosuch")
    assert [s for s, _ in inbox()] == list(range(2, 11))
    texts = [m["text"] for m in store.call(OP_INBOX, {"circle_id": circle, "limit": 1})["msgs"]]
    assert texts == ["general late 0"]
    assert refused_code(store, OP_INBOX, {"circle_id": circle, "limit": 0}) == ERR_BAD_REQUEST
    assert refused_code(store, OP_INBOX, {"circle_id": "ab" * 12}) == ERR_UNKNOWN_CIRCLE


# --- joining -----------------------------------------------------------------------------------


def test_join_with_an_invite_code(store: Store) -> None:
    secret = ids.new_secret()
    code = encode_invite(secret, "10.1.2.3:4242")
    first = store.call(OP_CIRCLE_JOIN, {"code": code, "name": "club"})
    assert first == {
        "circle_id": ids.circle_id(secret),
        "joined": True,
        "peer": "10.1.2.3:4242",
        "relay_url": "",
    }
    again = store.call(OP_CIRCLE_JOIN, {"code": code})
    assert again["joined"] is False
    assert again["circle_id"] == first["circle_id"]
    peers = store.call(OP_PEERS, {})["peers"]
    assert [(p["circle_id"], p["addr"]) for p in peers] == [(first["circle_id"], "10.1.2.3:4242")]
    # The joined circle works: its secret is the invite's.
    known = store.db.circle(first["circle_id"])
    assert known is not None
    assert known.secret == secret
    reply = store.call(OP_APPEND, {
        "origin": "gossip", "msgs": [wire_for(first["circle_id"], secret, "hi", encrypt=True)],
    })  # fmt: skip
    assert reply["results"] == ["stored"]


def test_join_with_a_relay_invite_records_no_tcp_peer(store: Store) -> None:
    code = encode_invite(ids.new_secret(), "https://relay.example.org")
    assert store.call(OP_CIRCLE_JOIN, {"code": code})["joined"] is True
    assert store.call(OP_PEERS, {})["peers"] == []


@pytest.mark.parametrize(
    "code",
    [
        "hello",
        "felund1.",
        "felund1.!!!!",
        "felund1.eyJ2IjoyfQ",  # {"v":2}
        "felund1." + "A" * 5000,
    ],
)
def test_join_with_a_malformed_code(store: Store, code: str) -> None:
    assert refused_code(store, OP_CIRCLE_JOIN, {"code": code}) == ERR_BAD_INVITE
    assert store.call(OP_CIRCLES, {})["circles"] == []


def test_stats_and_integrity(store: Store, circle: str) -> None:
    post(store, circle, new_msgs(store, 3))
    stats = store.call(OP_STATS, {})
    assert (stats["messages"], stats["last_seq"], stats["circles"]) == (3, 3, 1)
    assert stats["db_bytes"] > 0
    assert store.db.integrity_check() == "ok"


def test_a_new_file_being_made_by_another_opener_is_waited_for(tmp_path: Path) -> None:
    # `felund run` and `felund status` at once on a new home: while one holds the new
    # file's lock, SQLite fails the other's switch to WAL at once, without its busy wait.
    path = tmp_path / "felund.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE made_first (x)")
    opened: list[Database] = []
    failed: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(Database(path))
        except BaseException as exc:  # reported by the test, in its thread
            failed.append(exc)

    opener = threading.Thread(target=open_it)
    opener.start()
    opener.join(0.5)  # failing, it fails at once; waiting, it is still here
    other.execute("COMMIT")
    other.close()
    opener.join(10)
    assert not failed, failed
    assert not opener.is_alive()
    db = opened[0]
    try:
        assert db.message_count() == 0
        assert db.integrity_check() == "ok"
    finally:
        db.close()
