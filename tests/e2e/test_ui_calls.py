"""Calls in the curses ui (issue 17): the ui shows calls and never writes one.

Addendum §1.4: every participant of a call connects to every other one and
must have a live audio track, and viewers get their media from the host only.
A node has no microphone or camera, so a call it started, joined or hosted
would leave its peers' connections to it silent and its viewers with
nothing: the ui's /call start|join|view|leave|end|revoke say so and write no
CALL_EVT; a browser does those (/call says how to join from one).
"""

from __future__ import annotations

import pytest

from felund.protocol import OP_CALLS
from felund.testing import Node
from tests.e2e.test_ui_screen import Attach, attach, shared, type_line  # noqa: F401

pytestmark = pytest.mark.slow


def test_the_ui_starts_joins_and_ends_no_call_and_says_why(shared: Node, attach: Attach) -> None:  # noqa: F811
    tmux = attach(shared)
    type_line(tmux, "/call")  # the path is live: /call asks the store and says what it holds
    tmux.wait_for_text("no call in #general")
    for sub in ("start", "join", "view", "leave", "end", "revoke bob"):
        type_line(tmux, f"/call {sub}")
        tmux.wait_for_text(f"/call {sub.split()[0]} is a browser's: this node has no microphone")
    type_line(tmux, "/call dance")
    tmux.wait_for_text("usage: /call")
    assert shared.call(OP_CALLS, {"circle_id": shared.circle_id})["calls"] == []
