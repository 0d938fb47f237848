"""A child that crashes at start: growing delays, then given up; the node keeps serving."""

from __future__ import annotations

import itertools

import pytest

from felund.testing import Node, metric_value, wait_for


@pytest.mark.slow
def test_store_on_a_corrupt_database_is_given_up(make_node) -> None:
    node: Node = make_node(
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
        FELUND_SUPERVISOR_FLAP_MAX_RESTARTS="4",
    )
    node.cli("init")
    (node.home / "felund.db").write_bytes(b"this is not a database" * 100)
    node.start(wait=False)

    def failed() -> bool:
        st = node.cli("status", "--json", check=False)
        return st.returncode == 0 and '"failed"' in st.stdout

    wait_for(failed, timeout=30, what="the store to be given up")
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
    human = node.cli("status").stdout
    assert "failed" in human and "exited 5 times" in human
    assert node.stop() == 0
