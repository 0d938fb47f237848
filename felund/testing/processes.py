"""What the node and relay harnesses share: the ``felund`` command, free ports, stopping."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

FELUND = [sys.executable, "-m", "felund"]
REPO = Path(__file__).resolve().parents[2]


# Ports handed out by ``free_port``: below the kernel's ephemeral range (32768 up), so no
# connection's own port takes one, and a range per test worker (pytest-xdist sets
# PYTEST_XDIST_WORKER=gwN), so two workers never pick the same one between a check and
# the node's bind.
# Another base lets a second test run share the machine (two worktrees at once):
# FELUND_TEST_PORT_BASE=26000 with up to 4 workers stays below the ephemeral range.
_PORT_BASE = int(os.environ.get("FELUND_TEST_PORT_BASE", "20000"))
_PORTS_PER_WORKER = 1500
_next_port = itertools.count()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, this test worker's alone."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = _PORT_BASE + (int(worker) if worker.isdigit() else 0) % 8 * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = base + next(_next_port) % _PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a node of an earlier test still closing): the next
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORTS_PER_WORKER - 1}")


def terminate(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)
