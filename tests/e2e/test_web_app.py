"""The browser client (felund/web): real headless Chromium, a real relay serving it, real nodes.

Each browser context starts with an empty IndexedDB, so each is a new
browser peer. Nodes reach the circle only through the relay (relay-sync,
``FELUND_RELAY_URL``); a node's invite code names its host:port, which a
page cannot reach, so the page syncs that circle through its own relay (the
code carries the secret).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from felund.testing import (
    PY_NODE,
    Node,
    Relay,
    browser_missing,
    metric_value,
    signed_call,
    signed_wire_message,
    wait_for,
)
from felund.trust.identity import IdentityKey
from felund.v1 import chatmodel, ids
from felund.v1 import events as built
from felund.v1.invite import decode_invite, encode_invite
from felund.v1.wire import open_message, parse_message

T = 20_000  # ms: the bound of every wait on the page
SYNC_T = 30.0  # s: the bound of waits on a node
WS_OPEN = "felund_relay_server_websocket_connections"
# Python's signing key in the relay tests: PY_NODE is an older id (no mark), pinned at first sight.
PY_KEY = IdentityKey.from_seed(bytes(32))

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect


def _node(make_node: Callable[..., Node], name: str, relay: Relay) -> Node:
    """A node that reaches others only through the relay (fast intervals for tests)."""
    node: Node = make_node(
        name,
        FELUND_RELAY_URL=relay.url,
        FELUND_RELAY_POLL_INTERVAL_S="0.5",
        FELUND_RELAY_REGISTER_INTERVAL_S="2",
        FELUND_GOSSIP_ROUND_INTERVAL_S="0.5",
    )
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _inbox(node: Node, channel: str | None = None) -> list[dict[str, Any]]:
    args = ["inbox", "--circle-id", node.circle_id, "--limit", "1000"]
    if channel:
        args += ["--channel", channel]
    result: list[dict[str, Any]] = node.json(*args)
    return result


def _node_sees(node: Node, text: str, author: str) -> None:
    def seen() -> bool:
        return any(m["text"] == text and m["display_name"] == author for m in _inbox(node))

    wait_for(seen, timeout=SYNC_T, interval=0.3, what=f"{text!r} on {node.home.name}")


# ---------------------------------------------------------------------------


def test_two_browsers_chat_both_ways_with_unread_counts(open_peer, web_relay: Relay) -> None:
    """A creates a circle, B joins with A's code from F2; both ways; unread in a second channel."""
    a, b = open_peer(), open_peer()
    a.create("Ann", "friends")
    code = a.invite_code()
    b.join("Bob", code)
    expect(b.page.locator("#hdr-circle")).to_have_text("friends", timeout=T)

    a.say("hello from Ann")
    b.sees("hello from Ann")
    b.say("hi Ann, Bob here")
    a.sees("hi Ann, Bob here")
    expect(a.line("hi Ann, Bob here").locator(".name")).to_have_text("Bob")

    # A second channel: Ann writes there while Bob reads #general.
    a.type("/channel create random")
    expect(a.page.locator("#hdr-channel")).to_have_text("#random", timeout=T)
    a.say("over in random")
    a.say("twice")
    expect(b.unread("random")).to_have_text("2", timeout=T)
    expect(b.unread("general")).to_have_count(0)
    assert b.page.title() == "(2) felund"
    # Reading it clears the count; Ann's #general gets one from Bob meanwhile.
    b.channel_button("random").click()
    expect(b.page.locator("#hdr-channel")).to_have_text("#random", timeout=T)
    b.sees("over in random")
    expect(b.unread("random")).to_have_count(0, timeout=T)
    b.type("/channel switch general")
    b.say("back in general")
    expect(a.unread("general")).to_have_text("1", timeout=T)
    # Every relay call of this circle was signed, and verified by the relay.
    hint = _hint(code)
    calls = [
        e
        for path in ("/v1/register", "/v1/messages", "/v1/relay/ws")
        for e in web_relay.requests(path)
        if e["circle_hint"] == hint
    ]
    # (The feed is logged when it closes, so it may not be listed yet.)
    assert {"/v1/register", "/v1/messages"} <= {e["path"] for e in calls}
    assert [e for e in calls if not e["signed"]] == []
    # And none refused: the direct links' first peers and signals wait for the register
    # (they were refused 401 and 403 on every new page, as errors in its console).
    refused = [
        (e["path"], e["status"], e["code"])
        for path in ("/v1/register", "/v1/messages", "/v1/peers", "/v1/signal")
        for e in web_relay.requests(path)
        if e["circle_hint"] == hint and e["status"] >= 400
    ]
    assert refused == []
    a.no_errors()
    b.no_errors()


