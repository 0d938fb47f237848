"""A store that stops answering, then dies: the processes that wait for it stay up.

Gossip and relay-sync retry every store call on fresh sockets while it is gone
(the path where the asyncio client used to close a reused socket handle and
crash); once the store is back, the node takes what arrived meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from felund.protocol import SVC_GOSSIP, SVC_RELAY_SYNC, SVC_STORE
from felund.testing import Node, metric_total, wait_for


def _texts(node: Node) -> list[str]:
    return [m["text"] for m in node.json("inbox", "--circle-id", node.circle_id)]


def _retries(node: Node, service: str) -> float:
    return metric_total(node.metrics(), "felund_rpc_client_retries_total", service=service)


@pytest.mark.slow
def test_store_stopped_then_killed_leaves_gossip_and_relay_sync_running(joined_pair) -> None:
    a, b = joined_pair(
        FELUND_BUS_RPC_TIMEOUT_MS="1000",  # many retries while the store is gone,
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
    )
    before = a.status()["services"]
    assert before[SVC_RELAY_SYNC]["state"] == "running"

    store_pid = before[SVC_STORE]["pid"]
    os.kill(store_pid, signal.SIGSTOP)
    try:
        # b's message reaches a's gossip (pushed by b) and a's relay-sync (from the
        # relay); both must hand it to a store that does not answer.
        b.cli("send", "--circle-id", b.circle_id, "while a's store is stopped")
        wait_for(
            lambda: _retries(a, SVC_GOSSIP) >= 2 and _retries(a, SVC_RELAY_SYNC) >= 2,
            timeout=60,
            what="gossip and relay-sync to retry against the stopped store",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # the supervisor may have killed it
            os.kill(store_pid, signal.SIGKILL)

    wait_for(
        lambda: _texts(a) == ["while a's store is stopped"],
        timeout=60,
        interval=0.5,
        what="a to store what arrived while its store was gone",
    )
    a.cli("send", "--circle-id", a.circle_id, "a's store is back")
    wait_for(lambda: "a's store is back" in _texts(b), timeout=60, interval=0.5, what="b to get it")
    after = a.status()["services"]
    assert after[SVC_STORE]["restarts"] >= 1 and after[SVC_STORE]["pid"] != store_pid
    for name in (SVC_GOSSIP, SVC_RELAY_SYNC):
        assert after[name]["restarts"] == 0, after[name]
        assert after[name]["pid"] == before[name]["pid"]
    assert not [e for e in a.log_events() if "non-socket" in str(e)]


def test_what_a_restarted_store_stores_while_gossip_looks_away_is_pushed_all_the_same(
    joined_pair,
) -> None:
    """A restarted store is a new incarnation: gossip sets its events aside and takes a
    snapshot. A message stored meanwhile then comes by the snapshot, and is pushed as its
    event would have had it (it was left to anti-entropy, up to 30 s later: 25.6 s seen)."""
    a, b = joined_pair(
        both={"FELUND_GOSSIP_ANTI_ENTROPY_INTERVAL_S": "3600"},  # nothing but the push
        FELUND_SUPERVISOR_HEARTBEAT_MISSES="60",  # gossip stopped a while is not restarted
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
    )
    before = a.status()["services"]
    gossip_pid, store_pid = before[SVC_GOSSIP]["pid"], before[SVC_STORE]["pid"]

    def store_back() -> bool:
        store = a.status()["services"][SVC_STORE]
        return store["state"] == "running" and store["pid"] not in (None, store_pid)

    # Gossip looks away while the store restarts and stores a message: it then reads the
    # new incarnation's events in one go, and the message comes by its snapshot.
    os.kill(gossip_pid, signal.SIGSTOP)
    try:
        os.kill(store_pid, signal.SIGKILL)
        wait_for(store_back, timeout=30, what="a's store to be restarted")
        a.cli("send", "--circle-id", a.circle_id, "stored while gossip looked away")
    finally:
        os.kill(gossip_pid, signal.SIGCONT)
    wait_for(
        lambda: "stored while gossip looked away" in _texts(b),
        timeout=20,
        interval=0.2,
        what="b to be pushed the message",
    )
    assert a.status()["services"][SVC_GOSSIP]["pid"] == gossip_pid
