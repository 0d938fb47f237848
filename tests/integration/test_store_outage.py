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
