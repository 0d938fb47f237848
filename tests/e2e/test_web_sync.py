"""lib/sync.js (with relay.js and store.js) against a real relay in a real Chromium.

The relay runs with ``--require-signatures``, so every request a page makes
must carry a valid signature or fail; the relay's log then shows each one
verified. Each page is a fresh browser context (its own IndexedDB) on the
relay's origin, driving the library directly (no app). Messages from Python
are composed by felund.v1.wire and posted signed (felund.relay.client), and
what the pages send is opened by felund.v1.wire: both directions interoperate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from felund import __version__
from felund.testing import PY_NODE, Relay, free_port, signed_call, wire_message
from felund.v1 import chatmodel, ids
from felund.v1.wire import open_message, parse_message

pytestmark = pytest.mark.slow

SECRET_A = "5a" * 32
WAIT_MS = 20_000

SETUP = """
async (o) => {
  const {openStore} = await import('/lib/store.js');
  const {CircleSync} = await import('/lib/sync.js');
  const ids = await import('/lib/ids.js');
  const store = await openStore(o.db);
  const circleId = await ids.circleId(o.secret);
  let identity = await store.getIdentity();
  if (!identity) {
    identity = {nodeId: await ids.newNodeId(), displayName: o.name};
    await store.putIdentity(identity);
  }
  await store.putCircle({circleId, secret: o.secret, name: 'c', relayUrl: o.relay});
  window.got = [];
  window.states = [];
  window.pendingNow = [];
  if (o.slowRegisterMs) {
    // The relay answers registrations late: a post that does not wait for
    // the registration reaches it before the circle's signing key is pinned.
    const fetch0 = window.fetch;
    window.fetch = async (url, init) => {
      if (String(url).endsWith('/v1/register') && init && init.method === 'POST') {
        await new Promise((r) => setTimeout(r, o.slowRegisterMs));
      }
      return fetch0(url, init);
    };
  }
  window.sync = new CircleSync(store, {
    circle: {circleId, secret: o.secret, relayUrl: o.relay},
    identity,
    onMessages: (msgs) => window.got.push(...msgs.map((m) =>
      ({msgId: m.msgId, text: m.text, channelId: m.channelId, author: m.authorNodeId}))),
    onState: (s) => window.states.push(s),
    onOutbox: (p) => { window.pendingNow = p; },
    pollMs: o.pollMs, feedPollMs: o.feedPollMs, feedRetryMs: 500, useFeed: o.useFeed,
  });
  let sentTs = null;
  if (o.sendAtStart) {
    // Not awaiting start(): the app writes a new circle's first events this way.
    const started = window.sync.start();
    sentTs = (await window.sync.send('general', o.sendAtStart)).createdTs;
    await started;
  } else {
    await window.sync.start();
  }
  return {nodeId: identity.nodeId, circleId, state: window.sync.state, sentTs};
}
"""


@pytest.fixture
def strict_relay(tmp_path) -> Iterator[Relay]:
    """A relay that refuses every unsigned message, feed and signalling call."""
    server = Relay(tmp_path / "relay", "--require-signatures")
    server.start()
    yield server
    server.stop()
    _assert_every_request_was_signed(server)


def _assert_every_request_was_signed(server: Relay) -> None:
    lines = [json.loads(x) for x in server.log_text().splitlines() if x.startswith("{")]
    calls = [
        e
        for e in lines
        if e.get("event") == "http.request"
        and str(e.get("path", "")).startswith("/v1/")
        and e["path"] != "/v1/health"
    ]
    assert calls, "no API calls reached the relay"
    unsigned = [
        (e["method"], e["path"], e["status"], e.get("code")) for e in calls if not e["signed"]
    ]
    assert not unsigned, unsigned


def _peer(
    new_page: Callable[..., Any],
    relay: Relay,
    name: str,
    secret: str = SECRET_A,
    *,
    poll_ms: int = 5000,
    feed_poll_ms: int = 30000,
    use_feed: bool = True,
    block_feed: bool = False,
    slow_register_ms: int = 0,
    send_at_start: str = "",
) -> tuple[Any, dict[str, Any], list[str]]:
    """A page running one CircleSync; also the URLs of every request it sent to the relay."""
    page = new_page(f"{relay.url}/v1/health")
    sent: list[str] = []
    page.on("request", lambda r: _check_signed(r, sent))
    page.on("websocket", _check_feed_signed)
    if block_feed:
        # The feed refused at once, as a proxy without WebSocket support would.
        page.route_web_socket(re.compile(r".*/v1/relay/ws.*"), lambda ws: ws.close())
    info = page.evaluate(
        SETUP,
        {
            "db": f"felund-{name}",
            "secret": secret,
            "relay": relay.url,
            "name": name,
            "pollMs": poll_ms,
            "feedPollMs": feed_poll_ms,
            "useFeed": use_feed,
            "slowRegisterMs": slow_register_ms,
            "sendAtStart": send_at_start,
        },
    )
    return page, info, sent


UNSIGNED: list[str] = []  # what any page sent to the API without a signature


@pytest.fixture(autouse=True)
def _every_page_request_signed() -> Iterator[None]:
    UNSIGNED.clear()
    yield
    assert not UNSIGNED, UNSIGNED


def _check_signed(request: Any, sent: list[str]) -> None:
    url = request.url
    if "/v1/" not in url or url.endswith("/v1/health"):
        return
    sent.append(url)
    if not re.fullmatch(r"[0-9a-f]{64}", request.headers.get("x-felund-signature", "")):
        UNSIGNED.append(f"{request.method} {url}")


def _check_feed_signed(ws: Any) -> None:
    # Browsers cannot set headers on a WebSocket: the signature is in the query.
    if not all(f"{q}=" in ws.url for q in ("ts", "nonce", "signature")):
        UNSIGNED.append(f"WS {ws.url}")


def _texts(page: Any) -> list[str]:
    texts: list[str] = page.evaluate("window.got.map((m) => m.text)")
    return texts


def _wait_texts(page: Any, count: int, timeout_ms: int = WAIT_MS) -> None:
    page.wait_for_function(f"window.got.length >= {count}", timeout=timeout_ms)


# --- Python's side: a signed client of the same circle -------------------------------------------
def _compose(secret: str, texts: list[str]) -> list[dict[str, Any]]:
    return [
        wire_message(secret, PY_NODE, text, name="py", encrypt=i % 2 == 0)  # both kinds
        for i, text in enumerate(texts)
    ]


def _post(relay: Relay, secret: str, wires: list[dict[str, Any]]) -> int:
    hint = ids.circle_hint(ids.circle_id(secret))
    stored = 0
    for i in range(0, len(wires), 50):
        body = {"circle_hint": hint, "messages": wires[i : i + 50]}
        stored += signed_call(relay, secret, "POST", "/messages", body)["stored"]
    return stored


def _pull_all(relay: Relay, secret: str) -> list[dict[str, Any]]:
    hint = ids.circle_hint(ids.circle_id(secret))
    out: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = signed_call(
            relay, secret, "GET", f"/messages?circle_hint={hint}&cursor={cursor}&limit=500"
        )
        out += page["messages"]
        if len(page["messages"]) < 500:
            return out
        cursor = page["next_cursor"]


def _opened_texts(relay: Relay, secret: str) -> dict[str, str]:
    circle = ids.circle_id(secret)
    return {
        m["msg_id"]: open_message(secret, circle, parse_message(m)).text
        for m in _pull_all(relay, secret)
    }


# --- tests ------------------------------------------------------------------------------------
def test_two_pages_exchange_messages_through_the_feed(new_page, strict_relay: Relay) -> None:
    # Polling every 60 s: anything arriving within seconds came through the feed.
    alice, a, _ = _peer(new_page, strict_relay, "alice", poll_ms=60_000, feed_poll_ms=60_000)
    bob, b, _ = _peer(new_page, strict_relay, "bob", poll_ms=60_000, feed_poll_ms=60_000)
    assert a["state"] == b["state"] == "online"
    assert a["circleId"] == b["circleId"] == ids.circle_id(SECRET_A)
    for page in (alice, bob):
        page.wait_for_function("window.sync._feedOpen === true", timeout=WAIT_MS)
    started = time.monotonic()
    sent = alice.evaluate("async () => (await window.sync.send('general', 'hi bob 🚀')).pending")
    assert sent is True
    _wait_texts(bob, 1, timeout_ms=10_000)
    assert time.monotonic() - started < 10
    bob.evaluate("async () => { await window.sync.send('general', 'hi alice'); }")
    _wait_texts(alice, 1, timeout_ms=10_000)
    assert _texts(bob) == ["hi bob 🚀"]
    assert _texts(alice) == ["hi alice"]
    assert bob.evaluate("window.got[0].author") == a["nodeId"]
    # Acknowledged: the outboxes are empty, and Python opens both messages as sent.
    for page in (alice, bob):
        page.wait_for_function("window.sync.pending.size === 0", timeout=WAIT_MS)
    assert sorted(_opened_texts(strict_relay, SECRET_A).values()) == ["hi alice", "hi bob 🚀"]
    # Senders never see their own message again through onMessages.
    assert alice.evaluate("window.got.length") == bob.evaluate("window.got.length") == 1


def test_polling_with_the_cursor_when_the_feed_is_blocked(new_page, strict_relay: Relay) -> None:
    alice, _, alice_urls = _peer(new_page, strict_relay, "alice", poll_ms=500, block_feed=True)
    bob, _, _ = _peer(new_page, strict_relay, "bob", poll_ms=500, block_feed=True)
    for i in range(5):
        alice.evaluate(f"async () => {{ await window.sync.send('general', 'm{i}'); }}")
    (_post(strict_relay, SECRET_A, _compose(SECRET_A, ["from python"])))
    bob.wait_for_function("window.got.length >= 6", timeout=WAIT_MS)
    assert sorted(_texts(bob)) == ["from python", "m0", "m1", "m2", "m3", "m4"]
    alice.wait_for_function("window.got.length >= 1", timeout=WAIT_MS)
    assert _texts(alice) == ["from python"]
    assert alice.evaluate("window.sync._feedOpen") is False
    alice.wait_for_function("window.sync._position.cursor > 0", timeout=WAIT_MS)
    # More polls (a Playwright wait: request events are delivered during Playwright calls).
    alice.wait_for_timeout(1500)
    pulls = [u for u in alice_urls if "/v1/messages?" in u]
    assert len(pulls) >= 3
    cursors = [int(re.search(r"cursor=(\d+)", u).group(1)) for u in pulls]  # type: ignore[union-attr]
    assert cursors == sorted(cursors) and cursors[-1] > 0  # it pages on from where it was
    assert sorted(_texts(bob)) == ["from python", "m0", "m1", "m2", "m3", "m4"]


def test_a_burst_of_300_arrives_exactly_once(new_page, strict_relay: Relay) -> None:
    live, _, _ = _peer(new_page, strict_relay, "live", poll_ms=1000, feed_poll_ms=2000)
    live.wait_for_function("window.sync._feedOpen === true", timeout=WAIT_MS)
    texts = [f"burst {i:03d}" for i in range(300)]
    assert (_post(strict_relay, SECRET_A, _compose(SECRET_A, texts))) == 300
    _wait_texts(live, 300, timeout_ms=60_000)
    # One more poll cycle, then count: no duplicates arrived late.
    live.evaluate("() => window.sync.syncNow()")
    assert sorted(_texts(live)) == texts
    assert live.evaluate("new Set(window.got.map((m) => m.msgId)).size") == 300
    # A page that comes later pages through the backlog (300 > one page of 200)
    # by cursor alone: no feed.
    late, _, late_urls = _peer(new_page, strict_relay, "late", poll_ms=500, block_feed=True)
    _wait_texts(late, 300, timeout_ms=60_000)
    late.evaluate("() => window.sync.syncNow()")
    assert sorted(_texts(late)) == texts
    assert sum("/v1/messages?" in u for u in late_urls) >= 2
    # A reload (a new sync on the same IndexedDB) resumes from the stored cursor:
    # nothing is delivered twice.
    late.reload()
    info = late.evaluate(
        SETUP,
        {
            "db": "felund-late",
            "secret": SECRET_A,
            "relay": strict_relay.url,
            "name": "late",
            "pollMs": 500,
            "feedPollMs": 500,
            "useFeed": False,
        },
    )
    assert info["state"] == "online"
    late.evaluate("() => window.sync.syncNow()")
    assert late.evaluate("window.got.length") == 0
    assert (
        late.evaluate(
            "async () => (await window.sync.store.messages(window.sync.circle.circleId)).length"
        )
        == 300
    )


def test_relay_down_then_back_flushes_the_outbox(new_page, strict_relay: Relay) -> None:
    page, _, _ = _peer(new_page, strict_relay, "alice", poll_ms=500)
    assert page.evaluate("window.sync.state") == "online"
    # The device goes offline, then comes back.
    page.context.set_offline(True)
    page.wait_for_function("window.sync.state === 'offline'", timeout=WAIT_MS)
    page.context.set_offline(False)
    page.wait_for_function("window.sync.state === 'online'", timeout=WAIT_MS)
    # The relay dies: the page says so, and keeps what is sent meanwhile.
    strict_relay.kill()
    page.wait_for_function("window.sync.state === 'relay-down'", timeout=WAIT_MS)
    sent = page.evaluate(
        "async () => { const m = await window.sync.send('general', 'while down'); "
        "return [m.msgId, m.pending]; }"
    )
    assert sent[1] is True
    page.wait_for_timeout(1200)  # several failed ticks
    assert page.evaluate("window.sync.state") == "relay-down"
    assert page.evaluate("[...window.sync.pending]") == [sent[0]]
    assert page.evaluate("window.pendingNow") == [sent[0]]
    strict_relay.start()
    page.wait_for_function("window.sync.state === 'online'", timeout=WAIT_MS)
    page.wait_for_function("window.sync.pending.size === 0", timeout=WAIT_MS)
    assert page.evaluate("window.pendingNow") == []
    assert _opened_texts(strict_relay, SECRET_A) == {sent[0]: "while down"}
    # onState reports each change once, in order.
    assert page.evaluate("window.states") == ["online", "offline", "online", "relay-down", "online"]


def test_an_outbox_survives_a_reload(new_page, strict_relay: Relay) -> None:
    # No feed and a slow poll: only the reloaded page can send the message.
    page, _, _ = _peer(new_page, strict_relay, "carol", poll_ms=60_000, use_feed=False)
    strict_relay.kill()
    sent = page.evaluate("async () => (await window.sync.send('general', 'kept')).msgId")
    page.wait_for_function("window.sync.state === 'relay-down'", timeout=WAIT_MS)
    assert page.evaluate("window.sync.pending.size") == 1
    strict_relay.start()
    page.reload()  # the page that sent it is gone; the message waits in IndexedDB
    page.evaluate(
        SETUP,
        {
            "db": "felund-carol",
            "secret": SECRET_A,
            "relay": strict_relay.url,
            "name": "carol",
            "pollMs": 500,
            "feedPollMs": 500,
            "useFeed": True,
        },
    )
    page.wait_for_function("window.sync.pending.size === 0", timeout=WAIT_MS)
    assert _opened_texts(strict_relay, SECRET_A) == {sent: "kept"}


def test_bad_messages_from_the_relay_are_dropped(new_page, strict_relay: Relay) -> None:
    page, _, _ = _peer(new_page, strict_relay, "dave", poll_ms=500)
    good = _compose(SECRET_A, ["good one"])
    other = _compose("6b" * 32, ["other circle"])[0]
    # Stored opaquely by a relay only if valid: a message of another circle
    # under this circle's hint is refused by ours, so test the page directly.
    got = page.evaluate(
        """
        async (o) => {
          const before = window.got.length;
          await window.sync._ingest([o.other, {...o.good, text: 'forged'}, 'junk', o.good]);
          return window.got.slice(before).map((m) => m.text);
        }
        """,
        {"other": other, "good": {**good[0], "enc": None, "schema_version": 1, "mac": "0" * 64}},
    )
    assert got == []
    (_post(strict_relay, SECRET_A, good))
    page.wait_for_function("window.got.length >= 1", timeout=WAIT_MS)
    assert _texts(page) == ["good one"]


def test_the_store_keeps_each_message_once_in_order(new_page, relay: Relay) -> None:
    page = new_page(f"{relay.url}/v1/health")
    got = page.evaluate(
        """
        async () => {
          const {openStore} = await import('/lib/store.js');
          const m = (id, ts, text) => ({msgId: id, channelId: 'general', authorNodeId: 'n1',
            displayName: 'a', createdTs: ts, text, wire: {msg_id: id, created_ts: ts}});
          let store = await openStore('t-store');
          const first = await store.putMessages('c1', [m('b', 2, 'x'), m('a', 2, 'y'),
                                                      m('c', 1, 'z'), m('a', 2, 'dup')]);
          const again = await store.putMessages('c1', [m('a', 2, 'changed'), m('d', 0, 'w')]);
          await store.putMessages('c2', [m('a', 5, 'other circle')]);
          await store.putOutbox('c1', {msg_id: 'o2', created_ts: 9});
          await store.putOutbox('c1', {msg_id: 'o1', created_ts: 8});
          await store.putCursor('c1', {cursor: 7});
          await store.putSetting('relay', 'http://x');
          await store.putIdentity({nodeId: 'n1', displayName: 'me'});
          await store.putCircle({circleId: 'c1', secret: 's', joinedTs: 1});
          store.close();
          store = await openStore('t-store');  // as after a reload
          const out = {
            first: first.map((x) => x.msgId), again: again.map((x) => x.msgId),
            all: (await store.messages('c1')).map((x) => [x.msgId, x.text]),
            last2: (await store.messages('c1', {limit: 2})).map((x) => x.msgId),
            outbox: (await store.outbox('c1')).map((w) => w.msg_id),
            cursor: await store.getCursor('c1'), none: await store.getCursor('c9'),
            setting: await store.getSetting('relay'), identity: await store.getIdentity(),
            circles: (await store.circles()).map((c) => c.circleId),
          };
          await store.deleteOutbox('o1');
          await store.deleteCircle('c1');
          out.after = [(await store.messages('c1')).length, (await store.messages('c2')).length,
                       (await store.outbox('c1')).length, await store.getCursor('c1'),
                       (await store.circles()).length];
          return out;
        }
        """
    )
    assert got == {  # in (createdTs, arrival) order: b came before a in their second
        "first": ["b", "a", "c"],
        "again": ["d"],
        "all": [["d", "w"], ["c", "z"], ["b", "x"], ["a", "y"]],
        "last2": ["b", "a"],
        "outbox": ["o1", "o2"],
        "cursor": {"cursor": 7},
        "none": None,
        "setting": "http://x",
        "identity": {"nodeId": "n1", "displayName": "me"},
        "circles": ["c1"],
        "after": [0, 1, 0, None, 0],
    }


def test_a_new_circles_first_send_waits_for_its_registration(new_page, strict_relay: Relay) -> None:
    """A brand-new circle: send() right after start() posts only once the relay has the key."""
    secret = "7c" * 32  # never registered at this relay
    page, info, _ = _peer(
        new_page, strict_relay, "newbie", secret, slow_register_ms=800, send_at_start="first!"
    )
    assert info["sentTs"] is not None
    page.wait_for_function("window.sync.pending.size === 0", timeout=WAIT_MS)
    assert list(_opened_texts(strict_relay, secret).values()) == ["first!"]
    # Never refused: no 401 at the relay, never "forbidden" on the page.
    assert page.evaluate("window.states") == ["online"]
    hint = ids.circle_hint(ids.circle_id(secret))
    posts = [e for e in strict_relay.requests("/v1/messages") if e["circle_hint"] == hint]
    assert posts and all(e["status"] == 200 for e in posts), posts
    registered = [e for e in strict_relay.requests("/v1/register") if e["circle_hint"] == hint]
    assert registered and registered[0]["status"] == 200


CONTROL_ORDER = """
async (o) => {
  const {derive} = await import('/lib/chatmodel.js');
  const sync = window.sync;
  const me = sync.identity.nodeId;
  const ev = (op, extra) => ({t: 'CHANNEL_EVT', op, actor_node_id: me, ...extra});
  const ts = [];
  const send = async (event) => (await sync.sendControl(event, await sync.nextControl())).createdTs;
  ts.push(await send(ev('join', {channel_id: 'x'})));
  ts.push(await send(ev('create', {channel_id: 'y', access_mode: 'public'})));
  ts.push(await send(ev('rename', {display_name: 'Alicia'})));
  const chatTs = (await sync.send('general', 'a chat message')).createdTs;
  const control = await sync.store.messages(sync.circle.circleId, {channelId: '__control'});
  return {ts, chatTs, summary: derive(control, sync.circle.circleId).summary()};
}
"""


def test_control_events_keep_their_order_whatever_a_peer_dated(
    new_page, strict_relay: Relay
) -> None:
    """A node whose clock runs 120 s ahead created #x: the page's join, dated by its own
    clock, still takes effect; the page's events keep their order (dated a second apart
    in one second), and never take a date from a peer's."""
    secret = "8d" * 32
    page, info, _ = _peer(new_page, strict_relay, "alice", secret, poll_ms=500)
    me = info["nodeId"]
    ahead = int(time.time()) + 120
    create = {
        "t": "CHANNEL_EVT",
        "op": "create",
        "channel_id": "x",
        "access_mode": "public",
        "actor_node_id": PY_NODE,
    }
    text = chatmodel.event_text(create)
    wire = wire_message(secret, PY_NODE, text, name="py", channel="__control", ts=ahead)
    assert _post(strict_relay, secret, [wire]) == 1
    _wait_texts(page, 1)
    got = page.evaluate(CONTROL_ORDER)
    # Each control event of the page sorts after the one before; none follows the node's date.
    first, second, third = got["ts"]
    assert first < second < third < ahead - 60, (got["ts"], ahead)
    assert got["chatTs"] < ahead - 60
    summary = got["summary"]
    assert me in summary["channels"]["x"]["members"]
    assert summary["channels"]["y"]["creator"] == me
    assert summary["names"][me] == "Alicia"
    assert summary["channels"]["x"]["created_ts"] == ahead
    # A node derives the same state from what the relay holds.
    page.wait_for_function("window.sync.pending.size === 0", timeout=WAIT_MS)
    circle = ids.circle_id(secret)
    events = []
    for raw in _pull_all(strict_relay, secret):
        m = parse_message(raw)
        if m.channel_id == "__control":
            text = open_message(secret, circle, m).text
            events.append(chatmodel.ControlEvent(m.msg_id, m.author_node_id, m.created_ts, text))
    assert len(events) == 4
    assert chatmodel.derive(events, circle).summary() == summary


