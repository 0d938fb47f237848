"""The peer table: bounded on the way in (PeerTable.take), capped and paged by the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest

from felund.bus.aio import AsyncRPCClient
from felund.errors import RPCError
from felund.gossip.peertable import LEARNED_PER_TEACHER, MAX_TEACHERS, PeerTable
from felund.protocol import (
    MAX_PEERS_PAGE,
    MAX_PEERS_PER_CIRCLE,
    OP_CIRCLE_JOIN,
    OP_PEERS,
    OP_PEERS_ADD,
    OP_PEERS_FORGET,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.v1.invite import encode_invite

INVITED = "chat.example.org:9999"  # the inviter, named in the invite code


def _table() -> PeerTable:
    return PeerTable(cast(AsyncRPCClient, None))  # take() asks nothing of the store


def _entries(n: int, node: str = "n" * 128, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"addr": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:9999", "node_id": node}
        for i in range(start, start + n)
    ]


# --- what gossip passes on to the store ----------------------------------------------


def test_one_member_teaches_at_most_its_share() -> None:
    table = _table()
    taken = table.take("c", "member", _entries(1000))
    assert len(taken) == LEARNED_PER_TEACHER
    assert table.take("c", "member", _entries(1000, start=5000)) == []
    # What it taught already may be said again (a member re-announcing itself).
    assert len(table.take("c", "member", _entries(10))) == 10
    # Another member, or the same in another circle, has its own share.
    assert len(table.take("c", "other", _entries(10, start=5000))) == 10
    assert len(table.take("d", "member", _entries(10, start=5000))) == 10


def test_addresses_that_could_not_be_a_peer_are_not_learned() -> None:
    table = _table()
    table.own.add("10.0.0.9:9999")
    bad = [
        {"addr": "169.254.169.254:80", "node_id": "n"},
        {"addr": "evil.example:9999", "node_id": "n"},
        {"addr": "8.8.8.8:53", "node_id": "n"},
        {"addr": "10.0.0.1:9999", "node_id": ""},  # no node named: nothing to check it by
        {"addr": "10.0.0.9:9999", "node_id": "n"},  # ourselves
    ]
    good = {"addr": "10.0.0.2:9999", "node_id": "n"}
    assert table.take("c", "member", [*bad, good]) == [{"circle_id": "c", **good}]


def test_the_members_remembered_are_bounded() -> None:
    table = _table()
    for i in range(MAX_TEACHERS + 10):
        table.take("c", f"m{i}", [])
    assert len(table._taught) == MAX_TEACHERS


# --- what the store keeps and answers ----------------------------------------------------


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    db = Database(tmp_path / "felund.db")
    yield Ops(db, NodeInfo("a" * 24, "me", False, "127.0.0.1:9999"))
    db.close()


def _do(ops: Ops, op: str, body: dict[str, Any]) -> Any:
    with ops.db.transaction():
        return ops.handle(op, body).reply


def _circle(ops: Ops, secret: str) -> str:
    code = encode_invite(secret, INVITED)
    circle_id: str = _do(ops, OP_CIRCLE_JOIN, {"code": code})["circle_id"]
    return circle_id


def _learn(ops: Ops, circle_id: str, entries: list[dict[str, Any]], reached: bool = False) -> None:
    for i in range(0, len(entries), 256):
        chunk = [{**e, "circle_id": circle_id} for e in entries[i : i + 256]]
        _do(ops, OP_PEERS_ADD, {"peers": chunk, "reached": reached})


def _all(ops: Ops, **body: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = _do(ops, OP_PEERS, body)
    rows.extend(page["peers"])
    for _ in range(100):
        if not page["more"]:
            return rows
        page = _do(ops, OP_PEERS, {**body, "after": [rows[-1]["circle_id"], rows[-1]["addr"]]})
        rows.extend(page["peers"])
    raise AssertionError("no end to the pages")


def test_the_issues_flood_leaves_a_bounded_table_that_answers(ops: Ops) -> None:
    """704 PEERS frames of 64 addresses with 128-character ids, as in the issue: the
    store keeps its cap, the invite's address among them, and answers in pages."""
    circle = _circle(ops, "ab" * 32)
    _learn(ops, circle, [{"addr": "10.9.9.9:9999", "node_id": "good", "last_seen": 100}], True)
    started = time.monotonic()
    _learn(ops, circle, _entries(704 * 64))
    assert time.monotonic() - started < 60
    rows = _all(ops, circle_id=circle)
    assert len(rows) == MAX_PEERS_PER_CIRCLE
    addrs = {r["addr"] for r in rows}
    assert {INVITED, "10.9.9.9:9999"} <= addrs  # the user's own and a reached one stay
    # The newest learned ones are kept: the flood's latest pushed out its oldest.
    assert _entries(1, start=704 * 64 - 1)[0]["addr"] in addrs
    page = _do(ops, OP_PEERS, {})
    assert len(msgpack.packb(page)) < 256 * 1024


def test_pages_cover_every_row_once_in_order(ops: Ops) -> None:
    circles = [_circle(ops, f"{i:02x}" * 32) for i in range(3)]
    for c in circles:
        _learn(ops, c, _entries(MAX_PEERS_PER_CIRCLE))
    first = _do(ops, OP_PEERS, {})
    assert len(first["peers"]) == MAX_PEERS_PAGE and first["more"]
    rows = _all(ops)
    keys = [(r["circle_id"], r["addr"]) for r in rows]
    assert keys == sorted(set(keys))
    assert len(rows) == 3 * MAX_PEERS_PER_CIRCLE
    assert len(_all(ops, circle_id=circles[1], limit=7)) == MAX_PEERS_PER_CIRCLE


@pytest.mark.parametrize(
    "body",
    [{"limit": 0}, {"limit": MAX_PEERS_PAGE + 1}, {"after": ["c"]}, {"after": [1, 2]}],
)
def test_bad_page_requests_are_refused(ops: Ops, body: dict[str, Any]) -> None:
    with pytest.raises(RPCError):
        _do(ops, OP_PEERS, body)


def test_a_members_word_dates_nothing_and_names_a_node(ops: Ops) -> None:
    circle = _circle(ops, "ab" * 32)
    claims: list[dict[str, Any]] = [
        {"addr": "10.0.0.1:9999", "node_id": "n1", "last_seen": 2_000_000_000},
        {"addr": "10.0.0.2:9999", "node_id": ""},  # would pass for the user's own
    ]
    _learn(ops, circle, claims)
    _learn(ops, circle, [{"addr": "10.0.0.3:9999", "node_id": "n3", "last_seen": 5}], True)
    rows = {r["addr"]: r for r in _all(ops, circle_id=circle)}
    assert rows["10.0.0.1:9999"]["last_seen"] == 0
    assert "10.0.0.2:9999" not in rows
    assert rows["10.0.0.3:9999"]["last_seen"] == 5
    assert rows[INVITED]["node_id"] == ""


def test_forgetting_spares_the_users_own(ops: Ops) -> None:
    circle = _circle(ops, "ab" * 32)
    _learn(ops, circle, [{"addr": "10.0.0.1:9999", "node_id": "n1"}])
    gone = [{"circle_id": circle, "addr": a} for a in ("10.0.0.1:9999", INVITED)]
    assert _do(ops, OP_PEERS_FORGET, {"peers": gone}) == {"forgotten": 1}
    assert [r["addr"] for r in _all(ops, circle_id=circle)] == [INVITED]
