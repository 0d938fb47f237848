"""The browser follows re-keys (issue 16, SPEC-16 §3 in felund/web): epochs in Chromium.

A real relay serves the modules and a real headless Chromium runs them. What
Python writes under an epoch secret is composed here as our nodes write it
(the message key of that secret, enc.key_id ``e<n>.<epoch id>``); what the page
writes is opened by Python.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import time
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from felund.protocol import OP_WHO
from felund.testing import (
    PY_NODE,
    Node,
    Relay,
    browser_missing,
    plaintext_of,
    signed_call,
    wait_for,
)
from felund.trust import identity, wrap
from felund.trust.identity import IdentityKey, unb64
from felund.v1 import crypto, events, ids
from felund.v1.chatmodel import event_text
from felund.v1.invite import decode_invite
from felund.v1.wire import compose_message, to_wire
from tests.e2e.conftest import in_page
from tests.e2e.test_web_app import _node as node_on_relay
from tests.e2e.test_web_app import _node_sees as node_sees

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect

pytestmark = pytest.mark.slow

T = 20_000  # ms: the bound of every wait on a page


def marked(tag: str) -> IdentityKey:
    """A key of the tests whose node id has the derived mark, as a new node's has."""
    for i in itertools.count():
        key = IdentityKey.from_seed(hashlib.sha256(f"{tag}{i}".encode()).digest())
        if identity.is_derived_form(key.node_id):
            return key
    raise AssertionError("unreachable")


ANA, CAL = marked("epoch-ana"), marked("epoch-cal")


def sealed_wire(
    root: str,
    secret: str,
    key_id: str,
    key: IdentityKey | None,
    text: str,
    *,
    channel: str = "general",
    msg_id: str = "",
) -> dict[str, Any]:
    """A message of the circle of ``root`` sealed under ``secret`` (an epoch's) as ``key_id``
    (``msg_id`` given: an EPOCH_EVT's, which is its epoch's id)."""
    author = key.node_id if key else "0123456789abcdef01234567"
    ts = int(time.time())
    wire = to_wire(
        compose_message(
            secret,
            circle_id=ids.circle_id(root),
            channel_id=channel,
            author_node_id=author,
            display_name="ana",
            text=text,
            created_ts=ts,
            msg_id=msg_id or ids.new_msg_id(author + text, ts),
            encrypt=True,
            key=key,
        )
    )
    wire["enc"]["key_id"] = key_id
    return wire


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _pull(relay: Relay, root: str) -> list[dict[str, Any]]:
    hint = ids.circle_hint(ids.circle_id(root))
    got: list[dict[str, Any]] = signed_call(
        relay, root, "GET", f"/messages?circle_hint={hint}&cursor=0&limit=500"
    )["messages"]
    return got


def _post(relay: Relay, root: str, wires: list[dict[str, Any]], signer: str = "") -> None:
    """Post as a member of the realm of ``signer`` (an epoch's secret; default the root's),
    registered first: the relay verifies against it. After a re-key the relay takes posts
    from the newest epoch's realm only."""
    signer = signer or root
    hint = ids.circle_hint(ids.circle_id(root))
    presence = {
        "node_id": PY_NODE,
        "circle_hint": hint,
        "endpoints": [],
        "capabilities": {"relay": False, "transport": ["ws"]},
        "ttl_s": 60,
        "signing_key": crypto.api_signing_key(signer),
    }
    signed_call(relay, signer, "POST", "/register", presence)
    body = {"circle_hint": hint, "messages": wires}
    assert signed_call(relay, signer, "POST", "/messages", body)["stored"] == len(wires)


def _newest_secret(page: Any, circle: str) -> str:
    """The newest epoch secret a page's store holds for a circle."""
    secret: str = page.evaluate(
        "async (cid) => { const s = await (await import('/lib/store.js')).openStore('felund');"
        " const e = await s.epochs(cid); s.close(); return e[0].secret; }",
        circle,
    )
    return secret


