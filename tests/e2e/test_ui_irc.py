"""Issue 19's curses ui features for real: `felund ui` in a private tmux against a node:
mentions and Markdown, the day separator, F2's code on one line, its QR code and OSC 52,
a 60x16 terminal (help, the sidebar toggle), the reconnected header."""

from __future__ import annotations

import time

from felund.protocol import OP_APPEND, OP_INVITE
from felund.testing import Node, wait_for
from felund.testing.signed import signed_wire_message
from felund.trust.identity import IdentityKey
from felund.v1.invite import decode_invite
from tests.e2e.test_ui_screen import Attach, attach, redrawn, shared, type_line

__all__ = ["attach", "shared"]  # fixtures, used here


def test_a_mention_is_counted_and_markdown_drawn_without_its_markers(
    shared: Node, attach: Attach
) -> None:
    secret = decode_invite(shared.call(OP_INVITE, {"circle_id": shared.circle_id})["code"]).secret
    bob = IdentityKey.generate()
    tmux = attach(shared)
    type_line(tmux, "/channel create mentions")
    type_line(tmux, "/channel switch mentions")
    tmux.wait_until(lambda s: "#mentions" in s.splitlines()[0], what="#mentions in the header")
    wire = signed_wire_message(
        secret, bob, bob.node_id, "hey @alice, **look** at `this`", name="bob"
    )
    assert shared.call(OP_APPEND, {"origin": "relay", "msgs": [wire]})["results"] == ["stored"]
    screen = tmux.wait_for_text("@1)")
    (row,) = [r for r in screen.splitlines() if "#general (" in r]
    assert "#general (1 @1)" in row, screen
    tmux.send_keys("M-1")
    screen = tmux.wait_for_text("hey @alice, look at this")
    assert "**" not in screen and "`" not in screen
    today = time.strftime("%A", time.gmtime())
    assert f"\u2014 {today} " in screen, screen  # the day's separator (TZ=UTC)


def test_f2_shows_the_code_on_one_line_with_its_qr_code_and_copies_it(
    shared: Node, attach: Attach
) -> None:
    code = shared.call(OP_INVITE, {"circle_id": shared.circle_id})["code"]
    tmux = attach(shared)
    tmux.resize(len(code) + 10, 50)
    tmux.wait_until(lambda s: redrawn(s, 50), what="the ui redrawn in 50 rows")
    tmux.send_keys("F2")
    screen = tmux.wait_for_text("Invite code of")
    screen = tmux.wait_until(lambda s: code in s, what="the code")
    assert [row.strip() for row in screen.splitlines() if code[:20] in row] == [code]
    assert "\u2588" in screen or "\u2580" in screen, screen  # the QR code
    wait_for(lambda: tmux.clipboard() == code, timeout=10, what="the code on the clipboard")


def test_a_60x16_terminal_keeps_help_readable_and_hides_the_sidebar_on_f4(
    shared: Node, attach: Attach
) -> None:
    tmux = attach(shared)
    tmux.resize(60, 16)
    tmux.wait_until(lambda s: redrawn(s, 16), what="the ui redrawn in 16 rows")
    tmux.send_keys("F1")
    screen = tmux.wait_for_text("this help")
    pane = [row.split("\u2502", 1)[-1].rstrip() for row in screen.splitlines()]
    f1 = pane.index("  F1")  # the key alone, what it does below it, not wrapped as a key
    assert pane[f1 + 1].strip() == "this help" and pane[f1 + 1].startswith("    "), screen
    tmux.send_keys("Escape")
    tmux.wait_until(lambda s: "this help" not in s, what="the help closed")
    tmux.send_keys("F4")
    screen = tmux.wait_until(lambda s: "\u2502" not in s, what="the sidebar hidden")
    tmux.send_keys("F4")
    tmux.wait_until(lambda s: "\u2502" in s, what="the sidebar back")
