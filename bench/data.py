"""Owning the data with a real node: a backup while messages arrive, and export memory.

A running node (``felund.testing.running_node``) is filled with
``LARGE`` messages through its store (posts of 1000). Backup: a sender
posts ``SEND_BATCH`` messages every ``SEND_EVERY_S`` (1000 a second, on a
fixed schedule: a slow answer does not lower the rate) the whole time;
``felund backup`` runs in the middle; the rows give the backup's time and
size, the sender's worst wait for an answer before and during it (and
when in the backup it came), and the messages acknowledged but missing
afterwards (must be 0), checked in the node's database. Export: ``felund
export --format jsonl`` of a circle of ``SMALL`` and of ``LARGE`` messages
to /dev/null, with the exporting process's own peak RSS (VmHWM): flat
memory means both peaks about equal.

Sizes (this 2-core machine, minutes in all): LARGE = 300,000 messages of
about 100 characters (``FELUND_BENCH_DATA_ROWS`` sets another), SMALL =
30,000.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from felund.actor.runtime import load_context
from felund.bus.sockets import Bus, RPCClient
from felund.protocol import ENDPOINT_STORE_CTL, MAX_POST_BATCH, OP_CIRCLE_CREATE, OP_POST, SVC_BENCH
from felund.testing import FELUND, REPO, Node, running_node
from felund.v1 import ids

Row = tuple[str, str, str]

LARGE = int(os.environ.get("FELUND_BENCH_DATA_ROWS", "300000"))
SMALL = 30_000
SEND_BATCH = 20
SEND_EVERY_S = 0.02
TEXT = (
    "a message of about one hundred characters, as people write them in a chat, give or take a few"
)


def _client(node: Node) -> tuple[Bus, RPCClient, str]:
    ctx = load_context(node.env)
    bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
    return bus, bus.rpc_client(ENDPOINT_STORE_CTL), ctx.node_id


def _fill(rpc: RPCClient, node_id: str, circle_id: str, count: int) -> None:
    for start in range(0, count, MAX_POST_BATCH):
        now = int(time.time())
        msgs = [
            {"msg_id": ids.new_msg_id(node_id, now), "created_ts": now, "text": f"{TEXT} {i}"}
            for i in range(start, min(start + MAX_POST_BATCH, count))
        ]
        rpc.call(OP_POST, {"circle_id": circle_id, "msgs": msgs}, 60_000, 1)


class _Sender(threading.Thread):
    """Posts messages on a fixed schedule; keeps each answer's wait and the ids acknowledged."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.waits: list[tuple[float, float]] = []  # (when sent, seconds to the answer)
        self.acked: list[Any] = []
        self.failed = 0

    def run(self) -> None:
        bus, rpc, node_id = _client(self.node)
        due = time.monotonic()
        try:
            # The next post is due SEND_EVERY_S after the last one was due, not after its
            # answer came: a stall is made up afterwards, so the offered rate stays 1000/s.
            while not self.stop.wait(max(0.0, due - time.monotonic())):
                due += SEND_EVERY_S
                now = int(time.time())
                msgs = [
                    {"msg_id": ids.new_msg_id(node_id, now), "created_ts": now, "text": TEXT}
                    for _ in range(SEND_BATCH)
                ]
                sent = time.monotonic()
                try:
                    rpc.call(OP_POST, {"circle_id": self.node.circle_id, "msgs": msgs})
                except Exception:  # counted: a bench reports, it does not stop
                    self.failed += 1
                    continue
                self.waits.append((sent, time.monotonic() - sent))
                self.acked.extend(m["msg_id"] for m in msgs)
        finally:
            bus.close()