def test_sealing_and_opening_by_key_id(lib_page) -> None:
    """The root keeps "epoch-0" (v1's bytes); an epoch's key id is e<n>.<id>; a message
    opens with the secret its key id names, and Python opens what the page sealed."""
    root, epoch = "5a" * 32, "5b" * 32
    epoch_id = "0123456789abcdef" * 2
    out = in_page(
        lib_page,
        ("wire", "wrap", "epochs"),
        """
        const {wire, wrap, epochs} = L;
        const f = {circleId: arg.circle, authorNodeId: 'ab'.repeat(12), text: 'under e1',
                   createdTs: 1780000000, msgId: 'cd'.repeat(16)};
        const root = await wire.composeMessage(arg.root, {...f, text: 'under the root'});
        const e1 = await wire.composeMessage(arg.epoch, {...f, keyId: wrap.epochKeyId(1, arg.eid)});
        const opened = await wire.openMessage(arg.epoch, arg.circle, e1);
        let wrong = '';
        try { await wire.openMessage(arg.root, arg.circle, e1); } catch (e) { wrong = e.kind; }
        const keys = new epochs.EpochKeys(arg.root, [{n: 1, epochId: arg.eid, secret: arg.epoch}]);
        return {
          rootKeyId: root.enc.key_id, e1KeyId: e1.enc.key_id, text: opened.text, wrong, e1,
          parsed: [wrap.parseKeyId('epoch-0'), wrap.parseKeyId(e1.enc.key_id),
                   wrap.parseKeyId('e0.' + arg.eid), wrap.parseKeyId('e1.' + arg.eid.toUpperCase()),
                   wrap.parseKeyId('e2147483649.' + arg.eid)],
          secretFor: [keys.secretFor('epoch-0') === arg.root,
                      keys.secretFor(e1.enc.key_id) === arg.epoch, keys.secretFor('e2.' + arg.eid)],
          plausible: [keys.plausible('e17.' + 'ef'.repeat(16)),
                      keys.plausible('e18.' + 'ef'.repeat(16)), keys.plausible('k1')],
          newest: keys.newestKeyId(),
        };
        """,
        {"root": root, "epoch": epoch, "eid": epoch_id, "circle": ids.circle_id(root)},
    )
    assert out["rootKeyId"] == "epoch-0"
    assert out["e1KeyId"] == f"e1.{epoch_id}"
    assert out["text"] == "under e1" and out["wrong"] == "auth"
    assert out["parsed"] == [
        {"n": 0, "epochId": ""},
        {"n": 1, "epochId": epoch_id},
        None,
        None,
        None,
    ]
    assert out["secretFor"] == [True, True, None]
    assert out["plausible"] == [True, False, False]
    assert out["newest"] == f"e1.{epoch_id}"
    # Python opens it with the epoch's secret: the key id picks the secret, the rest is v1's.
    assert plaintext_of(epoch, out["e1"])["text"] == "under e1"


SYNC = """
async (o) => {
  const {openStore} = await import('/lib/store.js');
  const {CircleSync} = await import('/lib/sync.js');
  const trust = await import('/lib/trust.js');
  const ids = await import('/lib/ids.js');
  const store = await openStore(o.db);
  const key = await trust.generateKey();
  const identity = {nodeId: trust.nodeIdOf(key.publicKey), displayName: o.db, key};
  await store.putIdentity(identity);
  // A member by a later epoch's code holds that epoch and no root (o.secret "").
  const circleId = o.circleId ?? await ids.circleId(o.secret);
  const circle = {circleId, secret: o.secret, name: 'c', relayUrl: o.relay};
  await store.putCircle(circle);
  if (o.epoch) await store.putEpoch(circleId, o.epoch);
  window.got = [];
  window.store = store;
  window.circleId = circleId;
  window.sync = new CircleSync(store, {
    circle, identity,
    onMessages: (msgs) => window.got.push(...msgs.map((m) => m.text)),
    pollMs: 300, feedPollMs: 300, useFeed: false,
  });
  await window.sync.start();
}
"""


