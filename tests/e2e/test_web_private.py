"""The browser's half of private channels (issue 16, second half) in Chromium.

lib/channels.js derives a private channel's secrets and key ids byte for byte as
felund/trust/channels.py does (checked with inputs computed here by Python); real
nodes and a real relay check the rest: a page that is not a member of a private
channel holds its messages sealed and shows nothing of them, and reads what is written
once approved (an invite channel) or joined with the key (a key channel, its history
too); what the page writes there is sealed under the channel's key, so a member of the
circle who is not in the channel holds no plaintext of it.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from felund.protocol import OP_SNAPSHOT, OP_WHO
from felund.store import epochs as store_epochs
from felund.testing import Node, Relay, browser_missing, wait_for
from felund.trust import channels as chan
from felund.trust import wrap
from felund.v1 import events, ids
from felund.v1.chatmodel import event_text
from felund.v1.invite import decode_invite
from tests.e2e.conftest import in_page
from tests.e2e.test_web_app import _node as node_on_relay
from tests.e2e.test_web_epochs import ANA, _db_bytes, _post, sealed_wire

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect

pytestmark = pytest.mark.slow

T = 20_000  # ms: the bound of every wait on a page


def test_channel_keys_and_key_ids_are_python_s(lib_page) -> None:
    """Secrets, key ids (parsed, plausible), wrap contexts and events: the page's are the node's."""
    root, epoch, invite = "5a" * 32, "5b" * 32, "5c" * 32
    circle = ids.circle_id(root)
    eid, kid = "0123456789abcdef" * 2, "fedcba9876543210" * 2
    typed = "correct horse é 🐎"
    e1 = wrap.epoch_key_id(1, eid)
    candidates = [
        "epoch-0/k", f"{e1}/k", f"{e1}/i1.{kid}", f"{e1}/i0.{kid}", f"{e1}/i01.{kid}",
        f"{e1}/i2147483648.{kid}", f"{e1}/i2147483649.{kid}", f"{e1}/i1.{kid.upper()}",
        f"{e1}/K", f"{e1}/k/k", f"{e1}/", "/k", "e1.x/k", e1, "",
        f"e2147483648.{eid}/i2147483648.{kid}",
        f"e17.{eid}/k", f"e18.{eid}/k", f"{e1}/k\n", f"e2.{kid}/i3.{kid}",
    ]  # fmt: skip
    parts = [("den", chan.KEY_PART, typed), ("ops", chan.invite_part(1, kid), invite)]
    keys = store_epochs.keys_of(circle, root, [(eid, 1, epoch)], [eid], parts)
    asked = [(f"{e1}/k", "den"), ("epoch-0/k", "den"), (f"{e1}/k", "ops"),
             (f"{e1}/i1.{kid}", "ops"), (f"epoch-0/i1.{kid}", "ops"), (f"{e1}/i2.{kid}", "ops"),
             (e1, "den"), ("epoch-0", "ops")]  # fmt: skip
    out = in_page(
        lib_page,
        ("channels", "epochs", "chatmodel"),
        """
        const {channels: c, epochs, chatmodel} = L;
        const held = [{n: 1, epochId: arg.eid, secret: arg.epoch}];
        const keys = new epochs.EpochKeys(arg.root, held, arg.circle);
        keys.follow({chain: [arg.eid], removed: []});
        for (const [ch, part, secret] of arg.parts) keys.addPart(ch, part, secret);
        const secretOf = [];
        for (const [k, ch] of arg.asked) secretOf.push(await keys.secretOf(k, ch));
        const node = 'ab'.repeat(12);
        const made = (name, how) => chatmodel.channelEvent('create', arg.circle, name, node, how);
        const create = made('den', {access: 'key', key: arg.typed});
        let publicPrivate = '';
        try { chatmodel.madePrivate(made('pub', {})); } catch (e) { publicPrivate = e.message; }
        return {
          key: await c.keyChannelSecret(arg.typed, arg.epoch, arg.circle, 'den'),
          invite: await c.inviteChannelSecret(arg.invite, arg.epoch, arg.circle, 'ops'),
          keyId: c.channelKeyId(arg.e1, c.invitePart(7, arg.kid)),
          context: c.channelWrapContext(arg.circle, 'ops', arg.kid, 'cd'.repeat(12)),
          max: c.MAX_CHANNEL_KEY_ID_LEN,
          parsed: arg.candidates.map((k) => c.parseChannelKeyId(k)),
          plausible: arg.candidates.filter((k) => k).map((k) => keys.plausible(k)),
          secretOf,
          event: chatmodel.eventText(c.channelKeyEvent('ops', 2, arg.kid, {zz: 'w1', aa: 'w2'})),
          made: chatmodel.eventText(chatmodel.madePrivate(create)),
          publicPrivate,
        };
        """,
        {
            "root": root, "epoch": epoch, "invite": invite, "circle": circle, "eid": eid,
            "kid": kid, "typed": typed, "e1": e1, "candidates": candidates,
            "parts": [list(p) for p in parts], "asked": [list(a) for a in asked],
        },
    )  # fmt: skip
    assert out["key"] == chan.key_channel_secret(typed, epoch, circle, "den")
    assert out["invite"] == chan.invite_channel_secret(invite, epoch, circle, "ops")
    assert out["keyId"] == chan.channel_key_id(e1, chan.invite_part(7, kid))
    assert out["context"] == chan.channel_wrap_context(circle, "ops", kid, "cd" * 12)
    assert out["max"] == chan.MAX_CHANNEL_KEY_ID_LEN
    parsed = [chan.parse_channel_key_id(k) for k in candidates]
    assert out["parsed"] == [list(p) if p else None for p in parsed]
    assert sum(p is not None for p in parsed) >= 5  # the grammar's both sides are asked
    assert out["plausible"] == [keys.plausible(k) for k in candidates if k]
    assert out["secretOf"] == [keys.secret_for(k, ch) for k, ch in asked]
    assert sum(s is not None for s in out["secretOf"]) == 6
    wraps = {"zz": "w1", "aa": "w2"}
    assert out["event"] == event_text(events.channel_key_event("ops", 2, kid, wraps))
    made = events.channel_event("create", circle, "den", "ab" * 12, access="key", key=typed)
    assert out["made"] == event_text(events.made_private(made))
    assert out["publicPrivate"] == "only a key or invite channel can be private"


# ---------------------------------------------------------------------------
# Real nodes, the relay, the page.


def _sealed_rows(node: Node, circle: str, channel: str) -> int:
    """How many rows of ``channel`` a node holds sealed (relayed, shown nowhere)."""
    rows = node.call(OP_SNAPSHOT, {"circle_id": circle, "limit": 10_000})["msgs"]
    return sum(1 for r in rows if r["channel_id"] == channel and r.get("sealed"))


def _texts(node: Node, circle: str, channel: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle, channel)}


def _page_rows(page: Any, circle: str, channel: str) -> dict[str, Any]:
    """What the page's store holds of a channel: sealed rows (key ids), opened texts."""
    got: dict[str, Any] = page.evaluate(
        "async (a) => { const s = await (await import('/lib/store.js')).openStore('felund');"
        " const sealed = (await s.sealed(a.cid)).filter((r) => r.wire.channel_id === a.ch);"
        " const msgs = (await s.messages(a.cid, {channelId: a.ch})).map((m) => m.text);"
        " s.close(); return {sealed: sealed.map((r) => r.keyId), texts: msgs}; }",
        {"cid": circle, "ch": channel},
    )
    return got


