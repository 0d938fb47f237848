"""The page's header, title, tab icon and small commands (issue 19): the peer count, the unread
count on the favicon, desktop notifications of mentions, F3's "Test relay", /name, /circle join.

Real headless Chromium on a real relay; every peer is a browser context of its own.
"""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import unquote

from felund.testing import Relay, browser_missing

T = 20_000  # ms: the bound of every wait on the page

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect

# The page's desktop notifications, recorded, and the tab's visibility, settable: Chromium
# shows none headless, and a headless tab is never hidden. The page uses the real API.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__shown = [];
  function Recorded(title, options) {
    window.__shown.push({ title, body: options && options.body });
    return new Real(title, options);
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...a) => Real.requestPermission(...a);
  window.Notification = Recorded;
  window.__hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", {
    get: () => (window.__hidden ? "hidden" : "visible"),
  });
})();
"""


def test_peer_count_in_the_header(open_peer) -> None:
    """The header counts the other members at the relay now: up as they join, down as one goes."""
    ann = open_peer()
    ann.create("Ann", "counted")
    peers = ann.page.locator("#peers")
    expect(peers).to_have_text("0 peers", timeout=T)
    code = ann.invite_code()
    bob, cy = open_peer(), open_peer()
    bob.join("Bob", code)
    expect(peers).to_have_text("1 peer", timeout=T)
    expect(bob.page.locator("#peers")).to_have_text("1 peer", timeout=T)
    cy.join("Cy", code)
    expect(peers).to_have_text("2 peers", timeout=T)
    bob.context.close()  # the page leaves the relay's list as it goes
    expect(peers).to_have_text("1 peer", timeout=T)
    ann.no_errors()


def _icon(page: Any) -> str:
    return page.eval_on_selector('link[rel="icon"]', "l => l.getAttribute('href')") or ""


def test_unread_count_on_the_favicon(open_peer) -> None:
    """The unread count is in the title and on the tab's icon; once read, the plain icon is back."""
    ann, bob = open_peer(), open_peer()
    ann.create("Ann", "badges")
    bob.join("Bob", ann.invite_code())
    ann.type("/channel create random")
    expect(ann.page.locator("#hdr-channel")).to_have_text("#random", timeout=T)
    assert _icon(bob.page) == "favicon.svg"
    ann.say("one")
    ann.say("two")
    expect(bob.unread("random")).to_have_text("2", timeout=T)
    assert bob.page.title() == "(2) felund"
    icon = _icon(bob.page)
    assert icon.startswith("data:image/svg+xml,"), icon
    svg = unquote(icon.removeprefix("data:image/svg+xml,"))
    assert svg.startswith("<svg") and ">2</text></svg>" in svg, svg
    # Drawn: Chromium decodes it as an image.
    assert bob.page.evaluate(
        """src => new Promise(ok => { const i = new Image(); i.onload = () => ok(i.width > 0);
           i.onerror = () => ok(false); i.src = src; })""",
        icon,
    )
    bob.channel_button("random").click()
    bob.sees("two")
    expect(bob.page.locator('link[rel="icon"]')).to_have_attribute("href", "favicon.svg", timeout=T)
    assert bob.page.title() == "felund"
    bob.no_errors()


