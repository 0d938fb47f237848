"""The relay server (`felund relay serve`) against a real HTTP client on 127.0.0.1.

Each server is a real process started through the CLI (or `python -m
services.relay_server` where a test needs a non-default limit); clients are
aiohttp sessions and WebSockets. Every test uses its own circle, and its own
client address through X-Real-IP (every relay here trusts it from
127.0.0.1, ``--trusted-proxy``), so per-address budgets never couple tests. Every wait is
bounded; every server is stopped in a finalizer. The parts that need no
process (signatures, the store's paging and retention, limits) are in
tests/unit/test_relay_server_parts.py.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from felund.relay.protocol import compact_json
from felund.testing import free_port, wire_message
from felund.testing.postgres import PgServer
from felund.v1 import crypto, ids
from felund.v1.wire import open_message, parse_message
from tests.unit.test_relay_server_parts import Circle, new_circle

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
TEST_TIMEOUT_S = 60.0
_ADDRESSES = itertools.count(1)


# --- servers --------------------------------------------------------------------------------------
class Server:
    """A relay process on a free port of 127.0.0.1."""

    def __init__(
        self, directory: Path, *args: str, cli: bool = True, db: str = "", trust: bool = True
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db = db or str(directory / "relay.db")  # a SQLite file or a postgresql:// URL
        self.log_path = directory / f"relay-{self.port}.log"
        self.args = args
        self.cli = cli
        self.trust = trust  # 127.0.0.1 a trusted proxy: tests name their address in X-Real-IP
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        if self.cli:
            base = [sys.executable, "-m", "felund", "relay", "serve"]
        else:
            base = [sys.executable, "-m", "services.relay_server"]
        argv = [*base, "--host", HOST, "--port", str(self.port), "--db", self.db]
        argv += [*(["--trusted-proxy", HOST] if self.trust else []), *self.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
        env["FELUND_LOG_FORMAT"] = "json"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        for _ in range(600):
            assert self.proc.poll() is None, f"relay exited:\n{self.log_text()[-3000:]}"
            try:
                with urllib.request.urlopen(self.url("/v1/health"), timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"relay did not answer:\n{self.log_text()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.proc = None
        return code

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Callable[[], str]:
    """The suite runs on both stores: a new database of the backend ("" = a SQLite file)."""
    if request.param == "sqlite":
        return lambda: ""
    pg: PgServer = request.getfixturevalue("pg_server")
    return pg.database


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, database: Callable[[], str]
) -> Iterator[Server]:
    """The default relay, as felund-relay.service runs it."""
    server = Server(tmp_path_factory.mktemp("relay"), db=database())
    yield server
    assert server.stop() == 0, server.log_text()[-3000:]


@pytest.fixture(scope="module")
def strict_relay(
    tmp_path_factory: pytest.TempPathFactory, database: Callable[[], str]
) -> Iterator[Server]:
    """A relay with require_signatures."""
    server = Server(tmp_path_factory.mktemp("strict"), "--require-signatures", db=database())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tight_relay(
    tmp_path_factory: pytest.TempPathFactory, database: Callable[[], str]
) -> Iterator[Server]:
    """A relay with a low per-address request budget and fast WebSocket PINGs."""
    server = Server(
        tmp_path_factory.mktemp("tight"),
        "--address-requests=5/10",
        "--ws-ping-interval=0.3",
        cli=False,
        db=database(),
    )
    yield server
    server.stop()


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, bounded in time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT_S))

    return wrapper


# --- circles, messages and signed calls -----------------------------------------------------------
def browser_message(circle: Circle, author: str, text: str) -> dict[str, Any]:
    """A message as the existing browser client sends it: only the clear fields and enc."""
    now = int(time.time())
    msg_id = ids.new_msg_id(author, now)
    enc = crypto.encrypt_message(
        circle.secret,
        msg_id=msg_id,
        circle_id=circle.id,
        channel_id="general",
        author_node_id=author,
        created_ts=now,
        display_name="browser",
        text=text,
    )
    return {
        "msg_id": msg_id,
        "circle_id": circle.id,
        "channel_id": "general",
        "author_node_id": author,
        "created_ts": now,
        "enc": enc,
    }


def registration(circle: Circle, node: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": node,
        "circle_hint": circle.hint,
        "endpoints": [
            {
                "transport": "tcp",
                "host": "192.0.2.7",
                "port": 9999,
                "family": "ipv4",
                "nat": "unknown",
            }
        ],
        "capabilities": {"relay": False, "transport": ["tcp"], "can_anchor": False},
        "ttl_s": 120,
        "signing_key": circle.key,
    }
    body.update(extra)
    return body


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


class Client:
    """One client address talking to one relay."""

    def __init__(self, session: aiohttp.ClientSession, server: Server) -> None:
        self.session = session
        self.server = server
        n = next(_ADDRESSES)
        self.address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = raw if raw is not None else (None if body is None else compact_json(body).encode())
        all_headers = {"X-Real-IP": self.address, "Content-Type": "application/json"}
        all_headers.update(headers or {})
        async with self.session.request(
            method,
            self.server.url(path),
            data=data,
            params={k: str(v) for k, v in (params or {}).items()},
            headers=all_headers,
        ) as resp:
            text = await resp.text()
            parsed = json.loads(text) if text and "json" in resp.content_type else text
            return Answer(resp.status, parsed, resp.headers)

    async def signed(
        self,
        circle: Circle,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        node: str = "",
        key: str | None = None,
        ts: int | None = None,
        nonce: str | None = None,
        sign_path: str | None = None,
    ) -> Answer:
        raw = b"" if body is None else compact_json(body).encode()
        headers = sign(
            key or circle.key,
            method,
            sign_path or path.removeprefix("/v1"),
            raw,
            ts=ts,
            nonce=nonce,
        )
        if node:
            headers["X-Felund-Node"] = node
        return await self.call(
            method, path, raw=raw if body is not None else None, params=params, headers=headers
        )

    async def ws(self, circle: Circle, node: str, **params: str) -> aiohttp.ClientWebSocketResponse:
        query = {"circle_hint": circle.hint, "node_id": node, **params}
        return await self.session.ws_connect(
            self.server.ws_url("/v1/relay/ws"), params=query, headers={"X-Real-IP": self.address}
        )


def sign(
    key: str,
    method: str,
    path: str,
    body: bytes,
    *,
    ts: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_hex(16) if nonce is None else nonce
    return {
        "X-Felund-Ts": str(ts),
        "X-Felund-Nonce": nonce,
        "X-Felund-Signature": crypto.api_signature(key, method, path, body, ts, nonce),
    }


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert isinstance(answer.body, dict), answer.body
    assert answer.body["ok"] is False
    assert answer.body["code"] == code, answer.body
    assert isinstance(answer.body["message"], str) and answer.body["message"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


async def frames(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> list[dict[str, Any]]:
    """Text frames received within ``timeout`` seconds."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            msg = await ws.receive(timeout=remaining)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        got.append(json.loads(msg.data))
    return got


