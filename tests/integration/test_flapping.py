"""A child that crashes at every start: growing delays, then given up (tried again
slowly); the node keeps serving, and says so at once."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from felund.testing import Node, break_store, metric_value, wait_for


@pytest.mark.slow
def test_store_on_a_corrupt_database_is_given_up(make_node, tmp_path: Path) -> None:
    node: Node = make_node(
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
        FELUND_SUPERVISOR_FLAP_MAX_RESTARTS="4",
    )
    node.cli("init")
    node.start()
    break_store(node, tmp_path / "kept")  # killed, then exits at every start

    def failed() -> bool:
        st = node.cli("status", "--json", check=False)
        return st.returncode == 0 and '"failed"' in st.stdout

    wait_for(failed, timeout=60, what="the store to be given up")
    store = node.status()["services"]["store"]
    assert store["state"] == "failed"
    assert store["restarts"] == 4
    assert "exited 5 times" in store["reason"]

    events = node.log_events()
    delays = [
        e["restart_in_s"] for e in events if e["event"] == "child.exited" and e["child"] == "store"
    ]
    assert len(delays) == 4
    # Doubling with at most ±20 % jitter: each delay exceeds the one before.
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    assert any(
        e["event"] == "store.open_failed" and "not a database" in e["detail"] for e in events
    )
    assert any(e["event"] == "child.failed" for e in events)

    # The rest keeps serving: status answers, metrics say what happened.
    text = node.metrics()
    assert metric_value(text, "felund_service_failed", service="store") == 1.0
    assert metric_value(text, "felund_service_up", service="store") == 0.0
    assert metric_value(text, "felund_service_restarts_total", service="store") == 4.0
    assert (
        metric_value(text, "felund_service_next_start_timestamp_seconds", service="store") or 0
    ) > time.time()

    # Status answers from the supervisor's view at once: the store it knows is given
    # up is not waited for (the old CLI spent 2 x 2 tries of 1.5 s on it: 6 s at least).
    assert node.proc is not None
    started = time.monotonic()
    human = node.cli("status").stdout
    assert time.monotonic() - started < 5.0
    assert "given up" in human and "exited 5 times" in human and "next try" in human
    assert f"supervisor pid {node.proc.pid}" in human
    st = node.status()
    assert st["supervisor_pid"] == node.proc.pid
    assert st["services"]["store"]["next_start"] > time.time()
    assert st["services"]["gossip"]["restarts"] == 0
    # A command that needs the store says so at once, rather than after every retry.
    started = time.monotonic()
    circles = node.cli("circles", check=False)
    assert time.monotonic() - started < 5.0
    assert circles.returncode == 1 and "store is given up" in circles.stderr
    assert node.stop() == 0
