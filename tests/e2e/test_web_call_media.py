"""Calls between browsers (issue 17): three Chromium contexts with fake devices
meet in one call through a real relay, and WebRTC carries their media.

WebRTC gathers candidates on every interface and could dial any address it
learns, so the browsers and the relay run in a network namespace of their own
with only ``lo`` up: the outer test re-runs this file as root under
``unshare --net`` (``ip link set lo up`` first), and the inner tests check
with ``socket.if_nameindex()`` that ``lo`` is the only interface before they
start anything. Outside the namespace the inner tests skip, and without root
or ``unshare`` the outer one does (it fails under CI=true).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from felund import testing
from felund.testing import Relay
from felund.testing.browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import Peer, T, in_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser

IN_NETNS = os.environ.get("FELUND_CALLS_NETNS") == "1"
MEDIA_ARGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
)


def _cannot_isolate() -> str | None:
    if testing.browser_missing() is not None:
        return testing.browser_missing()
    if os.geteuid() != 0:
        return "a network namespace needs root (unshare --net)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip are needed for a network namespace"
    return None


def run_in_namespace(test_file: str) -> None:
    """Run the inner tests (``-k inside``) of ``test_file`` in a fresh network namespace
    (only lo, up): the outer test of every file whose pages use WebRTC."""
    if IN_NETNS:
        pytest.skip("inside the namespace: the inner tests run")
    problem = _cannot_isolate()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    here = Path(test_file)
    argv = [
        "unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
        str(here), "-k", "inside",
    ]  # fmt: skip
    env = {**os.environ, "FELUND_CALLS_NETNS": "1"}
    done = subprocess.run(
        argv, cwd=here.parents[2], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    print(done.stdout[-20000:], done.stderr[-5000:])
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]


def test_calls_between_browsers_in_a_namespace_with_only_loopback() -> None:
    """Run the inner tests of this file in a fresh network namespace (only lo, up)."""
    run_in_namespace(__file__)


@pytest.fixture(scope="module")
def isolated() -> None:
    if not IN_NETNS:
        pytest.skip("runs only inside the namespace the outer test makes")
    names = [name for _, name in socket.if_nameindex()]
    assert names == ["lo"], f"not an isolated namespace: {names}"


@pytest.fixture(scope="module")
def playwright(isolated: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


def launch(pw: Any, *args: str) -> Browser:
    return cast(
        "Browser",
        pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args], headless=True, timeout=60_000
        ),
    )


@pytest.fixture(scope="module")
def media_browser(playwright: Any) -> Iterator[Browser]:
    """Chromium with fake camera and microphone, allowed to use loopback candidates."""
    chromium = launch(playwright, *MEDIA_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def call_relay(isolated: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("call-relay"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def peers(media_browser: Browser, call_relay: Relay) -> Iterator[Callable[..., Peer]]:
    contexts: list[Any] = []
    opened: list[Peer] = []

    def open_(browser: Browser = media_browser, init: str = "") -> Peer:
        context = browser.new_context()
        if init:
            context.add_init_script(init)
        context.set_default_timeout(T)
        # Chromium calls itself offline when lo is its only interface; the relay on lo is
        # all these pages need, so they are told the truth about it.
        context.add_init_script(
            "Object.defineProperty(Navigator.prototype, 'onLine', {get: () => true})"
        )
        contexts.append(context)
        page = context.new_page()
        n = len(contexts)
        page.on("console", lambda m: print(f"[page {n}] {m.type}: {m.text}"))
        page.goto(call_relay.url + "/")
        peer = Peer(context, page)
        opened.append(peer)
        return peer

    yield open_
    for c in contexts:
        c.close()
    for p in opened:
        p.no_errors()


def stats(peer: Peer) -> dict[str, dict[str, int]]:
    """Bytes of each of the page's call connections (RTCPeerConnection.getStats), by peer id."""
    out: dict[str, dict[str, int]] = peer.page.evaluate(
        "async () => { const a = globalThis.felundCalls.active;"
        " return a ? await a.media.stats() : {}; }"
    )
    return out


def node_id(peer: Peer) -> str:
    return str(peer.page.evaluate("() => globalThis.felundCalls.state.identity.nodeId"))


def grows(peer: Peer, other: str, *keys: str, timeout: float = 60) -> None:
    """Wait until each of ``keys`` of the connection to ``other`` has grown twice in a row."""
    seen: list[dict[str, int]] = []

    def grew() -> bool:
        now = stats(peer).get(other)
        if now is None or not all(now[k] > 0 for k in keys):
            seen.clear()
            return False
        seen.append(now)
        return len(seen) >= 3 and all(seen[-1][k] > seen[-2][k] > seen[-3][k] for k in keys)

    testing.wait_for(
        grew, timeout=timeout, interval=0.5, what=f"{keys} growing towards {other[:8]}"
    )


