"""Chaos: kill -9 each child of a node in turn, then make its store give up; every other
process keeps running (0 restarts), and the node converges once the store is back.

Node a runs gossip and relay-sync (a relay) and has a peer b reaching it both ways,
so while a's store is gone its gossip and relay-sync are handed messages they cannot
store, and must wait for the store rather than crash.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from felund.protocol import SVC_GOSSIP, SVC_RELAY_SYNC, SVC_STORE
from felund.testing import (
    Node,
    break_store,
    mend_store,
    metric_total,
    wait_for,
)

CHILDREN = (SVC_STORE, SVC_GOSSIP, SVC_RELAY_SYNC)


def _texts(node: Node) -> set[str]:
    return {m["text"] for m in node.json("inbox", "--circle-id", node.circle_id, "--limit", "1000")}


def _holds(node: Node, texts: set[str]) -> bool:
    return _texts(node) == texts


def _services(node: Node) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = node.status()["services"]
    return services


def _restarted(node: Node, name: str, restarts: int) -> bool:
    child = _services(node)[name]
    return bool(child["restarts"] == restarts and child["state"] == "running")


def _retries(node: Node, service: str) -> float:
    return metric_total(node.metrics(), "felund_rpc_client_retries_total", service=service)


@pytest.mark.slow
def test_kill_each_child_then_give_up_the_store(joined_pair, tmp_path: Path) -> None:
    a, b = joined_pair(
        FELUND_BUS_RPC_TIMEOUT_MS="1000",
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
        FELUND_SUPERVISOR_FLAP_MAX_RESTARTS="2",
        FELUND_SUPERVISOR_GIVEN_UP_RETRY_S="3",
    )
    sent: set[str] = set()

    # 1. kill -9 each child in turn: it alone is restarted.
    for victim in CHILDREN:
        before = _services(a)
        os.kill(int(before[victim]["pid"]), signal.SIGKILL)
        wait_for(
            functools.partial(_restarted, a, victim, before[victim]["restarts"] + 1),
            timeout=60,
            what=f"{victim} to be restarted",
        )
        for n in (a, b):
            text = f"{n.home.name} after {victim} was killed"
            n.cli("send", "--circle-id", n.circle_id, text)
            sent.add(text)
        after = _services(a)
        for other in CHILDREN:
            if other != victim:
                assert after[other]["restarts"] == before[other]["restarts"], (victim, other)
                assert after[other]["pid"] == before[other]["pid"], (victim, other)

    # 2. The store gives up: its database is replaced by garbage (the real files are
    # kept aside) and it dies; it exits at every start until it is given up.
    before = _services(a)
    kept = tmp_path / "kept"
    break_store(a, kept)
    wait_for(
        lambda: _services(a)[SVC_STORE]["state"] == "failed",
        timeout=60,
        what="a's store to be given up",
    )
    given_up = _services(a)[SVC_STORE]
    # b's message reaches a's gossip and a's relay-sync, which cannot store it.
    retried = {s: _retries(a, s) for s in (SVC_GOSSIP, SVC_RELAY_SYNC)}
    b.cli("send", "--circle-id", b.circle_id, "while a's store is given up")
    sent.add("while a's store is given up")
    wait_for(
        lambda: all(_retries(a, s) > retried[s] for s in retried),
        timeout=60,
        what="gossip and relay-sync to wait for the store",
    )

    # 3. The database is back: the next slow try brings the store back by itself.
    mend_store(a, kept)
    wait_for(
        lambda: _services(a)[SVC_STORE]["state"] == "running",
        timeout=60,
        what="a's store to be tried again and serve",
    )
    a.cli("send", "--circle-id", a.circle_id, "a's store is back")
    sent.add("a's store is back")
    for n in (a, b):
        wait_for(
            functools.partial(_holds, n, sent), timeout=90, interval=0.5, what=f"{n} to converge"
        )

    after = _services(a)
    assert after[SVC_STORE]["restarts"] > given_up["restarts"]  # a slow try brought it back
    for other in (SVC_GOSSIP, SVC_RELAY_SYNC):
        assert after[other]["restarts"] == before[other]["restarts"] == 1, other  # its own kill
        assert after[other]["pid"] == before[other]["pid"], other
