"""The browser's call fold (felund/web/lib/calls.js) in Chromium: the same calls as the
Python fold (felund.v1.calls) from the same events, whatever order they arrive in, and
the same events and words from its builders."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from felund.testing import Relay
from felund.v1 import calls, events, ids
from felund.v1.chatmodel import ControlEvent, event_text
from felund.v1.invite import decode_invite
from tests.e2e.conftest import Peer, T, in_page
from tests.e2e.test_browser_trust import ANA, BOB, NOW, b64
from tests.integration.test_calls_v1 import v1_call_event, v1_envelope, v1_node_id, v1_post, v1_text

pytestmark = pytest.mark.slow

CIRCLE = "c1" * 32
WEB_A, WEB_B = "1a" * 16, "2b" * 16  # the other client's: unsigned
KEYS = {ANA.node_id: ANA, BOB.node_id: BOB}
PEOPLE = [ANA.node_id, BOB.node_id, WEB_A, WEB_B]
SIDS = ["5e" * 16, "6f" * 16, "  ", "x" * 65, "sé😀"]
MODULES = ("calls",)

FOLD = """
const C = L.calls;
const sorted = (m) => Object.fromEntries([...m.entries()].sort((x, y) => (x[0] < y[0] ? -1 : 1)));
const view = (k) => ({
  sessions: [...k.sessions.entries()].map(([sid, c]) => [sid, C.callSummary(c)]),
  by_channel: Object.fromEntries([...k.byChannel().entries()].map(([ch, c]) => [ch, c.sessionId])),
  rejected: sorted(k.rejected), refused: sorted(k.refused), due_at: k.dueAt,
});
const out = [];
for (const [n, events] of arg.cases.entries()) {
  const blocked = arg.blocked[n];
  const first = view(C.deriveCalls(events, arg.circle, arg.now, blocked));
  let same = true;
  for (let i = 0; i < 12; i++) {
    const shuffled = [...events];
    for (let j = shuffled.length - 1; j > 0; j--) {
      const k = Math.floor(Math.random() * (j + 1));
      [shuffled[j], shuffled[k]] = [shuffled[k], shuffled[j]];
    }
    const again = view(C.deriveCalls(shuffled, arg.circle, arg.now, new Set(blocked)));
    same = same && JSON.stringify(again) === JSON.stringify(first);
  }
  out.push({...first, same});
}
return out;
"""


def _ev(
    n: int, author: str, ts: int, body: dict[str, Any] | str, *, sign: bool = True
) -> dict[str, Any]:
    """A control event as the page's store holds it (signed when its author has a key here)."""
    key = KEYS.get(author) if sign else None
    return {
        "msgId": f"{n:032x}",
        "authorNodeId": author,
        "createdTs": NOW + ts,
        "text": body if isinstance(body, str) else event_text(body),
        "signer": None if key is None else b64(key.public),
    }


def _py(evs: list[dict[str, Any]], now: int, blocked: Iterable[str] = ()) -> dict[str, Any]:
    got = calls.derive_calls(
        [
            ControlEvent(
                e["msgId"],
                e["authorNodeId"],
                e["createdTs"],
                e["text"],
                None if e["signer"] is None else base64.b64decode(e["signer"]),
            )
            for e in evs
        ],
        CIRCLE,
        now,
        frozenset(blocked),
    )
    return {
        "sessions": [[sid, c.summary()] for sid, c in got.sessions.items()],
        "by_channel": {ch: c.session_id for ch, c in got.by_channel().items()},
        "rejected": dict(sorted(got.rejected.items())),
        "refused": dict(sorted(got.refused.items())),
        "due_at": got.due_at,
    }


# Python's and the page's JSON and strip(): a repeated key, an escape, a non-ASCII space.
ODD = (
    '{"t": "x", "op": "create", "session_id": "  sé", "channel_id": " ops\\u00a0", "t": "CALL_EVT"}'
)