def stops(peer: Peer, other: str, key: str, timeout: float = 30) -> int:
    """Wait until ``key`` towards ``other`` stayed the same over three samples a second apart."""
    seen: list[int] = []

    def still() -> bool:
        seen.append(stats(peer)[other][key])
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    testing.wait_for(
        still, timeout=timeout, interval=1.0, what=f"{key} towards {other[:8]} to stop"
    )
    return seen[-1]


FORGE_END = """async () => {
  const { callEvent } = await import("/ui/callstate.js");
  const calls = globalThis.felundCalls;
  const view = calls.state.view();
  const me = calls.state.identity.nodeId;
  await calls.state.control(view, callEvent("end", me, { sessionId: calls.active.sessionId }));
  const mine = view.control.filter((m) => m.authorNodeId === me);
  return mine.find((m) => m.text.includes('"op":"end"')).msgId;
}"""
HAS_EVENT = "(id) => globalThis.felundCalls.state.view().control.some((m) => m.msgId === id)"


def status(peer: Peer) -> Any:
    return peer.page.locator("#call-status")


def join_call(peer: Peer, host: str) -> None:
    """``/call join`` the call ``host`` just started, once ``peer``'s page knows it: the create
    event comes through the relay, and a join typed before it is refused ("no call in ...")."""
    from playwright.sync_api import expect

    peer.page.keyboard.press("F4")
    expect(status(peer)).to_have_text(f"call in #general, started by {host}, 1 in it", timeout=T)
    peer.type("/call join")
    expect(status(peer)).to_have_text("in the call", timeout=T)


def test_a_call_inside_the_namespace(peers: Callable[..., Peer]) -> None:
    from playwright.sync_api import expect

    alice, bob, carol = peers(), peers(), peers()
    alice.create("alice", "callers")
    code = alice.invite_code()
    bob.join("bob", code)
    carol.join("carol", code)
    a, b, c = node_id(alice), node_id(bob), node_id(carol)

    alice.type("/call start")
    expect(status(alice)).to_have_text("in the call", timeout=T)
    # The others see the call in #general (the CALL_EVT came through the relay), and join it.
    bob.page.keyboard.press("F4")
    expect(status(bob)).to_have_text("call in #general, started by alice, 1 in it", timeout=T)
    expect(bob.page.locator("#call-actions button", has_text="Join")).to_be_focused()
    bob.page.keyboard.press("Enter")
    expect(status(bob)).to_have_text("in the call", timeout=T)

    # Each side receives the other's audio and video, and the bytes keep coming.
    grows(alice, b, "inAudio", "inVideo")
    grows(bob, a, "inAudio", "inVideo")

    # Each panel has a level meter per person; the other's voice (the fake device's beep) moves it.
    level = "(id) => document.querySelector(`meter.call-level[data-peer='${id}']`).value"
    testing.wait_for(
        lambda: alice.page.evaluate(level, b) > 0, timeout=30, interval=0.3, what="bob's level"
    )

    # A forged end: bob, not the host, writes one (signed, as his page writes any event). It
    # reaches alice, and the call goes on for both.
    forged = bob.page.evaluate(FORGE_END)
    testing.wait_for(
        lambda: alice.page.evaluate(HAS_EVENT, forged), timeout=30, interval=0.5, what="the end"
    )
    expect(status(alice)).to_have_text("in the call")
    expect(status(bob)).to_have_text("in the call")
    grows(alice, b, "inAudio")

    # A viewer: carol watches; the host sends to her, she sends nothing.
    carol.type("/call view")
    expect(status(carol)).to_have_text("watching", timeout=T)
    grows(carol, a, "inAudio", "inVideo")
    assert set(stats(carol)) == {a}
    assert stats(carol)[a]["outAudio"] == 0

    # Mute: bob's audio to alice stops (it was growing just above), his video goes on.
    grows(bob, a, "outAudio")
    bob.page.locator("#call-actions button", has_text="Mute").click()
    expect(status(bob)).to_have_text("in the call · muted", timeout=T)
    muted_at = stops(bob, a, "outAudio")
    grows(bob, a, "outVideo")
    assert stats(bob)[a]["outAudio"] == muted_at
    # Camera off: his video stops too.
    bob.page.locator("#call-actions button", has_text="Camera off").click()
    expect(status(bob)).to_have_text("in the call · muted · camera off", timeout=T)
    stops(bob, a, "outVideo")

    # The host revokes the viewer: her panel says so, her connection is gone on both sides.
    expect(alice.page.locator("#call-panel")).to_be_visible()  # /call opened it
    expect(alice.page.locator(f'#call-people li[data-peer="{c}"]')).to_have_count(1, timeout=T)
    alice.page.locator(f'#call-people li[data-peer="{c}"] button', has_text="Revoke").click()
    expect(status(carol)).to_have_text(
        "the host removed you from the call · call in #general, started by alice, 2 in it",
        timeout=T,
    )
    testing.wait_for(
        lambda: c not in stats(alice), timeout=30, interval=0.5, what="alice to drop carol"
    )
    assert stats(carol) == {}
    grows(bob, a, "inVideo")  # the participants' call goes on (alice to bob: his camera is off)

    # The host ends it: both panels say so, and no connection is left.
    alice.type("/call end")
    expect(status(alice)).to_have_text("call ended by host (you)", timeout=T)
    expect(status(bob)).to_have_text("call ended by host", timeout=T)
    assert stats(alice) == {} and stats(bob) == {}


