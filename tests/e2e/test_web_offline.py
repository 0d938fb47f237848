"""The page as an installed app (issue 19): a web app manifest Chromium finds installable, and
a service worker that serves the shell with no network, so the page opens offline and shows
what IndexedDB holds.

Offline is real: the browser context goes offline and the relay that served the page stops.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from felund.testing import Relay, browser_missing

T = 20_000  # ms: the bound of every wait on the page

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect


@pytest.fixture
def own_relay(tmp_path: Path) -> Iterator[Relay]:
    """A relay of this test alone: it is stopped midway."""
    relay = Relay(tmp_path / "relay")
    relay.start()
    yield relay
    relay.stop()


def test_manifest_makes_the_page_installable(open_peer, web_relay: Relay) -> None:
    """The manifest is served as one and names the app; Chromium lists no installability error."""
    with urllib.request.urlopen(f"{web_relay.url}/manifest.webmanifest", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/manifest+json"
        manifest = json.loads(resp.read())
    assert manifest["name"] == "felund" and manifest["display"] == "standalone"
    ann = open_peer()
    ann.create("Ann", "installed")
    ann.page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=T)
    cdp = ann.context.new_cdp_session(ann.page)
    found = cdp.send("Page.getAppManifest")
    assert found["url"] == f"{web_relay.url}/manifest.webmanifest"
    assert found["errors"] == [], found["errors"]
    # A test's browser context is incognito-like: the one error, the browser's, not the page's.
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [e["errorId"] for e in errors] == ["in-incognito"], errors
    ann.no_errors()


def test_the_page_opens_offline_with_what_indexeddb_holds(open_peer, own_relay: Relay) -> None:
    """Loaded once online, the page opens again with no network and no relay: the chat screen,
    the circle, its messages (from IndexedDB), and the header saying it is offline."""
    ann = open_peer()
    ann.page.goto(own_relay.url + "/")
    ann.create("Ann", "offline")
    ann.say("written while online")
    ann.type("/channel create later")
    # Created (and switched to) once its event is written: what is typed before goes to general.
    expect(ann.page.locator("#hdr-channel")).to_have_text("#later", timeout=T)
    ann.say("in another channel")
    ann.page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=T)

    ann.context.set_offline(True)
    own_relay.stop()
    for url in (own_relay.url + "/", own_relay.url + "/?db=felund"):
        ann.page.goto(url)
        expect(ann.page.locator("#chat")).to_be_visible(timeout=T)
        expect(ann.page.locator("#hdr-circle")).to_have_text("offline", timeout=T)
        expect(ann.page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
        ann.type("/channel switch general")
        ann.sees("written while online")
        ann.type("/channel switch later")
        ann.sees("in another channel")
        expect(ann.page.locator("#fatal")).to_be_hidden()
    # What is written offline waits in the outbox, marked as such.
    ann.type("typed offline")
    expect(ann.line("typed offline")).to_have_class(re.compile(r"\bpending\b"), timeout=T)
    ann.no_errors()
