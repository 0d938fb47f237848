"""The page's composer and message pane (issue 19): several lines, day dividers, links, the clock.

Real headless Chromium on a real relay. Messages of other days are written
by Python as a node writes them (signed), dated in the past, and posted to
the relay, so the page shows them as it would show a node's.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from felund.testing import PY_NODE, Relay, browser_missing, signed_call, signed_wire_message
from felund.trust.identity import IdentityKey
from felund.v1 import ids
from felund.v1.invite import encode_invite

T = 20_000  # ms: the bound of every wait on the page
PY_KEY = IdentityKey.from_seed(bytes(32))

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect


def _post(relay: Relay, secret: str, texts_at: list[tuple[str, int]]) -> None:
    """Python's node writes these texts, each dated at its Unix time."""
    wires = [
        signed_wire_message(secret, PY_KEY, PY_NODE, text, name="py", ts=ts)
        for text, ts in texts_at
    ]
    body = {"circle_hint": ids.circle_hint(ids.circle_id(secret)), "messages": wires}
    assert signed_call(relay, secret, "POST", "/messages", body)["stored"] == len(wires)


def _heights(page: Any) -> tuple[float, float]:
    """The composer's visible and whole heights (px)."""
    client, scroll = page.eval_on_selector("#input", "b => [b.clientHeight, b.scrollHeight]")
    return float(client), float(scroll)


def test_composer_shift_enter_new_lines_grow_to_a_limit(open_peer) -> None:
    """Shift+Enter adds a line (nothing sent), the box grows up to its limit then scrolls;
    Enter sends the lines as one message, shown on its lines; the box shrinks back."""
    ann = open_peer()
    ann.create("Ann", "lines")
    page = ann.page
    page.click("#input")
    one_line = _heights(page)[0]
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#input")).to_have_value("first line\nsecond line")
    assert page.locator("#messages .msg").count() == 0  # not sent
    two_lines = _heights(page)[0]
    assert two_lines > one_line * 1.4, (one_line, two_lines)
    for n in range(3, 13):
        page.keyboard.press("Shift+Enter")
        page.keyboard.type(f"line {n}")
        if n == 8:
            at_eight = _heights(page)[0]
    client, scroll = _heights(page)
    assert client == at_eight, "the box stops growing at its limit"
    assert scroll > client, "past the limit the lines scroll"
    assert client < page.viewport_size["height"] / 2

    page.keyboard.press("Enter")
    expect(page.locator("#input")).to_have_value("", timeout=T)
    sent = "\n".join(["first line", "second line", *(f"line {n}" for n in range(3, 13))])
    text = page.locator("#messages .msg .text")
    expect(text).to_have_count(1, timeout=T)
    assert text.text_content() == sent
    # Shown on its lines, not run together (the pane may redraw: asked until it holds).
    page.wait_for_function(
        """h => [...document.querySelectorAll('#messages .msg .text')]
                 .some(e => e.getBoundingClientRect().height > h)""",
        arg=11 * one_line / 2,
    )
    assert _heights(page)[0] == one_line
    # Up brings it back from the history; within its lines Up moves the cursor instead.
    page.keyboard.press("ArrowUp")
    expect(page.locator("#input")).to_have_value(sent)
    page.keyboard.press("ArrowUp")
    expect(page.locator("#input")).to_have_value(sent)
    assert page.eval_on_selector("#input", "b => b.selectionStart") < len(sent)
    ann.no_errors()


