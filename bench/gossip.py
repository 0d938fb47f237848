"""Gossip between real nodes on 127.0.0.1: delivery latency, a 100k backlog, anti-entropy.

Every node is a real `felund run` in a temporary home, started through
``felund.testing.Node`` and always stopped. Latency is taken from the bus
(``chat.msg.stored`` events of the receiving nodes), so no CLI process start
is measured. Backlogs: a 50k backlog from empty, a 50k catch-up, and a 100k
backlog from empty, each timed until the joiner's store holds everything; the
100k backlog again with and without signatures, side by side (wall time, and
the CPU seconds of B's processes, which a loaded machine sways less);
wire bytes are the joiner's ``felund_gossip_bytes_total`` (its counters
start at 0 with the node). The rows marked "(reconciliation core, in
memory)" run ``felund.gossip.reconcile`` in memory: the code the nodes run, but
their bytes are the RECON messages' msgpack size, not bytes on the wire.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

from felund.actor.runtime import BENCH_UNSIGNED, load_context
from felund.bus.sockets import Bus, RPCClient
from felund.gossip.native_frames import MAX_FRAME
from felund.gossip.reconcile import MAX_BOUND, MIN_BOUND, ItemSet, Reconciler, reconcile_pair
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    MAX_POST_BATCH,
    OP_APPEND,
    OP_CIRCLE_JOIN,
    OP_POST,
    OP_STATS,
    SVC_BENCH,
    TOPIC_MSG_STORED,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import (
    Node,
    free_port,
    handled,
    metric_value,
    wait_for,
    wire_message,
    wire_messages,
)
from felund.trust.batch import BATCH_LEAVES
from felund.trust.identity import IdentityKey
from felund.v1 import ids
from felund.v1.invite import encode_invite

Row = tuple[str, str, str]

ROUND_INTERVAL_S = "0.5"  # how often a node dials peers it is not connected to
NO_REDIAL_S = "3600"  # a round interval long enough that a node dials only at start
LATENCY_MESSAGES = 200
BACKLOG = 100_000
STALE = 10_000  # messages a returning node lacks
SYNC_STALL_S = 15.0  # a sync with no progress for this long is given up
SYNC_LIMIT_S = 120.0
# A count costs the store about 0.3 ms at 100k: every 50 ms, under 1 % of its time, leaves
# a sync's time rounded up by 25 ms on average (every 0.2 s, as before, by 100 ms).
COUNT_POLL_S = 0.05
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
        """Post one message; its msg_id."""
        now = int(time.time())
        msg_id = ids.new_msg_id(self.node_id, now)
        msg = {"msg_id": msg_id, "created_ts": now, "text": text}
        self.rpc.call(OP_POST, {"circle_id": circle_id, "msgs": [msg]})
        return msg_id

    def post_many(self, circle_id: str, count: int) -> None:
        """Post ``count`` messages in one request, their ids made together (as `send` does)."""
        now = int(time.time())
        msgs = [
            {"msg_id": m, "created_ts": now, "text": f"more {i}"}
            for i, m in enumerate(ids.new_msg_ids(self.node_id, now, count))
        ]
        self.rpc.call(OP_POST, {"circle_id": circle_id, "msgs": msgs})

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


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e4 else f"{n:.0f} B"


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


# --- 2 and 3. backlogs, then anti-entropy between two nodes in sync -----------------
def _await_count(client: _Client, want: int, started: float) -> tuple[float | None, int]:
    """Seconds from ``started`` until the store holds ``want`` messages (polled every
    COUNT_POLL_S), or None once it stalls or runs out of time; and the last count seen."""
    last, changed = -1, time.monotonic()
    while True:
        held = client.messages()
        now = time.monotonic()
        if held >= want:
            return now - started, held
        if held != last:
            last, changed = held, now
        if now - changed > SYNC_STALL_S or now - started > SYNC_LIMIT_S:
            return None, held
        time.sleep(COUNT_POLL_S)


def _loop_errors(*nodes: Node) -> str:
    """The distinct gossip.loop_error details in the nodes' logs."""
    details = {
        str(e.get("detail"))
        for n in nodes
        for e in n.log_events()
        if e.get("event") == "gossip.loop_error"
    }
    return "; ".join(sorted(details)) or "none"


