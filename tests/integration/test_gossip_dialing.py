"""Gossip dials only what could be a felund peer, whatever a member names: every connect() seen.

The node runs in a network namespace with only loopback up, so nothing it
does can reach the world; an audit hook in every one of its processes
records each connect() and each name look-up (tests/integration/dial_audit.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from felund.gossip.peertable import LEARNED_PER_TEACHER
from felund.testing import REPO
from tests.integration.dial_audit import FAKE, HOOK

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
        reason="a network namespace needs root, unshare and ip",
    ),
]
SPRAY = ipaddress.ip_network("10.0.0.0/8")


def _audit(tmp_path: Path) -> tuple[dict[str, Any], list[tuple[str, int]], list[str]]:
    """Run the scenario in its namespace: its summary, the connects and the look-ups."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "audit.log"
    env = {**os.environ, "AUDIT_CONNECT_LOG": str(log), "PYTHONPATH": f"{hooks}:{REPO}"}
    script = 'ip link set lo up && exec "$0" -m tests.integration.dial_audit "$1"'
    proc = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, str(tmp_path / "work")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    connects, lookups = [], []
    for line in log.read_text().splitlines():
        kind, _, host, port = line.split(" ", 3)
        if kind == "connect":
            connects.append((host, int(port)))
        else:
            lookups.append(host)
    return summary, connects, lookups


@pytest.mark.timeout(300)
def test_a_member_cannot_make_the_node_knock_anywhere(tmp_path: Path) -> None:
    summary, connects, lookups = _audit(tmp_path)
    invited, named = summary["decoys"]
    # The path is live: the audit saw the node resolve the invite's name and dial
    # it, and dial (several times) the one address a member gave that could be a peer.
    assert "'localhost'" in lookups
    assert ("127.0.0.1", invited) in connects
    assert connects.count(("127.0.0.1", named)) >= 3
    spray = set()
    for host, port in connects:
        ip = ipaddress.ip_address(host)
        if ip in SPRAY:
            assert port == 9999, (host, port)
            spray.add(host)
        else:
            assert ip.is_loopback, (host, port)
            assert port in (summary["gossip_port"], invited, named), (host, port)
    # Thousands named, a member's share learned (and dialled with a backoff each).
    assert 0 < len(spray) <= LEARNED_PER_TEACHER
    # No name a member chose was looked up: only the invite's, and IP literals.
    for host in lookups:
        name = host.strip("'b")
        assert name == "localhost" or ipaddress.ip_address(name).is_loopback, host
    # Nor is any kept to be dialled later.
    assert not set(FAKE) & set(summary["peers"])
