"""Gossip between real nodes on 127.0.0.1: delivery latency, a 100k backlog, anti-entropy.

Every node is a real `felund run` in a temporary home, started through
``felund.testing.Node`` and always stopped. Latency is taken from the bus
(``chat.msg.stored`` events of the receiving nodes), so no CLI process start
is measured. The 1 / 100 / 1000 missing-message rows run the reconciliation
core (``felund.reconcile.reconcile_pair``) in memory: the code the nodes run,
but their bytes are the messages' msgpack size, not bytes on the wire.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from felund import ids
from felund.bus import Bus, RPCClient
from felund.protocol import ENDPOINT_STORE_CTL, OP_POST, OP_STATS, SVC_BENCH, TOPIC_MSG_STORED
from felund.reconcile import ItemSet, reconcile_pair
from felund.service import load_context
from felund.testing import Node, free_port, metric_value, wait_for

Row = tuple[str, str, str]

ROUND_INTERVAL_S = "0.5"  # how often a node dials peers it is not connected to
NO_REDIAL_S = "3600"  # a round interval long enough that a node dials only at start
LATENCY_MESSAGES = 200
BACKLOG = 100_000
BACKLOG_TIMEOUT_S = 180.0
AE_INTERVAL_S = 2.0
AE_WINDOW_S = 10.0


# --- nodes --------------------------------------------------------------------
@contextmanager
def _nodes() -> Iterator[list[Node]]:
    """A list to put nodes in; every one of them is stopped at the end."""
    nodes: list[Node] = []
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _make(nodes: list[Node], root: Path, name: str, **env: str) -> Node:
    """An initialised node (not started) listening on 127.0.0.1 only."""
    env.setdefault("FELUND_GOSSIP_ROUND_INTERVAL_S", ROUND_INTERVAL_S)
    node = Node(root / name, FELUND_GOSSIP_PORT=str(free_port()), **env)
    nodes.append(node)
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _join(node: Node, code: str) -> str:
    """Join a circle by invite code; its circle id."""
    return node.cli("join", "--code", code).stdout.strip()


class _Metrics:
    """A node's /metrics, its URL looked up once."""

    def __init__(self, node: Node) -> None:
        self.url = node.status()["metrics_url"]
        assert self.url.startswith("http://127.0.0.1:")

    def text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def value(self, name: str, **labels: str) -> float:
        return metric_value(self.text(), name, **labels) or 0.0

    def gossip_bytes(self) -> float:
        text = self.text()
        return sum(
            metric_value(text, "felund_gossip_bytes_total", direction=d) or 0.0
            for d in ("in", "out")
        )


class _Client:
    """The bench's own connection to one node's bus: posts and store stats."""

    def __init__(self, node: Node) -> None:
        ctx = load_context(node.env)
        self.node_id = ctx.node_id
        self.bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
        self.rpc: RPCClient = self.bus.rpc_client(ENDPOINT_STORE_CTL)

    def post(self, circle_id: str, text: str) -> str:
        now = int(time.time())
        msg_id = ids.new_msg_id(self.node_id, now)
        msg = {"msg_id": msg_id, "created_ts": now, "text": text}
        self.rpc.call(OP_POST, {"circle_id": circle_id, "msgs": [msg]})
        return msg_id

    def messages(self) -> int:
        """The store's message count: the figure `felund status --json` shows."""
        return int(self.rpc.call(OP_STATS, {})["messages"] or 0)

    def close(self) -> None:
        self.bus.close()


