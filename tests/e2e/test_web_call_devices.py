"""Switching devices in a call (issue 17): the panel's microphone, camera and speaker
pickers with more than one device each.

Chromium's fake devices (measured here with ``enumerateDevices``): three audio inputs
("Fake Default Audio Input", "Fake Audio Input 1", "Fake Audio Input 2") and three audio
outputs whatever the flags, and as many cameras as
``--use-fake-device-for-media-stream=device-count=N`` says ("fake_device_0", ...; one
without it; the second is a depth camera WebRTC does not send, so the test takes the
third). So the pickers switch between real (fake) devices here: the new microphone and
camera replace the old tracks on the senders with no new offer (addendum §1.6.2 step 7),
the bytes keep flowing, and the speaker is set on every remote audio element.

WebRTC runs only inside a network namespace with only ``lo`` (run_in_namespace).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from felund import testing
from felund.testing import Relay
from tests.e2e.conftest import Peer, T
from tests.e2e.test_web_call_media import (  # noqa: F401 (fixtures)
    MEDIA_ARGS,
    call_relay,
    grows,
    isolated,
    join_call,
    launch,
    media_browser,
    node_id,
    peers,
    playwright,
    run_in_namespace,
    stats,
    status,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.slow

# Three cameras: Chromium's second fake camera is a depth camera (Y16), which WebRTC does
# not send (measured: after replaceTrack onto it, no byte more, in a bare page too); the
# first and third are ordinary (I420).
CAMERAS = tuple(
    f"{a}=device-count=3" if a == "--use-fake-device-for-media-stream" else a for a in MEDIA_ARGS
)
SENDING = """(peer) => {
  const { media } = globalThis.felundCalls.active;
  const pc = media.links.get(peer).pc;
  return {
    tracks: pc.getSenders().filter((s) => s.track).map((s) => [s.track.kind, s.track.label]).sort(),
    sdp: pc.localDescription.sdp,
    state: pc.signalingState,
    ended: media.stream.getTracks().filter((t) => t.readyState === "ended").length,
  };
}"""


def test_device_switching_in_a_namespace_with_only_loopback() -> None:
    """Run the inner tests of this file in a fresh network namespace (only lo, up)."""
    run_in_namespace(__file__)


@pytest.fixture(scope="module")
def cameras(playwright: Any) -> Iterator[Browser]:  # noqa: F811 (the fixture)
    chromium = launch(playwright, *CAMERAS)
    yield chromium
    chromium.close()


def _options(peer: Peer, select: str) -> list[str]:
    labels: list[str] = peer.page.evaluate(
        "(id) => [...document.getElementById(id).options].filter((o) => o.value)"
        ".map((o) => o.textContent)",
        select,
    )
    return labels


def test_switching_microphone_camera_and_speaker_inside_the_namespace(
    peers: Callable[..., Peer],  # noqa: F811 (the fixture)
    cameras: Browser,
    call_relay: Relay,  # noqa: F811 (the fixture)
) -> None:
    from playwright.sync_api import expect

    alice, bob = peers(cameras), peers(cameras)
    alice.create("alice", "devices")
    bob.join("bob", alice.invite_code())
    a, b = node_id(alice), node_id(bob)
    alice.type("/call start")
    expect(status(alice)).to_have_text("in the call", timeout=T)
    join_call(bob, "alice")
    grows(bob, a, "inAudio", "inVideo")

    # More than one of each in alice's pickers (the panel is open: /call opened it).
    testing.wait_for(
        lambda: len(_options(alice, "call-cam")) == 3, timeout=30, what="the cameras listed"
    )
    assert _options(alice, "call-cam") == ["fake_device_0", "fake_device_1", "fake_device_2"]
    assert {"Fake Audio Input 1", "Fake Audio Input 2"} <= set(_options(alice, "call-mic"))
    assert {"Fake Audio Output 1", "Fake Audio Output 2"} <= set(_options(alice, "call-speaker"))
    before = alice.page.evaluate(SENDING, b)
    assert before["tracks"] == [["audio", "Fake Default Audio Input"], ["video", "fake_device_0"]]

    alice.page.select_option("#call-mic", label="Fake Audio Input 2")
    alice.page.select_option("#call-cam", label="fake_device_2")
    want = [["audio", "Fake Audio Input 2"], ["video", "fake_device_2"]]
    testing.wait_for(
        lambda: alice.page.evaluate(SENDING, b)["tracks"] == want,
        timeout=30,
        what="the new devices on alice's senders",
    )
    after = alice.page.evaluate(SENDING, b)
    # Replaced on the senders: no new offer, the description is the one before.
    assert after["sdp"] == before["sdp"] and after["state"] == "stable"
    assert after["ended"] == 0  # the old tracks left alice's stream (stopped), none dead in it
    grows(alice, b, "outAudio", "outVideo")
    grows(bob, a, "inAudio", "inVideo")

    # The speaker: every remote audio element plays to the one picked.
    alice.page.select_option("#call-speaker", label="Fake Audio Output 1")
    picked = alice.page.locator("#call-speaker").input_value()
    sinks = "() => [...document.querySelectorAll('#call-videos audio')].map((e) => e.sinkId)"
    testing.wait_for(
        lambda: alice.page.evaluate(sinks) == [picked],
        timeout=30,
        what="bob's audio on the picked speaker",
    )
