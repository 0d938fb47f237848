"""Crash-only: SIGKILL a child mid-write; nothing acknowledged is lost or doubled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from felund.protocol import SUPERVISOR_PID_ENV
from felund.testing import FELUND, REPO, Node, wait_for
from felund.testing.procstat import exited
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


# Forks a child that waits until this launcher has exited and the child is
# reparented, then execs the service as a supervisor's child, naming the
# launcher as its supervisor: a supervisor SIGKILLed while a child was starting.
_ORPHAN_LAUNCHER = f"""
import os, sys, time
parent = os.getpid()
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(w)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the launcher's stdout ends with it
    os.read(r, 1)  # end of file: the launcher has exited
    for _ in range(1000):  # then the kernel reparents this process: 10 s at most
        if os.getppid() != parent:
            break
        time.sleep(0.01)
    os.environ["{SUPERVISOR_PID_ENV}"] = str(parent)
    os.execv(sys.executable, [sys.executable, "-m", sys.argv[1]])
print(child, flush=True)
"""


@pytest.mark.parametrize("service", ["services.store", "services.gossip"])
def test_a_child_started_as_its_supervisor_died_exits(make_node, service: str) -> None:
    # Seen in CI: relay-sync, started just before the supervisor was SIGKILLed, read
    # its parent once orphaned, took init for its supervisor and ran on for ever.
    node: Node = make_node()
    node.cli("init")
    log = node.home.parent / "orphan.log"
    with log.open("wb") as stderr:
        launched = subprocess.run(
            [sys.executable, "-c", _ORPHAN_LAUNCHER, service],
            cwd=REPO,
            env=node.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=True,
            timeout=30,
        )
    pid = int(launched.stdout)
    try:
        wait_for(lambda: exited(pid), what=f"the orphaned {service} to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # It exited because it saw it was orphaned, not because it failed to start.
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["level"] != "info"] == ["svc.orphaned"], events
