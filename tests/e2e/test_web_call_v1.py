"""Our page in a call with the other client (issue 17), against its wire as addendum §1
states it (the other client itself is not available here).

Two v1 web peers are built in the test from the spec: their CALL_EVTs are posted to the
relay in v1's own form (tests/integration/test_calls_v1.py), and their media side is a
bare page on the relay's origin speaking v1's signalling by hand (§1.6: unsigned
``/v1/signal``, ``media:`` + call + sorted ids, one JSON payload per signal, the smaller
id offers, trickled candidates, answers to offers). Our page joins their call: it writes
its join as v1 applies it, answers the v1 offerer, offers to the other v1 peer, media
flows both ways, and the v1 host's end ends it on our panel.

WebRTC runs only inside a network namespace with only ``lo`` (run_in_namespace).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from felund import testing
from felund.testing import Relay
from felund.v1 import ids
from felund.v1.invite import decode_invite
from tests.e2e.conftest import Peer, T
from tests.e2e.test_web_call_media import (  # noqa: F401 (fixtures)
    call_relay,
    isolated,
    media_browser,
    node_id,
    peers,
    playwright,
    run_in_namespace,
    stats,
    status,
)
from tests.integration.test_calls_v1 import (
    v1_apply,
    v1_call_event,
    v1_envelope,
    v1_open,
    v1_post,
    v1_text,
)

pytestmark = pytest.mark.slow

# A v1 web's call media, by hand from §1.6 / §1.6.2: one RTCPeerConnection per peer with
# audio and video, the offer from the smaller id, a signal per candidate, unsigned.
V1_PEER = """
(arg) => {
  const { me, relay, sid, hint } = arg;
  const pcs = new Map(), queued = new Map(), seen = [];
  let cursor = 0, local = null;
  const mediaId = (peer) => `media:${sid}:${[me, peer].sort().join(":")}`;
  const post = (to, type, payload) => fetch(`${relay}/v1/signal`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ session_id: mediaId(to), from_node_id: me, to_node_id: to,
      circle_hint: hint, type, payload: JSON.stringify(payload),
      ttl_s: type === "media-candidate" ? 60 : 120 }),
  });
  const session = async (peer) => {
    if (pcs.has(peer)) return pcs.get(peer);
    const pc = new RTCPeerConnection({ iceServers: [] });
    pcs.set(peer, pc);
    pc.onicecandidate = (e) => {
      if (e.candidate) post(peer, "media-candidate", e.candidate.toJSON());
    };
    local ??= await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    for (const t of local.getTracks()) pc.addTrack(t, local);
    return pc;
  };
  const flush = async (peer, pc) => {
    for (const c of queued.get(peer) || []) await pc.addIceCandidate(c);
    queued.delete(peer);
  };
  const handle = async (s) => {
    if (!s.type.startsWith("media-") || s.session_id !== mediaId(s.from_node)) return;
    const body = JSON.parse(s.payload), peer = s.from_node;
    if (s.type === "media-offer") {
      const pc = await session(peer);
      await pc.setRemoteDescription(body);
      await pc.setLocalDescription(await pc.createAnswer());
      await post(peer, "media-answer", pc.localDescription);
      await flush(peer, pc);
    } else if (s.type === "media-answer") {
      const pc = pcs.get(peer);
      await pc.setRemoteDescription(body);
      await flush(peer, pc);
    } else if (pcs.get(peer)?.remoteDescription) {
      await pcs.get(peer).addIceCandidate(body);
    } else {
      queued.set(peer, [...(queued.get(peer) || []), body]);
    }
  };
  const poll = async () => {
    try {
      const url = `${relay}/v1/signal?to_node_id=${me}&since_id=${cursor}`;
      const r = await (await fetch(url)).json();
      for (const s of r.signals) {
        cursor = Math.max(cursor, s.id);
        seen.push(s);
        await handle(s);
      }
    } catch (e) {
      console.error(`v1 peer: ${e}`);
    }
    setTimeout(poll, 300);
  };
  globalThis.v1 = {
    seen,
    async connect(peer) {
      const pc = await session(peer);
      await pc.setLocalDescription(await pc.createOffer());
      await post(peer, "media-offer", pc.localDescription);
    },
    async stats(peer) {
      const out = { inAudio: 0, inVideo: 0 };
      const pc = pcs.get(peer);
      if (pc) (await pc.getStats()).forEach((r) => {
        const kind = r.kind === "audio" ? "inAudio" : "inVideo";
        if (r.type === "inbound-rtp") out[kind] += r.bytesReceived;
      });
      return out;
    },
  };
  poll();
}
"""


def test_calls_with_v1_peers_in_a_namespace_with_only_loopback() -> None:
    """Run the inner tests of this file in a fresh network namespace (only lo, up)."""
    run_in_namespace(__file__)


def _grows(read: Callable[[], dict[str, int]], what: str) -> None:
    """Wait until inbound audio and video bytes grew twice in a row."""
    seen: list[dict[str, int]] = []

    def grew() -> bool:
        seen.append(read())
        last = seen[-3:]
        return len(last) == 3 and all(
            last[2][k] > last[1][k] > last[0][k] > 0 for k in ("inAudio", "inVideo")
        )

    testing.wait_for(grew, timeout=90, interval=0.5, what=what)


def _console(who: str) -> Callable[[Any], None]:
    return lambda m: print(f"[v1 {who[:4]}] {m.type}: {m.text}")


def _inbound(peer: Peer, other: str) -> dict[str, int]:
    """Our page's inbound bytes from ``other`` (none yet: zeros)."""
    return stats(peer).get(other, {"inAudio": 0, "inVideo": 0})


