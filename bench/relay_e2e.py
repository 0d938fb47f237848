"""End-to-end delay node -> relay -> node, for two nodes that cannot reach each other."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.gossip import _Arrivals, _Client, _join, _make, _ms, _nodes
from felund.testing import Relay, wait_for

Row = tuple[str, str, str]
MESSAGES = 100
UNREACHABLE_HOST = "127.0.0.2"  # loopback, but nothing listens there: gossip cannot help


def bench_relay_e2e(root: Path) -> list[Row]:
    """Post on A, time its arrival in B's store, relay-sync both ends."""
    relay = Relay(root / "relay")
    relay.start()
    try:
        with _nodes() as nodes:
            env = {
                "FELUND_RELAY_URL": relay.url,
                "FELUND_RELAY_POLL_INTERVAL_S": "5",  # the feed, not polling, should carry it
                "FELUND_GOSSIP_ADVERTISE_HOST": UNREACHABLE_HOST,
            }
            a = _make(nodes, root, "a", **env)
            b = _make(nodes, root, "b", **env)
            circle = _join(b, a.cli("invite").stdout.strip())
            a.start()
            b.start()
            arrivals = _Arrivals(b)
            arrivals.start()
            arrivals.ready.wait(10)
            client = _Client(a)
            try:
                wait_for(
                    lambda: arrivals.wait(client.post(circle, "warm-up"), 2.0) is not None,
                    timeout=60,
                    interval=0,
                    what="a first message through the relay",
                )
                delays: list[float] = []
                lost = 0
                gets_before = _gets(relay)
                for i in range(MESSAGES):
                    t0 = time.perf_counter()
                    seen = arrivals.wait(client.post(circle, f"relay delay {i}"), 10.0)
                    if seen is None:
                        lost += 1
                    else:
                        delays.append(seen - t0)
                gets = _gets(relay) - gets_before
            finally:
                client.close()
                arrivals.done.set()
                arrivals.join(5)
    finally:
        relay.stop()
    assert delays, "nothing crossed the relay"
    return [
        (
            "delivery delay node → relay → node (gossip unreachable)",
            _ms(delays),
            f"{MESSAGES} messages one at a time, {lost} not within 10 s; push by A's "
            "relay-sync, the relay's WebSocket feed wakes B's pull; "
            f"mean {statistics.mean(delays) * 1000:.0f} ms; "
            f"{gets / max(1, len(delays)):.2f} GET /v1/messages per delivered message",
        )
    ]


def _gets(relay: Relay) -> int:
    """GET /v1/messages answered by the relay so far (both nodes' pulls)."""
    return sum(e["method"] == "GET" for e in relay.requests("/v1/messages"))