def test_probe_relay_is_an_unsigned_health_check(new_page, relay: Relay) -> None:
    """probeRelay: {ok, version, time} from a relay; RelayError from something else; RelayDown."""
    page = new_page(f"{relay.url}/v1/health")
    health: list[dict[str, Any]] = []
    page.on("request", lambda r: health.append(r.headers) if "/health" in r.url else None)
    got = page.evaluate(
        """
        async (o) => {
          const {probeRelay, RelayError, RelayDown} = await import('/lib/relay.js');
          const verdict = (p) => p.then((r) => r, (e) => ({
            error: e instanceof RelayError ? 'RelayError' : e instanceof RelayDown ? 'RelayDown'
              : String(e), status: e.status ?? null}));
          return {
            up: await verdict(probeRelay(o.relay)),
            wrongPath: await verdict(probeRelay(o.relay + '/not/a/relay')),
            down: await verdict(probeRelay(o.down, {timeoutMs: 3000})),
          };
        }
        """,
        {"relay": relay.url, "down": f"http://127.0.0.1:{free_port()}"},
    )
    up = got["up"]
    assert up["ok"] is True and up["version"] == __version__
    assert abs(up["time"] - time.time()) < 5
    assert got["wrongPath"] == {"error": "RelayError", "status": 404}
    assert got["down"] == {"error": "RelayDown", "status": None}
    assert health and not any("x-felund-signature" in h for h in health)  # the spec: unsigned