def test_a_sealed_message_waits_for_its_epoch_then_opens(new_page, web_relay: Relay) -> None:
    """A message under an epoch the page does not hold is kept sealed (shown nowhere, no
    onMessages), an implausible key id is refused; once the epoch's secret is held, what
    was sealed opens, the page writes under it, and an unsigned message under the root
    (an old epoch now) is refused as stale."""
    root, epoch = secrets.token_hex(32), secrets.token_hex(32)
    epoch_id = secrets.token_hex(16)
    key_id = f"e1.{epoch_id}"
    pg = new_page(f"{web_relay.url}/v1/health")
    pg.evaluate(SYNC, {"db": "epoch-sync", "secret": root, "relay": web_relay.url})
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, epoch, key_id, ANA, "sealed until e1"),
            sealed_wire(root, epoch, f"e99.{epoch_id}", ANA, "too far ahead"),
            sealed_wire(root, root, "epoch-0", ANA, "under the root"),
        ],
    )
    pg.wait_for_function("window.got.length >= 1", timeout=T)
    assert pg.evaluate("window.got") == ["under the root"]
    kept = pg.evaluate(
        "async () => ({sealed: (await window.store.sealed(window.circleId)).map((r) => r.keyId),"
        " texts: (await window.store.messages(window.circleId)).map((m) => m.text),"
        " rejected: Object.fromEntries(window.sync.rejected)})"
    )
    assert kept == {"sealed": [key_id], "texts": ["under the root"], "rejected": {"unknown_key": 1}}

    pg.evaluate(
        "async (e) => window.sync.hold([{n: 1, epochId: e.id, secret: e.secret}])",
        {"id": epoch_id, "secret": epoch},
    )
    assert pg.evaluate("window.got") == ["under the root", "sealed until e1"]
    assert pg.evaluate("async () => (await window.store.sealed(window.circleId)).length") == 0
    assert pg.evaluate("async () => (await window.store.epochs(window.circleId)).length") == 1

    # The page now writes under e1 (Python opens it with the epoch's secret) ...
    sent = pg.evaluate("async () => (await window.sync.send('general', 'page under e1')).wire")
    assert sent["enc"]["key_id"] == key_id
    assert plaintext_of(epoch, sent)["text"] == "page under e1"
    # ... and an unsigned message under the root is stale; a signed one still reads.
    pg.evaluate("(id) => window.sync.keys.follow({chain: [id], removed: []})", epoch_id)
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, root, "epoch-0", None, "unsigned, old epoch"),
            sealed_wire(root, root, "epoch-0", ANA, "signed, old epoch"),
        ],
    )
    pg.wait_for_function("window.got.length >= 3", timeout=T)
    assert pg.evaluate("window.got")[2:] == ["signed, old epoch"]
    wait_for(
        lambda: pg.evaluate("Object.fromEntries(window.sync.rejected)").get("stale_epoch") == 1,
        timeout=10,
        what="the unsigned old-epoch message refused",
    )
    # Once the fold says ana was removed, ana's messages are refused, under any epoch.
    pg.evaluate(
        "(a) => window.sync.keys.follow({chain: [a.id], removed: [a.ana]})",
        {"id": epoch_id, "ana": ANA.node_id},
    )
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, epoch, key_id, ANA, "ana, removed"),
            sealed_wire(root, epoch, key_id, CAL, "cal, still a member"),
        ],
    )
    pg.wait_for_function("window.got.length >= 4", timeout=T)
    assert pg.evaluate("window.got")[3:] == ["cal, still a member"]
    assert pg.evaluate("Object.fromEntries(window.sync.rejected)")["removed"] == 1


