"""lib/dctransport.js (the §1.8 felund-gossip DataChannel protocol, sans IO) in a real page.

The spec's AUTH vector; two sessions complete the handshake through each other's
frames (an AUTH before the HELLO held); and a peer that fails AUTH, or sends
anything but HELLO/AUTH first, or oversized frames, is closed having been given
nothing but our HELLO and AUTH.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import in_page

pytestmark = pytest.mark.slow

MODULES = ("dctransport",)
SECRET = "00" * 31 + "01"
OTHER = "00" * 31 + "02"
PRELUDE = """
const D = L.dctransport;
const mk = (secretHex, nodeId, now = 0) =>
  new D.DcSession({secretHex, nodeId, circleHint: "0123456789abcdef", now});
"""


def js(page: Any, body: str, arg: Any = None) -> Any:
    return in_page(page, MODULES, PRELUDE + body, arg)


@pytest.fixture(scope="module")
def page(lib_page: Any) -> Any:
    return lib_page


def test_auth_vector(page: Any) -> None:
    got = js(page, 'return await D.dcAuth(arg, "a".repeat(32), "b".repeat(32));', SECRET)
    assert got == "0aa3fae19bf7bd3d27b5142845a02d94fe35161fa43782c790fc90d4c217357f"


def test_handshake_then_messages_both_ways_auth_before_hello_held(page: Any) -> None:
    out = js(
        page,
        """
        const a = mk(arg, "a".repeat(32)), b = mk(arg, "b".repeat(32));
        const ra = await b.receive(a.hello(), 1);          // b: AUTH back
        const rb = await a.receive(ra.send[0], 2);         // a: AUTH before b's HELLO: held
        const rc = await a.receive(b.hello(), 3);          // a: AUTH back, verifies held -> authed
        const rd = await b.receive(rc.send[0], 4);         // b verifies
        const wire = {msg_id: "m1"};
        const re = await b.receive(a.msgsSend([wire]), 5);
        const rf = await a.receive(b.msgNew(wire), 6);
        return {held: rb.send.length === 0 && !rb.close, aAuthed: rc.authed, bAuthed: rd.authed,
                batch: re.messages, one: rf.messages,
                close: [ra, rb, rc, rd, re, rf].map((r) => r.close)};
        """,
        SECRET,
    )
    assert out["held"] and out["aAuthed"] and out["bAuthed"]
    assert out["batch"] == [{"msg_id": "m1"}] and out["one"] == [{"msg_id": "m1"}]
    assert out["close"] == [None] * 6


def test_a_peer_that_fails_auth_gets_nothing_and_is_closed(page: Any) -> None:
    out = js(
        page,
        """
        const good = mk(arg.secret, "a".repeat(32)), bad = mk(arg.other, "b".repeat(32));
        const r1 = await good.receive(bad.hello(), 1);
        // bad's proof is under the wrong secret, and bad cannot verify ours either
        const badAuth = (await bad.receive(good.hello(), 1)).send[0];
        const r2 = await bad.receive(r1.send[0], 2);
        const r3 = await good.receive(badAuth, 3);
        const newMsg = JSON.stringify({type: "MSG_NEW", message: {msg_id: "x"}});
        const after = await good.receive(newMsg, 4);
        return {r1: r1.send.map((f) => JSON.parse(f).type), r2: r2.close, r3: r3.close,
                after: [after.close, after.messages.length], msgNew: good.msgNew({msg_id: "y"})};
        """,
        {"secret": SECRET, "other": OTHER},
    )
    assert out["r1"] == ["AUTH"]
    assert out["r2"] == "AUTH mismatch" and out["r3"] == "AUTH mismatch"
    assert out["after"] == ["AUTH mismatch", 0]
    assert out["msgNew"] is None  # nothing goes to an unauthenticated peer


def test_frames_before_auth_oversized_flooded_or_late_close(page: Any) -> None:
    out = js(
        page,
        """
        const early = mk(arg, "a".repeat(32));
        await early.receive(mk(arg, "b".repeat(32)).hello(), 1);
        const batch = JSON.stringify({type: "MSGS_SEND", messages: [{msg_id: "x"}]});
        const e = await early.receive(batch, 2);
        const big = await mk(arg, "a".repeat(32)).receive("x".repeat(D.MAX_FRAME + 1), 1);
        const junk = await mk(arg, "a".repeat(32)).receive("{nope", 1);
        const twice = mk(arg, "a".repeat(32));
        await twice.receive(mk(arg, "c".repeat(32)).hello(), 1);
        const t = await twice.receive(mk(arg, "c".repeat(32)).hello(), 2);
        const late = mk(arg, "a".repeat(32), 0);
        const l = late.tick(D.AUTH_MS + 1);
        const flood = mk(arg, "a".repeat(32)), peer = mk(arg, "b".repeat(32));
        await flood.receive((await peer.receive(flood.hello(), 1)).send[0], 1);
        await peer.receive((await flood.receive(peer.hello(), 1)).send[0], 1);
        let f = null;
        for (let i = 0; i <= D.MAX_FRAMES_PER_WINDOW && !f; i++) {
          f = (await flood.receive('{"type":"PING"}', 1)).close;
        }
        return {e: [e.close, e.messages.length], big: big.close, junk: junk.close,
                t: t.close, l, f};
        """,
        SECRET,
    )
    assert out["e"] == ["frame before AUTH", 0]
    assert out["big"] == "frame too large" and out["junk"] == "frame not JSON"
    assert out["t"] == "bad HELLO" and out["l"] == "auth timeout"
    assert out["f"] == "too many frames"
