"""Owning the data on a real SQLite file: private files, retention, the lost-circles mark."""

from __future__ import annotations

import ctypes
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felund import config, home
from felund.errors import DatabaseLost
from felund.gossip.reconcile import ItemSet, reconcile_pair
from felund.protocol import CONTROL_CHANNEL, OP_APPEND, OP_CIRCLE_CREATE, OP_POST, OP_SNAPSHOT
from felund.store.database import Database, Row
from felund.store.opening import note_circles, open_database
from felund.store.ops import NodeInfo, Ops
from felund.testing import wire_message
from felund.v1 import ids
from felund.v1.wire import parse_message

DAY = 86_400


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The most careless umask a user can have."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_database_and_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "chat.db"  # not in a home: nothing else makes it private
    path.parent.mkdir()
    db = Database(path)
    try:
        ops = Ops(db, NodeInfo(ids.new_node_id(), "a", True, "127.0.0.1:9999"))
        with db.transaction():
            ops.handle(OP_CIRCLE_CREATE, {"name": "x"})
        for suffix in ("", "-wal", "-shm"):
            companion = Path(f"{path}{suffix}")
            assert companion.exists(), suffix
            assert _mode(companion) == 0o600, (suffix, oct(_mode(companion)))
    finally:
        db.close()


def test_a_database_made_loose_by_an_older_felund_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "felund.db"
    Database(path).close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").touch()
        Path(f"{path}{suffix}").chmod(0o644)
    Database(path).close()
    assert {
        _mode(Path(f"{path}{s}")) for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists()
    } == {0o600}


# --- retention ------------------------------------------------------------------------------
@pytest.fixture
def circle_store(tmp_path: Path) -> Iterator[tuple[Database, Ops, str, str]]:
    db = Database(tmp_path / "felund.db")
    ops = Ops(db, NodeInfo(ids.new_node_id(), "alice", True, "127.0.0.1:9999"))
    with db.transaction():
        # No name: a circle's name is its first control event, a message of that circle.
        circle_id = ops.handle(OP_CIRCLE_CREATE, {}).reply["circle_id"]
    secret = db.circle(circle_id).secret  # type: ignore[union-attr]
    yield db, ops, circle_id, secret
    db.close()


def _append(db: Database, ops: Ops, wires: list[dict[str, Any]]) -> list[str]:
    with db.transaction():
        results: list[str] = ops.handle(OP_APPEND, {"origin": "gossip", "msgs": wires}).reply[
            "results"
        ]
    return results


def test_prune_removes_old_messages_keeps_controls_and_never_takes_them_back(
    circle_store: tuple[Database, Ops, str, str],
) -> None:
    db, ops, _, secret = circle_store
    now = 1_764_000_000
    peer = ids.new_node_id()
    old = [wire_message(secret, peer, f"old {i}", ts=now - 10 * DAY + i) for i in range(7)]
    new = [wire_message(secret, peer, f"new {i}", ts=now - DAY + i) for i in range(3)]
    control = wire_message(
        secret,
        peer,
        '{"t":"CIRCLE_NAME_EVT","name":"x"}',
        channel=CONTROL_CHANNEL,
        ts=now - 20 * DAY,
    )
    assert set(_append(db, ops, [*old, *new, control])) == {"stored"}

    pruned = []
    while True:  # in small batches, as the store does between requests
        with db.transaction():
            n = db.prune(now - 5 * DAY, 3, CONTROL_CHANNEL)
        if not n:
            break
        pruned.append(n)
    assert pruned == [3, 3, 1]
    held = {r["msg_id"] for r in db.since(0, 1000)}
    assert held == {m["msg_id"] for m in [*new, control]}
    assert db.pruned_count() == 7

    # Offered again by a peer or a relay: held, so not stored again.
    assert set(_append(db, ops, old)) == {"duplicate"}
    assert db.pruned_count() == 7 and db.message_count() == 4


def test_the_message_count_leaves_out_sealed_rows_and_reads_no_row(
    circle_store: tuple[Database, Ops, str, str],
) -> None:
    db, ops, _, secret = circle_store
    peer = ids.new_node_id()
    assert set(_append(db, ops, [wire_message(secret, peer, f"m {i}") for i in range(300)])) == {
        "stored"
    }
    sealed = parse_message(wire_message(secret, peer, "for a later epoch"))
    with db.transaction():
        db.insert_messages([Row(sealed, "", "", False, None, "e1.later")], "relay")
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    # `felund status` asks for it while a backlog arrives: counted on the indexes, its
    # work does not grow with the rows held (a scan of the table took 267 ms at 100k).
    db._db.set_progress_handler(step, 1)
    assert db.message_count() == 300
    db._db.set_progress_handler(None, 1)
    assert steps < 100, steps