def _can_follow(node: Node, circle: str, node_id: str) -> bool:
    people = node.call(OP_WHO, {"circle_id": circle})["people"]
    return any(p["node_id"] == node_id and p["can_follow"] for p in people)


def _circle_of_nodes(make_node, web_relay: Relay, open_peer) -> tuple[Node, Node, Any, str, str]:
    """anna (the owner, a node), cees (a node) and the page Pia in one circle, every one's
    X25519 key known to anna; (anna, cees, page, circle id, Pia's node id)."""
    anna = node_on_relay(make_node, "anna", web_relay)
    code = anna.cli("invite").stdout.strip()
    circle = anna.circle_id = ids.circle_id(decode_invite(code).secret)
    cees = node_on_relay(make_node, "cees", web_relay)
    assert cees.cli("join", "--code", code).stdout.strip() == circle
    cees.circle_id = circle
    anna.start()
    cees.start()
    web = open_peer()
    web.join("Pia", code)
    web.say("Pia here")
    pia = web.line("Pia here").locator(".name").get_attribute("title") or ""
    everyone = [anna.status()["node_id"], cees.status()["node_id"], pia]
    wait_for(
        lambda: all(_can_follow(anna, circle, n) for n in everyone),
        timeout=30,
        what="every member's X25519 key on anna",
    )
    return anna, cees, web, circle, pia


