"""Concurrent POSTs appended together on PostgreSQL (``felund.relay.server.pgappend``).

Against the session's real PostgreSQL: concurrent appends go in fewer calls
than requests, yet each request keeps its own answer: a replayed nonce
refuses its own request only, a request the database refuses fails alone,
and the feed notes of a large group all reach a listener (split over
notifications that fit PostgreSQL's 8000 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator, Sequence

import psycopg
import pytest

from felund.errors import DatabaseUnavailable
from felund.relay.protocol import IncomingMessage, MessageBatch
from felund.relay.server import metrics as m
from felund.relay.server.asyncstore import Appender
from felund.relay.server.pgappend import PgAppender
from felund.relay.server.pgnotify import parse_notes
from felund.relay.server.postgres import CHANNEL, PostgresRelayStore
from felund.relay.server.store import Stored
from felund.testing.postgres import PgServer
from tests.integration.test_relay_server import aio

_SERIAL = itertools.count()


def _batch(hint: str, *payloads: str) -> MessageBatch:
    return MessageBatch(
        hint,
        tuple(IncomingMessage(f"msg{next(_SERIAL):08d}", "author0000000001", p) for p in payloads),
    )


def _calls() -> tuple[float, float]:
    """(append calls, requests they carried) so far."""
    name = "felund_relay_server_db_append_group_requests"
    count = m.REGISTRY.get_sample_value(f"{name}_count") or 0.0
    total = m.REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    return count, total


@pytest.fixture
def store(pg_server: PgServer) -> Iterator[PostgresRelayStore]:
    """A store on a new database; its appender is made in each test's event loop."""
    store = PostgresRelayStore(pg_server.database())
    yield store
    store.close()


@contextlib.asynccontextmanager
async def _appender(store: PostgresRelayStore) -> AsyncIterator[PgAppender]:
    # One call at a time: the first request goes alone, all the others wait for the next.
    appender = PgAppender(store, in_flight=1)
    try:
        yield appender
    finally:
        await appender.aclose()


async def _all(
    appender: Appender, requests: Sequence[tuple[MessageBatch, str, tuple[str, int] | None]]
) -> list[tuple[bool, list[Stored]] | BaseException]:
    return await asyncio.gather(
        *(appender.append(*request) for request in requests), return_exceptions=True
    )


@aio
async def test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own(
    store: PostgresRelayStore,
) -> None:
    async with _appender(store) as appender:
        await _test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own(appender)


async def _test_concurrent_appends_share_calls_and_a_replay_refuses_only_its_own(
    appender: Appender,
) -> None:
    calls, carried = _calls()
    requests: list[tuple[MessageBatch, str, tuple[str, int] | None]] = []
    for n in range(40):
        hint = f"circlehint{n % 3:04d}"
        requests.append((_batch(hint, f"payload {n}"), f"poster{n:010d}", (f"{n:032x}", 2**40)))
    # Request 40 replays request 7's nonce; 41 is unsigned.
    requests.append((_batch("circlehint0000", "replayed"), "poster-replay", (f"{7:032X}", 2**40)))
    requests.append((_batch("circlehint0001", "unsigned"), "poster-unsigned", None))
    answers = await _all(appender, requests)
    new_calls, new_carried = _calls()
    assert new_carried - carried == len(requests)
    assert new_calls - calls < len(requests), "the appends were not grouped"
    for n, answer in enumerate(answers):
        assert not isinstance(answer, BaseException), answer
        fresh, stored = answer
        assert fresh == (n != 40), n
        assert len(stored) == (0 if n == 40 else 1), n
    # Each circle's cursors grow in the order the requests came, each after the last.
    by_circle: dict[str, list[Stored]] = {}
    for (batch, _, _), answer in zip(requests, answers, strict=True):
        assert not isinstance(answer, BaseException)
        by_circle.setdefault(batch.circle_hint, []).extend(answer[1])
    for stored in by_circle.values():
        assert [s.after for s in stored] == [0] + [s.id for s in stored[:-1]]


@aio
async def test_a_request_the_database_refuses_fails_alone(store: PostgresRelayStore) -> None:
    async with _appender(store) as appender:
        requests: list[tuple[MessageBatch, str, tuple[str, int] | None]] = [
            (_batch(f"circlehint{n:04d}", f"payload {n}"), "", None) for n in range(6)
        ]
        requests[3] = (_batch("circlehint0003", "a NUL \x00 PostgreSQL text refuses"), "", None)
        calls, _ = _calls()
        answers = await _all(appender, requests)
        assert _calls()[0] - calls > len(requests), "the refused group was not sent again alone"
        assert isinstance(answers[3], psycopg.DataError)
        for n, answer in enumerate(answers):
            if n != 3:
                assert not isinstance(answer, BaseException), answer
                assert answer[0] and len(answer[1]) == 1


@aio
async def test_a_database_that_hangs_is_unavailable_not_waited_for_ever(
    store: PostgresRelayStore,
) -> None:
    """An append stuck behind a lock nobody releases (the database answers nothing) is a
    503 once the call's bound has passed, and the appender works on once it is free."""
    hint = "circlehintstuck"
    with psycopg.connect(store.conninfo, autocommit=False) as holder:
        # The circle's lock, as the append takes it (postgres._LOCK_CIRCLE).
        holder.execute("SELECT pg_advisory_xact_lock(7101, hashtext(%s))", (hint,))
        appender = PgAppender(store, in_flight=1, call_timeout_s=0.5)
        try:
            with pytest.raises(DatabaseUnavailable):
                await appender.append(_batch(hint, "held up"), "", None)
            holder.rollback()  # the database answers again
            fresh, stored = await appender.append(_batch(hint, "after"), "", None)
            assert fresh and len(stored) == 1
        finally:
            await appender.aclose()


@aio
async def test_the_notes_of_a_large_group_all_reach_a_listener(store: PostgresRelayStore) -> None:
    async with _appender(store) as appender:
        # Longest circle_hints and posters: 64 notes need about 19 kB, PostgreSQL takes 8000 B.
        requests: list[tuple[MessageBatch, str, tuple[str, int] | None]] = [
            (_batch(f"{n:04d}" + "h" * 124, f"payload {n}"), f"{n:04d}" + "p" * 124, None)
            for n in range(64)
        ]
        async with await psycopg.AsyncConnection.connect(
            appender.store.conninfo, autocommit=True
        ) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            calls, _ = _calls()
            answers = await _all(appender, requests)
            assert _calls()[0] - calls < len(requests), "the appends were not grouped"
            assert all(not isinstance(a, BaseException) for a in answers), answers
            notes = []
            notifications = 0
            async for notify in listener.notifies(timeout=10):
                notifications += 1
                assert len(notify.payload.encode()) < 8000
                notes += parse_notes(notify.payload, "another instance")
                if len(notes) >= len(requests):
                    break
        assert notifications > 1
        assert sorted((n.circle_hint, n.poster) for n in notes) == sorted(
            (batch.circle_hint, poster) for batch, poster, _ in requests
        )
        own = json.dumps({"i": appender.store.instance, "n": [["c", "p", 0, 1]]})
        assert parse_notes(own, appender.store.instance) == []
