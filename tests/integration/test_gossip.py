"""Gossip between real nodes on 127.0.0.1: push, anti-entropy, peer exchange, crashes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from felund.testing import Node, metric_value, wait_for, wire_message
from felund.v1 import ids
from tests.integration.test_data import _secret_of


def _texts(node: Node, circle_id: str) -> list[str]:
    return [m["text"] for m in node.inbox(circle_id)]


def _wait_texts(node: Node, circle_id: str, want: set[str], timeout: float = 30) -> None:
    wait_for(
        lambda: set(_texts(node, circle_id)) == want,
        timeout=timeout,
        what=f"{node.home.name} to hold {len(want)} messages",
    )


def _started(make_node: Callable[..., Node], name: str, **env: str) -> Node:
    node = make_node(name, FELUND_GOSSIP_ROUND_INTERVAL_S="0.5", **env)
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _join(node: Node, code: str) -> str:
    return node.cli("join", "--code", code).stdout.strip()


@pytest.fixture
def pair(make_node):
    a = _started(make_node, "a")
    b = _started(make_node, "b")
    code = a.cli("invite").stdout.strip()
    circle = _join(b, code)
    a.start()
    b.start()
    a.circle_id = b.circle_id = circle
    return a, b


def test_two_nodes_exchange_both_ways(pair) -> None:
    a, b = pair
    a.cli("send", "--circle-id", a.circle_id, "from a")
    wait_for(lambda: "from a" in _texts(b, b.circle_id), what="a's message on b")
    b.cli("send", "--circle-id", b.circle_id, "from b")
    wait_for(lambda: "from b" in _texts(a, a.circle_id), what="b's message on a")
    inbox = b.json("inbox", "--circle-id", b.circle_id)
    assert {m["display_name"] for m in inbox} == {"a", "b"}
    text = a.metrics()
    assert metric_value(text, "felund_gossip_peers_connected") == 1.0
    assert (metric_value(text, "felund_gossip_messages_total", direction="in") or 0) >= 1


def test_delivery_latency_is_observed_for_live_messages_not_for_a_catch_up(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    a = _started(make_node, "a")
    b = _started(make_node, "b")
    circle = _join(b, a.cli("invite").stdout.strip())
    # A member's history of a day ago, held by A only: B takes it when it joins.
    day_ago, author = int(time.time()) - 86_400, ids.new_node_id()
    secret = _secret_of(a, circle)
    old = [wire_message(secret, author, f"old {i}", ts=day_ago + i) for i in range(50)]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps({"wire": w}) + "\n" for w in old))
    a.cli("import", "--circle-id", circle, str(path))
    a.start()
    b.start()
    _wait_texts(b, circle, {f"old {i}" for i in range(50)})
    text, count = b.metrics(), "felund_delivery_latency_seconds_count"
    received = metric_value(text, "felund_gossip_messages_total", direction="in") or 0
    # Observed: A's own control events of now (its key, ...); not the 50 ages.
    observed = metric_value(text, count) or 0
    assert observed == received - 50, (observed, received)
    a.cli("send", "--circle-id", circle, "live")  # the path is live: this one is observed
    wait_for(
        lambda: metric_value(b.metrics(), count) == observed + 1,
        what="b to observe a live message",
    )


def test_three_nodes_in_a_line_converge_and_learn_each_other(make_node) -> None:
    a, b, c = (_started(make_node, n) for n in "abc")
    circle = _join(b, a.cli("invite").stdout.strip())
    # C only knows B: B's invite names B as the peer to contact.
    _join(c, b.cli("invite", "--circle-id", circle).stdout.strip())
    a.cli("send", "--circle-id", circle, "written on a before anyone ran")
    for n in (a, b, c):
        n.start()
    c.cli("send", "--circle-id", circle, "written on c")
    want = {"written on a before anyone ran", "written on c"}
    for n in (a, b, c):
        _wait_texts(n, circle, want)
    # Peer exchange: C has learned A's address from B.
    a_port = a.env["FELUND_GOSSIP_PORT"]
    wait_for(
        lambda: any(p["addr"].endswith(f":{a_port}") for p in c.json("peers")),
        what="c to learn a's address",
    )


@pytest.mark.slow
def test_a_node_joining_two_peers_takes_the_history_once(make_node) -> None:
    """C reconciles with A and B one at a time, so the second finds nothing missing, and
    pushes none of it on: its history crosses the wire once, not once from each peer."""
    a, b, c = (_started(make_node, n) for n in "abc")
    circle = _join(b, a.cli("invite").stdout.strip())
    lines = [f"history {i:05d}" for i in range(20_000)]
    a.cli("send", "--circle-id", circle, "--stdin", stdin="\n".join(lines).encode())
    a.start()
    b.start()
    wait_for(lambda: b.status()["messages"] == a.status()["messages"], timeout=60, what="b")
    held = a.status()["messages"]

    def sent() -> float:
        return sum(
            metric_value(n.metrics(), "felund_gossip_messages_total", direction="out") or 0
            for n in (a, b)
        )

    before = sent()
    _join(c, a.cli("invite", "--circle-id", circle).stdout.strip())
    c.start()
    # Everything A held, and C's own key announcement.
    wait_for(lambda: c.status()["messages"] == held + 1, timeout=60, what="c to hold everything")
    # C met B through A (its peer list) at once: either peer could have sent it all.
    assert metric_value(c.metrics(), "felund_gossip_peers_connected") == 2
    assert sent() - before < held * 1.1  # (C's announcement, sent on to A and B, is 2 of them)
    # Nor does C push what its reconciliation brought back to the peers it came from:
    # what it sends is its own key announcement, to each of its two peers at most.
    assert (metric_value(c.metrics(), "felund_gossip_messages_total", direction="out") or 0) <= 2


@pytest.mark.slow
def test_kill_gossip_of_middle_node_during_10k_sync(make_node) -> None:
    a, b, c = (_started(make_node, n, FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2") for n in "abc")
    circle = _join(b, a.cli("invite").stdout.strip())
    _join(c, b.cli("invite", "--circle-id", circle).stdout.strip())
    lines = [f"backlog {i:05d}" for i in range(10_000)]
    a.cli("send", "--circle-id", circle, "--stdin", stdin="\n".join(lines).encode())
    for n in (a, b, c):
        n.start()
    wait_for(lambda: (b.status()["messages"] or 0) > 500, timeout=60, what="b to start syncing")
    os.kill(b.service_pid("gossip"), signal.SIGKILL)
    for n in (b, c):
        _wait_texts(n, circle, set(lines), timeout=120)
    for n in (b, c):
        texts = _texts(n, circle)
        assert sorted(texts) == lines  # nothing missing, nothing doubled
    # The restart follows the kill after a backoff: the sync may finish first.
    wait_for(lambda: b.status()["services"]["gossip"]["restarts"] >= 1, what="b's gossip restarted")
    assert b.status()["services"]["gossip"]["restarts"] == 1


@pytest.mark.slow
def test_partition_and_heal(make_node) -> None:
    a = _started(make_node, "a")
    c = _started(make_node, "c")
    circle = _join(c, a.cli("invite").stdout.strip())
    a.start()
    c.start()
    a.cli("send", "--circle-id", circle, "before")
    wait_for(lambda: "before" in _texts(c, circle), what="c to get the first message")
    assert c.stop() == 0
    a.cli("send", "--circle-id", circle, "while c was away")
    c.cli("send", "--circle-id", circle, "written on c while offline")
    c.start()
    want = {"before", "while c was away", "written on c while offline"}
    for n in (a, c):
        _wait_texts(n, circle, want)


def test_status_shows_each_circle_s_gossip_peers_and_last_message(joined_pair) -> None:
    """`felund status --json` (and its text) of a: one gossip peer in the circle and the
    moment a message last crossed; once b stops, no peer."""
    a, b = joined_pair()

    def gossip(node: Node) -> dict[str, Any]:
        circle = next(c for c in node.status()["circles"] if c["circle_id"] == node.circle_id)
        report: dict[str, Any] = circle.get("gossip", {})
        return report

    sent = time.time()
    b.cli("send", "--circle-id", b.circle_id, "across")
    wait_for(
        lambda: gossip(a).get("peers") == 1 and (gossip(a).get("last_message_ts") or 0) >= sent,
        timeout=30,
        what="a to report b as its gossip peer and the message that crossed",
    )
    text = a.cli("status").stdout
    assert "gossip 1 peer connected, last message " in text, text
    b.stop()
    wait_for(lambda: gossip(a).get("peers") == 0, timeout=30, what="a to report no gossip peer")
    assert "gossip 0 peers connected" in a.cli("status").stdout
