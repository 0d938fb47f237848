"""Events lost on the bus are counted, in the middle of a stream and at its end."""

from __future__ import annotations

import time

from felund.actor.runtime import load_context
from felund.bus.sockets import Bus
from felund.protocol import TOPIC_HEARTBEAT
from felund.testing import Node


def _bus(node: Node, name: str) -> Bus:
    ctx = load_context(node.env)
    return Bus(ctx.layout, name, ctx.config.bus)


def test_gaps_and_lost_tails_are_counted(node: Node) -> None:
    pub_bus, sub_bus = _bus(node, "test-pub"), _bus(node, "test-sub")
    try:
        sub = sub_bus.subscriber("test.", TOPIC_HEARTBEAT)
        pub = pub_bus.publisher()
        deadline = time.monotonic() + 10
        # Until one of ours arrives (the subscription has reached the publisher); the
        # node's heartbeats come on this subscriber too, so any event is not enough.
        while True:
            assert time.monotonic() < deadline, "the subscription never took effect"
            pub.publish("test.event", {})
            got = sub.recv(50)
            if got is not None and got.frame.topic == "test.event":
                break
        while sub.recv(200) is not None:
            pass
        assert sub.lost == 0

        # Two events vanish in the middle of the stream: the next one shows the gap.
        pub_bus.topic_seqs["test.event"] += 2
        pub.publish("test.event", {})
        got = sub.recv(2000)
        assert got is not None and got.missed == 2
        assert sub.lost == 2

        # Three vanish at the end: no later event, but the next heartbeat names the seq.
        pub_bus.topic_seqs["test.event"] += 3
        pub.heartbeat({"service": "test-pub"})
        deadline = time.monotonic() + 5
        while sub.lost < 5:
            assert time.monotonic() < deadline, f"tail loss not seen (lost={sub.lost})"
            sub.recv(200)
        assert sub.lost == 5
    finally:
        pub_bus.close()
        sub_bus.close()