def test_mention_notifications_only_when_hidden_and_asked_for(open_peer) -> None:
    """With F3's setting on and the tab hidden, a message naming @Bob is a desktop notification;
    with the tab visible, or a message not naming him, or the setting off: none."""
    ann = open_peer()
    ann.create("Ann", "pings")
    bob = open_peer(permissions=["notifications"])
    bob.context.add_init_script(RECORD_NOTIFICATIONS)
    bob.page.reload()
    bob.join("Bob", ann.invite_code())
    page = bob.page

    def shown() -> list[dict[str, str]]:
        result: list[dict[str, str]] = page.evaluate("window.__shown")
        return result

    page.keyboard.press("F3")
    expect(page.locator("#settings-notify")).not_to_be_checked(timeout=T)
    page.check("#settings-notify")
    page.click("#settings-save")
    expect(page.locator("#dlg-settings")).to_be_hidden(timeout=T)

    page.evaluate("window.__hidden = true")
    ann.say("are you there @bob?")
    page.wait_for_function("() => window.__shown.length === 1", timeout=T)
    assert shown() == [{"title": "Ann in #general (pings)", "body": "are you there @bob?"}]

    ann.say("nothing for @bobby nor bob")  # not a mention of Bob
    page.evaluate("window.__hidden = false")
    bob.sees("nothing for @bobby nor bob")
    ann.say("@Bob while you look")  # visible: no notification
    bob.sees("@Bob while you look")
    page.evaluate("window.__hidden = true")
    ann.say("@BOB again")
    page.wait_for_function("() => window.__shown.length === 2", timeout=T)
    assert [n["body"] for n in shown()] == ["are you there @bob?", "@BOB again"]

    # Turned off (kept across a reload): nothing more.
    page.evaluate("window.__hidden = false")
    page.keyboard.press("F3")
    expect(page.locator("#settings-notify")).to_be_checked(timeout=T)
    page.uncheck("#settings-notify")
    page.click("#settings-save")
    expect(page.locator("#dlg-settings")).to_be_hidden(timeout=T)
    page.reload()
    bob.wait_chat()
    page.evaluate("window.__hidden = true")
    ann.say("@bob once more")
    page.evaluate("window.__hidden = false")
    bob.sees("@bob once more")
    assert page.evaluate("window.__shown.length") == 0  # a new page: none since the reload
    bob.no_errors()


def test_settings_test_relay_button(open_peer, web_relay: Relay) -> None:
    """F3's "Test relay" says whether the URL typed answers as a felund relay; it saves nothing."""
    ann = open_peer()
    ann.create("Ann", "tested")
    page = ann.page
    page.keyboard.press("F3")
    result = page.locator("#settings-relay-result")
    page.click("#settings-relay-test")
    expect(result).to_have_text(
        re.compile(rf"^The relay at {web_relay.url} answers \(\d+ ms\)\.$"), timeout=T
    )
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    page.fill("#settings-relay", closed)
    page.click("#settings-relay-test")
    expect(result).to_have_text(
        f"The relay at {closed} does not answer (relay down, or a wrong URL). Try again later.",
        timeout=T,
    )
    page.fill("#settings-relay", f"{web_relay.url}/nothing-here")
    page.click("#settings-relay-test")
    expect(result).to_contain_text("answers, but it is not a felund relay (HTTP 404)", timeout=T)
    page.fill("#settings-relay", "ftp://example.org")
    page.click("#settings-relay-test")
    expect(result).to_contain_text("That relay URL is not valid", timeout=T)
    page.keyboard.press("Escape")
    assert page.evaluate("localStorage.length") == 0
    page.keyboard.press("F3")
    expect(page.locator("#settings-relay")).to_have_value(web_relay.url)
    ann.no_errors()


def test_name_alone_shows_it_and_circle_join_joins(open_peer) -> None:
    """/name without a name says yours; /circle join CODE does what /join CODE does."""
    ann, bob = open_peer(), open_peer()
    ann.create("Ann", "first")
    ann.type("/name")
    notices = ann.page.locator("#messages .notice-text")
    expect(notices.last).to_have_text("you are Ann (/name NEW-NAME changes it)", timeout=T)
    code = ann.invite_code()
    bob.create("Bob", "his own")
    bob.type(f"/circle join {code}")
    # (Named "circle …" until its name arrives from the relay: as /join says it.)
    expect(bob.page.locator("#messages .notice-text").last).to_have_text(
        re.compile("^joined "), timeout=T
    )
    expect(bob.page.locator("#sidebar .circle")).to_have_count(2)
    expect(bob.page.locator("#hdr-circle")).to_have_text("first", timeout=T)
    bob.type(f"/circle join {code}")
    expect(bob.page.locator("#messages .notice-text").last).to_have_text(
        "already in this circle", timeout=T
    )
    bob.type("/circle join")
    expect(bob.page.locator("#messages .notice-error").last).to_contain_text(
        "usage: /join CODE", timeout=T
    )
    ann.no_errors()
    bob.no_errors()