def test_no_microphone_permission_inside_the_namespace(
    peers: Callable[..., Peer], playwright: Any
) -> None:
    """Without the fake permission prompt, headless Chromium refuses the microphone: the panel
    says so in words, and the call goes on receive-only."""
    from playwright.sync_api import expect

    refusing = launch(playwright, "--use-fake-device-for-media-stream")
    try:
        dave = peers(refusing)
        dave.create("dave", "no mic")
        dave.type("/call start")
        expect(status(dave)).to_have_text("in the call · no microphone permission", timeout=T)
    finally:
        refusing.close()


def test_ice_servers_from_the_relay_or_f3_inside_the_namespace(
    peers: Callable[..., Peer], tmp_path: Path
) -> None:
    """Calls take the relay's STUN/TURN list (GET /v1/ice) by default; F3 overrides it, and an
    empty override means host candidates only. (Nothing listens at the STUN address: the
    namespace has only lo.)"""
    from playwright.sync_api import expect

    relay = Relay(tmp_path / "ice-relay", "--ice-server", "stun:127.0.0.1:3478")
    relay.start()
    try:
        erin = peers()
        erin.page.goto(relay.url + "/")
        erin.create("erin", "ice")
        servers = "() => globalThis.felundCalls.active.media.iceServers"
        erin.type("/call start")
        expect(status(erin)).to_have_text("in the call", timeout=T)
        assert erin.page.evaluate(servers) == [{"urls": ["stun:127.0.0.1:3478"]}]
        erin.type("/call end")
        expect(status(erin)).to_have_text("call ended by host (you)", timeout=T)

        erin.page.keyboard.press("F3")
        expect(erin.page.locator("#settings-ice-relay")).to_be_checked(timeout=T)
        erin.page.locator("#settings-ice-relay").uncheck()
        erin.page.locator("#settings-save").click()
        expect(erin.page.locator("#dlg-settings")).to_be_hidden(timeout=T)
        erin.type("/call start")
        expect(status(erin)).to_have_text("in the call", timeout=T)
        assert erin.page.evaluate(servers) == []
    finally:
        relay.stop()


# This page's connections gather relay candidates only, and there is no relay (TURN) server:
# it has no candidate at all, as behind a NAT no host or STUN candidate gets through.
NO_PATH = """
const Real = RTCPeerConnection;
globalThis.RTCPeerConnection = function (config) {
  return new Real({ ...config, iceTransportPolicy: "relay" });
};
globalThis.RTCPeerConnection.prototype = Real.prototype;
"""


def test_a_peer_without_a_path_is_unreachable_inside_the_namespace(
    peers: Callable[..., Peer],
) -> None:
    """No candidate pair can work between two pages: each panel says "peer unreachable (no
    TURN)" for the other (the relay here names no TURN server)."""
    from playwright.sync_api import expect

    gina, hal = peers(), peers(init=NO_PATH)
    gina.create("gina", "far")
    hal.join("hal", gina.invite_code())
    gina.type("/call start")
    expect(status(gina)).to_have_text("in the call", timeout=T)
    join_call(hal, "gina")
    g, h = node_id(gina), node_id(hal)
    expect(gina.page.locator(f'#call-people .call-link[data-peer="{h}"]')).to_have_text(
        "peer unreachable (no TURN)", timeout=60_000
    )
    expect(hal.page.locator(f'#call-people .call-link[data-peer="{g}"]')).to_have_text(
        "peer unreachable (no TURN)", timeout=60_000
    )


