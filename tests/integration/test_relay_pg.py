"""Several relay instances on one PostgreSQL database behave as one relay.

Two real relay processes share one database of the session's PostgreSQL
server (felund.testing.postgres): a burst posted to one is paged from the
other with nothing skipped and pushed to the other's WebSocket feed, a nonce
spent on one is a replay on the other, concurrent registrations are one
decision, a killed instance loses nothing it acknowledged, and a restarted
database answers 503 for its duration, then the relay recovers by itself.
The store-level "cursor older than retention" answer is checked on both
backends here too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from felund.relay.protocol import IncomingMessage, MessageBatch
from felund.relay.server.postgres import MIGRATIONS, PostgresRelayStore
from felund.relay.server.sqlite import SqliteRelayStore
from felund.relay.server.store import RelayStore
from felund.testing import wire_message
from felund.testing.postgres import PgServer
from felund.testing.processes import FELUND
from felund.v1 import ids
from tests.integration.test_relay_server import (
    Client,
    Server,
    aio,
    assert_error,
    registration,
    sign,
)
from tests.unit.test_relay_server_parts import Circle, new_circle

# Single-message POSTs from one test address: the per-address budget is not under test.
UNLIMITED = ("--no-limits",)
BURST = 1000


@pytest.fixture
def pair(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[Server, Server, str]]:
    """Two relay instances on one new database: (a, b, its URL)."""
    url = pg_server.database()
    a = Server(tmp_path / "a", *UNLIMITED, cli=False, db=url)
    b = Server(tmp_path / "b", *UNLIMITED, cli=False, db=url)
    yield a, b, url
    for server in (a, b):
        server.stop()


async def _post_one(c: Client, circle: Circle, msg: dict[str, object]) -> bool:
    answer = await c.call(
        "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": [msg]}
    )
    return answer.status == 200 and answer.body["stored"] == 1


async def _post_many(
    c: Client,
    circle: Circle,
    msgs: list[dict[str, object]],
    width: int,
    acked_some: tuple[int, asyncio.Event] | None = None,
) -> list[str]:
    """POST each message alone, ``width`` at a time; the msg_ids acknowledged
    (``acked_some``: an event set once that many are)."""
    acked: list[str] = []
    queue = list(msgs)

    async def worker() -> None:
        while queue:
            msg = queue.pop(0)
            try:
                if await _post_one(c, circle, msg):
                    acked.append(str(msg["msg_id"]))
            except aiohttp.ClientError:
                return  # the instance is gone: what it acknowledged is counted
            if acked_some is not None and len(acked) >= acked_some[0]:
                acked_some[1].set()

    await asyncio.gather(*(worker() for _ in range(width)))
    return acked


async def _page_all(c: Client, circle: Circle) -> list[str]:
    """Every msg_id by cursor, in cursor order."""
    got: list[str] = []
    cursor = 0
    for _ in range(100):
        answer = await c.call(
            "GET",
            "/v1/messages",
            params={"circle_hint": circle.hint, "cursor": cursor, "limit": 200},
        )
        assert answer.status == 200, answer.body
        got += [m["msg_id"] for m in answer.body["messages"]]
        if answer.body["next_cursor"] == cursor:
            return got
        cursor = answer.body["next_cursor"]
    raise AssertionError("paging did not end")


async def _collect(ws: aiohttp.ClientWebSocketResponse, want: set[str], timeout: float) -> set[str]:
    """msg_ids pushed on a feed until ``want`` is had, or ``timeout``."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame["t"] == "MESSAGES":
            seen.update(m["msg_id"] for m in frame["messages"])
    return seen