def bench_backup(node: Node, tmp: Path) -> list[Row]:
    """A backup of a large store while messages keep arriving."""
    sender = _Sender(node)
    sender.start()
    time.sleep(3)
    target = tmp / "node.felund-backup"
    started = time.monotonic()
    subprocess.run(
        [*FELUND, "backup", str(target)], env=node.env, cwd=REPO, check=True, capture_output=True
    )
    ended = time.monotonic()
    time.sleep(3)
    sender.stop.set()
    sender.join()
    span = sender.waits[-1][0] - sender.waits[0][0] if sender.waits else 0.0
    rate = len(sender.acked) / max(span, 1e-9)
    before = [w for t, w in sender.waits if t < started]
    during = [w for t, w in sender.waits if started <= t <= ended]
    worst_at, worst = max(
        ((t, w) for t, w in sender.waits if started <= t <= ended),
        key=lambda tw: tw[1],
        default=(started, 0.0),
    )
    db = sqlite3.connect(node.home / "felund.db")
    try:
        held = {r[0] for r in db.execute("SELECT msg_id FROM messages")}
    finally:
        db.close()
    lost = sum(1 for m in sender.acked if m not in held)
    copy = sqlite3.connect(target)
    try:
        in_backup = copy.execute("SELECT count(*) FROM messages").fetchone()[0]
        verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        copy.close()
    size = target.stat().st_size
    return [
        (
            f"backup of a {LARGE // 1000}k-message store while sending (felund backup)",
            f"{ended - started:.1f} s",
            f"{size / 2**20:.0f} MiB, integrity {verdict}, {in_backup:,} messages in it; "
            f"sender: {len(sender.acked):,} acknowledged ({rate:,.0f}/s), {lost} lost, "
            f"{sender.failed} failed",
        ),
        (
            f"send wait during that backup ({SEND_BATCH} messages every 20 ms)",
            f"max {worst * 1000:.0f} ms",
            f"{worst_at - started:.1f} s into it; {sum(w > 0.1 for w in during)} over 100 ms; "
            f"median {statistics.median(during or [0]) * 1000:.1f} ms over {len(during)} posts; "
            f"before it: median {statistics.median(before or [0]) * 1000:.1f} ms, "
            f"max {max(before, default=0) * 1000:.0f} ms",
        ),
    ]


def _own_peak_kib(pid: int) -> int:
    """A process's peak RSS since its exec (VmHWM), in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def _export(node: Node, circle_id: str) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, lines) of one `felund export` to a pipe read and dropped.

    The peak is read from /proc while it runs, not from wait4: a child's ru_maxrss
    counts the memory of the process it was forked from (this one, which held a
    million message ids), so it said more about the bench than about the export.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        [*FELUND, "export", "--circle-id", circle_id, "--format", "jsonl"],
        env=node.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = peak = 0
    while chunk := proc.stdout.read(1 << 16):
        lines += chunk.count(b"\n")
        peak = max(peak, _own_peak_kib(proc.pid))
    assert proc.wait() == 0
    return time.monotonic() - started, peak, lines


def bench_export(node: Node, small_circle: str) -> list[Row]:
    """Export time and peak memory for a small and a large circle."""
    rows: list[Row] = []
    for label, circle_id in (
        (f"{SMALL // 1000}k", small_circle),
        (f"{LARGE // 1000}k", node.circle_id),
    ):
        seconds, peak_kib, lines = _export(node, circle_id)
        rows.append(
            (
                f"export of a {label}-message circle (jsonl)",
                f"{seconds:.1f} s",
                f"{lines:,} lines, {lines / seconds:,.0f} lines/s; "
                f"peak RSS {peak_kib / 1024:.0f} MiB",
            )
        )
    return rows


def main() -> list[Row]:
    """Every data benchmark on one node of its own."""
    with (
        tempfile.TemporaryDirectory(prefix="felund-bench-data-") as tmp,
        running_node(Path(tmp) / "node", "bench") as node,
    ):
        bus, rpc, node_id = _client(node)
        try:
            small: str = rpc.call(OP_CIRCLE_CREATE, {"name": "small"})["circle_id"]
            _fill(rpc, node_id, node.circle_id, LARGE)
            _fill(rpc, node_id, small, SMALL)
        finally:
            bus.close()
        rows = bench_backup(node, Path(tmp))
        rows += bench_export(node, small)
    return rows


if __name__ == "__main__":
    for row in main():
        print(json.dumps(row, ensure_ascii=False))