MESH = """
const M = L.callmesh;
const call = (host, participants, viewers) => ({ host, participants, viewers });
const plan = (c, me) => Object.fromEntries(M.linksOf(c, me));
const viewers = ["v1", "v2", "v3", "v4", "v5", "v6", "v7"];
const sid = M.mediaSessionId("s", "b", "a");
const signal = (over) => ({ id: 1, session_id: sid, from_node: "b", to_node: "a",
  type: "media-offer", payload: JSON.stringify({ type: "offer", sdp: "v=0" }), ...over });
const bad = (f) => { try { f(); return ""; } catch (e) { return e.message; } };
return {
  sid,
  mesh: plan(call("a", ["a", "b", "c"], []), "b"),
  host: Object.keys(plan(call("a", ["a", "b"], viewers), "a")),
  seventh: plan(call("a", ["a"], viewers), "v7"),
  viewer: plan(call("a", ["a"], viewers), "v1"),
  hostGone: plan(call("a", ["b"], viewers), "v1"),
  offer: M.readSignal(signal({}), "s", "a"),
  otherCall: M.readSignal(signal({ session_id: M.mediaSessionId("t", "a", "b") }), "s", "a"),
  notOurs: M.readSignal(signal({ type: "offer" }), "s", "a"),
  wrongKind: M.readSignal(signal({ type: "media-answer" }), "s", "a"),
  ice: M.parseIceText("stun:s.example:3478\\nturn:t.example:3478 u p\\n"),
  badIce: bad(() => M.parseIceText("http://x")),
  relayDefault: M.iceServersFor(null, [{ urls: ["stun:r"] }]),
  override: M.iceServersFor({ fromRelay: false, servers: [] }, [{ urls: ["stun:r"] }]),
  turn: [M.hasTurn([{ urls: ["stun:x"] }]), M.hasTurn([{ urls: ["turns:x"] }])],
};
"""


def test_who_connects_to_whom_and_which_signals_count(lib_page: Any) -> None:
    """lib/callmesh.js (no WebRTC here): the mesh and the host's six viewers (§1.4), the
    signal filter (§1.6.2 step 2), the ICE settings' text and defaults (§1.7)."""
    r = in_page(lib_page, ("callmesh",), MESH)
    assert r["sid"] == "media:s:a:b"
    assert r["mesh"] == {
        "a": {"offerer": False, "sends": True, "viewer": False},
        "c": {"offerer": True, "sends": True, "viewer": False},
    }
    assert r["host"] == ["b", "v1", "v2", "v3", "v4", "v5", "v6"]
    assert r["seventh"] == {}
    assert r["viewer"] == {"a": {"offerer": False, "sends": False, "viewer": False}}
    assert r["hostGone"] == {}
    assert r["offer"] == {
        "id": 1,
        "peer": "b",
        "type": "media-offer",
        "description": {"type": "offer", "sdp": "v=0"},
    }
    assert r["otherCall"] is None and r["notOurs"] is None and r["wrongKind"] is None
    assert r["ice"] == [
        {"urls": ["stun:s.example:3478"]},
        {"urls": ["turn:t.example:3478"], "username": "u", "credential": "p"},
    ]
    assert "not a STUN/TURN line" in r["badIce"]
    assert r["relayDefault"] == [{"urls": ["stun:r"]}] and r["override"] == []
    assert r["turn"] == [False, True]


def test_the_call_panel_on_a_phone_by_keyboard(open_peer: Callable[..., Peer]) -> None:
    """F4 opens the panel over the whole width of a phone, focus on its first action; Tab
    reaches the device pickers; Escape closes it and gives the input back. (No call is
    started: no WebRTC outside the namespace.)"""
    from playwright.sync_api import expect

    ivy = open_peer(viewport={"width": 390, "height": 844}, has_touch=True)
    ivy.create("ivy", "phone")
    ivy.page.keyboard.press("F4")
    panel = ivy.page.locator("#call-panel")
    expect(panel).to_be_visible(timeout=T)
    expect(status(ivy)).to_have_text("no call in #general")
    expect(ivy.page.locator("#call-actions button", has_text="Start call")).to_be_focused()
    box = panel.bounding_box()
    assert box is not None and box["x"] == 0 and box["width"] == 390, box
    reached = []
    for _ in range(4):
        ivy.page.keyboard.press("Tab")
        reached.append(ivy.page.evaluate("document.activeElement.id"))
    assert reached == ["call-mic", "call-cam", "call-speaker", "call-close"], reached
    ivy.page.keyboard.press("Escape")
    expect(panel).to_be_hidden(timeout=T)
    expect(ivy.page.locator("#input")).to_be_focused()
    ivy.no_errors()