def _sync_row(name: str, joiner: Node, source: Node, want: int, needed: int) -> Row:
    """Start ``joiner`` and time it until it holds ``want`` messages, from ``source`` as a
    node that has been up: serving, its index loaded (not loading 100k ids meanwhile)."""
    wait_for(source.gossip_serving, timeout=SYNC_LIMIT_S, what="the source's gossip to serve")
    ms = _Metrics(source)
    out0 = ms.value("felund_gossip_messages_total", direction="out")
    started = time.monotonic()
    joiner.start()
    client = _Client(joiner)
    try:
        seconds, held = _await_count(client, want, started)
    finally:
        client.close()
    mj = _Metrics(joiner)  # its counters start at 0 with the node
    wire = mj.gossip_bytes()
    got = mj.value("felund_gossip_messages_total", direction="in")
    sent = ms.value("felund_gossip_messages_total", direction="out") - out0
    who = joiner.home.name.upper()
    per = f", {wire / got:,.0f} B per message stored" if got else ""
    traffic = (
        f"{_size(wire)} on the wire at {who} (in+out{per}); "
        f"A sent {sent:,.0f} messages for {needed:,} missing"
    )
    if seconds is None:
        return (
            name,
            "did not finish",
            f"{who} held {held:,} of {want:,} after {time.monotonic() - started:.0f} s "
            f"(no progress for {SYNC_STALL_S:g} s); {traffic}; "
            f"gossip.loop_error logged: {_loop_errors(joiner, source)}",
        )
    return (
        name,
        f"{seconds:.1f} s",
        f"from `felund run` of {who} (node start included) until its store counts "
        f"{held:,} (the `felund status --json` figure, polled every {COUNT_POLL_S:g} s); "
        f"{traffic}; "
        "target < 10 s for 100k",
    )


def _in_sync_rows(a: Node, b: Node, held: int) -> list[Row]:
    """A and B hold the same ``held`` messages: restart both reconciling every
    AE_INTERVAL_S, wait for the wire to go quiet, then bytes per round."""
    assert b.stop() == 0
    assert a.stop() == 0
    for node in (a, b):  # either may end up the session's client, which times the rounds
        node.env["FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S"] = str(AE_INTERVAL_S)
    started = time.monotonic()
    a.start()
    b.start()
    mb = _Metrics(b)  # counters start at 0 with the node

    def rounds() -> float:
        return mb.value("felund_gossip_reconcile_rounds_total")

    wait_for(lambda: rounds() >= 1, what="a reconciliation round")
    last = mb.gossip_bytes()
    while True:  # quiet: less than 10 kB in one interval
        time.sleep(AE_INTERVAL_S)
        now = mb.gossip_bytes()
        if now - last < 10_000 or time.monotonic() - started > SYNC_LIMIT_S:
            break
        last = now
    settled = time.monotonic() - started
    bytes0, rounds0 = mb.gossip_bytes(), rounds()
    time.sleep(AE_WINDOW_S)
    bytes1, rounds1 = mb.gossip_bytes(), rounds()
    n = rounds1 - rounds0
    per_round = f"{(bytes1 - bytes0) / n:,.0f} B" if n else "no round"
    return [
        (
            f"gossip restart of A and B, already in sync at {held:,}",
            _size(bytes0),
            f"wire bytes at B (in+out) from the restart until less than 10 kB moved in "
            f"{AE_INTERVAL_S:g} s ({settled:.0f} s); nothing was missing, so ideally a few kB",
        ),
        (
            f"anti-entropy, A and B in sync at {held:,}: wire bytes per round",
            per_round,
            f"{bytes1 - bytes0:,.0f} B in+out at B over {AE_WINDOW_S:g} s, {n:.0f} rounds "
            f"(reconciling every {AE_INTERVAL_S:g} s), after the restart traffic; "
            "target < 1 KB",
        ),
    ]


