"""Relay server throughput: requests per second and p99 latency, load from another process.

``bench_relay()`` seeds a relay database with 100k messages (100 circles,
1,000 each, AES-GCM sealed as our nodes send them), starts ``python -m
services.relay_server`` on it (warnings-only logs), once at its defaults
(the budgets of ``felund.relay.server.limits``) and once with ``--no-limits``
(each row says which), and runs a load generator (``python -m bench.relay
load``) in a separate process for each scenario: one client (one address; the
signed scenarios one node of one circle, so one signing key) with a pool of
keep-alive connections, each sending requests back to back for a fixed time.
Throughput counts the answers that were 200 only. The two processes share
the machine's cores; the table says how many.

``python -m bench.relay`` prints the rows on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
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
from felund.relay.client import signed_headers
from felund.relay.protocol import IncomingMessage, MessageBatch, compact_json
from felund.relay.server.postgres import PostgresRelayStore
from felund.relay.server.sqlite import SqliteRelayStore
from felund.relay.server.store import RelayStore
from felund.testing import free_port, wire_message
from felund.testing.postgres import PgServer
from felund.testing.procstat import cpu_ticks, machine_ticks
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
    "post-signed": "POST /v1/messages, signed, 1 message per request",
    "post50-signed": "POST /v1/messages, signed, 50 messages per request",
}
ALL = tuple(SCENARIOS)
BENCH_NODE = "benchnode00000001"


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
    batch = 50 if scenario.startswith("post50") else 1
    signed = scenario.endswith("signed")
    bodies: list[tuple[bytes, dict[str, str]]] = []
    if scenario.startswith("post"):
        author = ids.new_node_id()
        per_request = int(seconds * (5000 if batch == 1 else 800)) + 100  # more than fit in time
        for n in range(per_request):
            secret, cid = circles[0 if signed else n % CIRCLES]
            msgs = [
                wire_message(secret, author, f"load {n}.{i}", name="bench") for i in range(batch)
            ]
            body = compact_json({"circle_hint": ids.circle_hint(cid), "messages": msgs}).encode()
            # Signed ahead (the nonces are fresh for 300 s): the generator's CPU is the server's.
            headers = (
                signed_headers(keys[0], BENCH_NODE, "POST", "/messages", body) if signed else {}
            )
            bodies.append((body, {"Content-Type": "application/json", **headers}))
    # The first stored second of each seeded circle (1,000 messages, 100 a
    # second, so ten seconds): its since=0 page ends with the second one.
    firsts: list[int] = []
    probe = _Connection(host, port)
    if signed:  # the bench's node registers its circle's key, as a member's relay-sync does
        registration = compact_json(
            {
                "node_id": BENCH_NODE,
                "circle_hint": hints[0],
                "endpoints": [],
                "capabilities": {},
                "ttl_s": 600,
                "signing_key": keys[0],
            }
        ).encode()
        headers = signed_headers(keys[0], BENCH_NODE, "POST", "/register", registration)
        status, answer = await probe.request("POST", "/v1/register", headers, registration)
        assert status == 200, answer
    for hint in hints[:1] if signed else hints:
        while True:  # a relay at its defaults may hold this address back a moment
            status, answer = await probe.request(
                "GET", f"/v1/messages?circle_hint={hint}&since=0", {}
            )
            if status != 429:
                break
            await asyncio.sleep(1)
        firsts.append(json.loads(answer)["server_time"] - 1)
    assert probe.writer is not None
    probe.writer.close()
    latencies: list[float] = []
    errors = 0
    limited = 0
    counter = itertools.count()
    deadline = time.monotonic() + seconds

    async def worker(conn: _Connection) -> None:
        nonlocal errors, limited
        rng = random.Random()
        while time.monotonic() < deadline:
            n = next(counter)
            c = 0 if signed else rng.randrange(CIRCLES)
            headers: dict[str, str] = {}
            body = b""
            if scenario.startswith("post"):
                if n >= len(bodies):
                    return
                method, target, (body, headers) = "POST", "/v1/messages", bodies[n]
            else:
                first = firsts[c]
                since = first + 100 if scenario == "poll" else rng.randrange(first - 1, first + 8)
                method = "GET"
                target = f"/v1/messages?circle_hint={hints[c]}&since={max(0, since)}&limit=200"
                if signed:
                    headers = signed_headers(keys[c], BENCH_NODE, "GET", "/messages", b"")
            started = time.perf_counter()
            status, _ = await conn.request(method, target, headers, body)
            latencies.append(time.perf_counter() - started)
            if status == 429:
                limited += 1
            elif status != 200:
                errors += 1

    print("started", flush=True)  # the timed part begins: see ``_load_process``
    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(
        *(worker(_Connection(*targets[i % len(targets)])) for i in range(connections))
    )
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "ok": len(lat) - errors - limited,
        "batch": batch,
        "seconds": elapsed,
        "cpu": cpu,  # the generator's own, while it ran: what it took from the relay's cores
        "errors": errors,
        "limited": limited,
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
    scenarios: tuple[str, ...] = ALL,
    limits: tuple[bool, ...] = (True, False),
) -> list[Row]:
    """Rows (name, result, notes) for each scenario against one relay, at its defaults
    (``True`` in ``limits``) and with ``--no-limits`` (``False``)."""
    rows: list[Row] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
    with tempfile.TemporaryDirectory(prefix="felund-bench-relay-") as tmp:
        db = Path(tmp) / "relay.db"
        started = time.perf_counter()
        seed(db, messages)
        seeding = time.perf_counter() - started
        for limited in limits:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = _start_relay(port, str(db), env, limited=limited)
            which = "defaults" if limited else "limits off"
            try:
                for scenario in scenarios:
                    r = _load_process(url, scenario, seconds, connections, env)
                    per_s = r["ok"] / r["seconds"]
                    result = f"{per_s:,.0f} req/s"
                    if r["batch"] > 1:
                        result = f"{per_s * r['batch']:,.0f} msg/s ({per_s:,.0f} req/s)"
                    elif scenario.startswith("post"):
                        result = f"{per_s:,.0f} msg/s"
                    rows.append(
                        (
                            f"relay ({which}) {SCENARIOS[scenario]}",
                            result,
                            f"p99 {r['p99'] * 1000:.1f} ms, p50 {r['p50'] * 1000:.1f} ms; "
                            f"{r['requests']:,} requests, {r['limited']:,} refused 429, "
                            f"{r['errors']} errors; one client, {connections} connections "
                            f"from another process; {messages:,} messages stored (seeded in "
                            f"{seeding:.0f} s); {os.cpu_count()} cores shared",
                        )
                    )
            finally:
                _stop(server)
    return rows


def _load_process(
    url: str,
    scenario: str,
    seconds: float,
    connections: int,
    env: dict[str, str],
    *,
    watch: tuple[list[int], ...] = (),
) -> dict[str, Any]:
    """Run the load generator in its own process; in the result, ``"watched"``: the CPU
    seconds of each group of processes in ``watch`` during its timed part (after it
    has built its requests), and ``"machine"``: the cores the whole machine was busy."""
    with subprocess.Popen(
        [
            sys.executable, "-m", "bench.relay", "load", "--url", url,
            "--scenario", scenario, "--seconds", str(seconds),
            "--connections", str(connections),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as load:  # fmt: skip
        assert load.stdout is not None
        lines = []
        before = [0.0] * len(watch)
        machine = machine_ticks()
        for line in load.stdout:
            if line.strip() == "started":
                before, machine = [_cpu_s(pids) for pids in watch], machine_ticks()
            lines.append(line)
        code = load.wait(timeout=seconds * 10 + 120)
    if code != 0:
        raise subprocess.CalledProcessError(code, "bench.relay load")
    result: dict[str, Any] = json.loads(lines[-1])
    result["watched"] = [_cpu_s(pids) - b for pids, b in zip(watch, before, strict=True)]
    busy, total = (now - then for now, then in zip(machine_ticks(), machine, strict=True))
    result["machine"] = busy / max(1, total) * (os.cpu_count() or 1)
    return result


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def _start_relay(
    port: int, db: str, env: dict[str, str], *, limited: bool = False
) -> subprocess.Popen[bytes]:
    """A relay on ``db``, at its defaults (``limited``) or with ``--no-limits``."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "services.relay_server", "--host", "127.0.0.1",
            "--port", str(port), "--db", db, "--log-level", "warning", "--log-format", "json",
            *(() if limited else ("--no-limits",)),
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