def test_a_node_s_invite_channel_is_sealed_to_the_page_until_it_is_approved(
    open_peer, make_node, web_relay: Relay
) -> None:
    """anna's private invite channel: the page, not a member, holds its messages sealed
    and shows nothing of them (no line, no badge, no count) while a public channel's
    message beside them is all of those; approved, it reads what is written since and
    writes there under the channel's key: anna reads it, cees (not in the channel) holds
    it sealed and no plaintext of it."""
    anna, cees, web, circle, pia = _circle_of_nodes(make_node, web_relay, open_peer)
    anna.cli("channel", "create", "ops", "--circle-id", circle, "--access", "invite", "--private")
    anna.cli("channel", "create", "pub", "--circle-id", circle)
    before = f"before Pia was approved {secrets.token_hex(4)}"
    anna.cli("send", "--circle-id", circle, "--channel", "ops", before)
    anna.cli("send", "--circle-id", circle, "--channel", "pub", "anna in pub")
    expect(web.unread("pub")).to_have_text("1", timeout=T)  # the path shows what it can read
    wait_for(lambda: len(_page_rows(web.page, circle, "ops")["sealed"]) == 1, timeout=30,
             what="anna's ops message sealed on the page")  # fmt: skip
    sealed = _page_rows(web.page, circle, "ops")
    assert sealed["texts"] == [] and re.fullmatch(r"epoch-0/i1\.[0-9a-f]{32}", sealed["sealed"][0])
    expect(web.unread("ops")).to_have_count(0)
    expect(web.channel_button("ops")).to_have_count(0)  # not a member: not listed
    expect(web.page).to_have_title("(1) felund")

    anna.cli("channel", "approve", "ops", "--circle-id", circle, "--node", pia)
    since = f"after Pia was approved {secrets.token_hex(4)}"
    anna.cli("send", "--circle-id", circle, "--channel", "ops", since)
    web.lists("/channels", re.compile(r"^#ops  invite private, 2 members$"))
    web.type("/channel switch ops")
    web.sees(since)
    expect(web.line(before)).to_have_count(0)  # under a channel epoch before Pia's
    assert _page_rows(web.page, circle, "ops")["sealed"] == sealed["sealed"]
    mine = f"Pia in ops {secrets.token_hex(4)}"
    web.say(mine)
    wait_for(lambda: mine in _texts(anna, circle, "ops"), timeout=30, what="Pia's post on anna")
    wait_for(lambda: _sealed_rows(cees, circle, "ops") == 3, timeout=30,
             what="cees to hold all three sealed")  # fmt: skip
    assert _texts(cees, circle, "ops") == set()
    on_disk = _db_bytes(cees)
    for text in (before, since, mine):
        assert text.encode() not in on_disk
    # What the page wrote is under the channel's newest epoch (i2: the one after the approve).
    page_wire = next(
        m for m in web.page.evaluate(
            "async (cid) => { const s = await (await import('/lib/store.js')).openStore('felund');"
            " const m = await s.messages(cid, {channelId: 'ops'}); s.close();"
            " return m.map((x) => ({text: x.text, keyId: x.wire.enc.key_id})); }", circle)
        if m["text"] == mine
    )  # fmt: skip
    assert re.fullmatch(r"epoch-0/i2\.[0-9a-f]{32}", page_wire["keyId"]), page_wire

    # Pia leaves: #ops is listed no more, and anna's next key of it leaves her out.
    web.type("/channel leave ops")
    expect(web.page.locator("#messages .notice-text").last).to_have_text("left #ops", timeout=T)
    expect(web.channel_button("ops")).to_have_count(0)
    wait_for(lambda: _channel_keys(web.page, circle, "ops") == 3, timeout=30,
             what="anna's key of #ops after Pia left")  # fmt: skip
    gone = f"after Pia left {secrets.token_hex(4)}"
    anna.cli("send", "--circle-id", circle, "--channel", "ops", gone)
    wait_for(lambda: len(_page_rows(web.page, circle, "ops")["sealed"]) == 2, timeout=30,
             what="anna's message after the leave sealed on the page")  # fmt: skip
    assert gone not in _page_rows(web.page, circle, "ops")["texts"]
    # A public channel is listed without a join: left, it is neither listed nor counted.
    web.type("/channel leave pub")
    expect(web.channel_button("pub")).to_have_count(0)
    anna.cli("send", "--circle-id", circle, "--channel", "pub", "anna in pub again")
    web.type("/channel switch general")
    anna.cli("send", "--circle-id", circle, "after the one in pub")
    web.sees("after the one in pub")
    expect(web.page).to_have_title("felund")
    web.no_errors()


