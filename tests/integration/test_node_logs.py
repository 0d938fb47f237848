"""What a running node tells an attached ui on its bus: log records, and how many peers it has."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from felund.actor.runtime import load_context
from felund.bus.sockets import Bus, Subscriber
from felund.protocol import SVC_GOSSIP, SVC_SUPERVISOR, TOPIC_HEARTBEAT, TOPIC_LOG
from felund.testing import REPO, Node, metric_value, wait_for


def _bus(node: Node, name: str) -> Bus:
    ctx = load_context(node.env)
    return Bus(ctx.layout, name, ctx.config.bus)


def _wait_record(
    sub: Subscriber, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sub.recv(200)
        if got is None or not isinstance(got.frame.body, dict):
            continue
        if got.frame.topic == TOPIC_LOG and match(got.frame.body):
            return got.frame.body
    raise AssertionError(f"no sys.log record for {what} within {timeout} s")


def _poke_gossip(node: Node, sub: Subscriber) -> dict[str, Any]:
    """Wait until gossip's publisher has our subscription (its heartbeat arrives: both
    prefixes travel together), then speak nonsense to it: it logs a warning."""
    pid = node.service_pid(SVC_GOSSIP)
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "no heartbeat from gossip"
        got = sub.recv(200)
        if got is not None and got.frame.topic == TOPIC_HEARTBEAT:
            body = got.frame.body
            if isinstance(body, dict) and body.get("service") == SVC_GOSSIP and body["pid"] == pid:
                break
    with socket.create_connection(("127.0.0.1", int(node.env["FELUND_GOSSIP_PORT"]))) as s:
        s.sendall(b"this is not json\n")
        s.recv(100)  # until gossip hangs up
    return _wait_record(
        sub,
        lambda r: r["service"] == SVC_GOSSIP and r["event"] == "peer.garbage" and r["pid"] == pid,
        f"the warning of gossip {pid}",
    )


def test_log_records_of_every_process_reach_the_bus(make_node) -> None:
    node: Node = make_node(FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2")
    node.cli("init", "--bind", "127.0.0.1")
    node.start()
    bus = _bus(node, "test-logs")
    try:
        sub = bus.subscriber(TOPIC_LOG, TOPIC_HEARTBEAT)
        rec = _poke_gossip(node, sub)
        assert rec["level"] == "warning" and isinstance(rec["ts"], float)
        assert abs(rec["ts"] - time.time()) < 30
        assert rec["detail"] == "line is not JSON" and rec["peer"].startswith("127.0.0.1:")
        assert "timestamp" not in rec and json.loads(json.dumps(rec)) == rec
        # The supervisor's own records, when a child dies.
        gossip_pid = rec["pid"]
        os.kill(gossip_pid, signal.SIGKILL)
        rec = _wait_record(
            sub,
            lambda r: r["service"] == SVC_SUPERVISOR and r["event"] == "child.exited",
            "the supervisor's report of the killed child",
        )
        assert rec["child"] == SVC_GOSSIP and rec["child_pid"] == gossip_pid
        assert rec["status"] == -9 and rec["level"] == "warning"
        # And the restarted gossip's, once it runs.
        wait_for(
            lambda: node.status()["services"][SVC_GOSSIP]["state"] == "running",
            what="gossip to be restarted",
        )
        assert _poke_gossip(node, sub)["pid"] != gossip_pid
    finally:
        bus.close()
    # stderr still has them all.
    events = {e["event"] for e in node.log_events()}
    assert {"peer.garbage", "child.exited"} <= events


def test_gossip_heartbeat_counts_peers(make_node) -> None:
    def started(name: str) -> Node:
        node: Node = make_node(name, FELUND_GOSSIP_ROUND_INTERVAL_S="0.5")
        node.cli("init", "--bind", "127.0.0.1", "--name", name)
        return node

    a, b = started("a"), started("b")
    b.cli("join", "--code", a.cli("invite").stdout.strip())
    a.start()
    bus = _bus(a, "test-peers")
    try:
        sub = bus.subscriber(TOPIC_HEARTBEAT)

        def peers() -> int | None:
            got = sub.recv(1500)
            while got is not None:
                body = got.frame.body
                if got.frame.header.src == SVC_GOSSIP and isinstance(body, dict):
                    count: int = body["peers"]
                    return count
                got = sub.recv(1500)
            return None

        wait_for(lambda: peers() == 0, what="a's gossip to say peers 0")
        b.start()
        wait_for(lambda: peers() == 1, what="a's gossip to say peers 1")
        assert metric_value(a.metrics(), "felund_gossip_peers") == 1.0
        assert b.stop() == 0
        wait_for(lambda: peers() == 0, what="a's gossip to say peers 0 once b is gone")
    finally:
        bus.close()


_WRITER = """
import sys
from felund import logs
log = logs.setup(sys.argv[1], fmt="json")
for i in range(int(sys.argv[2])):
    log.info("burst", i=i, pad="x" * 200)
"""


def test_records_of_processes_sharing_one_unbuffered_stderr_stay_whole(tmp_path) -> None:
    """A node's children share its stderr, often unbuffered (PYTHONUNBUFFERED=1 is common
    in units): each record must reach it in one write, or two processes' lines merge."""
    path, writers, per = tmp_path / "shared.log", 4, 1500
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with path.open("ab") as out:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, f"w{n}", str(per)],
                stderr=out,
                stdout=out,
                env=env,
                cwd=REPO,
            )
            for n in range(writers)
        ]
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a merged line does not parse
    assert len(records) == writers * per
    for n in range(writers):
        assert sorted(r["i"] for r in records if r["service"] == f"w{n}") == list(range(per))
