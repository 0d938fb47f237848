"""An idle node writes nothing to disk; its metric files live on a tmpfs, /metrics shows all."""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

from felund.protocol import SVC_GOSSIP, SVC_RELAY_SYNC, SVC_STORE, TOPIC_HEARTBEAT
from felund.testing import Node, Relay, metric_total, metric_value, wait_for
from felund.testing.procstat import write_bytes

CHILDREN = (SVC_STORE, SVC_GOSSIP)
# Heartbeats (1 s each) of every child in the window.
WINDOW_BEATS = 5


def _idle_node(make_node: Callable[..., Node], relay: Relay | None = None) -> Node:
    n = make_node(**({"FELUND_RELAY_URL": relay.url} if relay else {}))
    n.cli("init", "--name", "alice", "--bind", "127.0.0.1")
    n.start()
    n.circle_id = n.json("invite")["circle_id"]
    if relay:
        # Start-up is over once relay-sync has been through the relay (register,
        # pull, the feed): each of those may write a cursor or a peer.
        wait_for(lambda: _relay_report(n).get("feed") is True, timeout=60, what="the feed")
    return n


def _relay_report(n: Node) -> dict[str, object]:
    reports = n.supervisor().get("connectivity", {}).get(SVC_RELAY_SYNC, {})
    report = reports.get(n.circle_id, {})
    return report if isinstance(report, dict) else {}


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


def _scrape(url: str) -> str:
    """/metrics, asked of the supervisor alone (``Node.metrics`` asks the store for status,
    and a store request is no idle: its transaction may restart the WAL, a write)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def _settle(n: Node) -> None:
    """Return once three heartbeats of every child passed with no byte written.

    After its start a node still writes for a few seconds (relay-sync's first
    rounds: cursors, peers): that is no idle node yet.
    """
    deadline = time.monotonic() + 60
    while True:
        os.sync()
        before = sum(map(write_bytes, n.pids()))
        _beats(n, 3)
        if sum(map(write_bytes, n.pids())) == before:
            return
        assert time.monotonic() < deadline, "the node kept writing after its start"


def test_an_idle_node_writes_no_byte_to_disk(make_node) -> None:
    n = _idle_node(make_node)
    _settle(n)
    sup = n.supervisor()
    names = {sup["pid"]: "supervisor", **{s["pid"]: c for c, s in sup["services"].items()}}
    pids = list(names)
    assert len(pids) == 1 + len(CHILDREN)
    # A page counts when it becomes dirty, and stays dirty for up to 30 s:
    # written back first, any store to it in the window counts again.
    os.sync()
    before, scraped = {p: write_bytes(p) for p in pids}, _scrape(sup["metrics_url"])
    _beats(n, WINDOW_BEATS)
    written = {names[p]: write_bytes(p) - before[p] for p in pids}
    assert n.pids() == pids
    assert written == dict.fromkeys(written, 0)
    # The metrics did change meanwhile (heartbeats, CPU time): only not on a disk.
    assert metric_total(_scrape(sup["metrics_url"]), "felund_bus_published_total") > metric_total(
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
    for child in (*CHILDREN, SVC_RELAY_SYNC):
        assert metric_value(text, "felund_service_up", service=child) == 1
        assert (metric_value(text, "felund_process_resident_memory_bytes", service=child) or 0) > 0
    # A clean stop leaves no file behind on the tmpfs.
    n.stop()
    assert not layout.metrics_dir.exists()