def test_browser_and_node_chat_through_the_relay(open_peer, make_node, web_relay: Relay) -> None:
    """A node's code (peer host:port) joined in the browser: synced through the page's relay."""
    node = _node(make_node, "nodey", web_relay)
    invite = node.json("invite")
    node.circle_id = invite["circle_id"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", _invite_peer(invite["code"]))  # host:port
    node.start()
    node.cli("circle", "name", "mixed", "--circle-id", node.circle_id)  # a control event
    node.cli("send", "--circle-id", node.circle_id, "from the node")

    web = open_peer()
    web.join("Wendy", invite["code"])  # the page syncs it through its own relay
    expect(web.page.locator("#hdr-circle")).to_have_text("mixed", timeout=T)
    web.sees("from the node")
    expect(web.line("from the node").locator(".name")).to_have_text("nodey")

    web.say("from the browser")
    _node_sees(node, "from the browser", "Wendy")
    node.cli("send", "--circle-id", node.circle_id, "node again")
    web.sees("node again")
    # /who: both, by name, as the node's own /who has them.
    web.type("/who")
    notices = web.page.locator("#messages .notice-text")
    expect(notices.filter(has_text="in the circle:")).to_have_count(1, timeout=T)
    node_id = node.status()["node_id"]
    # The node made the circle (its owner); both sign, so neither is marked unverified.
    expect(notices.filter(has_text=f"nodey  {node_id[:8]}  owner  last seen ")).to_have_count(1)
    wendy = re.compile(r"^Wendy  [0-9a-f]{8}  member  last seen ")
    expect(notices.filter(has_text=wendy)).to_have_count(1)
    assert {p["display_name"] for p in node.json("who", "--circle-id", node.circle_id)} == {
        "nodey",
        "Wendy",
    }
    web.type("/who #nowhere")
    expect(web.page.locator("#messages .notice-error")).to_contain_text("no channel #nowhere")
    web.type("/channels")
    expect(notices.filter(has_text="#general  public, everyone")).to_have_count(1, timeout=T)
    web.no_errors()


def test_a_node_code_without_a_shared_relay_says_why_nothing_arrives(
    open_peer, make_node, web_relay: Relay
) -> None:
    """A node with no relay: the page says nothing can arrive, and what to run on the node."""
    node = make_node("norelay")
    node.cli("init", "--bind", "127.0.0.1", "--name", "norelay")
    invite = node.json("invite")
    node.circle_id = invite["circle_id"]
    node.start()
    peer = _invite_peer(invite["code"])

    web = open_peer()
    web.join("Wendy", invite["code"])
    notice = web.page.locator("#messages .unreachable")
    expect(notice).to_contain_text("nothing can arrive", timeout=T)
    expect(notice).to_contain_text(f"({peer})")
    expect(notice).to_contain_text(f"felund relay url {web_relay.url}")

    # Done as it says: the node's message arrives and the notice goes.
    node.cli("relay", "url", web_relay.url)
    node.cli("send", "--circle-id", node.circle_id, "now through the relay")
    web.sees("now through the relay")
    expect(notice).to_have_count(0, timeout=T)
    web.no_errors()


def _invite_peer(code: str) -> str:
    return decode_invite(code).peer


def _hint(code: str) -> str:
    return ids.circle_hint(ids.circle_id(decode_invite(code).secret))


def test_browser_invite_code_is_accepted_by_felund_join(
    open_peer, make_node, web_relay: Relay
) -> None:
    """A browser's code (peer = its relay URL) joined by `felund join`; channels and names agree."""
    web = open_peer()
    web.create("Wes", "webmade")
    code = web.invite_code()
    assert _invite_peer(code) == web_relay.url  # a browser's peer is its relay
    web.say("made in the browser")
    # The browser created a channel; the node derives it from the same control events.
    web.type("/channel create plans")
    expect(web.page.locator("#hdr-channel")).to_have_text("#plans", timeout=T)

    node = _node(make_node, "joiner", web_relay)
    node.circle_id = node.cli("join", "--code", code).stdout.strip()
    node.start()
    _node_sees(node, "made in the browser", "Wes")

    def node_has_plans() -> bool:
        channels = node.json("channels", "--circle-id", node.circle_id)
        return any(c["channel_id"] == "plans" for c in channels)

    wait_for(node_has_plans, timeout=SYNC_T, interval=0.3, what="#plans on the node")
    circles = node.json("circles")
    assert [c["name"] for c in circles if c["circle_id"] == node.circle_id] == ["webmade"]
    node.cli("send", "--circle-id", node.circle_id, "--channel", "plans", "node in plans")
    expect(web.line("node in plans")).to_have_count(1, timeout=T)
    web.no_errors()


def test_reload_keeps_identity_circles_and_history(open_peer) -> None:
    """IndexedDB keeps the identity, the circle and its history across a reload."""
    a, b = open_peer(), open_peer()
    a.create("Ria", "durable")
    b.join("Sam", a.invite_code())
    a.say("before reload")
    b.sees("before reload")
    node_id = a.line("before reload").locator(".name").get_attribute("title")
    assert node_id and re.fullmatch(r"[0-9a-f]{24}", node_id)

    a.page.reload()
    a.wait_chat()  # straight to the chat: no setup screen
    expect(a.page.locator("#setup")).to_be_hidden()
    expect(a.page.locator("#hdr-circle")).to_have_text("durable", timeout=T)
    a.sees("before reload")
    a.page.keyboard.press("F3")
    expect(a.page.locator("#settings-name")).to_have_value("Ria", timeout=T)
    a.page.keyboard.press("Escape")
    a.say("after reload")
    b.sees("after reload")
    # Same identity: the same node id on both sides of the reload.
    expect(b.line("after reload").locator(".name")).to_have_attribute("title", node_id)
    expect(b.line("before reload").locator(".name")).to_have_attribute("title", node_id)
    a.no_errors()


XSS_TEXTS = [
    "<img src=x onerror=window.__xss=1>",
    "<script>window.__xss=2</script>",
    "&lt;b&gt; & <b>not bold</b>",
]


def test_html_in_messages_and_names_shows_as_text(open_peer) -> None:
    """Messages, display names and circle names with HTML show as literal text; nothing runs."""
    a, b = open_peer(), open_peer()
    evil_name = "<img src=y onerror=window.__xss=3>"
    a.create(evil_name, "<i>circle</i>")
    b.join("Bea", a.invite_code())
    expect(b.page.locator("#hdr-circle")).to_have_text("<i>circle</i>", timeout=T)
    for text in XSS_TEXTS:
        a.say(text)
    for text in XSS_TEXTS:
        b.sees(text)
    expect(b.line(XSS_TEXTS[0]).locator(".name")).to_have_text(evil_name)
    b.type("/name <script>window.__xss=4</script>")
    b.say("renamed")
    expect(a.line("renamed").locator(".name")).to_have_text(
        "<script>window.__xss=4</script>", timeout=T
    )
    # A right-to-left override in a message shows without it ("gpj.exe", not "exe.jpg").
    a.type("see \u202egpj.exe")
    for peer in (a, b):
        shown = peer.page.locator("#messages .msg .text").filter(has_text="gpj.exe")
        expect(shown).to_have_text("see gpj.exe", timeout=T)
    for peer in (a, b):
        page = peer.page
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        assert page.locator("#sidebar i, #hdr-circle i").count() == 0
        peer.no_errors()


def test_bad_invite_code_and_relay_down(open_peer, web_relay: Relay) -> None:
    """Bad codes get a sentence; relay down and offline are said; a message sent meanwhile
    arrives once when the relay is back."""
    a, b = open_peer(), open_peer()
    # A damaged code in setup: a sentence, and still in setup.
    expect(a.page.locator("#setup")).to_be_visible(timeout=T)
    a.page.fill("#setup-name", "Ada")
    a.page.fill("#setup-code", "felund1.this-is-not-base64-json!")
    a.page.click("#setup-join")
    expect(a.page.locator("#setup-error")).to_contain_text(
        "That invite code is not valid", timeout=T
    )
    expect(a.page.locator("#chat")).to_be_hidden()
    a.page.fill("#setup-code", "hello")
    a.page.click("#setup-join")
    expect(a.page.locator("#setup-error")).to_contain_text("must start with 'felund1.'", timeout=T)
    # An address where no relay answers /v1/health (lib/relay.js probeRelay): said so.
    a.page.fill("#setup-relay", web_relay.url + "/not-a-relay")
    a.page.fill("#setup-circle", "sturdy")
    a.page.click("#setup-create")
    expect(a.page.locator("#setup-error")).to_contain_text(
        "it is not a felund relay (HTTP 404)", timeout=T
    )
    a.page.fill("#setup-relay", web_relay.url)

    a.create("Ada", "sturdy")
    b.join("Ben", a.invite_code())
    # In the chat: /join with a bad code is an error notice.
    a.type("/join felund1.AAAA")
    expect(a.page.locator("#messages .notice-error")).to_contain_text("bad invite code", timeout=T)

    web_relay.kill()
    try:
        expect(a.page.locator("#conn")).to_have_attribute("data-state", "relay-down", timeout=T)
        expect(a.page.locator("#conn")).to_contain_text("relay down")
        a.type("typed while the relay was down")
        pending = a.line("typed while the relay was down")
        expect(pending).to_have_class(re.compile(r"\bpending\b"), timeout=T)
        time.sleep(1.0)  # a retry or two against the dead relay
    finally:
        web_relay.start()
    a.wait_online()
    b.wait_online()
    expect(pending).not_to_have_class(re.compile(r"\bpending\b"), timeout=T)
    b.sees("typed while the relay was down")
    # Both feeds reconnect to the new relay process, each replaying the last 120 s,
    # and a marker sent then crosses b's feed after that replay: a double shows by now.
    wait_for(
        lambda: (metric_value(web_relay.metrics(), WS_OPEN) or 0) >= 2,
        timeout=SYNC_T,
        what="both feeds to reconnect",
    )
    a.say("after the reconnect")
    b.sees("after the reconnect")
    expect(b.line("typed while the relay was down")).to_have_count(1)
    expect(a.line("typed while the relay was down")).to_have_count(1)

    # No network at all: "offline", then back.
    a.context.set_offline(True)
    expect(a.page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
    expect(a.page.locator("#conn")).to_contain_text("offline")
    a.context.set_offline(False)
    a.wait_online()
    a.no_errors()
    b.no_errors()


def test_phone_screen_and_keyboard_only(open_peer, tmp_path: Path) -> None:
    """390x844: input and messages on screen, the sidebar a drawer; every action by keyboard."""
    phone = open_peer(viewport={"width": 390, "height": 844}, has_touch=True)
    other = open_peer()
    phone.create("Pia", "pocket")
    other.join("Oli", phone.invite_code())
    page = phone.page
    # The sidebar is a drawer: closed at first, opened and closed by the button.
    expect(page.locator("#sidebar")).to_be_hidden()
    phone.say("from the phone")
    other.say("to the phone")
    phone.sees("to the phone")
    for sel in ("#input", "#send", phone.line("to the phone")):
        box = (page.locator(sel) if isinstance(sel, str) else sel).bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (sel, box)
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.click("#sidebar-toggle")
    expect(page.locator("#sidebar")).to_be_visible(timeout=T)
    expect(page.locator("#sidebar-toggle")).to_have_attribute("aria-expanded", "true")
    page.screenshot(path=str(tmp_path / "phone-sidebar.png"))
    phone.channel_button("general").click()
    expect(page.locator("#sidebar")).to_be_hidden(timeout=T)
    expect(page.locator("#input")).to_be_focused()

    # Keyboard only: F1, F2, F3 open their overlays; Escape closes and focuses the input.
    for key, dialog in (("F1", "#dlg-help"), ("F2", "#dlg-invite"), ("F3", "#dlg-settings")):
        page.keyboard.press(key)
        expect(page.locator(dialog)).to_be_visible(timeout=T)
        page.keyboard.press("Escape")
        expect(page.locator(dialog)).to_be_hidden(timeout=T)
        expect(page.locator("#input")).to_be_focused()
    # The invite overlay draws a QR code (dark modules on white).
    page.keyboard.press("F2")
    dark = page.evaluate(
        """() => {
        const c = document.getElementById('invite-qr');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
        return [n, c.width * c.height, Number(c.dataset.modules)];
    }"""
    )
    assert dark[2] >= 21 and 0.2 < dark[0] / dark[1] < 0.6, dark
    page.keyboard.press("Escape")
    # F5 toggles the drawer (F4 is the call panel); Escape closes it.
    page.keyboard.press("F5")
    expect(page.locator("#sidebar")).to_be_visible(timeout=T)
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).to_be_hidden(timeout=T)
    expect(page.locator("#input")).to_be_focused()

    # Tab walks every control from the input around; Enter on the F1 button opens help.
    reached: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("document.activeElement.id || document.activeElement.className")
        )
    for control in ("send", "sidebar-toggle", "btn-help", "btn-invite", "btn-settings", "input"):
        assert control in reached, reached
    page.locator("#btn-help").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#dlg-help")).to_be_visible(timeout=T)
    page.keyboard.press("Escape")
    expect(page.locator("#input")).to_be_focused(timeout=T)
    # History and completion: Up brings the last line back; Tab completes a command.
    page.keyboard.press("ArrowUp")
    expect(page.locator("#input")).to_have_value("from the phone")
    page.fill("#input", "/chan")
    page.keyboard.press("Tab")
    expect(page.locator("#input")).to_have_value("/channel")
    page.keyboard.type(" sw")
    page.keyboard.press("Tab")
    expect(page.locator("#input")).to_have_value("/channel switch ")
    page.keyboard.press("Tab")
    expect(page.locator("#input")).to_have_value("/channel switch general ")
    # Turned wide (a rotation) the sidebar sits beside the messages; narrow again,
    # it is not left open over them.
    page.set_viewport_size({"width": 1000, "height": 700})
    expect(page.locator("#sidebar")).to_be_visible(timeout=T)
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#sidebar")).to_be_hidden(timeout=T)
    phone.no_errors()
    other.no_errors()