def _channel_keys(page: Any, circle: str, channel: str) -> int:
    """How many CHANNEL_KEY_EVTs of ``channel`` the page holds (each a new key of it)."""
    count: int = page.evaluate(
        "async (a) => { const s = await (await import('/lib/store.js')).openStore('felund');"
        " const c = await s.messages(a.cid, {channelId: '__control'}); s.close();"
        " return c.filter((m) => m.text.includes('CHANNEL_KEY_EVT')"
        ' && m.text.includes(`"channel_id":"${a.ch}"`)).length; }',
        {"cid": circle, "ch": channel},
    )
    return count


def test_the_page_joins_a_key_channel_with_its_key_and_reads_its_history(
    open_peer, make_node, web_relay: Relay
) -> None:
    """anna's private key channel: sealed on the page until `/channel join den KEY`; a
    wrong key is refused and opens nothing; the right one opens its history, is kept (a
    reload still reads and writes), and what the page writes there anna reads, cees not."""
    anna, cees, web, circle, _ = _circle_of_nodes(make_node, web_relay, open_peer)
    key = f"den key {secrets.token_hex(4)}"
    anna.cli("channel", "create", "den", "--circle-id", circle, "--access", "key", "--key", key,
             "--private")  # fmt: skip
    history = [f"in the den {i} {secrets.token_hex(4)}" for i in range(2)]
    for text in history:
        anna.cli("send", "--circle-id", circle, "--channel", "den", text)
    wait_for(lambda: len(_page_rows(web.page, circle, "den")["sealed"]) == 2, timeout=30,
             what="the den's messages sealed on the page")  # fmt: skip
    expect(web.unread("den")).to_have_count(0)

    web.type("/channel join den not the key")
    expect(web.page.locator("#messages .notice-error .notice-text").last).to_contain_text(
        "wrong key", timeout=T
    )
    assert _page_rows(web.page, circle, "den")["texts"] == []
    web.type(f"/channel join den {key}")
    for text in history:
        web.sees(text)
    assert _page_rows(web.page, circle, "den")["sealed"] == []
    web.page.reload()
    web.wait_chat()
    web.type("/channel switch den")
    web.sees(history[0])
    mine = f"Pia in the den {secrets.token_hex(4)}"
    web.say(mine)
    wait_for(lambda: mine in _texts(anna, circle, "den"), timeout=30, what="Pia's post on anna")
    wait_for(lambda: _sealed_rows(cees, circle, "den") == 3, timeout=30,
             what="cees to hold the den's messages sealed")  # fmt: skip
    assert not any(t.encode() in _db_bytes(cees) for t in (*history, mine))
    web.no_errors()