def test_the_page_shows_nothing_of_a_sealed_message(open_peer, web_relay: Relay) -> None:
    """A message the page cannot open yet (a later epoch's) is no line, no channel, no
    unread badge and no count in the title; a readable one beside it is all of those."""
    web = open_peer()
    web.create("Ann", "sealed")
    root = decode_invite(web.invite_code()).secret
    key_id = f"e1.{secrets.token_hex(16)}"
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, secrets.token_hex(32), key_id, ANA, "not yet", channel="later"),
            sealed_wire(root, root, "epoch-0", ANA, "readable", channel="now"),
        ],
    )
    expect(web.unread("now")).to_have_text("1", timeout=T)
    expect(web.page).to_have_title("(1) felund")
    expect(web.channel_button("later")).to_have_count(0)
    expect(web.page.locator("#messages .msg .text", has_text="not yet")).to_have_count(0)
    # Kept, as it travels, for when its epoch comes.
    kept = web.page.evaluate(
        "async (cid) => { const s = await (await import('/lib/store.js')).openStore('felund');"
        " const rows = await s.sealed(cid); s.close(); return rows.map((r) => r.keyId); }",
        ids.circle_id(root),
    )
    assert kept == [key_id]
    web.no_errors()


def test_a_member_by_an_epoch_code_walks_the_links_back_to_the_root(
    new_page, web_relay: Relay
) -> None:
    """A page that holds only epoch 2 (its invite code's) keeps what was written before
    sealed, then walks the EPOCH_LINKs back: each candidate is taken only if it opens
    the EPOCH_EVT it names (a bogus one is not), and it reads the whole history."""
    root, e1, e2 = (secrets.token_hex(32) for _ in range(3))
    id1, id2 = secrets.token_hex(16), secrets.token_hex(16)
    k1, k2 = f"e1.{id1}", f"e2.{id2}"
    circle = ids.circle_id(root)

    def control(secret: str, key_id: str, body: str, msg_id: str = "") -> dict[str, Any]:
        return sealed_wire(root, secret, key_id, ANA, body, channel="__control", msg_id=msg_id)

    def link(epoch_id: str, prev: str) -> str:
        return f'{{"epoch_id":"{epoch_id}","prev":"{prev}","t":"EPOCH_LINK"}}'

    history = [
        sealed_wire(root, root, "epoch-0", ANA, "said under the root"),
        control(root, "epoch-0", '{"t":"EPOCH_EVT"}', id1),
        control(e1, k1, link(id1, root)),
        sealed_wire(root, e1, k1, ANA, "said under e1"),
        control(e1, k1, '{"t":"EPOCH_EVT"}', id2),
        control(e2, k2, link(id2, secrets.token_hex(32))),  # bogus: opens nothing
        sealed_wire(root, e2, k2, ANA, "said under e2"),
    ]
    _post(web_relay, root, history[:6] + history[6:])
    pg = new_page(f"{web_relay.url}/v1/health")
    epoch = {"n": 2, "epochId": id2, "secret": e2}
    opts = {"db": "epoch-walk", "secret": "", "circleId": circle, "relay": web_relay.url}
    pg.evaluate(SYNC, opts | {"epoch": epoch})
    pg.wait_for_function("window.got.includes('said under e2')", timeout=T)
    stuck = pg.evaluate(
        "async () => (await window.store.sealed(window.circleId)).map((r) => r.keyId).sort()"
    )
    assert stuck == sorted(["epoch-0", "epoch-0", k1, k1, k1])  # the bogus link walks nowhere
    assert "said under e1" not in pg.evaluate("window.got")

    # The true link of e2 comes: e1 opens, and through e1's link the root.
    _post(web_relay, root, [control(e2, k2, link(id2, e1))])
    pg.wait_for_function("window.got.includes('said under the root')", timeout=T)
    got = pg.evaluate("window.got")
    assert {"said under e1", "said under the root", "said under e2"} <= set(got)
    assert pg.evaluate("async () => (await window.store.sealed(window.circleId)).length") == 0
    stored = pg.evaluate(
        "async () => ({root: (await window.store.getCircle(window.circleId)).secret,"
        " epochs: (await window.store.epochs(window.circleId)).map((e) => e.n)})"
    )
    assert stored == {"root": root, "epochs": [2, 1]}


def _key(node: Node) -> IdentityKey:
    """A node's own signing key (what it would sign with if it did not know it was removed)."""
    seed = unb64(json.loads((node.home / "identity.json").read_text())["ed25519_seed"], 32)
    assert seed is not None
    return IdentityKey.from_seed(seed)