class _Arrivals(threading.Thread):
    """Timestamps (perf_counter) of every msg_id a node's store announces as stored."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.env = node.env
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        # The sockets are made, used and closed in this thread only.
        ctx = load_context(self.env)
        bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
        try:
            sub = bus.subscriber(TOPIC_MSG_STORED)
            self.ready.set()
            while not self.done.is_set():
                got = sub.recv(100)
                if got is None:
                    continue
                now = time.perf_counter()
                body: Any = got.frame.body
                rows = body.get("msgs") if isinstance(body, dict) else None
                with self.cond:
                    for row in rows if isinstance(rows, list) else ():
                        self.seen.setdefault(row["msg_id"], now)
                    self.cond.notify_all()
        finally:
            bus.close()

    def wait(self, msg_id: str, timeout: float) -> float | None:
        """When msg_id arrived, waiting up to ``timeout`` for it; None if it did not."""
        with self.cond:
            self.cond.wait_for(lambda: msg_id in self.seen, timeout)
            return self.seen.get(msg_id)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.1f} ms, p99 {_pct(values, 0.99) * 1000:.1f} ms"


# --- 1. delivery latency ---------------------------------------------------------
def bench_latency(root: Path) -> list[Row]:
    """A -> B and A -> B -> C, three nodes in a line, one message at a time."""
    with _nodes() as nodes:
        a = _make(nodes, root, "a")
        b = _make(nodes, root, "b")
        # C dials only at start (B, from its invite): it learns A's address from
        # B by peer exchange but does not dial it while we measure.
        c = _make(nodes, root, "c", FELUND_GOSSIP_ROUND_INTERVAL_S=NO_REDIAL_S)
        circle = _join(b, a.cli("invite").stdout.strip())
        _join(c, b.cli("invite", "--circle-id", circle).stdout.strip())
        a.start()
        b.start()
        ma, mb = _Metrics(a), _Metrics(b)
        wait_for(lambda: mb.value("felund_gossip_peers_connected") >= 1, what="a-b link")
        c.start()
        mc = _Metrics(c)
        wait_for(lambda: mb.value("felund_gossip_peers_connected") >= 2, what="b-c link")
        time.sleep(1)  # let the initial reconciliations finish

        arrivals = {"b": _Arrivals(b), "c": _Arrivals(c)}
        for t in arrivals.values():
            t.start()
            t.ready.wait(10)
        client = _Client(a)
        try:
            # Warm up (and outlast the subscribers' slow join): until one message
            # is seen on C.
            deadline = time.monotonic() + 20
            while arrivals["c"].wait(client.post(circle, "warm-up"), 1.0) is None:
                assert time.monotonic() < deadline, "warm-up messages never reached C"
            ack: list[float] = []
            to_b: list[float] = []
            to_c: list[float] = []
            b_to_c: list[float] = []
            lost = 0
            for i in range(LATENCY_MESSAGES):
                t0 = time.perf_counter()
                msg_id = client.post(circle, f"latency {i}")
                ack.append(time.perf_counter() - t0)
                at_c = arrivals["c"].wait(msg_id, 5.0)
                at_b = arrivals["b"].wait(msg_id, 0.0 if at_c is None else 1.0)
                if at_b is None or at_c is None:
                    lost += 1
                    continue
                to_b.append(at_b - t0)
                to_c.append(at_c - t0)
                b_to_c.append(at_c - at_b)
        finally:
            client.close()
            for t in arrivals.values():
                t.done.set()
            for t in arrivals.values():
                t.join(5)
        links = {
            n: int(m.value("felund_gossip_peers_connected"))
            for n, m in zip("abc", (ma, mb, mc), strict=True)
        }
    assert to_b and to_c, "no message was delivered"
    how = (
        f"{LATENCY_MESSAGES} messages posted one at a time on A's bus, each awaited on C "
        f"before the next ({lost} not delivered within 5 s); from the post request to the "
        "receiving store's chat.msg.stored event, so A's commit (ack p50 "
        f"{statistics.median(ack) * 1000:.1f} ms) and each receiver's commit are included"
    )
    direct = (
        "C had no direct link to A (peer exchange done, but C does not redial)"
        if links["c"] == 1
        else f"NOTE C had {links['c']} links at the end: it may have reached A directly"
    )
    return [
        ("gossip delivery latency A→B, 1 hop, loopback", _ms(to_b), how + "; target p50 < 20 ms"),
        (
            "gossip delivery latency A→C via B, 2 hops, loopback",
            _ms(to_c),
            f"second hop alone (B→C) {_ms(b_to_c)}; {direct}; target p50 < 20 ms per hop",
        ),
    ]


# --- 2 and 3. backlog, then anti-entropy between two nodes in sync -------------------
def bench_backlog(root: Path) -> list[Row]:
    """B joins empty and syncs A's 100k; then the cost of a reconciliation round in sync."""
    rows: list[Row] = []
    with _nodes() as nodes:
        a = _make(nodes, root, "a")
        b = _make(nodes, root, "b")
        circle = _join(b, a.cli("invite").stdout.strip())
        lines = "".join(f"backlog line {i:06d}\n" for i in range(BACKLOG)).encode()
        a.cli("send", "--circle-id", circle, "--stdin", stdin=lines, timeout=600)
        a.start()
        ca = _Client(a)
        try:
            want = ca.messages()
        finally:
            ca.close()
        assert want >= BACKLOG, f"A holds {want} messages, not {BACKLOG}"

        started = time.monotonic()
        b.start()
        cb = _Client(b)
        try:
            held = wait_for(
                lambda: (n := cb.messages()) >= want and n,
                timeout=BACKLOG_TIMEOUT_S,
                interval=0.2,
                what=f"B to hold {want} messages",
            )
            elapsed = time.monotonic() - started
        finally:
            cb.close()
        mb = _Metrics(b)
        wire = mb.gossip_bytes()
        got = mb.value("felund_gossip_messages_total", direction="in")
        rows.append(
            (
                f"backlog: empty B joins A holding {BACKLOG // 1000}k, until B holds them",
                f"{elapsed:.1f} s",
                f"from B's `felund run` until B's store counts {held:,} (= A's count, polled "
                f"every 0.2 s); {wire / 1e6:.1f} MB on the wire at B (in+out, "
                f"{wire / max(got, 1):.0f} B per message received, {got:,.0f} received); "
                "target < 10 s",
            )
        )

        # B again, now reconciling every AE_INTERVAL_S with A: both hold the same set.
        assert b.stop() == 0
        b.env["FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S"] = str(AE_INTERVAL_S)
        b.start()
        mb = _Metrics(b)
        wait_for(lambda: mb.value("felund_gossip_reconcile_rounds_total") >= 1, what="a round")
        time.sleep(AE_INTERVAL_S / 2)  # the session's first round and PEERS are done
        bytes0, rounds0 = mb.gossip_bytes(), mb.value("felund_gossip_reconcile_rounds_total")
        time.sleep(AE_WINDOW_S)
        bytes1, rounds1 = mb.gossip_bytes(), mb.value("felund_gossip_reconcile_rounds_total")
        rounds = rounds1 - rounds0
        assert rounds > 0, "no reconciliation round in the window"
        rows.append(
            (
                f"anti-entropy, 2 nodes in sync at {want // 1000}k: wire bytes per round",
                f"{(bytes1 - bytes0) / rounds:,.0f} B",
                f"{bytes1 - bytes0:,.0f} B in+out at B over {AE_WINDOW_S:g} s, "
                f"{rounds:.0f} rounds (every {AE_INTERVAL_S:g} s); target < 1 KB",
            )
        )
    return rows