def test_the_page_makes_a_private_channel_and_keys_it_for_whom_it_approves(
    open_peer, make_node, web_relay: Relay
) -> None:
    """The page (the owner) creates an invite channel: a member that cannot read a private
    one is named and the page asks (Escape: nothing made); made private, the page writes
    its channel epochs itself (as the node's rule says): approving a node wraps the next
    one to it, so the node reads what the page writes from then on, not before, and
    writes there; a node not in the channel holds no plaintext."""
    web = open_peer()
    web.create("Ann", "priv")
    code = web.invite_code()
    root = decode_invite(code).secret
    circle = ids.circle_id(root)
    nodey = node_on_relay(make_node, "nodey", web_relay)
    other = node_on_relay(make_node, "other", web_relay)
    for n in (nodey, other):
        assert n.cli("join", "--code", code).stdout.strip() == circle
        n.circle_id = circle
        n.start()
        n.cli("send", "--circle-id", circle, f"{n.home.name} here")
        web.sees(f"{n.home.name} here")
    # A member who announced no X25519 key (a client from before epochs): it cannot read one.
    _post(web_relay, root, [sealed_wire(root, root, "epoch-0", ANA, "ana, no xpk")])
    web.sees("ana, no xpk")

    dialog = web.page.locator("#dlg-confirm")
    notices = web.page.locator("#messages .notice-text")
    web.page.fill("#input", "/channel create ops invite")
    web.page.press("#input", "Enter")
    expect(dialog).to_be_visible(timeout=T)
    expect(web.page.locator("#confirm-text")).to_contain_text(
        "1 member uses a client that cannot read a private channel (ana)"
    )
    web.page.keyboard.press("Escape")
    expect(notices.last).to_have_text("nothing done: #ops is not created", timeout=T)
    web.page.fill("#input", "/channel create ops invite")
    web.page.press("#input", "Enter")
    expect(dialog).to_be_visible(timeout=T)
    web.page.click("#confirm-yes")
    expect(notices.last).to_have_text("created #ops (private)", timeout=T)
    first = f"before nodey {secrets.token_hex(4)}"
    web.say(first)

    web.type("/channel approve ops nodey")
    expect(notices.last).to_have_text("approved nodey in #ops", timeout=T)
    second = f"after nodey {secrets.token_hex(4)}"
    web.say(second)
    wait_for(lambda: second in _texts(nodey, circle, "ops"), timeout=30, what="nodey reads on")
    assert first not in _texts(nodey, circle, "ops")
    nodey.cli("send", "--circle-id", circle, "--channel", "ops", "nodey in ops")
    web.sees("nodey in ops")
    wait_for(lambda: _sealed_rows(other, circle, "ops") == 3, timeout=30,
             what="other to hold the three sealed")  # fmt: skip
    assert _texts(other, circle, "ops") == set()
    on_disk = _db_bytes(other)
    assert first.encode() not in on_disk and second.encode() not in on_disk

    # A key channel the page makes private keeps its key: what it writes, a node joined
    # with the key reads; "shared" makes one every member reads, and asks nothing.
    web.page.fill("#input", "/channel create den key a den key")
    web.page.press("#input", "Enter")
    web.page.click("#confirm-yes")
    expect(notices.last).to_have_text("created #den (private)", timeout=T)
    web.say("in the den")
    web.type("/channel create hall shared invite")
    expect(notices.last).to_have_text("created #hall", timeout=T)
    web.say("in the hall")
    wait_for(lambda: "in the hall" in _texts(other, circle, "hall"), timeout=30, what="hall")
    assert _texts(other, circle, "den") == set() and _sealed_rows(other, circle, "den") == 1
    nodey.cli("channel", "join", "den", "--circle-id", circle, "--key", "a den key")
    assert _texts(nodey, circle, "den") == {"in the den"}
    web.no_errors()
