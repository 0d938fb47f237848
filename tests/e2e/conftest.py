"""Fixtures of the e2e tier: the browser client, a real relay serving it, a real chromium."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from felund import testing
from felund.testing import Relay

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

if testing.browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect

T = 20_000  # ms: the bound of every wait on an app page


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


@pytest.fixture(scope="module")
def lib_page(browser: Browser, web_relay: Relay) -> Iterator[Page]:
    """A page of the relay's origin that is not the app: for the web lib's modules alone."""
    context = browser.new_context()
    context.set_default_timeout(T)
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{web_relay.url}/v1/health")
    yield pg
    context.close()
    assert not errors, errors


def in_page(page: Page, modules: tuple[str, ...], body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with ``modules`` of felund/web/lib in ``L``,
    and ``arg``) in ``page``."""
    prelude = "const L = {};\n" + "".join(
        f"L.{name} = await import('/lib/{name}.js');\n" for name in modules
    )
    return page.evaluate(f"async (arg) => {{\n{prelude}{body}\n}}", arg)


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


class Peer:
    """One browser peer: its own context (own IndexedDB) and page, with its console errors."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        # A CSP violation is a console error: it would mean a blocked script or style.
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(msg.text)

    # -- setup -------------------------------------------------------------

    def create(self, name: str, circle: str) -> None:
        self._set_up(name, "circle", circle, "create")
        expect(self.page.locator("#hdr-circle")).to_have_text(circle, timeout=T)

    def join(self, name: str, code: str) -> None:
        self._set_up(name, "code", code, "join")

    def _set_up(self, name: str, field: str, value: str, button: str) -> None:
        p = self.page
        expect(p.locator("#setup")).to_be_visible(timeout=T)
        p.fill("#setup-name", name)
        p.fill(f"#setup-{field}", value)
        p.click(f"#setup-{button}")
        self.wait_chat()

    def wait_chat(self) -> None:
        expect(self.page.locator("#chat")).to_be_visible(timeout=T)
        self.wait_online()

    def wait_online(self) -> None:
        expect(self.page.locator("#conn")).to_have_attribute("data-state", "online", timeout=T)
        expect(self.page.locator("#conn")).to_have_text("online", timeout=T)

    # -- chatting ----------------------------------------------------------

    def type(self, line: str) -> None:
        self.page.fill("#input", line)
        self.page.press("#input", "Enter")
        expect(self.page.locator("#input")).to_have_value("", timeout=T)

    def say(self, text: str) -> None:
        """Send a message and wait until the relay acknowledged it."""
        self.type(text)
        line = self.line(text)
        expect(line).to_have_count(1, timeout=T)
        expect(line).not_to_have_class(re.compile(r"\bpending\b"), timeout=T)

    def line(self, text: str) -> Any:
        """The message lines of the current channel whose text is exactly ``text``."""
        return self.page.locator("#messages .msg").filter(
            has=self.page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$"))
        )

    def sees(self, text: str) -> None:
        expect(self.line(text)).to_have_count(1, timeout=T)

    def lists(self, command: str, line: str | re.Pattern[str], timeout: float = 30) -> None:
        """Wait until ``command`` (/who, /channels) lists ``line``: what a command lists is
        a snapshot, so it is asked again until the events it shows have come."""

        def listed() -> bool:
            self.type(command)
            return self.page.locator("#messages .notice-text").filter(has_text=line).count() > 0

        testing.wait_for(listed, timeout=timeout, interval=0.5, what=f"{command} listing {line!r}")

    def invite_code(self) -> str:
        p = self.page
        p.keyboard.press("F2")
        expect(p.locator("#dlg-invite")).to_be_visible(timeout=T)
        code = p.locator("#invite-code").text_content() or ""
        assert code.startswith("felund1."), code
        p.keyboard.press("Escape")
        expect(p.locator("#dlg-invite")).to_be_hidden(timeout=T)
        return code

    def channel_button(self, channel: str) -> Any:
        return self.page.locator(f'#sidebar .circle.current .channel-btn[data-key$="/{channel}"]')

    def unread(self, channel: str) -> Any:
        return self.channel_button(channel).locator(".unread")

    def no_errors(self) -> None:
        assert self.errors == []


@pytest.fixture
def open_peer(browser: Browser, web_relay: Relay) -> Iterator[Callable[..., Peer]]:
    """Open browser peers on the relay's page; every context is closed after the test."""
    contexts: list[BrowserContext] = []

    def open_(**options: Any) -> Peer:
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.goto(web_relay.url + "/")
        return Peer(context, page)

    yield open_
    for c in contexts:
        c.close()
