"""Concurrent POSTs appended together on SQLite (``felund.relay.server.appendgroup``).

Against a real SQLite file, through ``AsyncStore`` and its writer thread: the
same guarantees as PostgreSQL's groups (``test_relay_pg_groups``), and the
cursors a group answers are the rows' own ids, gaps and duplicates included.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from felund.relay.protocol import IncomingMessage, MessageBatch
from felund.relay.server import metrics as m
from felund.relay.server.appendgroup import MAX_GROUP_REQUESTS
from felund.relay.server.asyncstore import AsyncStore
from felund.relay.server.sqlite import SqliteRelayStore
from felund.relay.server.store import Stored
from tests.integration.test_relay_pg_groups import (
    _all,
    _batch,
    _calls,
    _test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own,
)
from tests.integration.test_relay_server import aio


@contextlib.asynccontextmanager
async def _store(path: Path) -> AsyncIterator[AsyncStore]:
    store = AsyncStore(SqliteRelayStore(path))
    try:
        yield store
    finally:
        await store.appender.aclose()
        store.close()


def _rows(path: Path) -> dict[int, tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT id, msg_id, payload FROM messages").fetchall()
    return {i: (msg_id, payload) for i, msg_id, payload in rows}


@aio
async def test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own(
    tmp_path: Path,
) -> None:
    async with _store(tmp_path / "relay.db") as store:
        await _test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own(store.appender)


@aio
async def test_a_group_answers_the_ids_of_its_rows_and_stores_each_message_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.db"
    hint = "circlehint0000"
    async with _store(db) as store:
        first = await store.append(_batch(hint, "a", "b"), "", None)
        # The newest rows go (as a purge or an operator may take them): ids are not reused.
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("DELETE FROM messages")
        again = IncomingMessage("repeated", "author0000000001", "twice in a batch")
        known = first[1][0]
        requests = [
            (_batch(hint, "c"), "", None),
            (MessageBatch(hint, (again, again, *_batch(hint, "d").messages)), "", None),
            (_batch("circlehint0001", "e"), "", None),
            # Already stored, but the row was deleted above: it is new to the database.
            (MessageBatch(hint, (IncomingMessage(known.msg_id, "x", known.payload),)), "", None),
            (MessageBatch(hint, (again,)), "", None),  # stored by the request before
        ]
        calls, _ = _calls()
        answers = await _all(store.appender, requests)
        assert _calls()[0] - calls < len(requests), "the appends were not grouped"
    stored: list[Stored] = []
    for answer in answers:
        assert not isinstance(answer, BaseException), answer
        stored += answer[1]
    assert [len(a[1]) for a in answers if not isinstance(a, BaseException)] == [1, 2, 1, 1, 0]
    assert min(s.id for s in stored) > max(s.id for s in first[1])
    assert _rows(db) == {s.id: (s.msg_id, s.payload) for s in stored}
    in_hint = [s for s in stored if s.payload != "e"]
    assert [s.after for s in in_hint] == [0] + [s.id for s in in_hint[:-1]]


@aio
async def test_a_request_the_database_refuses_fails_alone(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    SqliteRelayStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.payload = 'refused'"
            " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    async with _store(db) as store:
        requests = [(_batch(f"circlehint{n:04d}", f"payload {n}"), "", None) for n in range(6)]
        requests[3] = (_batch("circlehint0003", "refused"), "", None)
        calls, _ = _calls()
        answers = await _all(store.appender, requests)
        assert _calls()[0] - calls > len(requests), "the refused group was not sent again alone"
        assert isinstance(answers[3], sqlite3.IntegrityError), answers[3]
        for n, answer in enumerate(answers):
            if n != 3:
                assert not isinstance(answer, BaseException), answer
                assert answer[0] and len(answer[1]) == 1
        # The refused one rolled back alone: the next append of its circle starts after
        # the stored ones, and nothing of it is in the database.
        fresh, after = await store.append(_batch("circlehint0003", "later"), "", None)
    assert fresh and after[0].after == 0
    assert "refused" not in {payload for _, payload in _rows(db).values()}


@aio
async def test_a_group_holds_at_most_max_group_requests(tmp_path: Path) -> None:
    name = "felund_relay_server_db_append_group_requests"

    def bucket(le: str) -> float:
        return m.REGISTRY.get_sample_value(f"{name}_bucket", {"le": le}) or 0.0

    async with _store(tmp_path / "relay.db") as store:
        count = 3 * MAX_GROUP_REQUESTS
        requests = [(_batch(f"circlehint{n:04d}", f"p{n}"), "", None) for n in range(count)]
        calls, carried = _calls()
        within, beyond = bucket(str(float(MAX_GROUP_REQUESTS))), bucket("+Inf")
        answers = await _all(store.appender, requests)
        assert all(not isinstance(a, BaseException) and len(a[1]) == 1 for a in answers)
        new_calls, new_carried = _calls()
    assert new_carried - carried == count
    assert 3 <= new_calls - calls < count
    # Every call carried at most MAX_GROUP_REQUESTS: none fell beyond that bucket.
    assert bucket("+Inf") - beyond == bucket(str(float(MAX_GROUP_REQUESTS))) - within
