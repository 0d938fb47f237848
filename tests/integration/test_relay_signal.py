"""The relay's /v1/signal under load, who may read a node's signals, and /v1/ice.

A real relay process (``felund.testing.relay.Relay``) on 127.0.0.1, driven over
HTTP with aiohttp; the rows are counted in its own SQLite file (read-only) and
its memory in /proc.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from felund.relay.client import signed_headers
from felund.relay.protocol import (
    MAX_SIGNALS_PER_CIRCLE,
    MAX_SIGNALS_PER_NODE,
    MAX_SIGNALS_TOTAL,
    compact_json,
)
from felund.testing.processes import REPO
from felund.testing.relay import Relay
from felund.v1 import crypto, ids
from tests.integration.test_relay_limits import _status
from tests.integration.test_relay_server import aio, registration
from tests.unit.test_relay_server_parts import new_circle

MB = 1024 * 1024


_POSTS = itertools.count()


@pytest.fixture
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    """A relay as `felund relay serve` runs it behind a proxy on this machine (on SQLite
    unless a test names postgresql)."""
    on_pg = getattr(request, "param", "sqlite") == "postgresql"
    server = Relay(
        tmp_path / "relay",
        "--trusted-proxy",
        "127.0.0.1",
        db=request.getfixturevalue("pg_server").database() if on_pg else "",
    )
    server.start()
    yield server
    server.stop()


def _signal(hint: str, to_node: str, *, ttl_s: int = 120, payload: str = "v=0") -> dict[str, Any]:
    # A fresh from_node_id each time: the self-asserted sender's rate limit never applies.
    return {
        "session_id": "flood-session", "from_node_id": ids.new_node_id(), "to_node_id": to_node,
        "circle_hint": hint, "type": "offer", "payload": payload, "ttl_s": ttl_s,
    }  # fmt: skip


async def _post(
    session: aiohttp.ClientSession, relay: Relay, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str]:
    # A flood from many addresses (the relay trusts X-Real-IP from 127.0.0.1): what is
    # tested is the signal bounds, not the per-address request limit.
    n = next(_POSTS) // 64
    address = {"X-Real-IP": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
    async with session.post(
        f"{relay.url}/v1/signal", data=compact_json(body), headers=address
    ) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def _fill(session: aiohttp.ClientSession, relay: Relay, bodies: list[dict[str, Any]]) -> None:
    """Post every body, 16 at a time; each must be stored."""
    gate = asyncio.Semaphore(16)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            status, answer, _ = await _post(session, relay, body)
            assert status == 200, answer

    await asyncio.gather(*(one(b) for b in bodies))


async def _refused(
    session: aiohttp.ClientSession, relay: Relay, body: dict[str, Any], what: str
) -> None:
    status, answer, retry = await _post(session, relay, body)
    assert (status, answer["code"]) == (429, "SIGNALS_FULL"), answer
    assert what in answer["message"] and int(retry) >= 1


async def _get(
    session: aiohttp.ClientSession,
    relay: Relay,
    to_node: str,
    headers: dict[str, str] | None = None,
    **query: Any,
) -> tuple[int, dict[str, Any]]:
    params = {"to_node_id": to_node, "since_id": 0, **query}
    async with session.get(f"{relay.url}/v1/signal", params=params, headers=headers) as resp:
        return resp.status, await resp.json()


def _chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _rows(relay: Relay) -> int:
    if relay.db.startswith("postgresql://"):
        with psycopg.connect(relay.db) as conn:
            row = conn.execute("SELECT count(*) FROM signals").fetchone()
            return int(row[0]) if row else 0
    with sqlite3.connect(f"file:{relay.db}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM signals").fetchone()[0])


@aio
@pytest.mark.parametrize("relay", ["sqlite", "postgresql"], indirect=True)
async def test_a_flood_past_each_bound_is_refused_while_other_signals_flow(relay: Relay) -> None:
    """Per to_node_id, per circle, in total: the post past each is 429 SIGNALS_FULL, the
    other queues still take and serve signals, the rows stay at the total, and the
    relay's memory does not follow the flood; expired signals make room again."""
    assert relay.proc is not None
    circle, other, third, fourth = (new_circle().hint for _ in range(4))

    def queues(hint: str, count: int) -> list[dict[str, Any]]:
        """Signals filling the queues of fresh nodes of one circle."""
        nodes = [ids.new_node_id() for _ in range(count // MAX_SIGNALS_PER_NODE)]
        return [_signal(hint, n) for n in nodes for _ in range(MAX_SIGNALS_PER_NODE)]

    async with aiohttp.ClientSession() as session:
        rss_before = _status(relay.proc.pid, "VmRSS")
        first, *rest = _chunks(queues(circle, MAX_SIGNALS_PER_CIRCLE), MAX_SIGNALS_PER_NODE)
        await _fill(session, relay, first)
        await _refused(session, relay, first[0], "for this to_node_id")
        status, got = await _get(session, relay, first[0]["to_node_id"])  # it still reads
        assert status == 200 and len(got["signals"]) == MAX_SIGNALS_PER_NODE
        await _fill(session, relay, [s for chunk in rest for s in chunk])  # others flow
        await _refused(session, relay, _signal(circle, ids.new_node_id()), "in this circle")

        # The rest of the relay, up to its total; the last ones expire in 10 s.
        left = MAX_SIGNALS_TOTAL - MAX_SIGNALS_PER_CIRCLE
        await _fill(session, relay, queues(other, min(left, MAX_SIGNALS_PER_CIRCLE)))
        left -= min(left, MAX_SIGNALS_PER_CIRCLE)
        assert 0 < left <= MAX_SIGNALS_PER_NODE
        soon = ids.new_node_id()
        await _fill(session, relay, [_signal(third, soon, ttl_s=10) for _ in range(left)])
        assert _rows(relay) == MAX_SIGNALS_TOTAL
        bob = ids.new_node_id()
        await _refused(session, relay, _signal(fourth, bob), "the relay holds")
        rss_after = _status(relay.proc.pid, "VmRSS")
        assert rss_after - rss_before < 32 * MB, (rss_before, rss_after)

        # The relay went on: once the short-lived ones expire, a post is taken again.
        deadline = time.monotonic() + 40
        while (await _post(session, relay, _signal(fourth, bob)))[0] != 200:
            assert time.monotonic() < deadline, "expired signals never made room"
            await asyncio.sleep(0.5)
        status, got = await _get(session, relay, bob)
        assert status == 200 and len(got["signals"]) == 1
        assert _rows(relay) <= MAX_SIGNALS_TOTAL
    assert "SIGNALS_FULL" in relay.log_text()
    assert 'felund_relay_server_signals_refused_total{queue="relay"}' in relay.metrics()


def _signed(key: str, node: str) -> dict[str, str]:
    """The headers of a GET /v1/signal signed as ``node`` with ``key``."""
    return signed_headers(key, node, "GET", "/signal", b"")


@aio
async def test_a_signed_read_of_signals_is_the_addressee_s_alone(relay: Relay) -> None:
    """Signed, a GET reads only the signals of the node it is signed as, with a key that
    node registered; unsigned, it reads as the existing browser client does."""
    circle = new_circle()
    alice, bob, carol, outsider = (ids.new_node_id() for _ in range(4))
    own_key = crypto.api_signing_key(ids.new_secret())
    async with aiohttp.ClientSession() as session:
        for node, key in ((alice, circle.key), (bob, circle.key), (outsider, own_key)):
            body = compact_json(registration(circle, node, signing_key=key)).encode()
            headers = signed_headers(key, node, "POST", "/register", body)
            async with session.post(f"{relay.url}/v1/register", data=body, headers=headers) as r:
                assert r.status == 200, await r.json()
        for to_node in (alice, carol):
            status, answer, _ = await _post(session, relay, _signal(circle.hint, to_node))
            assert status == 200, answer
        hint = {"circle_hint": circle.hint}

        status, got = await _get(session, relay, alice, _signed(circle.key, alice), **hint)
        assert status == 200 and len(got["signals"]) == 1  # the path is live

        for headers, refused in (
            (_signed(circle.key, bob), (403, "NOT_ADDRESSEE")),  # another node's
            (_signed(own_key, alice), (401, "INVALID_SIGNATURE")),  # no key of alice's
        ):
            status, got = await _get(session, relay, alice, headers, **hint)
            assert (status, got.get("code")) == refused, got
            assert "signals" not in got
        # carol never registered: the outsider's key verifies for the circle_hint, but
        # it is no key of carol's.
        status, got = await _get(session, relay, carol, _signed(own_key, carol), **hint)
        assert (status, got["code"]) == (403, "NOT_ADDRESSEE"), got
        # Signed without a circle_hint, a read is not taken as an unsigned one.
        status, got = await _get(session, relay, alice, _signed(circle.key, bob))
        assert (status, got["code"]) == (400, "INVALID_REQUEST"), got

        status, got = await _get(session, relay, alice)  # unsigned: as today
        assert status == 200 and len(got["signals"]) == 1


# --- ICE servers --------------------------------------------------------------------------------
async def _ice(relay: Relay) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession() as session, session.get(f"{relay.url}/v1/ice") as resp:
        return resp.status, await resp.json(), resp.headers.get("Access-Control-Allow-Origin", "")


@aio
async def test_ice_servers_are_none_by_default(relay: Relay) -> None:
    assert await _ice(relay) == (200, {"ok": True, "ice_servers": []}, "*")


@aio
async def test_the_operator_s_ice_servers_reach_v1_ice(tmp_path: Path) -> None:
    secret = secrets.token_hex(12)
    relay = Relay(
        tmp_path / "relay",
        "--ice-server", "stun:turn.example.org:3478",
        "--ice-server", "turns:turn.example.org:5349?transport=tcp",
        "--ice-server", "stun:[2001:db8::1]",
        "--ice-username", "felund",
        "--ice-credential", secret,
    )  # fmt: skip
    relay.start()
    try:
        status, answer, cors = await _ice(relay)
    finally:
        relay.stop()
    assert (status, cors) == (200, "*")
    assert answer == {
        "ok": True,
        "ice_servers": [
            {"urls": ["stun:turn.example.org:3478", "stun:[2001:db8::1]"]},
            {
                "urls": ["turns:turn.example.org:5349?transport=tcp"],
                "username": "felund",
                "credential": secret,
            },
        ],
    }
    assert "turns:turn.example.org" in relay.log_text() and secret not in relay.log_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ice-server", "http://stun.example.org"], "is not an ICE server URL"),
        (["--ice-server", "stun://stun.example.org:3478"], "is not an ICE server URL"),
        (["--ice-server", "stun:stun.example.org:99999"], "the port must be 1 to 65535"),
        (["--ice-server", "stun:x.example?transport=udp"], "for turn: and turns: URLs only"),
        (["--ice-server", "turn:turn.example.org"], "needs --ice-username and --ice-credential"),
        (["--ice-username", "u", "--ice-credential", "c"], "apply to turn: URLs"),
        (["--ice-server", "turn:t.example", "--ice-username", "u"], "go together"),
    ],
)
def test_a_bad_ice_server_is_refused_at_start(tmp_path: Path, args: list[str], says: str) -> None:
    argv = [sys.executable, "-m", "felund", "relay", "serve", "--port", "0"]
    done = subprocess.run(
        [*argv, "--db", str(tmp_path / "relay.db"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert says in done.stderr, done.stderr
    assert not (tmp_path / "relay.db").exists()  # refused before anything was opened
