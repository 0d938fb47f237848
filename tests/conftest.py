"""Fixtures of the integration and e2e tiers: real nodes and relays in temporary homes,
always stopped at the end. The browser's are in tests/e2e/conftest.py; the unit tier's
guard (no process, no socket) in tests/unit/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from felund.testing import Node, Relay, free_port
from felund.testing.postgres import PgServer

LOG_TAIL = 150  # lines of each node's log shown with a test that failed

_NODES = pytest.StashKey[list[Node]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the end of each of its nodes' logs: a failure seen once
    on a busy machine is read from them, its homes being gone by then."""
    report = yield
    if report.failed and report.when == "call":
        for node in item.stash.get(_NODES, []):
            lines = (
                node.log_path.read_text(errors="replace").splitlines()
                if node.log_path.exists()
                else []
            )
            report.sections.append((f"log of node {node.home.name}", "\n".join(lines[-LOG_TAIL:])))
    return report


@pytest.fixture
def make_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Node]]:
    """Make nodes (not started) with their own home and ports."""
    nodes: list[Node] = []
    request.node.stash[_NODES] = nodes

    def make(name: str = "node", **overrides: str) -> Node:
        overrides.setdefault("FELUND_GOSSIP_PORT", str(free_port()))
        node = Node(tmp_path / name, **overrides)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Iterator[Node]:
    """A running node with one circle, named alice."""
    n = make_node()
    n.cli("init", "--name", "alice", "--bind", "127.0.0.1")
    n.start()
    n.circle_id = n.json("invite")["circle_id"]
    yield n


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """A running `felund relay serve` (it serves the web app at /), stopped at the end."""
    server = Relay(tmp_path / "relay")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server per test session (per xdist worker); a database per user."""
    server = PgServer()
    yield server
    server.close()