def _db_bytes(node: Node) -> bytes:
    """Everything the node's database holds on disk (the WAL too)."""
    return b"".join(p.read_bytes() for p in node.home.glob("felund.db*") if p.is_file())


def test_the_owner_in_the_browser_kicks_a_node(open_peer, make_node, web_relay: Relay) -> None:
    """The page owns its circle and /kicks a real node: a member page's /kick is refused
    with the sentence saying who can; the owner's asks first (who is removed, who cannot
    follow), Escape does nothing; once confirmed, what the page writes next is under the
    new epoch: the other page reads it (after a reload too), the node does not and its
    database holds no plaintext of it, and what the node writes shows nowhere."""
    web = open_peer()
    web.create("Ann", "club")
    code = web.invite_code()
    root = decode_invite(code).secret
    circle = ids.circle_id(root)
    node = node_on_relay(make_node, "nodey", web_relay)
    node.circle_id = node.cli("join", "--code", code).stdout.strip()
    assert node.circle_id == circle
    node.start()
    node.cli("send", "--circle-id", circle, "nodey here")
    web.sees("nodey here")
    bob = open_peer()
    bob.join("Bob", code)
    bob.say("Bob here")
    web.sees("Bob here")
    # A member with a signing key and no X25519 key (a client from before epochs), and
    # one whose X25519 key is a low-order point (no secret can be wrapped to it).
    low_order = event_text(events.key_announce_event(CAL.node_id, b64(CAL.public), b64(bytes(32))))
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, root, "epoch-0", CAL, low_order, channel="__control"),
            sealed_wire(root, root, "epoch-0", CAL, "cal, a key no wrap opens"),
            sealed_wire(root, root, "epoch-0", ANA, "ana, no xpk"),
        ],
    )
    web.sees("ana, no xpk")
    notices = web.page.locator("#messages .notice-text")

    bob.type("/kick nodey")
    expect(bob.page.locator("#messages .notice-error .notice-text").last).to_contain_text(
        "or a moderator can remove a member", timeout=T
    )
    web.page.keyboard.press("F1")
    expect(web.page.locator("#dlg-help")).to_contain_text("/kick PERSON")
    web.page.keyboard.press("Escape")

    dialog = web.page.locator("#dlg-confirm")
    web.page.fill("#input", "/kick nodey")
    web.page.press("#input", "Enter")
    expect(dialog).to_be_visible(timeout=T)
    expect(web.page.locator("#confirm-text")).to_contain_text("nodey will be removed from club")
    expect(web.page.locator("#confirm-text")).to_contain_text(
        "1 member uses a client that cannot follow (ana): it needs a new invite code."
    )
    web.page.keyboard.press("Escape")
    expect(notices.last).to_have_text("nothing done: nodey stays", timeout=T)

    web.page.fill("#input", "/kick nodey")
    web.page.press("#input", "Enter")
    expect(dialog).to_be_visible(timeout=T)
    web.page.click("#confirm-yes")
    expect(notices.last).to_contain_text("nodey is removed from club (new key, epoch 1)", timeout=T)
    web.lists("/who", re.compile(r"^nodey  [0-9a-f]{8}  removed  last seen"))
    bob.lists("/who", re.compile(r"^nodey  [0-9a-f]{8}  removed  last seen"))

    web.say("after the kick")
    bob.sees("after the kick")
    bob.say("Bob under the new key")
    web.sees("Bob under the new key")
    web.page.reload()
    web.wait_chat()
    web.say("after a reload")
    bob.sees("after a reload")
    sealed = [w for w in _pull(web_relay, root) if w["channel_id"] == "general"]
    assert [w["enc"]["key_id"][:3] for w in sealed[-3:]] == ["e1."] * 3
    # F2 gives the new epoch's code: a newcomer by it reads on, and back to the root
    # through the EPOCH_LINK.
    new_code = web.invite_code()
    assert decode_invite(new_code).epoch == 1
    cal = open_peer()
    cal.join("Cal", new_code)
    expect(cal.page.locator("#hdr-circle")).to_have_text("club", timeout=T)
    cal.sees("after a reload")
    cal.sees("nodey here")
    cal.say("Cal by the new code")
    web.sees("Cal by the new code")

    # The node read up to a later marker (under the root it holds, posted in the new
    # epoch's realm: the relay takes posts from there only), and none of what came under
    # the new key.
    e1 = _newest_secret(web.page, circle)
    _post(web_relay, root, [sealed_wire(root, root, "epoch-0", ANA, "marker")], e1)
    node_sees(node, "marker", "ana")
    texts = {m["text"] for m in node.json("inbox", "--circle-id", circle, "--limit", "1000")}
    assert "nodey here" in texts and "after the kick" not in texts
    on_disk = _db_bytes(node)
    for text in ("after the kick", "Bob under the new key", "after a reload"):
        assert text.encode() not in on_disk
    # The node knows itself removed and writes nothing; what it would have written (signed
    # by its key, under the root it holds) shows on no page.
    refused = node.cli("send", "--circle-id", circle, "nodey, removed", check=False)
    assert "you were removed from this circle" in refused.stderr
    forged = sealed_wire(root, root, "epoch-0", _key(node), "nodey, removed")
    _post(web_relay, root, [forged], e1)
    bob.say("Bob last")
    web.sees("Bob last")
    expect(web.line("nodey, removed")).to_have_count(0)
    web.no_errors()
    bob.no_errors()
    cal.no_errors()


