"""Fixtures: real nodes in temporary homes, always stopped at the end."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from felund import testing
from felund.testing import Node, Relay, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Make nodes (not started) with their own home and ports."""
    nodes: list[Node] = []

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


# --- the browser client: a real relay serving it, a real chromium -----------------------------
@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """A running `felund relay serve` (it serves the web app at /), stopped at the end."""
    server = Relay(tmp_path / "relay")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """One relay for a module (it serves the app at /): each test makes circles of its own."""
    server = Relay(tmp_path_factory.mktemp("web-relay"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium through Playwright; skipped without it, failed under CI=true.

    Per module, not per session: Playwright's sync API keeps an asyncio loop
    running in the main thread while it is open, and the tests that call
    ``asyncio.run`` (random order puts them anywhere) must not meet it.
    """
    problem = testing.browser_missing()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    with testing.browser() as chromium:
        yield chromium


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open a URL in a fresh browser context (its own IndexedDB): ``new_page(url)``.

    Page errors and console warnings are printed at the end, so a failing
    test shows what the page said.
    """
    contexts: list[Any] = []
    said: list[str] = []

    def make(url: str) -> Page:
        context = browser.new_context()
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        n = len(contexts)
        page.on("console", lambda m: said.append(f"[page {n}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: said.append(f"[page {n}] error: {e}"))
        page.goto(url)
        return page

    yield make
    for context in contexts:
        context.close()
    for line in said:
        print(line)