def bench_backlog(root: Path) -> list[Row]:
    """An empty node, then a stale one, then a third catching up with A; then a
    reconciliation round in sync."""
    rows: list[Row] = []
    with _nodes() as nodes:
        a = _make(nodes, root, "a")
        b = _make(nodes, root, "b")
        c = _make(nodes, root, "c")
        circle = _join(b, a.cli("invite").stdout.strip())
        _join(c, a.cli("invite", "--circle-id", circle).stdout.strip())
        lines = "".join(f"backlog line {i:06d}\n" for i in range(BACKLOG)).encode()
        a.cli("send", "--circle-id", circle, "--stdin", stdin=lines, timeout=600)
        a.start()
        ca = _Client(a)
        try:
            want = ca.messages()
            rows.append(
                _sync_row(f"gossip backlog: empty B joins A holding {want:,}", b, a, want, BACKLOG)
            )
            # B goes away; A gets more; B comes back.
            assert b.stop() == 0
            for _ in range(STALE // MAX_POST_BATCH):
                ca.post_many(circle, MAX_POST_BATCH)
            want = ca.messages()
        finally:
            ca.close()
        rows.append(
            _sync_row(f"gossip catch-up: B {STALE:,} behind, A holds {want:,}", b, a, want, STALE)
        )
        rows.append(
            _sync_row(f"gossip backlog: empty C joins A (and B) holding {want:,}", c, a, want, want)
        )
        c.stop()

        rows += _in_sync_rows(a, b, want)
    return rows


# --- 3a. the cost of signatures: the 100k backlog signed and not, side by side ------------
def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by a process and each of its descendants,
    by the module each runs (``python -m services.store``: "store")."""
    stats: dict[int, tuple[int, float, str]] = {}  # pid: (parent, cpu seconds, name)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        # The name, in parentheses, may hold spaces: the fields after it are split.
        fields = text.rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        module = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv[:-1] else proc.name
        name = module.rpartition(".")[2]
        stats[int(proc.name)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"), name)
    tree, grown = {pid}, True
    while grown:  # to a fixpoint: a child's pid is not always above its parent's
        before = len(tree)
        tree |= {p for p, (parent, _, _) in stats.items() if parent in tree}
        grown = len(tree) > before
    out: dict[str, float] = {}
    for p in tree & stats.keys():
        _, cpu, name = stats[p]
        out[name] = out.get(name, 0.0) + cpu
    return out


def _backlog_seconds(root: Path, **env: str) -> tuple[Row, float | None, dict[str, float]]:
    """An empty B joining A, which holds BACKLOG messages, under ``env``; the row, its
    seconds and the CPU seconds B's processes used (less swayed by a loaded machine)."""
    with _nodes() as nodes:
        a = _make(nodes, root, "a", **env)
        b = _make(nodes, root, "b", **env)
        circle = _join(b, a.cli("invite").stdout.strip())
        lines = "".join(f"backlog line {i:06d}\n" for i in range(BACKLOG)).encode()
        a.cli("send", "--circle-id", circle, "--stdin", stdin=lines, timeout=600)
        a.start()
        ca = _Client(a)
        try:
            want = ca.messages()
        finally:
            ca.close()
        row = _sync_row(f"gossip backlog: empty B joins A holding {want:,}", b, a, want, BACKLOG)
        assert b.proc is not None
        cpu = _cpu_seconds(b.proc.pid)
        seconds = float(row[1].removesuffix(" s")) if row[1].endswith(" s") else None
        return row, seconds, cpu


def _append_us(root: Path, signed: bool, count: int = 10_000) -> float:
    """Microseconds per message of the store's append (parse, open, judge, insert) in
    this process, batches of MAX_POST_BATCH: the store's own cost, no process around it."""
    key, secret = IdentityKey.generate(), ids.new_secret()
    db = Database(root / f"append-{signed}.db", "normal")
    try:
        ops = Ops(db, NodeInfo("9" * 24, "bench", True, ""))
        handled(ops, OP_CIRCLE_JOIN, {"code": encode_invite(secret, "127.0.0.1:1")})
        texts = [f"backlog line {i:06d}" for i in range(count)]
        msgs = (
            wire_messages(secret, key.node_id, texts, key=key)  # as a node writes a post of many
            if signed
            else [wire_message(secret, key.node_id, text) for text in texts]
        )
        t0 = time.perf_counter()
        for i in range(0, count, MAX_POST_BATCH):
            handled(ops, OP_APPEND, {"origin": "gossip", "msgs": msgs[i : i + MAX_POST_BATCH]})
        return (time.perf_counter() - t0) / count * 1e6
    finally:
        db.close()


def _cpu_by_process(on: dict[str, float], off: dict[str, float]) -> str:
    """The busiest processes' CPU seconds, signed against unsigned."""
    busiest = sorted(on.keys() | off.keys(), key=lambda n: -on.get(n, 0.0))[:3]
    return ", ".join(f"{n} {on.get(n, 0.0):.1f} against {off.get(n, 0.0):.1f}" for n in busiest)


def bench_signing(root: Path) -> list[Row]:
    """The 100k backlog with every message signed and verified, and with none (the nodes
    write unsigned: ``FELUND_BENCH_UNSIGNED``, bench only), in one run."""
    unsigned, t_off, cpu_off = _backlog_seconds(root / "unsigned", **{BENCH_UNSIGNED: "1"})
    signed, t_on, cpu_on = _backlog_seconds(root / "signed")
    ratio = f"{(t_on / t_off - 1) * 100:+.0f} %" if t_on and t_off else "n/a"
    append_off, append_on = _append_us(root, False), _append_us(root, True)
    return [
        (f"{unsigned[0]} (unsigned: bench only)", unsigned[1], unsigned[2]),
        (
            f"{signed[0]} (signed, verified by B)",
            signed[1],
            signed[2] + "; target (issue 20) <= 4 s signed",
        ),
        (
            "signatures on the 100k backlog: signed against unsigned",
            ratio,
            f"{t_on or 0:.1f} s against {t_off or 0:.1f} s, one run; target <= +15 %; "
            f"CPU of B's processes {sum(cpu_on.values()):.1f} s against "
            f"{sum(cpu_off.values()):.1f} s ({_cpu_by_process(cpu_on, cpu_off)}); "
            f"the store's append in process: {append_on:.0f} us a message signed against "
            f"{append_off:.0f} us unsigned (signed in batches of {BATCH_LEAVES}: a verify per "
            "batch, a path of hashes per message)",
        ),
    ]


# --- 3b. the reconciliation core, in memory -------------------------------------------
def _largest_message(a: ItemSet, b: ItemSet) -> tuple[int, int]:
    """A whole session as reconcile_pair runs it; (messages, largest in bytes)."""
    side_a, side_b = Reconciler(a), Reconciler(b)
    message: list[Any] | None = side_a.initiate()
    count = largest = 0
    turn = [side_b, side_a]
    while message is not None:
        wire = msgpack.packb(message)
        largest = max(largest, len(wire))
        message = turn[count % 2].receive(msgpack.unpackb(wire, raw=False)).reply
        count += 1
    return count, largest


def bench_reconcile_core(total: int, missing: tuple[int, ...]) -> list[Row]:
    """reconcile_pair on two sets of ``total``, the newest ``d`` missing on one side."""
    node_id = ids.new_node_id()
    start = int(time.time()) - total // 10
    items = [(start + i // 10, ids.new_msg_id(node_id, start + i // 10)) for i in range(total)]
    full = ItemSet(items)
    full.fingerprint(MIN_BOUND, MAX_BOUND)  # build its prefix sums once, outside the timing
    rows: list[Row] = []
    k = f"{total // 1000}k"
    for d in (0, *missing):
        partial = ItemSet(items[: total - d])
        partial.fingerprint(MIN_BOUND, MAX_BOUND)
        t0 = time.perf_counter()
        trips, size, a_need, b_need = reconcile_pair(full, partial)
        elapsed = time.perf_counter() - t0
        assert not a_need and len(b_need) == d, (len(a_need), len(b_need))
        rows.append(
            (
                f"reconciliation, {k} vs {k}, {d} newest missing (reconciliation core, in memory)",
                f"{trips} round trip{'s' * (trips != 1)}, {size:,} B",
                "reconcile_pair: msgpack bytes of the RECON payloads both ways, not wire "
                f"bytes (no framing, sealing, WANT or MSGS); {elapsed * 1000:.0f} ms; "
                "ids as felund makes them, 10 per second",
            )
        )
    messages, largest = _largest_message(full, ItemSet())
    rows.append(
        (
            f"reconciliation, {k} vs empty: largest RECON message (reconciliation core, in memory)",
            f"{largest:,} B",
            f"{messages} messages; a native frame holds at most {MAX_FRAME:,} B: "
            + ("too big, this session cannot run on the wire" if largest > MAX_FRAME else "fits"),
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
    with tempfile.TemporaryDirectory(prefix="felund-bench-signing-") as tmp:
        rows += bench_signing(Path(tmp))
    rows += bench_reconcile_core(BACKLOG, (1, 100, 1000))
    return rows


if __name__ == "__main__":
    for row in main():
        print(json.dumps(row, ensure_ascii=False))