def _people(node: Node, circle: str) -> dict[str, dict[str, Any]]:
    return {p["node_id"]: p for p in node.call(OP_WHO, {"circle_id": circle})["people"]}


def test_a_node_removes_a_third_member_and_the_page_reads_and_writes_on(
    open_peer, make_node, web_relay: Relay
) -> None:
    """A real node owns the circle; the page and another node are members. The owner
    removes that node (`felund member remove`): the page unwraps the new epoch and reads
    the owner's next message, what it writes next is under the new epoch and the owner
    reads it; the removed node reads neither (its database holds no plaintext of them)."""
    anna = node_on_relay(make_node, "anna", web_relay)
    code = anna.cli("invite").stdout.strip()
    circle = anna.circle_id = ids.circle_id(decode_invite(code).secret)
    cees = node_on_relay(make_node, "cees", web_relay)
    assert cees.cli("join", "--code", code).stdout.strip() == circle
    anna.start()
    cees.start()
    web = open_peer()
    # No feed: the page polls (a feed would bring what came while it was away, if within
    # its last two minutes; a page offline longer than that has only the polls).
    web.page.route_web_socket(re.compile(r".*/v1/relay/ws.*"), lambda ws: ws.close())
    web.join("Pia", code)
    anna.cli("send", "--circle-id", circle, "anna here")
    cees.cli("send", "--circle-id", circle, "cees here")
    web.sees("anna here")
    web.sees("cees here")
    web.say("Pia here")
    node_sees(anna, "Pia here", "Pia")
    everyone = [n.status()["node_id"] for n in (anna, cees)]
    pia = web.line("Pia here").locator(".name").get_attribute("title") or ""
    # The owner knows every member's X25519 key (the page's too): the re-key wraps to each.
    wait_for(
        lambda: all(_people(anna, circle).get(i, {}).get("can_follow") for i in [*everyone, pia]),
        timeout=30,
        what="every member's X25519 key on anna",
    )

    # The page is offline through the re-key, with a message waiting in its outbox: its
    # epoch has ended at the relay when it comes back (its post is refused), and it catches
    # up all the same, by polling.
    web.context.set_offline(True)
    expect(web.page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=T)
    web.type("written offline")
    anna.cli("member", "remove", "cees", "--circle-id", circle, "--yes")
    anna.cli("send", "--circle-id", circle, "anna under the new key")
    anna_id = everyone[0]
    wait_for(  # at the relay, posted in epoch 1's realm: the root's has ended
        lambda: any(
            w["author_node_id"] == anna_id and (w["enc"] or {}).get("key_id", "")[:3] == "e1."
            for w in _pull(web_relay, decode_invite(code).secret)
        ),
        timeout=30,
        what="anna's message at the relay under epoch 1",
    )
    web.context.set_offline(False)
    web.sees("anna under the new key")
    node_sees(anna, "written offline", "Pia")
    web.say("Pia under the new key")
    node_sees(anna, "Pia under the new key", "Pia")
    mine = [w for w in _pull(web_relay, decode_invite(code).secret) if w["author_node_id"] == pia]
    assert mine[-1]["enc"]["key_id"].startswith("e1.")

    cees_id = everyone[1]
    wait_for(
        lambda: _people(cees, circle)[cees_id]["removed"],
        timeout=30,
        what="cees to read its removal",
    )
    texts = {m["text"] for m in cees.inbox(circle)}
    assert "Pia here" in texts
    on_disk = _db_bytes(cees)
    for text in ("anna under the new key", "Pia under the new key"):
        assert text not in texts and text.encode() not in on_disk
    web.no_errors()


