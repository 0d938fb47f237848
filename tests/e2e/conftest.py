"""Fixtures of the e2e tier: the browser client, a real relay serving it, a real chromium."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from felund import testing
from felund.testing import Relay

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


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
