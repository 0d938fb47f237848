"""The relay against clients that hold what they can: memory, connections, time.

A real relay process on 127.0.0.1 and raw sockets that behave as an
attacker's would: feed connections that never read (but PING, so they are
never idle), connections that send their headers or body a byte at a time,
requests cut off mid-body and garbage request lines. What is measured is the
relay's own: its resident memory and open descriptors (/proc), its answers,
its metrics and its log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from felund.relay.protocol import compact_json
from felund.relay.server.connections import OVERSHOOT
from felund.testing import wire_message
from felund.v1 import ids
from tests.integration.test_relay_server import HOST, Client, Server, aio

MB = 1024 * 1024


def _status(pid: int, field: str) -> int:
    """A size in bytes from /proc/PID/status (VmRSS, VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, field
    return int(match.group(1)) * 1024


def _open_sockets(pid: int) -> int:
    """The process's open sockets (listening and connected)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def _pid(server: Server) -> int:
    assert server.proc is not None
    return server.proc.pid


async def _metric(session: aiohttp.ClientSession, server: Server, name: str) -> float:
    """The sum of a metric's samples (every label) in /metrics."""
    async with session.get(server.url("/metrics")) as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


async def _health_ms(session: aiohttp.ClientSession, server: Server) -> float:
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=10)
    async with session.get(server.url("/v1/health"), timeout=timeout) as resp:
        assert resp.status == 200
    return (time.monotonic() - started) * 1000


