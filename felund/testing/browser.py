"""A real browser for the web client's tests: Debian's chromium driven by Playwright."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
# Headless Chromium as a test needs it: no sandbox (containers), no GPU, and
# nothing that phones home or downloads while a test runs.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Outside a test's own network namespace, WebRTC (the pages' direct links, calls) must not
# gather or dial on the machine's interfaces: UDP only through a proxy, and there is none.
NO_WEBRTC_ARGS = ("--webrtc-ip-handling-policy=disable_non_proxied_udp",)


def browser_missing() -> str | None:
    """Why a browser test cannot run here (no chromium, no playwright), or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing; CI installs it with apt-get install -y chromium"
    try:
        import playwright.sync_api  # noqa: F401, PLC0415 - optional: only the browser tests need it
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    """Playwright's chromium on Debian's binary (never a downloaded one), closed at the end.

    Give each test its own ``browser.new_context()``: contexts do not share
    IndexedDB, cookies or caches.
    """
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional dependency

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, *NO_WEBRTC_ARGS],
            headless=True,
            timeout=60_000,
        )
        try:
            yield chromium
        finally:
            chromium.close()
