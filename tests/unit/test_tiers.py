"""The unit tier's guard (tests/unit/conftest.py) refuses processes and sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.unit.conftest import Guard


@pytest.mark.parametrize(
    "attempt",
    [
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=False),
        lambda: os.system("true"),
        os.fork,
        lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
        lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
        lambda: socket.create_connection(("127.0.0.1", 9)),
        lambda: socket.socket(socket.AF_UNIX).connect("/nonexistent/felund.sock"),
        lambda: socket.getaddrinfo("localhost", 80),
        zmq.Context,
    ],
    ids=["subprocess", "system", "fork", "tcp", "udp6", "connect", "unix", "dns", "zmq"],
)
def test_the_guard_refuses(attempt: Callable[[], Any], no_process_no_socket: Guard) -> None:
    with pytest.raises(PermissionError, match="no process and open no socket"):
        attempt()
    assert no_process_no_socket.refused  # ... and would fail the test at its end
    no_process_no_socket.refused.clear()


def test_the_guard_allows_files_sqlite_and_asyncio(
    tmp_path: Path, no_process_no_socket: Guard
) -> None:
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("create table t (x)")
    db.close()
    asyncio.run(asyncio.sleep(0))  # its self-pipe is an AF_UNIX socketpair
    a, b = socket.socketpair()
    a.close()
    b.close()
    assert no_process_no_socket.refused == []