@aio
async def test_a_burst_to_one_instance_is_paged_and_pushed_whole_on_the_other(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, _ = pair
    circle = new_circle()
    author = ids.new_node_id()
    msgs = [wire_message(circle.secret, author, f"burst {i}", encrypt=False) for i in range(BURST)]
    async with aiohttp.ClientSession() as session:
        ca, cb = Client(session, a), Client(session, b)
        ws = await cb.ws(circle, ids.new_node_id())
        want = {str(m["msg_id"]) for m in msgs}
        pushed = asyncio.create_task(_collect(ws, want, timeout=40))
        acked = await _post_many(ca, circle, msgs, width=8)
        assert len(acked) == BURST
        paged = await _page_all(cb, circle)
        assert len(paged) == BURST and set(paged) == want  # once each, nothing skipped
        seen = await pushed
        assert seen == want, f"{len(seen)} of {BURST} pushed on the other instance"
        await ws.close()


@aio
async def test_a_nonce_spent_on_one_instance_is_a_replay_on_the_other(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, _ = pair
    circle = new_circle()
    async with aiohttp.ClientSession() as session:
        ca, cb = Client(session, a), Client(session, b)
        assert (
            await ca.signed(
                circle, "POST", "/v1/register", body=registration(circle, ids.new_node_id())
            )
        ).status == 200
        headers = sign(circle.key, "GET", "/peers", b"")
        params = {"circle_hint": circle.hint}
        assert (await ca.call("GET", "/v1/peers", params=params, headers=headers)).status == 200
        assert_error(
            await cb.call("GET", "/v1/peers", params=params, headers=headers), 409, "NONCE_REPLAY"
        )


@aio
async def test_concurrent_first_registrations_on_both_instances_pin_one_key(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, url = pair
    circle = new_circle()
    node = ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        clients = [Client(session, a), Client(session, b)] * 10
        answers = await asyncio.gather(
            *(
                c.signed(circle, "POST", "/v1/register", body=registration(circle, node))
                for c in clients
            )
        )
    assert [x.status for x in answers] == [200] * len(clients), [x.body for x in answers]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM circle_keys WHERE circle_hint = %s", (circle.hint,)
        ).fetchone()
    assert rows == (1,)


@aio
async def test_kill_9_of_one_instance_mid_burst_loses_nothing_acknowledged(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, _ = pair
    circle = new_circle()
    author = ids.new_node_id()
    msgs = [wire_message(circle.secret, author, f"kill {i}", encrypt=False) for i in range(BURST)]
    async with aiohttp.ClientSession() as session:
        ca, cb = Client(session, a), Client(session, b)
        some = asyncio.Event()
        posting = asyncio.create_task(_post_many(ca, circle, msgs, width=8, acked_some=(100, some)))
        await asyncio.wait_for(some.wait(), 30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        acked = await posting
        assert 100 <= len(acked) < len(msgs), len(acked)  # the kill was mid-burst
        paged = set(await _page_all(cb, circle))
        assert set(acked) <= paged, f"{len(set(acked) - paged)} acknowledged messages lost"


@aio
async def test_a_database_restart_answers_503_then_recovers_by_itself(
    pair: tuple[Server, Server, str], pg_server: PgServer
) -> None:
    a, b, _ = pair
    circle = new_circle()
    author = ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        ca, cb = Client(session, a), Client(session, b)
        assert await _post_one(ca, circle, wire_message(circle.secret, author, "before"))
        pg_server.stop()
        try:
            down = await ca.call(
                "POST",
                "/v1/messages",
                body={
                    "circle_hint": circle.hint,
                    "messages": [wire_message(circle.secret, author, "down")],
                },
            )
            assert_error(down, 503, "DATABASE_UNAVAILABLE")
            assert int(down.headers["Retry-After"]) >= 1
            metrics = await ca.call("GET", "/metrics")
            assert "felund_relay_server_db_up 0.0" in metrics.body
            assert 'felund_relay_server_db_errors_total{kind="unavailable"}' in metrics.body
        finally:
            pg_server.start()
        # Recovery by itself: the next POSTs are stored, on both instances.
        for c in (ca, cb):
            after = wire_message(circle.secret, author, "after")
            deadline = time.monotonic() + 30
            while not await _post_one(c, circle, after):
                assert time.monotonic() < deadline, "the relay did not recover"
                await asyncio.sleep(0.2)
        assert "felund_relay_server_db_up 1.0" in (await ca.call("GET", "/metrics")).body
        # ... and the feed across instances listens again (its log says when): a
        # subscriber on b gets what is posted to a.
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "relay.feed_listening_again" for e in b.log_events()):
            assert time.monotonic() < deadline, "b's feed did not listen again"
            await asyncio.sleep(0.1)
        ws = await cb.ws(circle, ids.new_node_id())
        live = wire_message(circle.secret, author, "live")
        want = {str(live["msg_id"])}
        pushed = asyncio.create_task(_collect(ws, want, timeout=20))
        assert await _post_one(ca, circle, live)
        assert want <= await pushed
        await ws.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_cursor_older_than_retention_is_told_expired(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: RelayStore
    if backend == "sqlite":
        store = SqliteRelayStore(tmp_path / "relay.db")
    else:
        store = PostgresRelayStore(request.getfixturevalue("pg_server").database())
    try:
        circle = new_circle()
        author = ids.new_node_id()

        def stored_message(text: str) -> IncomingMessage:
            msg = wire_message(circle.secret, author, text, encrypt=False)
            return IncomingMessage(str(msg["msg_id"]), author, json.dumps(msg))

        old = store.append(
            MessageBatch(circle.hint, tuple(stored_message(f"old {i}") for i in range(3)))
        )
        first = store.page_after(circle.hint, old[0].id, 10)
        assert first.expired is False and len(first.messages) == 2  # the path is live
        assert store.purge_messages(int(time.time()) + 10, 2) == 2  # the retention passed
        assert store.purge_messages(int(time.time()) + 10, 2) == 1
        new = store.append(MessageBatch(circle.hint, (stored_message("new"),)))
        gap = store.page_after(circle.hint, old[0].id, 10)
        assert gap.expired is True and [json.loads(m)["msg_id"] for m in gap.messages] == [
            new[0].msg_id
        ]
        assert store.page_since(circle.hint, old[0].stored_at - 1, 10).expired is True
        # From the start, or from the last purged: no gap.
        assert store.page_after(circle.hint, 0, 10).expired is False
        assert store.page_after(circle.hint, old[-1].id, 10).expired is False
        assert store.page_since(circle.hint, 0, 10).expired is False
    finally:
        store.close()


def test_migrate_is_versioned_idempotent_and_reads_the_environment(pg_server: PgServer) -> None:
    url = pg_server.database(migrated=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELUND_")}
    first = subprocess.run(
        [*FELUND, "relay", "migrate", "--db", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert f"schema version {len(MIGRATIONS)} (was 0)" in first.stdout
    again = subprocess.run(
        [*FELUND, "relay", "migrate"],
        env={**env, "FELUND_RELAY_DB": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert f"schema version {len(MIGRATIONS)}, up to date" in again.stdout
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            "SELECT version FROM felund_relay_schema ORDER BY version"
        ).fetchall()
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