async def next_frame(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        if frame["t"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame")


async def register(client: Client, circle: Circle, node: str) -> Answer:
    answer = await client.signed(
        circle, "POST", "/v1/register", body=registration(circle, node), node=node
    )
    assert answer.status == 200, answer.body
    return answer


# --- health, CORS, routing ------------------------------------------------------------------------
@aio
async def test_health_cors_preflight_and_unknown_routes(relay: Server) -> None:
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        health = await c.call("GET", "/v1/health")
        assert health.status == 200
        assert health.body["ok"] is True and health.body["version"]
        assert abs(health.body["time"] - time.time()) < 5
        assert health.headers["Access-Control-Allow-Origin"] == "*"

        pre = await c.call(
            "OPTIONS",
            "/v1/register",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-felund-signature",
            },
        )
        assert 200 <= pre.status < 300
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert set(pre.headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")) == {
            "GET", "POST", "DELETE", "OPTIONS"
        }  # fmt: skip
        allowed = {
            h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert allowed >= {
            "content-type", "x-felund-node", "x-felund-ts", "x-felund-nonce", "x-felund-signature"
        }  # fmt: skip

        assert_error(await c.call("GET", "/v1/nothing-here"), 404, "NOT_FOUND")
        assert_error(await c.call("PUT", "/v1/messages", body={}), 405, "METHOD_NOT_ALLOWED")


# --- registration, pinning, peers -----------------------------------------------------------------
@aio
async def test_register_peers_and_unregister(relay: Server) -> None:
    circle = new_circle()
    alice, bob = ids.new_node_id(), ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        first = await register(c, circle, alice)
        assert first.body["ok"] is True
        assert first.body["expires_at"] == first.body["server_time"] + 120
        assert first.body["observed_host"] == {"host": c.address, "family": "ipv4"}
        await register(c, circle, bob)

        peers = await c.signed(
            circle, "GET", "/v1/peers", params={"circle_hint": circle.hint, "limit": 10}, node=alice
        )
        assert peers.status == 200, peers.body
        (peer,) = peers.body["peers"]  # the caller is left out
        assert peer["node_id"] == bob and peer["circle_hint"] == circle.hint
        assert peer["endpoints"] == registration(circle, bob)["endpoints"]
        assert peer["capabilities"] == registration(circle, bob)["capabilities"]
        assert peer["expires_at"] > peer["observed_at"] > 0

        body = {"node_id": bob, "circle_hint": circle.hint}
        removed = await c.signed(circle, "DELETE", "/v1/register", body=body, node=bob)
        assert removed.status == 200 and removed.body == {"ok": True, "removed": True}
        again = await c.signed(circle, "DELETE", "/v1/register", body=body, node=bob)
        assert again.body == {"ok": True, "removed": False}
        peers = await c.signed(
            circle, "GET", "/v1/peers", params={"circle_hint": circle.hint}, node=alice
        )
        assert peers.body["peers"] == []


@aio
async def test_an_outsider_who_registers_first_locks_nobody_out(relay: Server) -> None:
    """Key squatting: an outsider who learned the circle_hint registers first, with a key
    of its own. The members, registering after it with the circle's key, are not locked
    out, and each key is a circle of its own: nobody sees across."""
    circle = new_circle()
    alice, bob, outsider = ids.new_node_id(), ids.new_node_id(), ids.new_node_id()
    own_key = crypto.api_signing_key(ids.new_secret())  # what someone without the secret has
    params = {"circle_hint": circle.hint}
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        body = registration(circle, outsider, signing_key=own_key)
        first = await c.signed(circle, "POST", "/v1/register", body=body, key=own_key)
        assert first.status == 200, first.body
        await register(c, circle, alice)
        await register(c, circle, bob)

        mine = await c.signed(circle, "GET", "/v1/peers", params=params, node=alice)
        assert [p["node_id"] for p in mine.body["peers"]] == [bob]
        theirs = await c.signed(
            circle, "GET", "/v1/peers", params=params, node=outsider, key=own_key
        )
        assert theirs.status == 200 and theirs.body["peers"] == []
        # Signing as a member's node with its own key: not a key that node registered.
        assert_error(
            await c.signed(circle, "GET", "/v1/peers", params=params, node=alice, key=own_key),
            401,
            "INVALID_SIGNATURE",
        )
        # It cannot unregister a member: that node is not in its key's circle.
        gone = {"node_id": bob, "circle_hint": circle.hint}
        removal = await c.signed(
            circle, "DELETE", "/v1/register", body=gone, node=outsider, key=own_key
        )
        assert removal.body == {"ok": True, "removed": False}
        mine = await c.signed(circle, "GET", "/v1/peers", params=params, node=alice)
        assert [p["node_id"] for p in mine.body["peers"]] == [bob]

        # A registration signed with one key and carrying another is refused, named so
        # when the signing key is one registered for the circle_hint (a broken client).
        odd = registration(circle, alice, signing_key=own_key)
        assert_error(
            await c.signed(circle, "POST", "/v1/register", body=odd), 401, "SIGNING_KEY_MISMATCH"
        )
        stranger = registration(circle, ids.new_node_id(), signing_key=own_key)
        unknown = crypto.api_signing_key(ids.new_secret())
        assert_error(
            await c.signed(circle, "POST", "/v1/register", body=stranger, key=unknown),
            401,
            "INVALID_SIGNATURE",
        )
        # A node re-registers without signing_key once its key is known.
        again = {k: v for k, v in registration(circle, alice).items() if k != "signing_key"}
        assert (await c.signed(circle, "POST", "/v1/register", body=again)).status == 200
        # One node_id holds at most 4 keys for a circle_hint: a squatter cannot make a
        # member's node verify against an unbounded list.
        for n in range(4):
            key = crypto.api_signing_key(ids.new_secret())
            body = registration(circle, outsider, signing_key=key)
            answer = await c.signed(circle, "POST", "/v1/register", body=body, key=key)
            assert answer.status == (200 if n < 3 else 401), (n, answer.body)
        assert answer.body["code"] == "SIGNING_KEY_MISMATCH"


@aio
async def test_registration_and_lookup_must_be_signed(relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        unsigned = await c.call("POST", "/v1/register", body=registration(circle, node))
        assert_error(unsigned, 401, "SIGNATURE_REQUIRED")
        no_key = {k: v for k, v in registration(circle, node).items() if k != "signing_key"}
        assert_error(
            await c.signed(circle, "POST", "/v1/register", body=no_key), 401, "INVALID_SIGNATURE"
        )
        # Nothing was pinned: a signed lookup has nothing to verify against.
        peers = await c.signed(circle, "GET", "/v1/peers", params={"circle_hint": circle.hint})
        assert_error(peers, 401, "INVALID_SIGNATURE")
        await register(c, circle, node)
        unsigned_peers = await c.call("GET", "/v1/peers", params={"circle_hint": circle.hint})
        assert_error(unsigned_peers, 401, "SIGNATURE_REQUIRED")
        partial = await c.call(
            "GET", "/v1/peers", params={"circle_hint": circle.hint}, headers={"X-Felund-Ts": "1"}
        )
        assert_error(partial, 401, "INVALID_SIGNATURE")
        unsigned_delete = await c.call(
            "DELETE", "/v1/register", body={"node_id": node, "circle_hint": circle.hint}
        )
        assert_error(unsigned_delete, 401, "SIGNATURE_REQUIRED")


@aio
async def test_replayed_nonce_expired_timestamp_and_bad_signature(relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    params = {"circle_hint": circle.hint}
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        body = registration(circle, node)
        raw = compact_json(body).encode()
        headers = sign(circle.key, "POST", "/register", raw)
        assert (await c.call("POST", "/v1/register", raw=raw, headers=headers)).status == 200
        assert_error(
            await c.call("POST", "/v1/register", raw=raw, headers=headers), 409, "NONCE_REPLAY"
        )
        nonce = secrets.token_hex(16)
        ok = await c.signed(circle, "GET", "/v1/peers", params=params, nonce=nonce)
        assert ok.status == 200
        replay = await c.signed(circle, "GET", "/v1/peers", params=params, nonce=nonce)
        assert_error(replay, 409, "NONCE_REPLAY")

        now = int(time.time())
        for ts in (now - 400, now + 400):
            stale = await c.signed(circle, "GET", "/v1/peers", params=params, ts=ts)
            assert_error(stale, 400, "EXPIRED_TIMESTAMP")
        garbled = await c.call(
            "GET",
            "/v1/peers",
            params=params,
            headers={**sign(circle.key, "GET", "/peers", b""), "X-Felund-Ts": "soon"},
        )
        assert_error(garbled, 400, "EXPIRED_TIMESTAMP")

        # Signed for another body, path or method: refused.
        tampered = sign(circle.key, "POST", "/register", raw)
        changed = compact_json({**body, "ttl_s": 600}).encode()
        assert_error(
            await c.call("POST", "/v1/register", raw=changed, headers=tampered),
            401,
            "INVALID_SIGNATURE",
        )
        wrong_path = await c.signed(
            circle, "GET", "/v1/peers", params=params, sign_path="/messages"
        )
        assert_error(wrong_path, 401, "INVALID_SIGNATURE")
        bad = sign(circle.key, "GET", "/peers", b"")
        bad["X-Felund-Signature"] = "0" * 64
        assert_error(
            await c.call("GET", "/v1/peers", params=params, headers=bad), 401, "INVALID_SIGNATURE"
        )


# --- validation and limits ------------------------------------------------------------------------
@aio
async def test_every_rejection_is_a_json_error(relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    good = wire_message(circle.secret, node, "hello")
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)

        async def post(body: Any = None, raw: bytes | None = None) -> Answer:
            return await c.call("POST", "/v1/messages", body=body, raw=raw)

        assert_error(await post(raw=b"{not json"), 400, "INVALID_REQUEST")
        assert_error(await post(raw=b"[1, 2]"), 400, "INVALID_REQUEST")
        assert_error(await post({"messages": [good]}), 400, "INVALID_REQUEST")
        assert_error(await post({"circle_hint": "short", "messages": []}), 400, "INVALID_REQUEST")
        assert_error(
            await post({"circle_hint": circle.hint, "messages": {}}), 400, "INVALID_REQUEST"
        )
        batch = [wire_message(circle.secret, node, f"m{i}", encrypt=False) for i in range(51)]
        too_many = await post({"circle_hint": circle.hint, "messages": batch})
        assert_error(too_many, 400, "BATCH_TOO_LARGE")
        assert "50" in too_many.body["message"]
        for broken in (
            {**good, "extra": 1},
            {**good, "created_ts": "1700000000"},
            {**good, "msg_id": "short"},
            {k: v for k, v in good.items() if k != "author_node_id"},
            {**good, "enc": None, "mac": ""},
        ):
            bad = await post({"circle_hint": circle.hint, "messages": [good, broken]})
            assert_error(bad, 400, "INVALID_MESSAGE")
            assert bad.body["message"].startswith("messages[1]")
        other = wire_message(new_circle().secret, node, "elsewhere")
        assert_error(
            await post({"circle_hint": circle.hint, "messages": [other]}), 400, "CIRCLE_MISMATCH"
        )
        # Nothing of a refused batch was stored.
        page = await c.call("GET", "/v1/messages", params={"circle_hint": circle.hint, "since": 0})
        assert page.status == 200 and page.body["messages"] == []

        for params in ({}, {"circle_hint": circle.hint, "since": "yesterday"},
                       {"circle_hint": circle.hint, "limit": "1e3"}):  # fmt: skip
            assert_error(await c.call("GET", "/v1/messages", params=params), 400, "INVALID_REQUEST")
        assert_error(await c.call("GET", "/v1/peers", params={"limit": 5}), 400, "INVALID_REQUEST")
        wrong: list[tuple[str, Any]] = [
            ("node_id", "n1"),
            ("ttl_s", "120"),
            ("endpoints", [{"transport": "udp"}]),
            ("capabilities", "all"),
            ("signing_key", "XYZ"),
        ]
        for field, value in wrong:
            body = registration(circle, node, **{field: value})
            answer = await c.signed(circle, "POST", "/v1/register", body=body)
            assert_error(answer, 400, "INVALID_REQUEST")
            assert field in answer.body["message"]


@aio
async def test_garbage_and_aborted_requests_are_one_log_line_each(relay: Server) -> None:
    """Malformed request lines and headers, TLS on the plain port and a body cut off
    mid-way: each is one JSON line (info), never a 500 or a plain-text traceback."""
    garbage = [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"GET /v1/health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ]
    for raw in garbage:
        reader, writer = await asyncio.open_connection(HOST, relay.port)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(200), 5)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer
        writer.close()
    reader, writer = await asyncio.open_connection(HOST, relay.port)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\nX-Real-IP: 10.200.0.1\r\n\r\n{"circle_hint"'
    )
    await writer.drain()
    writer.close()  # mid-body

    deadline = time.monotonic() + 10
    for _ in range(200):
        events = relay.log_events()
        bad = [e for e in events if e.get("event") == "http.bad_request"]
        gone = [e for e in events if e.get("client") == "10.200.0.1"]
        if (len(bad) >= len(garbage) and gone) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(bad) >= len(garbage), bad
    assert all(e["level"] == "info" and "\n" not in e["reason"] for e in bad)
    assert [(e["event"], e["status"], e["level"]) for e in gone] == [("http.request", 499, "info")]
    lines = relay.log_text().splitlines()
    assert all(line.startswith("{") for line in lines), [x for x in lines if x[:1] != "{"][:5]
    assert not [e for e in relay.log_events() if e.get("level") == "error"]


@aio
async def test_oversized_body_is_refused_with_413(relay: Server) -> None:
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        huge = b'{"circle_hint":"' + b"a" * (4 * 1024 * 1024) + b'"}'
        assert_error(await c.call("POST", "/v1/messages", raw=huge), 413, "PAYLOAD_TOO_LARGE")
        assert (await c.call("GET", "/v1/health")).status == 200


@aio
async def test_requests_per_client_address_are_limited(tight_relay: Server) -> None:
    async with aiohttp.ClientSession() as session:
        c, other = Client(session, tight_relay), Client(session, tight_relay)
        statuses = [(await c.call("GET", "/v1/health")).status for _ in range(14)]
        assert statuses[:10] == [200] * 10
        assert 429 in statuses[10:]
        limited = await c.call("GET", "/v1/health")
        assert_error(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
        assert (await other.call("GET", "/v1/health")).status == 200  # another address


# --- messages -------------------------------------------------------------------------------------
@aio
async def test_messages_are_stored_once_and_keep_their_authenticator(relay: Server) -> None:
    circle = new_circle()
    node, browser = ids.new_node_id(), ids.new_node_id()
    ours_enc = wire_message(circle.secret, node, "sealed by our node")
    ours_mac = wire_message(circle.secret, node, "signed by our node", encrypt=False)
    theirs = browser_message(circle, browser, "from a browser")
    posted = [ours_enc, ours_mac, theirs]
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        first = await c.call(
            "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": posted}
        )
        assert first.status == 200 and first.body["ok"] is True and first.body["stored"] == 3
        again = await c.call(
            "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": posted}
        )
        assert again.body["stored"] == 0  # duplicates by msg_id are not counted

        page = await c.call("GET", "/v1/messages", params={"circle_hint": circle.hint, "since": 0})
        assert page.status == 200 and page.body["ok"] is True
        assert isinstance(page.body["server_time"], int) and isinstance(
            page.body["next_cursor"], int
        )
        # The very objects posted, keys and all: the mac or enc travels on to TCP peers.
        assert page.body["messages"] == posted
        assert [list(m) for m in page.body["messages"]] == [list(m) for m in posted]
        opened = [
            open_message(circle.secret, circle.id, parse_message(m)).text
            for m in page.body["messages"]
        ]
        assert opened == ["sealed by our node", "signed by our node", "from a browser"]


@aio
async def test_signed_message_calls_with_the_registered_key(relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        await register(c, circle, node)
        msg = wire_message(circle.secret, node, "signed post")
        body = {"circle_hint": circle.hint, "messages": [msg]}
        post = await c.signed(circle, "POST", "/v1/messages", body=body, node=node)
        assert post.status == 200 and post.body["stored"] == 1
        page = await c.signed(
            circle, "GET", "/v1/messages", params={"circle_hint": circle.hint, "since": 0}
        )
        assert page.status == 200 and page.body["messages"] == [msg]


async def _post_burst(c: Client, circle: Circle, count: int) -> list[str]:
    node = ids.new_node_id()
    msgs = [wire_message(circle.secret, node, f"burst {i}", encrypt=False) for i in range(count)]
    for start in range(0, count, 50):
        answer = await c.call(
            "POST",
            "/v1/messages",
            body={"circle_hint": circle.hint, "messages": msgs[start : start + 50]},
        )
        assert answer.status == 200 and answer.body["stored"] == len(msgs[start : start + 50])
    return [m["msg_id"] for m in msgs]


async def _page_v1(
    c: Client, circle: Circle, back: int, want: set[str], max_pages: int
) -> tuple[set[str], int]:
    """Page as a v1 client does: since=0, then server_time - back, limit 200."""
    seen: set[str] = set()
    since, pages = 0, 0
    for pages in range(1, max_pages + 1):  # noqa: B007 - the count is the answer
        answer = await c.call(
            "GET", "/v1/messages", params={"circle_hint": circle.hint, "since": since, "limit": 200}
        )
        assert answer.status == 200, answer.body
        seen.update(m["msg_id"] for m in answer.body["messages"])
        since = max(0, answer.body["server_time"] - back)
        if want <= seen:
            break
    return seen, pages


@aio
async def test_a_burst_of_1000_paged_the_v1_way_loses_nothing(relay: Server) -> None:
    circle = new_circle()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        sent = set(await _post_burst(c, circle, 1000))
        assert len(sent) == 1000
        # since = server_time (our spec's clients) and since = server_time - 1 (the browser).
        for back in (0, 1):
            seen, pages = await _page_v1(c, circle, back, sent, max_pages=40)
            assert seen == sent, (
                f"since = server_time - {back}: {len(seen)} of 1000 after {pages} pages"
            )
        # The strictly increasing cursor: every message exactly once.
        got: list[str] = []
        cursor = 0
        for _ in range(20):
            answer = await c.call(
                "GET",
                "/v1/messages",
                params={"circle_hint": circle.hint, "cursor": cursor, "limit": 200},
            )
            got += [m["msg_id"] for m in answer.body["messages"]]
            if answer.body["next_cursor"] == cursor:
                break
            assert answer.body["next_cursor"] > cursor
            cursor = answer.body["next_cursor"]
        assert len(got) == len(set(got)) == 1000 and set(got) == sent


@aio
async def test_v1_paging_during_concurrent_posting_skips_nothing(relay: Server) -> None:
    circle = new_circle()
    async with aiohttp.ClientSession() as session:
        poster, reader_a, reader_b = (
            Client(session, relay),
            Client(session, relay),
            Client(session, relay),
        )
        node = ids.new_node_id()
        sent: set[str] = set()
        done = asyncio.Event()

        async def post() -> None:
            for round_ in range(30):
                msgs = [
                    wire_message(circle.secret, node, f"{round_}.{i}", encrypt=False)
                    for i in range(random.randint(1, 50))
                ]
                answer = await poster.call(
                    "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": msgs}
                )
                assert answer.status == 200
                sent.update(m["msg_id"] for m in msgs)
                await asyncio.sleep(random.random() * 0.03)
            done.set()

        async def poll(c: Client, back: int) -> set[str]:
            seen: set[str] = set()
            since = 0
            for _ in range(400):
                finished = done.is_set()
                answer = await c.call(
                    "GET",
                    "/v1/messages",
                    params={"circle_hint": circle.hint, "since": since, "limit": 200},
                )
                seen.update(m["msg_id"] for m in answer.body["messages"])
                since = max(0, answer.body["server_time"] - back)
                if finished and seen >= sent:
                    break
                await asyncio.sleep(0.005)
            return seen

        _, seen_a, seen_b = await asyncio.gather(post(), poll(reader_a, 0), poll(reader_b, 1))
        assert seen_a == sent and seen_b == sent


# --- the WebSocket feed ---------------------------------------------------------------------------
@aio
async def test_feed_pushes_at_once_without_echo_and_sends_a_backlog(relay: Server) -> None:
    circle = new_circle()
    alice, bob, carol = ids.new_node_id(), ids.new_node_id(), ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        ws_alice, ws_bob = await c.ws(circle, alice), await c.ws(circle, bob)
        msg = wire_message(circle.secret, alice, "pushed")
        started = time.monotonic()
        answer = await c.call(
            "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": [msg]},
            headers={"X-Felund-Node": alice},
        )  # fmt: skip
        assert answer.body["stored"] == 1
        frame = await next_frame(ws_bob, "MESSAGES", timeout=2)
        latency = time.monotonic() - started
        assert frame["messages"] == [msg] and isinstance(frame["server_time"], int)
        assert latency < 0.5, f"push took {latency * 1000:.0f} ms"
        assert await frames(ws_alice, 0.3) == []  # not echoed to the poster

        # A node never gets its own messages pushed back, whoever forwards them.
        forwarded = wire_message(circle.secret, bob, "bob's, forwarded by carol")
        await c.call(
            "POST", "/v1/messages", body={"circle_hint": circle.hint, "messages": [forwarded]},
            headers={"X-Felund-Node": carol},
        )  # fmt: skip
        assert (await next_frame(ws_alice, "MESSAGES", timeout=2))["messages"] == [forwarded]
        # (bob may get alice's message twice: in his backlog and live, when it was stored
        # while his backlog was read; clients drop duplicates by msg_id.)
        back_to_bob = [m for f in await frames(ws_bob, 0.3) for m in f["messages"]]
        assert [m["msg_id"] for m in back_to_bob if m["author_node_id"] == bob] == []

        # A new subscriber gets the last 120 s at once.
        ws_carol = await c.ws(circle, carol)
        backlog = await next_frame(ws_carol, "MESSAGES", timeout=2)
        assert [m["msg_id"] for m in backlog["messages"]] == [msg["msg_id"], forwarded["msg_id"]]
        # ... but not its own: alice, back, gets only bob's.
        ws_again = await c.ws(circle, alice)
        backlog = await next_frame(ws_again, "MESSAGES", timeout=2)
        assert [m["msg_id"] for m in backlog["messages"]] == [forwarded["msg_id"]]
        await ws_again.close()

        # The client's PING is answered.
        await ws_carol.send_str('{"t":"PING"}')
        assert await next_frame(ws_carol, "PONG", timeout=2) == {"t": "PONG"}
        for ws in (ws_alice, ws_bob, ws_carol):
            await ws.close()

        # Bad parameters are refused before the upgrade, as JSON.
        bad = await c.call("GET", "/v1/relay/ws", params={"circle_hint": "x", "node_id": alice})
        assert_error(bad, 400, "INVALID_REQUEST")


@aio
async def test_feed_pings_every_interval_and_drops_silent_clients(tight_relay: Server) -> None:
    circle = new_circle()
    async with aiohttp.ClientSession() as session:
        c = Client(session, tight_relay)
        ws = await c.ws(circle, ids.new_node_id())
        pings = 0
        deadline = time.monotonic() + 2.0
        for _ in range(100):
            if time.monotonic() > deadline:
                break
            frame = await next_frame(ws, "PING", timeout=2)
            assert frame == {"t": "PING"}
            pings += 1
            await ws.send_str('{"t":"PONG"}')
        assert pings >= 3
        await ws.send_str('{"t":"PING"}')
        assert await next_frame(ws, "PONG", timeout=2) == {"t": "PONG"}  # still open
        await ws.close()

        silent = await c.ws(circle, ids.new_node_id())
        closed_by_server = False
        for _ in range(100):
            msg = await silent.receive(timeout=5)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                closed_by_server = True
                break
        assert closed_by_server


# --- require_signatures ---------------------------------------------------------------------------
@aio
async def test_require_signatures_refuses_unsigned_calls(strict_relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    params = {"circle_hint": circle.hint, "since": 0}
    async with aiohttp.ClientSession() as session:
        c = Client(session, strict_relay)
        body = {
            "circle_hint": circle.hint,
            # Another member's: the feed sends a node no message of its own.
            "messages": [wire_message(circle.secret, ids.new_node_id(), "needs a signature")],
        }
        assert_error(await c.call("POST", "/v1/messages", body=body), 401, "SIGNATURE_REQUIRED")
        assert_error(await c.call("GET", "/v1/messages", params=params), 401, "SIGNATURE_REQUIRED")
        # Signed, but nothing pinned yet: nothing to verify against.
        assert_error(
            await c.signed(circle, "POST", "/v1/messages", body=body), 401, "INVALID_SIGNATURE"
        )
        await register(c, circle, node)
        assert (await c.signed(circle, "POST", "/v1/messages", body=body, node=node)).body[
            "stored"
        ] == 1
        page = await c.signed(circle, "GET", "/v1/messages", params=params)
        assert page.status == 200 and len(page.body["messages"]) == 1

        feed = await c.call(
            "GET", "/v1/relay/ws", params={"circle_hint": circle.hint, "node_id": node}
        )
        assert_error(feed, 401, "SIGNATURE_REQUIRED")
        ts, nonce = int(time.time()), secrets.token_hex(16)
        sig = crypto.api_signature(circle.key, "GET", "/relay/ws", b"", ts, nonce)
        ws = await c.ws(circle, node, ts=str(ts), nonce=nonce, signature=sig)
        backlog = await next_frame(ws, "MESSAGES", timeout=2)
        assert len(backlog["messages"]) == 1
        await ws.close()

        signal_body = {
            "session_id": "session-0001", "from_node_id": node, "to_node_id": ids.new_node_id(),
            "circle_hint": circle.hint, "type": "offer", "payload": "v=0", "ttl_s": 120,
        }  # fmt: skip
        assert_error(
            await c.call("POST", "/v1/signal", body=signal_body), 401, "SIGNATURE_REQUIRED"
        )
        assert (await c.signed(circle, "POST", "/v1/signal", body=signal_body)).status == 200


@aio
async def test_under_require_signatures_a_key_of_one_s_own_reaches_nobody(
    strict_relay: Server,
) -> None:
    """An outsider registers first with its own key on a relay that requires signatures:
    the members still register, post and read; the outsider reads none of their
    messages or signals, and what it posts never reaches them."""
    circle = new_circle()
    alice, bob, outsider = ids.new_node_id(), ids.new_node_id(), ids.new_node_id()
    own_key = crypto.api_signing_key(ids.new_secret())
    since = {"circle_hint": circle.hint, "since": 0}
    async with aiohttp.ClientSession() as session:
        c = Client(session, strict_relay)
        body = registration(circle, outsider, signing_key=own_key)
        first = await c.signed(circle, "POST", "/v1/register", body=body, key=own_key)
        assert first.status == 200, first.body
        await register(c, circle, alice)
        await register(c, circle, bob)

        ours = wire_message(circle.secret, alice, "for members")
        post = {"circle_hint": circle.hint, "messages": [ours]}
        assert (await c.signed(circle, "POST", "/v1/messages", body=post, node=alice)).body[
            "stored"
        ] == 1
        junk = {**wire_message(circle.secret, outsider, "junk", encrypt=False), "mac": "0" * 64}
        post = {"circle_hint": circle.hint, "messages": [junk]}
        posted = await c.signed(
            circle, "POST", "/v1/messages", body=post, node=outsider, key=own_key
        )
        assert posted.body["stored"] == 1  # in its own circle

        theirs = await c.signed(
            circle, "GET", "/v1/messages", params=since, node=outsider, key=own_key
        )
        assert [m["msg_id"] for m in theirs.body["messages"]] == [junk["msg_id"]]
        mine = await c.signed(circle, "GET", "/v1/messages", params=since, node=bob)
        assert [m["msg_id"] for m in mine.body["messages"]] == [ours["msg_id"]]

        ts, nonce = int(time.time()), secrets.token_hex(16)
        sig = crypto.api_signature(circle.key, "GET", "/relay/ws", b"", ts, nonce)
        ws = await c.ws(circle, bob, ts=str(ts), nonce=nonce, signature=sig)
        backlog = await next_frame(ws, "MESSAGES", timeout=2)
        assert [m["msg_id"] for m in backlog["messages"]] == [ours["msg_id"]]
        await ws.close()

        offer = {
            "session_id": "squat-session", "from_node_id": outsider, "to_node_id": alice,
            "circle_hint": circle.hint, "type": "offer", "payload": "v=0", "ttl_s": 60,
        }  # fmt: skip
        sent = await c.signed(circle, "POST", "/v1/signal", body=offer, node=outsider, key=own_key)
        assert sent.status == 200
        query = {"to_node_id": alice, "since_id": 0, "circle_hint": circle.hint}
        got = await c.signed(circle, "GET", "/v1/signal", params=query, node=alice)
        assert got.status == 200 and got.body["signals"] == []


# --- call signalling ------------------------------------------------------------------------------
@aio
async def test_signalling_as_the_browser_client_uses_it(relay: Server) -> None:
    circle = new_circle()
    alice, bob = ids.new_node_id(), ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)

        def signal_body(
            kind: str, session_id: str = "call-session-1", **extra: Any
        ) -> dict[str, Any]:
            return {
                "session_id": session_id, "from_node_id": alice, "to_node_id": bob,
                "circle_hint": circle.hint, "type": kind, "payload": f"{kind} sdp", "ttl_s": 120,
                **extra,
            }  # fmt: skip

        empty = await c.call("GET", "/v1/signal", params={"to_node_id": bob, "since_id": 0})
        assert empty.status == 200 and empty.body["signals"] == []
        for kind in ("offer", "media-offer", "media-candidate"):
            answer = await c.call("POST", "/v1/signal", body=signal_body(kind))
            assert answer.status == 200 and answer.body["ok"] is True
            assert isinstance(answer.body["server_time"], int)
        await c.call("POST", "/v1/signal", body=signal_body("answer", "call-session-2"))
        got = await c.call("GET", "/v1/signal", params={"to_node_id": bob, "since_id": 0})
        signals = got.body["signals"]
        assert [s["type"] for s in signals] == ["offer", "media-offer", "media-candidate", "answer"]
        assert [s["id"] for s in signals] == sorted({s["id"] for s in signals})
        first = signals[0]
        assert {k: first[k] for k in ("session_id", "from_node", "to_node", "payload")} == {
            "session_id": "call-session-1",
            "from_node": alice,
            "to_node": bob,
            "payload": "offer sdp",
        }
        later = await c.call(
            "GET", "/v1/signal", params={"to_node_id": bob, "since_id": signals[1]["id"]}
        )
        assert [s["type"] for s in later.body["signals"]] == ["media-candidate", "answer"]
        one = await c.call(
            "GET",
            "/v1/signal",
            params={"to_node_id": bob, "since_id": 0, "session_id": "call-session-2"},
        )
        assert [s["type"] for s in one.body["signals"]] == ["answer"]
        nobody = await c.call("GET", "/v1/signal", params={"to_node_id": alice, "since_id": 0})
        assert nobody.body["signals"] == []

        for broken in (signal_body("ring"), signal_body("offer", "short"),
                       signal_body("offer", payload="x" * (64 * 1024 + 1)),
                       signal_body("offer", to_node_id="b"), signal_body("offer", type=["offer"]),
                       signal_body("offer", type={"offer": 1})):  # fmt: skip
            assert_error(await c.call("POST", "/v1/signal", body=broken), 400, "INVALID_REQUEST")
        assert_error(
            await c.call("GET", "/v1/signal", params={"since_id": 0}), 400, "INVALID_REQUEST"
        )


@aio
async def test_signalling_is_limited_to_20_posts_per_node_per_10_s(relay: Server) -> None:
    circle = new_circle()
    node, other = ids.new_node_id(), ids.new_node_id()
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)

        def body(sender: str) -> dict[str, Any]:
            return {
                "session_id": "rate-session",
                "from_node_id": sender,
                "to_node_id": ids.new_node_id(),
                "circle_hint": circle.hint,
                "type": "media-candidate",
                "payload": "candidate",
                "ttl_s": 60,
            }

        statuses = [(await c.call("POST", "/v1/signal", body=body(node))).status for _ in range(20)]
        assert statuses == [200] * 20
        limited = await c.call("POST", "/v1/signal", body=body(node))
        assert_error(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        assert (await c.call("POST", "/v1/signal", body=body(other))).status == 200


# --- restarts, logs, metrics ----------------------------------------------------------------------
@aio
async def test_signing_keys_and_used_nonces_survive_a_restart(
    tmp_path: Path, database: Callable[[], str]
) -> None:
    server = Server(tmp_path / "restart", db=database())
    circle = new_circle()
    node = ids.new_node_id()
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(session, server)
            await register(c, circle, node)
            headers = sign(circle.key, "GET", "/peers", b"")
            params = {"circle_hint": circle.hint}
            assert (await c.call("GET", "/v1/peers", params=params, headers=headers)).status == 200
            assert server.stop() == 0
            server.start()
            assert_error(
                await c.call("GET", "/v1/peers", params=params, headers=headers),
                409,
                "NONCE_REPLAY",
            )
            # The node's key is known still: it may re-register without it.
            again = {k: v for k, v in registration(circle, node).items() if k != "signing_key"}
            assert (await c.signed(circle, "POST", "/v1/register", body=again)).status == 200
            assert (await c.signed(circle, "GET", "/v1/peers", params=params)).status == 200
    finally:
        server.stop()


@aio
async def test_request_logs_and_metrics_hold_no_secrets_or_contents(relay: Server) -> None:
    circle = new_circle()
    node = ids.new_node_id()
    text = f"private words {secrets.token_hex(8)}"
    async with aiohttp.ClientSession() as session:
        c = Client(session, relay)
        await register(c, circle, node)
        msg = wire_message(circle.secret, node, text, encrypt=False)
        body = {"circle_hint": circle.hint, "messages": [msg]}
        raw = compact_json(body).encode()
        headers = {**sign(circle.key, "POST", "/messages", raw), "X-Felund-Node": node}
        assert (await c.call("POST", "/v1/messages", raw=raw, headers=headers)).status == 200
        async with session.get(relay.url("/metrics")) as resp:
            exposition = await resp.text()
    assert "felund_relay_server_requests_total{" in exposition
    assert "felund_relay_server_messages_stored_total" in exposition
    assert circle.hint not in exposition and node not in exposition

    deadline = time.monotonic() + 5
    for _ in range(100):
        lines = [e for e in relay.log_events() if e.get("event") == "http.request"]
        mine = [
            e for e in lines if e.get("circle_hint") == circle.hint and e["path"] == "/v1/messages"
        ]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    (line,) = mine
    assert line["method"] == "POST" and line["status"] == 200 and line["signed"] is True
    assert line["client"] == c.address and line["duration_ms"] >= 0
    log = relay.log_text()
    for secret in (text, headers["X-Felund-Signature"], circle.key, circle.secret, msg["mac"]):
        assert secret not in log