def _scenario() -> list[dict[str, Any]]:
    """A call of ours with a web viewer, forged ends and revokes, a web call, odd fields."""
    a, sid, web_sid = ANA.node_id, SIDS[0], SIDS[1]
    forged = {"t": "CALL_EVT", "op": "end", "session_id": sid, "host_node_id": a}
    return [
        _ev(1, a, 0, events.call_event("create", CIRCLE, a, sid, channel="dev")),
        _ev(2, WEB_A, 1, events.call_event("view", CIRCLE, WEB_A, sid)),
        _ev(3, BOB.node_id, -3, events.call_event("join", CIRCLE, BOB.node_id, sid)),  # early
        _ev(4, WEB_B, 2, {**forged, "actor_node_id": WEB_B}),
        _ev(5, WEB_B, 2, forged),
        _ev(6, a, 2, {**forged, "actor_node_id": a}, sign=False),
        _ev(7, BOB.node_id, 2, events.call_event("revoke", CIRCLE, BOB.node_id, sid, target=WEB_A)),
        _ev(8, WEB_A, 0, events.call_event("create", CIRCLE, WEB_A, web_sid)),
        _ev(9, WEB_B, 1, events.call_event("join", CIRCLE, WEB_B, web_sid)),
        _ev(10, WEB_B, 2, events.call_event("leave", CIRCLE, WEB_B, web_sid)),
        _ev(11, WEB_A, 3, {"t": "CALL_EVT", "op": "invite", "session_id": web_sid}),
        _ev(12, WEB_A, 3, {"t": "CALL_EVT", "op": "dance", "session_id": web_sid}),
        _ev(13, WEB_A, 3, ODD),
        _ev(14, WEB_A, 400, events.call_event("create", CIRCLE, WEB_A, "77" * 16)),  # ahead
        _ev(15, WEB_B, 3, "not json"),
        _ev(16, WEB_B, 3, {"t": "CALL_EVT", "op": "create", "session_id": sid, "pad": "é" * 4100}),
    ]


def _random_sets(count: int, seed: int = 17) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        evs = []
        for i in range(rng.randint(1, 30)):
            op = rng.choice([*calls.CALL_OPS, "create", "join", "end", "invite", "bogus"])
            who = rng.choice(PEOPLE)
            body: dict[str, Any] = {"t": "CALL_EVT", "op": op, "session_id": rng.choice(SIDS)}
            if op == "create":
                body["channel_id"] = rng.choice(["general", "dev", "", " ", 3])
            if op == "revoke":
                body["target_node_id"] = rng.choice([*PEOPLE, "nobody"])
            for field in ("actor_node_id", "node_id", "host_node_id"):
                if rng.random() < 0.5:
                    body[field] = who if rng.random() < 0.8 else rng.choice([*PEOPLE, ""])
            if rng.random() < 0.1:
                body["circle_id"] = rng.choice([CIRCLE, "dd" * 32])
            evs.append(_ev(i, who, rng.randint(-5, 5), body, sign=rng.random() > 0.15))
        rng.shuffle(evs)
        out.append(evs)
    return out


def test_the_page_derives_the_calls_the_python_node_does(lib_page: Any) -> None:
    sets = [_scenario(), *_random_sets(120)]
    # Each set as it is, and with one or two of its people blocked here.
    rng = random.Random(20)
    cases = [*sets, _scenario(), *sets[1:61]]
    blocked: list[list[str]] = [[] for _ in sets] + [[BOB.node_id, WEB_B]]
    blocked += [rng.sample(PEOPLE, rng.randint(1, 2)) for _ in sets[1:61]]
    for now in (NOW + 60, NOW + calls.CALL_IDLE_S + 1):
        arg = {"cases": cases, "blocked": blocked, "circle": CIRCLE, "now": now}
        got = in_page(lib_page, MODULES, FOLD, arg)
        for evs, hidden, result in zip(cases, blocked, got, strict=True):
            assert result.pop("same"), "an order of arrival changed the calls"
            assert result == json.loads(json.dumps(_py(evs, now, hidden)))
    first = _py(cases[0], NOW + 60)
    assert sorted(sid for sid, _ in first["sessions"]) == sorted([SIDS[0], SIDS[1], "  sé"])
    assert first["by_channel"]["ops"] == "  sé"  # stripped as Python strips
    mine = dict(first["sessions"])[SIDS[0]]
    assert mine["participants"] == sorted([ANA.node_id, BOB.node_id]) and mine["viewers"] == [WEB_A]
    assert {"actor_mismatch", "unsigned_from_signer", "not_host", "bad_op", "too_long"} <= set(
        first["rejected"]
    )
    pairs = zip(cases, blocked, strict=True)
    reasons = set().union(*(_py(e, NOW + 60, b)["rejected"] for e, b in pairs))
    assert {"exists", "ended", "no_session", "bad_session", "bad_target", "already"} <= reasons
    # Bob and web B blocked: Bob is not in Ana's call, web B's join and leave count for nothing.
    hid = _py(cases[len(sets)], NOW + 60, blocked[len(sets)])
    assert dict(hid["sessions"])[SIDS[0]]["participants"] == [ANA.node_id]
    assert hid["rejected"]["blocked"] == 4 and "blocked" in reasons  # 3, 7, 9, 10