def _v1_inbound(page: Any, other: str) -> dict[str, int]:
    """A v1 peer page's inbound bytes from ``other``."""
    got: dict[str, int] = page.evaluate("(m) => globalThis.v1.stats(m)", other)
    return got


def _relay_events(relay: Relay, hint: str, secret: str, author: str) -> list[dict[str, Any]]:
    """The CALL_EVTs ``author`` has on the relay, as a v1 web reads them (its enc opened)."""
    url = f"{relay.url}/v1/messages?circle_hint={hint}&since=0&limit=500"
    with urllib.request.urlopen(url, timeout=10) as resp:
        got = json.loads(resp.read())["messages"]
    texts = [v1_open(secret, m)["text"] for m in got if m["author_node_id"] == author]
    return [json.loads(t) for t in texts if '"CALL_EVT"' in t]


def test_our_page_in_a_v1_web_call_inside_the_namespace(
    peers: Callable[..., Peer],  # noqa: F811 (the fixture)
    call_relay: Relay,  # noqa: F811 (the fixture)
) -> None:
    from playwright.sync_api import expect

    alice = peers()
    alice.create("alice", "mixed")
    secret = decode_invite(alice.invite_code()).secret
    circle = str(alice.page.evaluate("() => globalThis.felundCalls.state.view().id"))
    hint, me = ids.circle_hint(circle), node_id(alice)
    # One v1 peer sorts before our id (it offers to us), one after (we offer to it).
    host, guest = "00" + secrets.token_hex(15), "ff" + secrets.token_hex(15)
    assert host < me < guest
    sid, now = secrets.token_hex(16), int(time.time())
    v1_table: dict[str, dict[str, Any]] = {}

    def v1_says(author: str, name: str, event: dict[str, Any]) -> None:
        v1_apply(v1_table, event, now)
        envelope = v1_envelope(secret, circle, author, v1_text(event), now, name=name)
        v1_post(call_relay.url, hint, [envelope])

    v1_says(host, "web-host", v1_call_event("create", host, sid, circle_id=circle,
                                            channel_id="general", created_ts=now))  # fmt: skip
    v1_says(guest, "web-guest", v1_call_event("join", guest, sid))

    v1_pages, v1_contexts = {}, []
    for who in (host, guest):
        page = alice.context.browser.new_context().new_page()  # type: ignore[union-attr]
        v1_contexts.append(page.context)
        page.on("console", _console(who))
        page.goto(call_relay.url + "/v1-peer")  # a page (404) of the relay's origin: a secure
        # context (loopback), whose fetches reach the relay as the v1 web's do
        page.evaluate(V1_PEER, {"me": who, "relay": call_relay.url, "sid": sid, "hint": hint})
        v1_pages[who] = page

    # Our page sees their call, and joins it; its join is one the v1 web applies.
    alice.page.keyboard.press("F4")
    expect(status(alice)).to_have_text("call in #general, started by web-host, 2 in it", timeout=T)
    alice.type("/call join")
    expect(status(alice)).to_have_text("in the call", timeout=T)
    testing.wait_for(
        lambda: _relay_events(call_relay, hint, secret, me), timeout=30, what="our join"
    )
    (join,) = _relay_events(call_relay, hint, secret, me)
    # The keys v1 writes for a join (§1.2); their order is not v1's, and need not be (§0.1).
    assert set(join) == {"t", "op", "session_id", "node_id", "actor_node_id"}, join
    v1_apply(v1_table, join, now)
    assert v1_table[sid]["participants"] == {host, guest, me}

    # The v1 host offers to us (its id is smaller); we offer to the v1 guest. Media flows
    # both ways on both links.
    v1_pages[host].evaluate("(p) => globalThis.v1.connect(p)", me)
    for who, page in v1_pages.items():
        _grows(partial(_inbound, alice, who), f"us from {who}")
        _grows(partial(_v1_inbound, page, me), f"{who} from us")
    # What we signalled is v1's form: the session id, the types, the payload texts.
    got = v1_pages[guest].evaluate("() => globalThis.v1.seen")
    ours = [s for s in got if s["from_node"] == me]
    assert {s["session_id"] for s in ours} == {f"media:{sid}:{me}:{guest}"}
    kinds = {s["type"] for s in ours}
    assert "media-offer" in kinds and kinds <= {"media-offer", "media-candidate"}, kinds
    offer = json.loads(next(s["payload"] for s in ours if s["type"] == "media-offer"))
    assert offer["type"] == "offer" and offer["sdp"].startswith("v=0")
    for s in ours:  # v1 trickles; ours may put its candidates in the SDP (v1 takes both)
        if s["type"] == "media-candidate":
            assert json.loads(s["payload"])["candidate"].startswith("candidate:")
    assert "media-candidate" in kinds or "a=candidate:" in offer["sdp"]
    answers = v1_pages[host].evaluate("() => globalThis.v1.seen")
    assert any(s["from_node"] == me and s["type"] == "media-answer" for s in answers)

    # The v1 host ends the call in its own form: our panel says so, our links are gone.
    v1_says(host, "web-host", v1_call_event("end", host, sid))
    assert v1_table == {}
    expect(status(alice)).to_have_text("call ended by host", timeout=T)
    assert stats(alice) == {}
    for context in v1_contexts:
        context.close()