def _cpu_s(pids: list[int]) -> float:
    """User + system seconds the processes ``pids`` have used (those still running)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_ticks(pid)
    return total / os.sysconf("SC_CLK_TCK")


def bench_relay_backends(
    *,
    messages: int = 20_000,
    seconds: float = 8.0,
    connections: int = 32,
    scenarios: tuple[str, ...] = ("post", "get"),
    feed: bool = True,
    synchronous_commit: bool = False,
) -> list[Row]:
    """SQLite with one instance, PostgreSQL with one and with two, side by side: POST of
    single messages, GET of a page, and the feed's latency (post on the first instance,
    pushed on the last). Each row gives the CPU per request of the relays, PostgreSQL
    (all its processes) and the load generator, to show which one bounds the figure.
    PostgreSQL runs with fsync on and, unless ``synchronous_commit``, without waiting
    for the disk at each commit: the durability of the relay's SQLite (WAL,
    ``synchronous = NORMAL``), see ``felund.testing.postgres``."""
    rows: list[Row] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
    pg = PgServer(durable=True, synchronous_commit=synchronous_commit)
    durability = f"fsync on, synchronous_commit {'on' if synchronous_commit else 'off'}"
    try:
        with tempfile.TemporaryDirectory(prefix="felund-bench-relay-") as tmp:
            for label, instances in (("SQLite, 1 instance", 1), ("PostgreSQL, 1 instance", 1),
                                     ("PostgreSQL, 2 instances", 2)):  # fmt: skip
                sqlite = "SQLite" in label
                db = str(Path(tmp) / f"relay-{len(rows)}.db") if sqlite else pg.database()
                seed(Path(db) if sqlite else db, messages)
                ports = [free_port() for _ in range(instances)]
                procs = [_start_relay(port, db, env) for port in ports]
                urls = [f"http://127.0.0.1:{port}" for port in ports]
                relay_pids = [proc.pid for proc in procs]
                try:
                    for scenario in scenarios:
                        db_pids = [] if sqlite else pg.pids()
                        r = _load_process(
                            ",".join(urls),
                            scenario,
                            seconds,
                            connections,
                            env,
                            watch=(relay_pids, db_pids),
                        )
                        relay_cpu, db_cpu = r["watched"]
                        per = 1e6 / max(1, r["requests"])
                        rows.append(
                            (
                                f"relay {label} (limits off): {SCENARIOS[scenario]}",
                                f"{r['requests'] / r['seconds']:,.0f} req/s",
                                f"p99 {r['p99'] * 1000:.1f} ms, p50 {r['p50'] * 1000:.1f} ms; "
                                f"{r['errors']} errors; {connections} connections; "
                                f"{messages:,} messages seeded; {os.cpu_count()} cores shared; "
                                f"CPU per request: relay {relay_cpu * per:.0f} us"
                                + ("" if sqlite else f", PostgreSQL {db_cpu * per:.0f} us")
                                + f", load generator {r['cpu'] * per:.0f} us; "
                                f"busy {(relay_cpu + db_cpu + r['cpu']) / r['seconds']:.2f}"
                                f" cores, the machine {r['machine']:.2f} (its kernel too)"
                                + ("" if sqlite else f"; {durability}"),
                            )
                        )
                    if feed:
                        lat = asyncio.run(_feed_latency(urls, 200))
                        rows.append(
                            (
                                f"relay {label} (limits off): feed latency, POST to "
                                f"{'one instance, pushed by the other' if instances > 1 else 'it'}",
                                f"p50 {statistics.median(lat) * 1000:.1f} ms",
                                f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms; 200 POSTs "
                                "one after another",
                            )
                        )
                finally:
                    for proc in procs:
                        _stop(proc)
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
    backends = sub.add_parser("backends", help="SQLite / PostgreSQL 1 / PostgreSQL 2 instances")
    backends.add_argument("--seconds", type=float, default=8.0)
    backends.add_argument("--scenario", action="append", choices=("post", "get"))
    backends.add_argument("--no-feed", action="store_true", help="leave out the feed latency")
    backends.add_argument(
        "--synchronous-commit", action="store_true", help="PostgreSQL waits for the disk"
    )
    table = sub.add_parser("table")
    table.add_argument("--messages", type=int, default=100_000)
    table.add_argument("--seconds", type=float, default=10.0)
    table.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    table.add_argument("--limits", choices=("both", "defaults", "off"), default="both")
    args = parser.parse_args()
    if args.command == "load":
        result = asyncio.run(_load(args.url, args.scenario, args.seconds, args.connections))
        print(json.dumps(result))
        return
    if args.command == "backends":
        print_table(
            bench_relay_backends(
                seconds=args.seconds,
                scenarios=tuple(args.scenario or ("post", "get")),
                feed=not args.no_feed,
                synchronous_commit=args.synchronous_commit,
            )
        )
        return
    limits = {"both": (True, False), "defaults": (True,), "off": (False,)}
    rows = bench_relay(
        getattr(args, "messages", 100_000),
        seconds=getattr(args, "seconds", 10.0),
        scenarios=tuple(getattr(args, "scenario", None) or ALL),
        limits=limits[getattr(args, "limits", "both")],
    )
    print_table(rows)


if __name__ == "__main__":
    main()
