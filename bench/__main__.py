"""Run every benchmark against real nodes and print one table.

Figures depend on the machine and on what else it is doing: compare rows
of one run, not runs of different days.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import data, footprint, gossip, print_table, relay, relay_e2e, ui, web
from felund.actor.runtime import load_context
from felund.bus.sockets import Bus
from felund.protocol import ENDPOINT_STORE_CTL, OP_POST, SVC_BENCH
from felund.testing import FELUND, Node, running_node
from felund.testing.procstat import cpu_ticks, rss_kib
from felund.v1 import ids

Row = tuple[str, str, str]


def bench_bus(node: Node, count: int, rate: float) -> Row:
    """Events through the proxy between two processes."""
    cmd = [sys.executable, "-m", "bench.bus_peer"]
    sub = subprocess.Popen(
        [*cmd, "sub", str(count)], env=node.env, stdout=subprocess.PIPE, text=True
    )
    assert sub.stdout is not None
    sub.stdout.readline()  # subscribed
    pub = subprocess.run(
        [*cmd, "pub", str(count), str(rate)],
        env=node.env,
        capture_output=True,
        text=True,
        check=True,
    )
    sent = json.loads(pub.stdout.splitlines()[-1])
    got = json.loads(sub.communicate(timeout=120)[0].splitlines()[-1])
    unseen = count - got["received"] - got["missed"]
    label = "as fast as possible" if not rate else f"offered {rate / 1000:g}k/s"
    return (
        f"bus events/s, 2 processes via proxy ({label})",
        f"{got['received'] / max(got['seconds'], 1e-9):,.0f}",
        f"sent {count:,} in {sent['seconds']:.2f} s; received {got['received']:,}; "
        f"lost and counted {got['missed']:,}; lost unseen {unseen:,}",
    )


def bench_appends(node: Node, batch: int, total: int) -> Row:
    """Store appends acknowledged per second, one client, ``batch`` per request."""
    ctx = load_context(node.env)
    bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
    rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
    latencies = []
    started = time.perf_counter()
    try:
        for _ in range(total // batch):
            now = int(time.time())
            msgs = [
                {
                    "msg_id": ids.new_msg_id(ctx.node_id, now),
                    "created_ts": now,
                    "text": "benchmark message",
                }
                for _ in range(batch)
            ]
            t0 = time.perf_counter()
            rpc.call(OP_POST, {"circle_id": node.circle_id, "msgs": msgs})
            latencies.append(time.perf_counter() - t0)
    finally:
        bus.close()
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return (
        f"store appends acknowledged/s ({batch} per request)",
        f"{total / elapsed:,.0f}",
        f"{total:,} messages; request p50 {statistics.median(lat) * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms",
    )


def bench_send_stdin(node: Node, lines: int) -> Row:
    """`felund send --stdin` end to end."""
    data = "".join(f"bench line {i}\n" for i in range(lines)).encode()
    started = time.perf_counter()
    subprocess.run(
        [*FELUND, "send", "--circle-id", node.circle_id, "--stdin"],
        input=data,
        env=node.env,
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    return (
        f"felund send --stdin, {lines:,} lines end to end",
        f"{elapsed:.1f} s",
        f"{lines / elapsed:,.0f} lines/s, including process start",
    )


def bench_idle(node: Node, seconds: float) -> list[Row]:
    """CPU and memory of a node doing nothing."""
    time.sleep(2)
    pids = node.pids()
    before = sum(cpu_ticks(p) for p in pids)
    time.sleep(seconds)
    used = (sum(cpu_ticks(p) for p in pids) - before) / os.sysconf("SC_CLK_TCK")
    rss = sum(map(rss_kib, pids)) / 1024
    return [
        (
            "idle CPU of a running node",
            f"{used / seconds * 100:.2f} %",
            f"of one core, {len(pids)} processes over {seconds:g} s",
        ),
        ("total RSS of a running node", f"{rss:.0f} MiB", f"{len(pids)} processes, no message"),
    ]


def main() -> None:
    """Run the benchmarks and print the table."""
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="felund-bench-") as tmp,
        running_node(Path(tmp) / "node", "bench") as node,
    ):
        rows += bench_idle(node, 10)
        rows.append(bench_bus(node, 200_000, 60_000))
        rows.append(bench_bus(node, 200_000, 0))
        rows.append(bench_appends(node, 1, 3_000))
        rows.append(bench_appends(node, 1000, 50_000))
        rows.append(bench_send_stdin(node, 100_000))
    rows += footprint.main()  # its own node: idle writes, memory at 10k/100k, CLI p50
    rows += gossip.main()
    with tempfile.TemporaryDirectory(prefix="felund-bench-") as tmp:
        rows += relay_e2e.bench_relay_e2e(Path(tmp))
    rows += relay.bench_relay()  # its own relay: 100k messages, load from another process
    rows += relay.bench_relay_backends()  # SQLite / PostgreSQL 1 / PostgreSQL 2 instances
    rows += ui.main()  # its own node: `felund ui` on a pty; redraw with 10k messages
    rows += web.main()  # its own relay and Chromium: the page's first render of 10k messages
    rows += data.main()  # its own node: backup while sending, export (FELUND_BENCH_DATA_ROWS)
    print_table(rows)


if __name__ == "__main__":
    main()