def test_reconciliation_never_asks_for_what_was_pruned(
    circle_store: tuple[Database, Ops, str, str],
) -> None:
    db, ops, _, secret = circle_store
    now = 1_764_000_000
    peer = ids.new_node_id()
    wires = [wire_message(secret, peer, f"m {i}", ts=now - 10 * DAY + i * 3600) for i in range(200)]
    _append(db, ops, wires)
    with db.transaction():
        assert db.prune(now - 5 * DAY, 1000, CONTROL_CHANNEL) > 0
    fresh = wire_message(secret, peer, "fresh", ts=now)
    theirs = ItemSet((w["created_ts"], w["msg_id"]) for w in [*wires, fresh])  # a peer keeps all

    def index(with_pruned: bool) -> ItemSet:
        # What gossip's index is built from after a restart (services.gossip.catch_up).
        with db.transaction():
            answer = ops.handle(
                OP_SNAPSHOT, {"since": 0, "limit": 2000, "with_pruned": with_pruned}
            ).reply
        assert not answer["more"]
        return ItemSet((r["created_ts"], r["msg_id"]) for r in answer["msgs"])

    # Without the tombstones the pruned messages would be fetched back; with them only the new one.
    _, _, need_without, _ = reconcile_pair(index(False), theirs)
    assert len(need_without) > 100
    _, _, need, _ = reconcile_pair(index(True), theirs)
    assert need == [fresh["msg_id"]]


def test_circle_rows_pages_through_a_circle_in_store_order(
    circle_store: tuple[Database, Ops, str, str],
) -> None:
    db, ops, circle_id, _ = circle_store
    with db.transaction():
        ops.handle(OP_CIRCLE_CREATE, {"name": "other"})
    now = 1_764_000_000
    for start in range(0, 2500, 500):
        msgs = [
            {"msg_id": ids.new_msg_id(ops.node.node_id, now), "created_ts": now, "text": f"t {i}"}
            for i in range(start, start + 500)
        ]
        with db.transaction():
            ops.handle(OP_POST, {"circle_id": circle_id, "msgs": msgs})
    rows = list(db.circle_rows(circle_id, None, page=1000))
    assert [r["text"] for r in rows] == [f"t {i}" for i in range(2500)]
    assert all(r["wire"]["msg_id"] == r["msg_id"] for r in rows)
    assert list(db.circle_rows(circle_id, "nowhere")) == []


# --- the lost-circles mark --------------------------------------------------------------------
def test_an_emptied_database_is_refused_and_names_the_last_backup(tmp_path: Path) -> None:
    lay = home.layout(tmp_path, config.Config())
    db = open_database(lay, "full")  # a new home: no mark, no circles, nothing to say
    ops = Ops(db, NodeInfo(ids.new_node_id(), "a", True, "127.0.0.1:9999"))
    with db.transaction():
        ops.handle(OP_CIRCLE_CREATE, {"name": "x"})
    db.close()
    open_database(lay, "full").close()  # records the circle
    assert home.recorded_circles(lay) == 1
    home.record_backup(lay, tmp_path / "monday.felund-backup", 0)

    for suffix in ("-wal", "-shm"):
        Path(f"{lay.database}{suffix}").unlink(missing_ok=True)
    lay.database.write_bytes(b"")  # truncated to 0 bytes
    with pytest.raises(DatabaseLost) as info:
        open_database(lay, "full")
    text = str(info.value)
    assert "lost its circles" in text and "monday.felund-backup" in text
    with pytest.raises(DatabaseLost):  # and again: it never starts blank by itself
        open_database(lay, "full")


def test_leaving_every_circle_is_not_a_loss(tmp_path: Path) -> None:
    lay = home.layout(tmp_path, config.Config())
    db = open_database(lay, "full")
    ops = Ops(db, NodeInfo(ids.new_node_id(), "a", True, "127.0.0.1:9999"))
    with db.transaction():
        circle_id = ops.handle(OP_CIRCLE_CREATE, {"name": "x"}).reply["circle_id"]
    note_circles(lay, db)
    with db.transaction():
        ops.handle("store.circle.leave", {"circle_id": circle_id})
    note_circles(lay, db)
    db.close()
    open_database(lay, "full").close()
    assert home.recorded_circles(lay) == 0


def test_a_database_of_an_older_felund_gets_the_new_tables_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "felund.db"
    Database(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE pruned")
    raw.execute("DROP INDEX messages_by_created")
    raw.close()
    db = Database(path)
    try:
        assert db.pruned_count() == 0
        with db.transaction():
            assert db.prune(1, 10, CONTROL_CHANNEL) == 0
    finally:
        db.close()


# --- memory at rest ---------------------------------------------------------------------------
def _sqlite_memory_used() -> int:
    """The bytes SQLite holds in this process, as SQLite itself counts them."""
    lib = ctypes.CDLL("libsqlite3.so.0")  # the library the sqlite3 module has loaded
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


def test_an_idle_store_gives_back_its_page_cache(
    circle_store: tuple[Database, Ops, str, str],
) -> None:
    """What the store frees when it goes idle (``Runtime.on_idle``): SQLite's page cache,
    full (2 MiB) after writing and reading more than that."""
    db, ops, _, secret = circle_store
    wires = [wire_message(secret, "9" * 24, f"line {i:05d} " + "x" * 300) for i in range(6000)]
    for i in range(0, len(wires), 1000):
        assert set(_append(db, ops, wires[i : i + 1000])) == {"stored"}
    assert len(db.wire_of([w["msg_id"] for w in wires[::7]])) == len(wires[::7])
    full = _sqlite_memory_used()
    db.release_memory()
    assert full - _sqlite_memory_used() > 1_500_000
    assert len(db.wire_of([w["msg_id"] for w in wires[::7]])) == len(wires[::7])  # refilled