# --- 3b. the reconciliation core, in memory -------------------------------------------
def bench_reconcile_core(total: int, missing: tuple[int, ...]) -> list[Row]:
    """reconcile_pair on two sets of ``total``, the newest ``d`` missing on one side."""
    node_id = ids.new_node_id()
    start = int(time.time()) - total // 10
    items = [(start + i // 10, ids.new_msg_id(node_id, start + i // 10)) for i in range(total)]
    full = ItemSet(items)
    rows: list[Row] = []
    for d in (0, *missing):
        partial = ItemSet(items[: total - d])
        t0 = time.perf_counter()
        trips, size, a_need, b_need = reconcile_pair(full, partial)
        elapsed = time.perf_counter() - t0
        assert not a_need and len(b_need) == d, (len(a_need), len(b_need))
        rows.append(
            (
                f"reconciliation, {total // 1000}k vs {total // 1000}k, {d} newest missing "
                "(reconciliation core, in memory)",
                f"{trips} round trips, {size:,} B",
                f"reconcile_pair: msgpack bytes of the RECON payloads both ways, not wire "
                f"bytes (no framing, sealing, WANT or MSGS); {elapsed * 1000:.0f} ms CPU",
            )
        )
    return rows


def main() -> list[Row]:
    """Every gossip benchmark, each in its own temporary directory."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="felund-bench-gossip-") as tmp:
        rows += bench_latency(Path(tmp))
    with tempfile.TemporaryDirectory(prefix="felund-bench-backlog-") as tmp:
        rows += bench_backlog(Path(tmp))
    rows += bench_reconcile_core(BACKLOG, (1, 100, 1000))
    return rows


if __name__ == "__main__":
    for row in main():
        print(json.dumps(row, ensure_ascii=False))