def _control_events(relay: Relay, secret: str) -> list[chatmodel.ControlEvent]:
    circle = ids.circle_id(secret)
    hint = ids.circle_hint(circle)
    answer = signed_call(relay, secret, "GET", f"/messages?circle_hint={hint}&cursor=0&limit=500")
    # As the store gives them to the fold: with the key each is signed by (SPEC-15 §3).
    events = []
    for raw in answer["messages"]:
        m = parse_message(raw)
        if m.channel_id == "__control":
            opened = open_message(secret, circle, m)
            signer = None if opened.signed is None else opened.signed[0]
            ev = chatmodel.ControlEvent(
                m.msg_id, m.author_node_id, m.created_ts, opened.text, signer
            )
            events.append(ev)
    return events


def test_channel_join_public_and_key_channels(open_peer, web_relay: Relay) -> None:
    """/channel join, as `felund channel join`: refusals in the node's words; the joins take
    effect although the node that made the channels has a clock 120 s ahead."""
    secret = "9e" * 32
    circle = ids.circle_id(secret)
    web = open_peer()
    web.join("Jo", encode_invite(secret, web_relay.url))  # registered: the key is pinned
    ahead = int(time.time()) + 120
    made = [
        {"channel_id": "pub", "access_mode": "public"},
        {
            "channel_id": "locked",
            "access_mode": "key",
            "key_hash": chatmodel.key_hash(circle, "locked", "open sesame"),
        },
        {"channel_id": "club", "access_mode": "invite"},
    ]
    wires = [
        signed_wire_message(
            secret,
            PY_KEY,
            PY_NODE,
            chatmodel.event_text(
                {"t": "CHANNEL_EVT", "op": "create", "actor_node_id": PY_NODE, **fields}
            ),
            name="py",
            channel="__control",
            ts=ahead,
        )
        for fields in made
    ]
    body = {"circle_hint": ids.circle_hint(ids.circle_id(secret)), "messages": wires}
    assert signed_call(web_relay, secret, "POST", "/messages", body)["stored"] == 3
    expect(web.channel_button("pub")).to_have_count(1, timeout=T)  # the page has the creates

    errors = web.page.locator("#messages .notice-error")
    for line, reason in (
        ("/channel join nowhere", "there is no such channel; create it first"),
        ("/channel join locked wrong key", "wrong key for that channel"),
        ("/channel join club", "that channel is by invitation"),
    ):
        web.type(line)
        expect(errors.last).to_contain_text(reason, timeout=T)
        expect(web.page.locator("#hdr-channel")).to_have_text("#general")
    web.type("/channel join locked open sesame")
    expect(web.page.locator("#hdr-channel")).to_have_text("#locked", timeout=T)
    web.say("inside the key channel")  # refused as "not a member" had the join no effect
    me = web.line("inside the key channel").locator(".name").get_attribute("title") or ""
    web.type("/channel join pub")
    expect(web.page.locator("#hdr-channel")).to_have_text("#pub", timeout=T)
    # A channel key is not kept in the input history.
    for _ in range(3):  # /channel join pub, the message, then what came before the key line
        web.page.press("#input", "ArrowUp")
    assert "sesame" not in web.page.input_value("#input")
    expect(web.channel_button("locked")).to_have_count(1)

    # The events are the node's (`felund channel join`), and a node derives the same membership.

    def joined() -> list[chatmodel.ControlEvent]:
        evs = _control_events(web_relay, secret)
        return evs if len(evs) == 6 else []  # the creates, the page's key, its two joins

    events = wait_for(joined, timeout=SYNC_T, interval=0.3, what="the two joins at the relay")
    mine = sorted(
        (e for e in events if e.author == me and '"join"' in e.text), key=lambda e: len(e.text)
    )
    assert [e.text for e in mine] == [
        chatmodel.event_text(built.dated(built.channel_event("join", circle, "pub", me), ts))
        for ts in (mine[0].created_ts,)
    ] + [
        chatmodel.event_text(
            built.dated(
                built.channel_event("join", circle, "locked", me, key="open sesame"),
                mine[1].created_ts,
            )
        )
    ]
    # Dated by the page's clock, before the creates they join: they count all the same.
    assert all(e.created_ts < ahead for e in mine)
    state = chatmodel.derive(events, circle)
    assert me in state.channels["locked"].members and me in state.channels["pub"].members
    assert me not in state.channels["club"].members

    # By invitation: the page asks and the node (the channel's creator) approves; the
    # page, a member now but not the channel's owner, may not approve someone else.
    def control(actor: str, ts: int, **fields: str) -> None:
        event = {"t": "CHANNEL_EVT", "actor_node_id": actor, **fields}
        key = PY_KEY if actor == PY_NODE else None  # the other one is a v1 client
        wire = signed_wire_message(
            secret,
            key,
            actor,
            chatmodel.event_text(event),
            name=actor[:6],
            channel="__control",
            ts=ts,
        )
        body = {"circle_hint": ids.circle_hint(ids.circle_id(secret)), "messages": [wire]}
        assert signed_call(web_relay, secret, "POST", "/messages", body)["stored"] == 1

    web.type("/channel request club")
    notices = web.page.locator("#messages .notice-text")
    expect(notices.last).to_contain_text("asked to join #club; a member must approve", timeout=T)
    wait_for(lambda: len(_control_events(web_relay, secret)) == 7, timeout=SYNC_T, what="ask")
    control(PY_NODE, ahead + 10, op="approve", channel_id="club", target_node_id=me)
    expect(web.channel_button("club")).to_have_count(1, timeout=SYNC_T)
    other = "0e" * 12
    control(other, ahead + 11, op="request", channel_id="club")
    web.lists("/channels", "#club  invite, 2 members, asked to join: 1")
    web.type("/channel approve club nobody")
    expect(errors.last).to_contain_text('no one in this circle is "nobody"', timeout=T)
    control(other, ahead + 12, op="rename", display_name="Otto")  # a name to approve by
    web.type("/channel approve club Otto")
    expect(errors.last).to_contain_text(
        "only #club's owner (python) can approve into #club", timeout=SYNC_T
    )
    state = chatmodel.derive(_control_events(web_relay, secret), ids.circle_id(secret))
    assert {me, PY_NODE} <= state.channels["club"].members
    assert other not in state.channels["club"].members
    web.no_errors()