def test_day_dividers_and_links(open_peer, web_relay: Relay) -> None:
    """A divider where the day changes (Today, Yesterday, the date); http(s) URLs are links
    (new tab, rel=noopener noreferrer), every other scheme stays text, and so does markup."""
    secret = secrets.token_hex(32)
    dee = open_peer(timezone_id="UTC")
    dee.join("Dee", encode_invite(secret, web_relay.url))
    now = int(time.time())
    old = now - 5 * 86400
    _post(web_relay, secret, [("from last week", old), ("from yesterday", now - 86400)])
    risky = (
        "see https://example.org/a?b=1&c=<2>, or (http://127.0.0.1:9/p). "
        "not: javascript:alert(1) JavaScript://example.org data:text/html,<b>x</b> "
        "ftp://example.org/f vbscript:x <a href=https://evil.example>y</a> "
        "https://[bad"
    )
    _post(web_relay, secret, [("today's", now), (risky, now)])
    dee.sees("today's")

    d = datetime.fromtimestamp(old, UTC)
    year = "" if d.year == datetime.now(UTC).year else f" {d.year}"
    week = f"{d:%A} {d.day} {d:%B}{year}"
    expect(dee.page.locator("#messages .day")).to_have_text([week, "Yesterday", "Today"], timeout=T)
    # Each divider sits right before the first message of its day.
    order = dee.page.eval_on_selector_all(
        "#messages .day, #messages .msg .text", "els => els.map(e => e.textContent)"
    )
    assert order[:5] == [week, "from last week", "Yesterday", "from yesterday", "Today"], order

    text = dee.line(risky).locator(".text")
    expect(text).to_have_count(1, timeout=T)
    assert text.text_content() == risky  # all of it, as text
    links = text.locator("a")
    expect(links).to_have_count(3)
    assert [links.nth(i).get_attribute("href") for i in range(3)] == [
        "https://example.org/a?b=1&c=",
        "http://127.0.0.1:9/p",
        "https://evil.example/",
    ]
    assert [links.nth(i).text_content() for i in range(3)] == [
        "https://example.org/a?b=1&c=",
        "http://127.0.0.1:9/p",
        "https://evil.example",
    ]
    for i in range(3):
        assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
        assert links.nth(i).get_attribute("target") == "_blank"
    # Nothing in the message became markup, and no other scheme is anywhere a link.
    assert text.locator(":not(a)").count() == 0
    hrefs = dee.page.eval_on_selector_all("#messages a", "els => els.map(e => e.href)")
    assert all(re.match(r"https?://", h) for h in hrefs), hrefs
    dee.no_errors()


def test_clock_setting_12_or_24_hours_everywhere(open_peer, web_relay: Relay) -> None:
    """F3's 12-hour clock: message times, notices and /who's dates all follow it; kept on reload."""
    secret = secrets.token_hex(32)
    cy = open_peer(timezone_id="UTC")
    cy.join("Cy", encode_invite(secret, web_relay.url))
    at = datetime.now(UTC).replace(hour=15, minute=7, second=0, microsecond=0) - timedelta(days=1)
    _post(web_relay, secret, [("at seven past three", int(at.timestamp()))])
    cy.sees("at seven past three")
    ts = cy.line("at seven past three").locator(".ts")
    expect(ts).to_have_text("15:07")
    last_seen = re.compile(r"^py  \w{8}  member  last seen (.*)$")
    cy.lists("/who", last_seen)
    who = cy.page.locator("#messages .notice-text").filter(has_text=last_seen).last
    assert re.search(r"last seen \d{4}-\d\d-\d\d \d\d:\d\d$", who.text_content() or ""), (
        who.text_content()
    )

    page = cy.page
    page.keyboard.press("F3")
    expect(page.locator("#dlg-settings")).to_be_visible(timeout=T)
    expect(page.locator("#settings-clock12")).not_to_be_checked()
    page.check("#settings-clock12")
    page.click("#settings-save")
    expect(page.locator("#dlg-settings")).to_be_hidden(timeout=T)
    expect(ts).to_have_text("3:07 PM", timeout=T)
    twelve = re.compile(r"^\d{1,2}:\d\d [AP]M$")
    expect(page.locator("#messages .notice .ts").last).to_have_text(twelve)
    cy.type("/who")
    who = page.locator("#messages .notice-text").filter(has_text=last_seen).last
    expect(who).to_have_text(
        re.compile(r"last seen \d{4}-\d\d-\d\d \d{1,2}:\d\d [AP]M$"), timeout=T
    )

    page.reload()
    cy.wait_chat()
    expect(cy.line("at seven past three").locator(".ts")).to_have_text("3:07 PM", timeout=T)
    page.keyboard.press("F3")
    expect(page.locator("#settings-clock12")).to_be_checked(timeout=T)
    cy.no_errors()
