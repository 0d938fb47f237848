"""Integration fixtures: what several node tests set up alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from felund.testing import Node, Relay, metric_value, wait_for


@pytest.fixture
def joined_pair(make_node: Callable[..., Node], relay: Relay) -> Callable[..., tuple[Node, Node]]:
    """Nodes a (with the relay, and ``a_env``) and b (with ``both``, as a too), in one
    circle, running, b connected to a."""

    def pair(both: dict[str, str] | None = None, **a_env: str) -> tuple[Node, Node]:
        fast = {"FELUND_RELAY_POLL_INTERVAL_S": "0.5", "FELUND_GOSSIP_ROUND_INTERVAL_S": "0.5"}
        fast |= both or {}
        a = make_node("a", FELUND_RELAY_URL=relay.url, **fast, **a_env)
        b = make_node("b", **fast)
        for n, name in ((a, "a"), (b, "b")):
            n.cli("init", "--bind", "127.0.0.1", "--name", name)
        code = a.cli("invite").stdout.strip()
        a.circle_id = b.circle_id = b.cli("join", "--code", code).stdout.strip()
        a.start()
        b.start()
        wait_for(
            lambda: (metric_value(a.metrics(), "felund_gossip_peers_connected") or 0) >= 1,
            timeout=60,
            what="b to connect to a's gossip",
        )
        return a, b

    return pair
