"""Crash-only: SIGKILL a child mid-write; nothing acknowledged is lost or doubled."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess

import pytest

from felund.testing import FELUND, REPO, Node, wait_for
from services.supervisor import CHILDREN

LINES = 10_000


@pytest.mark.slow
@pytest.mark.parametrize("victim", sorted(CHILDREN))
def test_sigkill_child_during_send_stdin(make_node, victim: str) -> None:
    node: Node = make_node(FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2")
    node.cli("init")
    node.start()
    circle = node.json("invite")["circle_id"]
    pid_before = node.service_pid(victim)
    lines = [f"line {i:05d} ✓" for i in range(LINES)]
    sender = subprocess.Popen(
        [*FELUND, "send", "--circle-id", circle, "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=node.env,
        cwd=REPO,
    )
    assert sender.stdin is not None
    # Feed half, kill while the sender is busy with the rest.
    sender.stdin.write("\n".join(lines[: LINES // 2]).encode() + b"\n")
    sender.stdin.flush()
    wait_for(lambda: (node.status()["messages"] or 0) >= 1000, what="writes to begin")
    os.kill(pid_before, signal.SIGKILL)
    sender.stdin.write("\n".join(lines[LINES // 2 :]).encode() + b"\n")
    sender.stdin.close()
    assert sender.wait(timeout=120) == 0, sender.stderr.read() if sender.stderr else ""

    wait_for(
        lambda: node.status()["services"][victim]["state"] == "running",
        what=f"{victim} to be restarted",
    )
    status = node.status()["services"][victim]
    assert status["restarts"] == 1 and status["pid"] != pid_before
    texts = [m["text"] for m in node.json("inbox", "--circle-id", circle, "--limit", "100000")]
    assert sorted(texts) == lines  # every line, exactly once
    seqs = [m["store_seq"] for m in node.json("inbox", "--circle-id", circle, "--limit", "100000")]
    # Gap-free, after the new circle's control events (its owner's proof, our key).
    assert seqs == list(range(seqs[0], seqs[0] + LINES))
    assert node.stop() == 0
    db = sqlite3.connect(node.home / "felund.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_supervisor_then_run_again(make_node) -> None:
    node: Node = make_node()
    node.cli("init")
    node.start()
    circle = node.json("invite")["circle_id"]
    node.cli("send", "--circle-id", circle, "before")
    store_pid = node.service_pid("store")
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(timeout=10)
    # Orphaned children notice their parent is gone and exit by themselves.
    wait_for(lambda: not os.path.exists(f"/proc/{store_pid}"), what="the orphan store to exit")
    node.log.close()
    node.start()
    node.cli("send", "--circle-id", circle, "after")
    assert [m["text"] for m in node.json("inbox", "--circle-id", circle)] == ["before", "after"]