BUILD = """
const C = L.calls;
const out = arg.cases.map(([op, node, sid, opts]) => C.callEvent(op, arg.circle, node, sid, opts));
const fresh = C.callEvent("create", arg.circle, arg.cases[0][1]);
const words = C.callWords({channelId: "dev", host: arg.cases[0][1], participants: ["a", "b"],
                           viewers: ["c"]}, {[arg.cases[0][1]]: "ana"});
let refused = [];
const bad = [["end", "", {}], ["revoke", "s", {target: "x"}], ["dance", "s", {}]];
for (const [op, sid, opts] of bad) {
  try { C.callEvent(op, arg.circle, "n", sid, opts); refused.push(false); }
  catch { refused.push(true); }
}
return {events: out.map((e) => JSON.stringify(e)), fresh: fresh.session_id, words, refused};
"""


def test_the_page_writes_the_events_and_words_the_python_node_does(lib_page: Any) -> None:
    a, sid = ANA.node_id, SIDS[0]
    cases: list[tuple[str, str, str, dict[str, str]]] = [
        ("create", a, sid, {"channel": "#dev"}),
        ("join", WEB_B, sid, {}),
        ("view", WEB_B, sid, {}),
        ("leave", WEB_B, sid, {}),
        ("end", a, sid, {}),
        ("revoke", a, sid, {"target": WEB_B}),
    ]
    got = in_page(lib_page, MODULES, BUILD, {"cases": cases, "circle": CIRCLE})
    want = [
        json.dumps(events.call_event(op, CIRCLE, n, s, **kw), separators=(",", ":"))
        for op, n, s, kw in cases
    ]
    assert got["events"] == want  # the same keys in the same (the v1 web's) order
    assert len(got["fresh"]) == 32 and got["refused"] == [True, True, True]
    call = {"channel_id": "dev", "host": a, "participants": ["a", "b"], "viewers": ["c"]}
    assert got["words"] == events.call_words(call, {a: "ana"})


def test_the_page_refuses_a_blocked_node_s_calls(
    open_peer: Callable[..., Peer], web_relay: Relay
) -> None:
    """/call block PERSON: that node's calls are not shown in this page (kept across a
    reload, told to nobody); /call unblock shows them again. (No WebRTC: no call joined.)"""
    from playwright.sync_api import expect

    ana = open_peer()
    ana.create("ana", "blocking")
    secret = decode_invite(ana.invite_code()).secret
    circle = str(ana.page.evaluate("() => globalThis.felundCalls.state.view().id"))
    host, sid, now = v1_node_id(), "5e" * 16, int(time.time())
    create = v1_call_event(
        "create", host, sid, circle_id=circle, channel_id="general", created_ts=now
    )
    envelope = v1_envelope(secret, circle, host, v1_text(create), now, name="webhost")
    v1_post(web_relay.url, ids.circle_hint(circle), [envelope])
    status = ana.page.locator("#call-status")
    ana.page.keyboard.press("F4")
    shown = "call in #general, started by webhost, 1 in it"
    expect(status).to_have_text(shown, timeout=T)  # the path is live: the call is there
    ana.type("/call block webhost")
    expect(status).to_have_text("no call in #general", timeout=T)
    ana.page.reload()
    expect(ana.page.locator("#hdr-circle")).to_have_text("blocking", timeout=T)
    ana.page.keyboard.press("F4")
    expect(status).to_have_text("no call in #general", timeout=T)
    ana.type("/call unblock webhost")
    expect(status).to_have_text(shown, timeout=T)
    ana.no_errors()
