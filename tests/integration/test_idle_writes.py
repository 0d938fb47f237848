"""An idle node writes nothing to disk; its metric files live on a tmpfs, /metrics shows all."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

from felund.protocol import SVC_GOSSIP, SVC_RELAY_SYNC, SVC_STORE, TOPIC_HEARTBEAT
from felund.testing import Node, Relay, metric_total, metric_value, wait_for
from felund.testing.procstat import write_bytes

CHILDREN = (SVC_STORE, SVC_GOSSIP, SVC_RELAY_SYNC)
# Heartbeats (1 s each) of every child in the window.
WINDOW_BEATS = 5


def _idle_node(make_node: Callable[..., Node], relay: Relay) -> Node:
    n = make_node(FELUND_RELAY_URL=relay.url)
    n.cli("init", "--name", "alice", "--bind", "127.0.0.1")
    n.start()
    n.circle_id = n.json("invite")["circle_id"]
    wait_for(
        lambda: n.status()["services"][SVC_RELAY_SYNC]["state"] == "running",
        timeout=60,
        what="relay-sync to run",
    )
    return n


def _beats(n: Node, each: int) -> None:
    """Return once every child has heartbeated ``each`` times from now."""
    sub = n.subscribe(TOPIC_HEARTBEAT)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30 + 3 * each
    while min(seen[c] for c in CHILDREN) < each:
        assert time.monotonic() < deadline, f"heartbeats seen: {dict(seen)}"
        got = sub.recv(1000)
        if got is not None and isinstance(got.frame.body, dict):
            seen[str(got.frame.body.get("service"))] += 1


def test_an_idle_node_writes_no_byte_to_disk(make_node, relay: Relay) -> None:
    n = _idle_node(make_node, relay)
    _beats(n, 2)  # start-up done: the store has served, relay-sync has polled
    sup = n.supervisor()
    names = {sup["pid"]: "supervisor", **{s["pid"]: c for c, s in sup["services"].items()}}
    pids = list(names)
    assert len(pids) == 1 + len(CHILDREN)
    # A page counts when it becomes dirty, and stays dirty for up to 30 s:
    # written back first, any store to it in the window counts again.
    os.sync()
    before, scraped = {p: write_bytes(p) for p in pids}, n.metrics()
    _beats(n, WINDOW_BEATS)
    written = {names[p]: write_bytes(p) - before[p] for p in pids}
    assert n.pids() == pids
    assert written == dict.fromkeys(written, 0)
    # The metrics did change meanwhile (heartbeats, CPU time): only not on a disk.
    assert metric_total(n.metrics(), "felund_bus_published_total") > metric_total(
        scraped, "felund_bus_published_total"
    )
    # The measure is live: a message sent is written by the store.
    store = n.service_pid(SVC_STORE)
    n.cli("send", "--circle-id", n.circle_id, "written")
    assert write_bytes(store) > before[store]


def test_metric_files_are_off_the_home_and_metrics_shows_every_child(
    make_node, relay: Relay
) -> None:
    n = _idle_node(make_node, relay)
    layout = n._context().layout
    assert not layout.metrics_dir.is_relative_to(n.home)
    assert not layout.metrics_dir.is_relative_to(layout.runtime_dir)
    pids = n.pids()
    files = {int(f.stem.rsplit("_", 1)[1]) for f in layout.metrics_dir.glob("*.db")}
    assert files == set(pids)
    assert not [f for f in n.home.rglob("*") if f.name.endswith(tuple(f"_{p}.db" for p in pids))]
    text = n.metrics()
    for child in CHILDREN:
        assert metric_value(text, "felund_service_up", service=child) == 1
        assert (metric_value(text, "felund_process_resident_memory_bytes", service=child) or 0) > 0
    # A clean stop leaves no file behind on the tmpfs.
    n.stop()
    assert not layout.metrics_dir.exists()
