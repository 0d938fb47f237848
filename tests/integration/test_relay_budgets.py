"""The relay's budgets at its defaults: they stop abuse, not members.

A real relay process (`felund relay serve`, no flag but the database) on
127.0.0.1 and real clients: a node whose relay-sync pushes a backlog, an
unsigned client flooding from the same address, and clients that name an
address of their choice in X-Forwarded-For / X-Real-IP. What is checked is
what the relay answers, counts in /metrics and logs.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from felund.actor.runtime import load_context
from felund.protocol import OP_CIRCLE_CREATE, OP_POST
from felund.relay.client import signed_headers
from felund.relay.server.limits import ADDRESS_BUDGET, WEB_FILES_RATE
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import Node, Relay, metric_value, wait_for
from felund.v1 import ids
from tests.integration.test_relay_server import (
    HOST,
    Client,
    Server,
    aio,
    assert_error,
    browser_message,
    registration,
)
from tests.integration.test_relay_sync import _node, _relay_metric
from tests.unit.test_relay_server_parts import new_circle

BACKLOG = 10_000


class Flood:
    """Unsigned GETs from 127.0.0.1 as fast as a few connections go, until stopped."""

    def __init__(self, relay: Relay, path: str, connections: int = 4) -> None:
        self.relay, self.path = relay, path
        self.statuses: Counter[int] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(connections)]
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.relay.port, timeout=10)
        while not self.stop.is_set():
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
            with self.lock:
                self.statuses[resp.status] += 1
        conn.close()

    def close(self) -> float:
        """Stop; the seconds it ran."""
        self.stop.set()
        for thread in self.threads:
            thread.join(20)
        return time.monotonic() - self.started


def _write_backlog(node: Node, count: int) -> str:
    """``count`` messages of one new circle in the node's store, as the offline CLI writes
    them; the circle_id."""
    ctx = load_context(node.env)
    db = Database(ctx.layout.database)
    try:
        ops = Ops(db, NodeInfo(ctx.node_id, "member", False, ""))
        now = int(time.time())
        with db.transaction():
            circle: str = ops.handle(OP_CIRCLE_CREATE, {"name": "backlog"}).reply["circle_id"]
            for start in range(0, count, 1000):  # a post's most
                msgs = [
                    {"msg_id": ids.new_msg_id(ctx.node_id, now), "created_ts": now, "text": f"{n}"}
                    for n in range(start, min(start + 1000, count))
                ]
                ops.handle(OP_POST, {"circle_id": circle, "msgs": msgs})
    finally:
        db.close()
    return circle


@pytest.fixture
def flood(relay: Relay) -> Iterator[Flood]:
    hint = "a" * 32  # no circle: a scraper's poll
    f = Flood(relay, f"/v1/messages?circle_hint={hint}&since=0")
    yield f
    f.close()


def test_an_unsigned_flood_stays_bounded_while_a_members_backlog_goes_freely(
    make_node, relay: Relay, flood: Flood
) -> None:
    node = _node(make_node, "member", relay)
    circle = _write_backlog(node, BACKLOG)
    # The flood is live and already refused: it spends its address's budget.
    wait_for(lambda: flood.statuses[429] > 0, timeout=30, what="the flood to be refused")
    node.start()
    wait_for(
        lambda: _relay_metric(relay, "felund_relay_server_messages_stored_total") >= BACKLOG,
        timeout=90,
        interval=0.5,
        what="the member's whole backlog at the relay, beside the flood",
    )
    seconds = flood.close()
    # Bounded: what an address may do (its burst, then its rate), however fast it asks.
    rate = ADDRESS_BUDGET.requests
    assert flood.statuses[200] <= rate.burst + rate.per_s * seconds + 10, (flood.statuses, seconds)
    assert flood.statuses[429] > flood.statuses[200], flood.statuses
    # The member, on the same address, was never refused for a budget.
    signed = [
        e for e in relay.requests("/v1/messages") if e.get("signed") and e["method"] == "POST"
    ]
    assert len(signed) >= BACKLOG // 50
    assert not [e for e in signed if e["status"] == 429]
    text = relay.metrics()
    assert (metric_value(text, "felund_relay_server_limited_total", payer="address") or 0) > 0
    assert not metric_value(text, "felund_relay_server_limited_total", payer="key")
    assert ids.circle_hint(circle) in {e.get("circle_hint") for e in signed}


def _register(port: int, headers: dict[str, str]) -> dict[str, object]:
    """A signed registration of a new circle sent with extra ``headers``; the answer."""
    circle = new_circle()
    body = json.dumps(registration(circle, "node-xff-0001"), separators=(",", ":")).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        signature = signed_headers(circle.key, "node-xff-0001", "POST", "/register", body)
        conn.request(
            "POST",
            "/v1/register",
            body,
            {"Content-Type": "application/json", **signature, **headers},
        )
        resp = conn.getresponse()
        answer: dict[str, object] = json.loads(resp.read())
        assert resp.status == 200, answer
        return answer
    finally:
        conn.close()


def test_forwarded_addresses_from_an_untrusted_peer_are_ignored(relay: Relay) -> None:
    claimed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    assert _register(relay.port, claimed)["observed_host"] == {"host": HOST, "family": "ipv4"}
    # A new address in each request's headers buys no budget: the peer is the client.
    conn = http.client.HTTPConnection(HOST, relay.port, timeout=10)
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    for n in range(400):
        address = f"198.51.{n // 250}.{n % 250 + 1}"
        conn.request(
            "GET", "/v1/health", headers={"X-Forwarded-For": address, "X-Real-IP": address}
        )
        resp = conn.getresponse()
        resp.read()
        statuses[resp.status] += 1
    conn.close()
    rate = ADDRESS_BUDGET.requests
    assert statuses[429] > 0, statuses
    assert statuses[200] <= rate.burst + rate.per_s * (time.monotonic() - started), statuses


def test_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    server = Server(tmp_path / "relay", "--trusted-proxy=127.0.0.0/8", cli=False, trust=False)
    try:
        # The last hop that is not a proxy of ours; what the client wrote before it is its own.
        xff = {"X-Forwarded-For": "192.0.2.1, 203.0.113.7, 127.0.0.2"}
        assert _register(server.port, xff)["observed_host"] == {
            "host": "203.0.113.7",
            "family": "ipv4",
        }
        real = {"X-Real-IP": "2001:db8::5", **xff}
        assert _register(server.port, real)["observed_host"] == {
            "host": "2001:db8::5",
            "family": "ipv6",
        }
        started = json.loads(
            next(line for line in server.log_text().splitlines() if "relay.starting" in line)
        )
        assert started["trusted_proxies"] == ["127.0.0.0/8"]
    finally:
        server.stop()


@aio
async def test_a_signed_post_replayed_is_refused(tmp_path: Path) -> None:
    # The nonce and the batch go to the writer in one trip: a replay stores nothing more.
    server = Server(tmp_path / "relay", cli=False)
    try:
        circle = new_circle()
        node = ids.new_node_id()
        async with aiohttp.ClientSession() as session:
            c = Client(session, server)
            assert (
                await c.signed(circle, "POST", "/v1/register", body=registration(circle, node))
            ).status == 200
            message = browser_message(circle, node, "once")
            body = {"circle_hint": circle.hint, "messages": [message]}
            nonce = secrets.token_hex(16)
            first = await c.signed(
                circle, "POST", "/v1/messages", body=body, node=node, nonce=nonce
            )
            assert (first.status, first.body["stored"]) == (200, 1), first.body
            again = await c.signed(
                circle, "POST", "/v1/messages", body=body, node=node, nonce=nonce
            )
            assert_error(again, 409, "NONCE_REPLAY")
    finally:
        server.stop()
    replays = [e for e in server.log_events() if e.get("code") == "NONCE_REPLAY"]
    assert len(replays) == 1 and replays[0]["path"] == "/v1/messages"


@aio
async def test_new_keys_from_one_address_buy_no_new_budget(tmp_path: Path) -> None:
    # Anyone may register a key of their own for a circle_hint of their own: were each key
    # a budget of its own, one address would mint budgets by registering.
    server = Server(tmp_path / "relay", "--key-requests=5/20", cli=False, trust=False)
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(session, server)
            circles = [new_circle() for _ in range(8)]
            for circle in circles:  # a key each: registered, so each GET below verifies
                answer = await c.signed(
                    circle, "POST", "/v1/register", body=registration(circle, ids.new_node_id())
                )
                statuses[answer.status] += 1
            assert statuses == {200: 8}
            for circle in circles:
                for _ in range(10):
                    answer = await c.signed(
                        circle, "GET", "/v1/messages", params={"circle_hint": circle.hint}
                    )
                    statuses[answer.status] += 1
        seconds = time.monotonic() - started
        with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.stop()
    assert set(statuses) <= {200, 429}, statuses
    # One key's budget for all eight keys: its burst, then its rate.
    assert statuses[200] <= 20 + 5 * seconds + 1, (statuses, seconds)
    limited = metric_value(text, "felund_relay_server_limited_total", payer="keys_of_address")
    assert limited and limited == statuses[429], statuses


def _gets(port: int, path: str, count: int) -> Counter[int]:
    """``count`` GETs of ``path`` one after another on one connection: their statuses."""
    statuses: Counter[int] = Counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for _ in range(count):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] += 1
    finally:
        conn.close()
    return statuses


def test_the_web_apps_files_pay_apart_from_the_api(relay: Relay) -> None:
    """Browsers behind one address loading the app (about 45 files a page) spend nothing
    of that address's API budget, and a flood of the files is bounded by a budget of its own."""
    many = ADDRESS_BUDGET.requests.burst + 300  # more than the API's burst, at once
    assert WEB_FILES_RATE.burst > many
    assert _gets(relay.port, "/", int(many)) == Counter({200: int(many)})
    assert _gets(relay.port, "/v1/health", 1) == Counter({200: 1})  # the API's budget is whole
    flood = _gets(relay.port, "/", int(WEB_FILES_RATE.burst) + 500)
    assert flood[429] > 0, flood
    assert _gets(relay.port, "/v1/health", 1) == Counter({200: 1})  # and still is
    text = relay.metrics()
    assert (metric_value(text, "felund_relay_server_limited_total", payer="web_files") or 0) > 0
    assert not metric_value(text, "felund_relay_server_limited_total", payer="address")