def _control_of(relay: Relay, root: str, secret: str, author: str) -> list[dict[str, Any]]:
    """The control events ``author`` wrote that ``secret`` opens, as objects."""
    out = []
    for w in _pull(relay, root):
        if w["channel_id"] != "__control" or w["author_node_id"] != author:
            continue
        try:
            out.append(json.loads(plaintext_of(secret, w)["text"]))
        except InvalidTag:
            continue
    return out


def test_the_owner_page_covers_a_losing_branch_s_removal(open_peer, web_relay: Relay) -> None:
    """A moderator (Python, signed) writes two epoch 1s at once removing two people: the
    fold keeps one, and the other's removal is uncovered. The page, the owner, holding
    the winner (wrapped to it), writes epoch 2 removing both, then its EPOCH_LINK, and
    writes under epoch 2 from then on."""
    web = open_peer()
    web.create("Ann", "fork")
    root = decode_invite(web.invite_code()).secret
    circle = ids.circle_id(root)
    announce = event_text(
        events.key_announce_event(ANA.node_id, b64(ANA.public), b64(ANA.x_public))
    )
    _post(
        web_relay,
        root,
        [
            sealed_wire(root, root, "epoch-0", ANA, announce, channel="__control"),
            sealed_wire(root, root, "epoch-0", ANA, "ana here"),
        ],
    )
    web.sees("ana here")
    web.type("/role moderator ana")
    expect(web.page.locator("#messages .notice-text").last).to_have_text(
        "ana is now a moderator", timeout=T
    )
    web.say("Ann here")
    ann = web.line("Ann here").locator(".name").get_attribute("title") or ""
    (mine,) = [e for e in _control_of(web_relay, root, root, ann) if e["t"] == "KEY_ANNOUNCE"]
    ann_xpk = base64.b64decode(mine["xpk"])

    gone = sorted(secrets.token_hex(12) for _ in range(2))
    forks, wires = [], []
    for removed in gone:
        epoch_id, secret = secrets.token_hex(16), secrets.token_bytes(32)
        wraps = {ann: wrap.wrap(secret, ann_xpk, wrap.wrap_context(circle, epoch_id, ann))}
        body = event_text(events.epoch_event(1, "", [removed], wraps))
        forks.append((epoch_id, secret.hex(), removed))
        wires.append(
            sealed_wire(root, root, "epoch-0", ANA, body, channel="__control", msg_id=epoch_id)
        )
    _post(web_relay, root, wires)  # at once: then the root's realm ends
    winner_id, winner_secret, _ = min(forks)

    def epoch_2() -> list[dict[str, Any]]:
        got = _control_of(web_relay, root, winner_secret, ann)
        return [e for e in got if e["t"] == "EPOCH_EVT"]

    (written,) = wait_for(epoch_2, timeout=30, what="the page's epoch 2")
    assert written["epoch"] == 2 and written["parent"] == winner_id
    assert written["removed"] == gone
    assert sorted(written["wraps"]) == sorted([ann, ANA.node_id])
    web.say("under epoch 2")
    said = [w for w in _pull(web_relay, root) if w["author_node_id"] == ann]
    assert said[-1]["enc"]["key_id"].startswith("e2.")
    web.no_errors()
