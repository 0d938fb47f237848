"""The catch-up subscriber against a real store: snapshot, then live, across a store restart."""

from __future__ import annotations

import os
import signal
import time

from felund.actor.runtime import load_context
from felund.bus.catchup import CatchUp
from felund.bus.sockets import Bus
from felund.testing import Node, wait_for


def test_catch_up_then_follow_across_a_store_restart(make_node) -> None:
    node: Node = make_node(FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2")
    node.cli("init")
    circle = node.json("invite")["circle_id"]
    node.cli(
        "send",
        "--circle-id",
        circle,
        "--stdin",
        stdin=b"".join(f"before {i}\n".encode() for i in range(300)),
    )
    node.start()
    ctx = load_context(node.env)
    bus = Bus(ctx.layout, "test-catchup", ctx.config.bus)
    seqs: list[int] = []
    try:
        follower = CatchUp(bus)

        def poll_until(count: int) -> None:
            deadline = time.monotonic() + 30
            while len(seqs) < count:
                assert time.monotonic() < deadline, f"only {len(seqs)} of {count} applied"
                follower.poll(200, lambda rows: seqs.extend(r["store_seq"] for r in rows))

        held = node.status()["messages"]  # the 300, and the new circle's control events
        poll_until(held)  # the snapshot
        node.cli("send", "--circle-id", circle, "live")
        poll_until(held + 1)  # a live event
        os.kill(node.service_pid("store"), signal.SIGKILL)
        wait_for(
            lambda: node.status()["services"]["store"]["restarts"] == 1,
            what="the store to come back",
        )
        node.cli("send", "--circle-id", circle, "--stdin", stdin=b"a\nb\nc\n")
        poll_until(held + 4)  # after the restart: a new incarnation, events or a resnapshot
    finally:
        bus.close()
    assert seqs == list(range(1, held + 5))  # every message once, in order