# --- raw sockets ----------------------------------------------------------------------------------
def _ws_text_frame(payload: bytes) -> bytes:
    """A masked (client) text frame of a short payload."""
    mask = secrets.token_bytes(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def _never_reading_feed(server: Server, hint: str, n: int) -> socket.socket:
    """A feed connection whose reader takes nothing: a small receive buffer, never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, server.port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    node = ids.new_node_id()
    sock.sendall(
        (
            f"GET /v1/relay/ws?circle_hint={hint}&node_id={node} HTTP/1.1\r\n"
            f"Host: {HOST}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Real-IP: 10.99.0.{n + 1}\r\n\r\n"
        ).encode()
    )
    return sock


def _ping_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(_ws_text_frame(b'{"t":"PING"}'))


@contextlib.contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _large_messages(count: int) -> tuple[str, list[dict[str, Any]]]:
    """``count`` messages of about 64 KB (enc form) of a circle nobody else knows."""
    secret = ids.new_secret()
    hint = ids.circle_hint(ids.circle_id(secret))
    author = ids.new_node_id()
    text = "\U0001f600" * 4000  # 16000 UTF-8 bytes, 12 bytes each once \u-escaped
    return hint, [wire_message(secret, author, text) for _ in range(count)]


async def _post_all(c: Client, hint: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 40):
        body = {"circle_hint": hint, "messages": messages[start : start + 40]}
        answer = await c.call("POST", "/v1/messages", raw=compact_json(body).encode())
        assert answer.status == 200, answer.body


# --- memory held for clients that never read ------------------------------------------------------
@pytest.fixture
def plain_relay(tmp_path: Path) -> Iterator[Server]:
    """A relay with the service's defaults but no request rate limit (the posting is fast)."""
    server = Server(tmp_path / "relay", "--no-limits", cli=False)
    yield server
    server.stop()


@aio
async def test_feed_clients_that_never_read_hold_bounded_memory(plain_relay: Server) -> None:
    """An outsider fills a made-up circle with 1000 large messages, then opens 10 feeds
    that never read and PING: the relay's memory must stay bounded, and it must answer."""
    pid = _pid(plain_relay)
    hint, messages = _large_messages(1000)
    async with aiohttp.ClientSession() as session:
        await _post_all(Client(session, plain_relay), hint, messages)
        baseline = _status(pid, "VmRSS")
        with _closing([_never_reading_feed(plain_relay, hint, n) for n in range(10)]) as socks:
            slowest, peak = 0.0, baseline
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                _ping_all(socks)
                slowest = max(slowest, await _health_ms(session, plain_relay))
                peak = max(peak, _status(pid, "VmRSS"))
                await asyncio.sleep(0.5)
            grown = (peak - baseline) / MB
        print(f"relay RSS {baseline / MB:.0f} MB -> peak {peak / MB:.0f} MB with 10 never-reading "
              f"feeds; slowest health answer {slowest:.0f} ms")  # fmt: skip
        assert grown < 120, f"the relay grew by {grown:.0f} MB for 10 feed clients"
        assert slowest < 2000
        errors = await _metric(session, plain_relay, "felund_relay_server_internal_errors_total")
        assert errors == 0


def _never_reading_get(server: Server, path: str, n: int) -> socket.socket:
    """A GET whose client takes nothing of the answer: a small receive buffer, never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, server.port))
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nX-Real-IP: 10.98.0.{n + 1}"
    sock.sendall(f"{head}\r\n\r\n".encode())
    return sock


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"never {what} in {timeout} s"
        await asyncio.sleep(0.05)


@aio
async def test_get_answers_count_in_the_send_budget(tmp_path: Path) -> None:
    """Pages of messages held for GET clients that never read are memory as feed frames
    are: past the send budget the relay answers 503 (it used to build and hold every
    one), and what a client that goes away held is released."""
    budget = 8 * MB
    server = Server(tmp_path / "relay", "--no-limits", f"--send-budget-bytes={budget}", cli=False)
    try:
        hint, messages = _large_messages(50)
        path = f"/v1/messages?circle_hint={hint}&cursor=0&limit=50"
        async with aiohttp.ClientSession() as session:
            c = Client(session, server)
            await _post_all(c, hint, messages)
            page = await c.call("GET", path)
            assert page.status == 200 and len(page.body["messages"]) == 50
            size = len(compact_json(page.body).encode())
            assert 2 * size < budget < 3 * size, size
            queued = "felund_relay_server_feed_queued_bytes"

            async def held(n: int) -> bool:
                # Each answer counts from before it is sent until it is all but sent.
                return await _metric(session, server, queued) >= n * size * 0.99

            with _closing([_never_reading_get(server, path, n) for n in range(2)]):
                await _until(lambda: held(2), "two answers held")
                refused = await c.call("GET", path)
                assert refused.status == 503, refused.status
                assert refused.body["code"] == "UNAVAILABLE" and refused.headers["Retry-After"]
                assert (
                    await _metric(session, server, "felund_relay_server_answers_refused_total") == 1
                )

            async def answered() -> bool:
                return (await c.call("GET", path)).status == 200

            await _until(answered, "a page answered once the two clients went away")
            assert await _metric(session, server, queued) == 0
            errors = await _metric(session, server, "felund_relay_server_internal_errors_total")
            assert errors == 0
    finally:
        server.stop()


@aio
async def test_a_feed_client_that_takes_nothing_is_cut_off(tmp_path: Path) -> None:
    """Live messages keep coming to feeds that never read: each is cut off once a frame
    waits longer than the send timeout (or its queue overflows), and what was queued
    for it is released."""
    server = Server(tmp_path / "relay", "--no-limits", "--send-timeout=1", cli=False)
    try:
        pid = _pid(server)
        hint, messages = _large_messages(160)
        async with aiohttp.ClientSession() as session:
            await _health_ms(session, server)
            sockets = _open_sockets(pid)
            with _closing([_never_reading_feed(server, hint, n) for n in range(5)]) as socks:
                closed = "felund_relay_server_websocket_closed_total"
                for _ in range(100):  # every upgrade answered: the feeds are subscribed
                    if (
                        await _metric(session, server, "felund_relay_server_websocket_connections")
                        == 5
                    ):
                        break
                    await asyncio.sleep(0.05)
                await _post_all(Client(session, server), hint, messages)  # 10 MB, live
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    _ping_all(socks)
                    if await _metric(session, server, closed) == 5:
                        break
                    await asyncio.sleep(0.2)
                assert await _metric(session, server, closed) == 5
                assert (
                    await _metric(session, server, "felund_relay_server_websocket_connections") == 0
                )
                # Their sockets are closed, and nothing stays counted for them.
                for _ in range(100):
                    queued = await _metric(session, server, "felund_relay_server_feed_queued_bytes")
                    if _open_sockets(pid) <= sockets + 1 and queued == 0:
                        break
                    await asyncio.sleep(0.1)
                assert _open_sockets(pid) <= sockets + 1  # + the session's other connection
                assert queued == 0
    finally:
        server.stop()


# --- slow senders ---------------------------------------------------------------------------------
def _slow_senders(server: Server, count: int) -> list[socket.socket]:
    """Half send headers a byte at a time; half send whole headers, then a body likewise."""
    socks = []
    for n in range(count):
        sock = socket.create_connection((HOST, server.port), timeout=5)
        if n % 2:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: relay\r\n")
        else:
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _trickle(socks: list[socket.socket]) -> int:
    """One more byte on each; how many the relay has closed (EOF, reset or an answer)."""
    closed = 0
    for sock in socks:
        try:
            data = sock.recv(4096)
            closed += 1  # an answer (408 or 503, then close) or EOF
            if data.startswith(b"HTTP/1.1 408"):
                assert b"REQUEST_TIMEOUT" in data
            continue
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
            continue
        try:
            sock.send(b"X")
        except OSError:
            closed += 1
    return closed


@aio
async def test_slow_senders_are_closed_and_connections_are_capped(tmp_path: Path) -> None:
    """500 connections that send their headers or body a byte at a time, with a cap of
    300: the relay keeps answering others all along (a new connection takes the place
    of the oldest slow one), no more than the cap are open at once, and each slow one
    is closed after the header or body timeout."""
    server = Server(
        tmp_path / "relay",
        "--header-timeout=4",
        "--body-timeout=4",
        "--max-connections=300",
        cli=False,
    )
    try:
        pid = _pid(server)
        async with aiohttp.ClientSession() as session:
            await _health_ms(session, server)
            idle = _open_sockets(pid)
            with _closing(_slow_senders(server, 500)) as socks:
                most, closed, slowest = 0, 0, 0.0
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and closed < len(socks):
                    most = max(most, _open_sockets(pid))
                    closed = _trickle(socks)
                    slowest = max(slowest, await _health_ms(session, server))
                    await asyncio.sleep(0.25)
                print(f"slowloris of 500: at most {most} sockets open at the relay; "
                      f"{closed} closed by it; slowest health answer {slowest:.0f} ms")  # fmt: skip
                assert closed == len(socks)
                assert most <= 300 + OVERSHOOT + idle
                assert slowest < 2000
            for _ in range(100):
                if _open_sockets(pid) <= idle + 1:
                    break
                await asyncio.sleep(0.1)
            assert _open_sockets(pid) <= idle + 1
            evicted = "felund_relay_server_connections_evicted_total"
            assert await _metric(session, server, evicted) > 0
            errors = "felund_relay_server_internal_errors_total"
            assert await _metric(session, server, errors) == 0
        events = server.log_events()
        timeouts = [e for e in events if e.get("code") == "REQUEST_TIMEOUT"]
        assert timeouts and all(e["status"] == 408 for e in timeouts)
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()
