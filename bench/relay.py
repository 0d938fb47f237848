"""Relay server throughput: requests per second and p99 latency, load from another process.

``bench_relay()`` seeds a relay database with 100k messages (100 circles,
1,000 each, AES-GCM sealed as our nodes send them), starts ``python -m
services.relay_server`` on it (per-address rate limit off, warnings-only
logs), and runs a load generator (``python -m bench.relay load``) in a
separate process for each scenario: a pool of keep-alive connections, each
sending requests back to back for a fixed time. The two processes share the
machine's cores; the table says how many.

``python -m bench.relay`` prints the rows on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench import print_table
from felund.relay.protocol import IncomingMessage, MessageBatch, compact_json
from felund.relay.server.postgres import PostgresRelayStore
from felund.relay.server.sqlite import SqliteRelayStore
from felund.relay.server.store import RelayStore
from felund.testing import free_port, wire_message
from felund.testing.postgres import PgServer
from felund.v1 import crypto, ids

Row = tuple[str, str, str]
REPO = Path(__file__).resolve().parents[1]
CIRCLES = 100
SCENARIOS = {
    "get": "GET /v1/messages, a page of 200 (random since)",
    "poll": "GET /v1/messages, nothing new (a client's 5 s poll)",
    "get-signed": "GET /v1/messages, signed, a page of 200",
    "post": "POST /v1/messages, 1 message per request",
    "post50": "POST /v1/messages, 50 messages per request",
}


def _secret(index: int) -> str:
    return f"{index:064x}"


def seed(db: Path | str, total: int) -> None:
    """Store ``total`` messages over ``CIRCLES`` circles, as POSTs would (``db``: a SQLite
    file or a PostgreSQL URL)."""
    store: RelayStore = PostgresRelayStore(db) if isinstance(db, str) else SqliteRelayStore(db)
    try:
        author = ids.new_node_id()
        per_circle = total // CIRCLES
        for index in range(CIRCLES):
            secret = _secret(index)
            circle_id = ids.circle_id(secret)
            hint = ids.circle_hint(circle_id)
            for start in range(0, per_circle, 50):
                batch = []
                for n in range(start, min(start + 50, per_circle)):
                    wire = wire_message(
                        secret, author, f"seeded message {n} " + "x" * 80, name="bench"
                    )
                    batch.append(IncomingMessage(wire["msg_id"], author, compact_json(wire)))
                store.append(MessageBatch(hint, tuple(batch)))
    finally:
        store.close()


# --- the load generator (its own process) ----------------------------------------------------
class _Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time.

    A few lines of asyncio streams rather than an HTTP client library: on a
    2-core machine a full client spends more CPU per request than the
    server, and the figure would measure the load generator.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


async def _load(url: str, scenario: str, seconds: float, connections: int) -> dict[str, Any]:
    # ``url``: one relay, or several (comma-separated) sharing one database; the
    # connections are spread over them, as a load balancer would.
    targets = []
    for one in url.split(","):
        host, _, port_text = one.removeprefix("http://").partition(":")
        targets.append((host, int(port_text)))
    host, port = targets[0]
    circles = [(_secret(i), ids.circle_id(_secret(i))) for i in range(CIRCLES)]
    hints = [ids.circle_hint(cid) for _, cid in circles]
    keys = [crypto.api_signing_key(secret) for secret, _ in circles]
    batch = 50 if scenario == "post50" else 1
    bodies: list[bytes] = []
    if scenario.startswith("post"):
        author = ids.new_node_id()
        per_request = int(seconds * (5000 if batch == 1 else 300)) + 100  # more than fit in time
        for n in range(per_request):
            secret, cid = circles[n % CIRCLES]
            msgs = [
                wire_message(secret, author, f"load {n}.{i}", name="bench") for i in range(batch)
            ]
            body = {"circle_hint": ids.circle_hint(cid), "messages": msgs}
            bodies.append(compact_json(body).encode())
    # The first stored second of each seeded circle (1,000 messages, 100 a
    # second, so ten seconds): its since=0 page ends with the second one.
    firsts: list[int] = []
    probe = _Connection(host, port)
    for hint in hints:
        _, answer = await probe.request("GET", f"/v1/messages?circle_hint={hint}&since=0", {})
        firsts.append(json.loads(answer)["server_time"] - 1)
    assert probe.writer is not None
    probe.writer.close()
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.monotonic() + seconds

    async def worker(conn: _Connection) -> None:
        nonlocal errors
        rng = random.Random()
        while time.monotonic() < deadline:
            n = next(counter)
            c = rng.randrange(CIRCLES)
            headers: dict[str, str] = {}
            body = b""
            if scenario.startswith("post"):
                if n >= len(bodies):
                    return
                method, target, body = "POST", "/v1/messages", bodies[n]
                headers["Content-Type"] = "application/json"
            else:
                first = firsts[c]
                since = first + 100 if scenario == "poll" else rng.randrange(first - 1, first + 8)
                method = "GET"
                target = f"/v1/messages?circle_hint={hints[c]}&since={max(0, since)}&limit=200"
                if scenario == "get-signed":
                    ts, nonce = int(time.time()), secrets.token_hex(16)
                    headers = {
                        "X-Felund-Ts": str(ts),
                        "X-Felund-Nonce": nonce,
                        "X-Felund-Signature": crypto.api_signature(
                            keys[c], "GET", "/messages", b"", ts, nonce
                        ),
                    }
            started = time.perf_counter()
            status, _ = await conn.request(method, target, headers, body)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1

    started = time.monotonic()
    await asyncio.gather(
        *(worker(_Connection(*targets[i % len(targets)])) for i in range(connections))
    )
    elapsed = time.monotonic() - started
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "seconds": elapsed,
        "errors": errors,
        "p50": statistics.median(lat) if lat else 0.0,
        "p99": lat[max(0, int(len(lat) * 0.99) - 1)] if lat else 0.0,
    }


# --- the benchmark ------------------------------------------------------------------------------
def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, "the relay exited"
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the relay did not start")


def bench_relay(
    messages: int = 100_000,
    seconds: float = 10.0,
    connections: int = 32,
    scenarios: tuple[str, ...] = ("get", "poll", "get-signed", "post", "post50"),
) -> list[Row]:
    """Rows (name, result, notes) for each scenario against one relay."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="felund-bench-relay-") as tmp:
        db = Path(tmp) / "relay.db"
        started = time.perf_counter()
        seed(db, messages)
        seeding = time.perf_counter() - started
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
        server = subprocess.Popen(
            [
                sys.executable, "-m", "services.relay_server", "--host", "127.0.0.1",
                "--port", str(port), "--db", str(db), "--no-limits",
                "--log-level", "warning", "--log-format", "json",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_healthy(url, server)
            for scenario in scenarios:
                load = subprocess.run(
                    [
                        sys.executable, "-m", "bench.relay", "load", "--url", url,
                        "--scenario", scenario, "--seconds", str(seconds),
                        "--connections", str(connections),
                    ],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=seconds * 10 + 120,
                )  # fmt: skip
                r = json.loads(load.stdout.splitlines()[-1])
                rows.append(
                    (
                        f"relay {SCENARIOS[scenario]}",
                        f"{r['requests'] / r['seconds']:,.0f} req/s",
                        f"p99 {r['p99'] * 1000:.1f} ms, p50 {r['p50'] * 1000:.1f} ms; "
                        f"{r['requests']:,} requests, {r['errors']} errors; "
                        f"{connections} connections from another process; "
                        f"{messages:,} messages stored (seeded in {seeding:.0f} s); "
                        f"{os.cpu_count()} cores shared",
                    )
                )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    return rows


def _start_relay(port: int, db: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "services.relay_server", "--host", "127.0.0.1",
            "--port", str(port), "--db", db, "--no-limits",
            "--log-level", "warning", "--log-format", "json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


async def _feed_latency(urls: list[str], count: int) -> list[float]:
    """POST ``count`` messages one at a time to the first relay; seconds until each is
    pushed to a WebSocket subscriber of the last."""
    secret = _secret(0)
    hint = ids.circle_hint(ids.circle_id(secret))
    author = ids.new_node_id()
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{urls[-1].replace('http', 'ws')}/v1/relay/ws",
            params={"circle_hint": hint, "node_id": ids.new_node_id()},
        )
        await ws.receive(timeout=5)  # the backlog
        for n in range(count):
            msg = wire_message(secret, author, f"feed {n}", name="bench")
            started = time.perf_counter()
            body = {"circle_hint": hint, "messages": [msg]}
            async with session.post(f"{urls[0]}/v1/messages", json=body) as resp:
                assert resp.status == 200
            for _ in range(10):  # skip other frames (PING)
                frame = json.loads((await ws.receive(timeout=5)).data)
                if frame.get("t") == "MESSAGES":
                    break
            latencies.append(time.perf_counter() - started)
        await ws.close()
    return sorted(latencies)


def bench_relay_backends(
    messages: int = 20_000, seconds: float = 8.0, connections: int = 32
) -> list[Row]:
    """SQLite with one instance, PostgreSQL with one and with two, side by side: POST of
    single messages, GET of a page, and the feed's latency (post on the first instance,
    pushed on the last)."""
    rows: list[Row] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
    pg = PgServer()
    try:
        with tempfile.TemporaryDirectory(prefix="felund-bench-relay-") as tmp:
            for label, instances in (("SQLite, 1 instance", 1), ("PostgreSQL, 1 instance", 1),
                                     ("PostgreSQL, 2 instances", 2)):  # fmt: skip
                db = (
                    str(Path(tmp) / f"relay-{len(rows)}.db") if "SQLite" in label else pg.database()
                )
                seed(Path(db) if "SQLite" in label else db, messages)
                ports = [free_port() for _ in range(instances)]
                procs = [_start_relay(port, db, env) for port in ports]
                urls = [f"http://127.0.0.1:{port}" for port in ports]
                try:
                    for scenario in ("post", "get"):
                        load = subprocess.run(
                            [
                                sys.executable, "-m", "bench.relay", "load",
                                "--url", ",".join(urls),
                                "--scenario", scenario, "--seconds", str(seconds),
                                "--connections", str(connections),
                            ],
                            cwd=REPO, env=env, capture_output=True, text=True, check=True,
                            timeout=seconds * 10 + 120,
                        )  # fmt: skip
                        r = json.loads(load.stdout.splitlines()[-1])
                        rows.append(
                            (
                                f"relay {label}: {SCENARIOS[scenario]}",
                                f"{r['requests'] / r['seconds']:,.0f} req/s",
                                f"p99 {r['p99'] * 1000:.1f} ms, p50 {r['p50'] * 1000:.1f} ms; "
                                f"{r['errors']} errors; {connections} connections; "
                                f"{messages:,} messages seeded; {os.cpu_count()} cores shared",
                            )
                        )
                    lat = asyncio.run(_feed_latency(urls, 200))
                    rows.append(
                        (
                            f"relay {label}: feed latency, POST to "
                            f"{'one instance, pushed by the other' if instances > 1 else 'it'}",
                            f"p50 {statistics.median(lat) * 1000:.1f} ms",
                            f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms; 200 POSTs "
                            "one after another",
                        )
                    )
                finally:
                    for proc in procs:
                        proc.send_signal(signal.SIGTERM)
                    for proc in procs:
                        try:
                            proc.wait(30)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait(10)
    finally:
        pg.close()
    return rows


def main() -> None:
    """``python -m bench.relay`` (the table) or ``python -m bench.relay load`` (one load run)."""
    parser = argparse.ArgumentParser(prog="python -m bench.relay")
    sub = parser.add_subparsers(dest="command")
    load = sub.add_parser("load")
    load.add_argument("--url", required=True)
    load.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--connections", type=int, default=32)
    sub.add_parser("backends", help="SQLite / PostgreSQL 1 / PostgreSQL 2 instances")
    table = sub.add_parser("table")
    table.add_argument("--messages", type=int, default=100_000)
    table.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "load":
        result = asyncio.run(_load(args.url, args.scenario, args.seconds, args.connections))
        print(json.dumps(result))
        return
    if args.command == "backends":
        print_table(bench_relay_backends())
        return
    rows = bench_relay(getattr(args, "messages", 100_000), seconds=getattr(args, "seconds", 10.0))
    print_table(rows)


if __name__ == "__main__":
    main()
