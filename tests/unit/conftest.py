"""The unit tier uses no process and no socket: a test that tries fails.

Real SQLite files are fine; an AF_UNIX socketpair is too (asyncio's loop
wakes itself with one: no address, nothing outside the process). A library
that swallows the refusal does not hide it: the test fails at its end.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.trust.identity import IdentityKey

PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec"}
)
SOCKET_EVENTS = frozenset(
    {"socket.bind", "socket.connect", "socket.sendto", "socket.getaddrinfo", "socket.gethostbyname"}
)
NETWORK_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


class Guard:
    """Refuses processes and sockets while a unit test runs (a Python audit hook)."""

    def __init__(self) -> None:
        self.active = False
        self.refused: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event in PROCESS_EVENTS:
            self.refuse(f"a process ({event} {str(args[:2])[:200]})")
        elif event in SOCKET_EVENTS or (event == "socket.__new__" and args[1] in NETWORK_FAMILIES):
            self.refuse(f"a socket ({event} {str(args[1:])[:200]})")

    def refuse(self, what: str) -> None:
        self.refused.append(what)
        raise PermissionError(f"unit tests start no process and open no socket: {what}")


GUARD = Guard()
sys.addaudithook(GUARD.audit)


def _no_zmq(*args: Any, **kwargs: Any) -> None:
    GUARD.refuse("a ZeroMQ context (the bus)")


@pytest.fixture(autouse=True)
def no_process_no_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """Fail the test if it starts a process, opens a network socket or uses ZeroMQ."""
    monkeypatch.setattr(zmq.Context, "__init__", _no_zmq)  # libzmq's sockets bypass the hook
    GUARD.refused.clear()
    GUARD.active = True
    try:
        yield GUARD
    finally:
        GUARD.active = False
    if GUARD.refused:
        pytest.fail(
            "the unit tier uses no process and no socket; move it to tests/integration: "
            + "; ".join(GUARD.refused)
        )


ME = "a" * 24  # the node of the ``ops`` fixture


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    """This node's store operations on a fresh database file (node ``ME``, clear messages)."""
    db = Database(tmp_path / "felund.db")
    yield Ops(db, NodeInfo(ME, "me", False, "127.0.0.1:9999"))
    db.close()


@pytest.fixture
def signing_ops(tmp_path: Path) -> Iterator[Ops]:
    """As ``ops``, but signing (encrypted messages, ME's key): the owner of circles it makes."""
    db = Database(tmp_path / "felund.db")
    key = IdentityKey.from_seed(bytes(32))  # ME is older than keys: any key signs for it
    yield Ops(db, NodeInfo(ME, "me", True, "127.0.0.1:9999", key=key))
    db.close()
