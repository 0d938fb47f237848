"""The curses ui for real: `felund ui` in a private tmux server, against real nodes.

Keys go in with ``tmux send-keys``, the screen comes out with ``capture-pane``.
Without tmux these tests are skipped locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from felund.actor.runtime import load_context
from felund.home import NodeLock
from felund.protocol import OP_APPEND, OP_INVITE
from felund.testing import FELUND, Node, Tmux, control_wire, running_node, wait_for
from felund.testing.procstat import exited
from felund.trust.identity import IdentityKey
from felund.v1 import events
from felund.v1.invite import decode_invite
from services.ui import LOG_MAX_BYTES

pytestmark = pytest.mark.slow

COLS, ROWS = 100, 30


def ui_env(node: Node) -> dict[str, str]:
    # A stale size in the environment, as pytest-xdist's workers and some shells export:
    # the screen is the terminal's size (COLS x ROWS) all the same.
    return {
        **node.env,
        "TERM": "xterm-256color",
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "LINES": "24",
        "COLUMNS": "80",
    }


Attach = Callable[..., Tmux]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One running node (alice, one circle) for the tests that only add their own
    messages and check for them: a node start is most of a test's time."""
    with running_node(tmp_path_factory.mktemp("ui") / "node", "alice") as node:
        yield node


@pytest.fixture
def attach() -> Iterator[Attach]:
    """`felund ui` on a node in a private tmux, once its screen shows a text.

    At the end: every tmux server is killed, and no ui logged a crash.
    """
    if shutil.which("tmux") is None:
        message = "tmux is not installed; CI installs it with apt-get install -y tmux"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    made: list[tuple[Tmux, Node]] = []

    def start(node: Node, wait_for_text: str = "#general", *args: str) -> Tmux:
        tmux = Tmux()
        made.append((tmux, node))
        tmux.start([*FELUND, "ui", *args], ui_env(node), COLS, ROWS)
        tmux.wait_for_text(wait_for_text, timeout=20)
        return tmux

    yield start
    for tmux, _ in made:
        tmux.kill()
    for _, node in made:
        log = node.home / "ui.log"
        crashes = [line for line in log.read_text().splitlines() if "ui.crashed" in line]
        assert not crashes, crashes[0]


def type_line(tmux: Tmux, text: str) -> None:
    tmux.send_keys(text, literal=True)
    tmux.send_keys("Enter")


def texts(node: Node, channel: str | None = None) -> list[str]:
    return [m["text"] for m in node.inbox(node.circle_id, channel or "", limit=1000)]


def input_line(screen: str) -> str:
    """The last non-blank row: the input line."""
    return [row for row in screen.splitlines() if row.strip()][-1]


def status_line(screen: str) -> str:
    """The row above the input line (whatever size the terminal came up in)."""
    rows = [row for row in screen.splitlines() if row.strip()]
    return rows[-2] if len(rows) > 1 else ""


def above_input(screen: str) -> str:
    """Every row but the input line; "" unless the last row is drawn (the input line,
    never blank: its prompt). Seen once in CI: a capture with the typed line, still on
    the input row, six rows up and nothing below it, read as a line above the input."""
    rows = screen.splitlines()
    if len(rows) < ROWS or not rows[ROWS - 1].strip():
        return ""
    return "\n".join(rows[: ROWS - 1])


def row_with(screen: str, text: str) -> str:
    """The first row above the input line that shows ``text``."""
    rows = screen.splitlines()
    return next((row for row in rows[: ROWS - 1] if text in row), "")


def test_attach_shows_header_and_history(shared: Node, attach: Attach) -> None:
    shared.cli("send", "--circle-id", shared.circle_id, "sent before the ui came")
    shared.cli("send", "--circle-id", shared.circle_id, "and a second one")
    tmux = attach(shared)
    screen = tmux.wait_for_text("and a second one")
    header = screen.splitlines()[0]
    assert shared.status()["node_id"][:8] in header, screen
    assert shared.circle_id[:8] in header and "#general" in header, screen
    # In the order stored, even within one second (where msg_ids are random).
    assert 0 <= screen.index("sent before the ui came") < screen.index("and a second one")
    assert "alice" in row_with(screen, "and a second one")


def test_typed_message_is_shown_and_stored_once(shared: Node, attach: Attach) -> None:
    tmux = attach(shared)
    type_line(tmux, "typed in the ui")
    tmux.wait_until(lambda s: "typed in the ui" in above_input(s), what="the line")
    wait_for(lambda: "typed in the ui" in texts(shared), what="the message in the inbox")
    assert texts(shared).count("typed in the ui") == 1
    assert "typed in the ui" not in input_line(tmux.capture())


def alice_and_bob(make_node) -> tuple[Node, Node]:
    """Nodes alice (a) and bob (b), running, in a circle alice made."""
    a = make_node("a", FELUND_GOSSIP_ROUND_INTERVAL_S="0.5")
    b = make_node("b", FELUND_GOSSIP_ROUND_INTERVAL_S="0.5")
    a.cli("init", "--bind", "127.0.0.1", "--name", "alice")
    b.cli("init", "--bind", "127.0.0.1", "--name", "bob")
    code = a.cli("invite").stdout.strip()
    a.circle_id = b.circle_id = b.cli("join", "--code", code).stdout.strip()
    a.start()
    b.start()
    return a, b


def test_message_from_another_node_arrives_while_typing(make_node, attach: Attach) -> None:
    a, b = alice_and_bob(make_node)
    tmux = attach(a)
    tmux.send_keys("half a li", literal=True)
    tmux.wait_until(lambda s: "half a li" in input_line(s), what="the half line")
    b.cli("send", "--circle-id", b.circle_id, "bob says hi")
    screen = tmux.wait_for_text("bob says hi", timeout=20)
    assert "bob" in screen
    assert "half a li" in input_line(screen), screen
    type_line(tmux, "ne")
    tmux.wait_until(lambda s: "half a line" in s and "half a li" not in input_line(s))
    wait_for(lambda: "half a line" in texts(b), timeout=20, what="the line on bob's node")
    assert sorted(texts(a)) == ["bob says hi", "half a line"]


def test_detach_keeps_the_node_and_two_uis_see_a_message(shared: Node, attach: Attach) -> None:
    first = attach(shared)
    second = attach(shared)
    shared.cli("send", "--circle-id", shared.circle_id, "to everyone attached")
    first.wait_for_text("to everyone attached")
    second.wait_for_text("to everyone attached")
    first.send_keys("C-q")
    assert wait_for(lambda: first.pane_exit() is not None, what="the ui to detach") is not None
    assert first.pane_exit() == 0
    status = shared.status()
    assert status["running"] is True
    assert all(s["state"] == "running" for s in status["services"].values())
    type_line(second, "the other ui still works")
    first_screen = first.capture()
    second.wait_for_text("the other ui still works")
    wait_for(lambda: "the other ui still works" in texts(shared), what="the second ui's message")
    assert "Traceback" not in first_screen


def test_stopped_node_is_one_line_with_how_to_start(make_node) -> None:
    n = make_node()
    n.cli("init")
    result = n.cli("ui", check=False)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not running" in lines[0] and "felund run" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_big_ui_log_is_cut_at_the_next_start(make_node) -> None:
    n = make_node()
    n.cli("init")
    log, old = n.home / "ui.log", n.home / "ui.log.1"
    log.write_bytes(b'{"event": "ui.attach"}\n' * 100_000)  # 2.3 MB
    big = log.stat().st_size
    result = n.cli("ui", check=False)
    assert result.returncode == 1 and "not running" in result.stderr, result
    assert log.stat().st_size < LOG_MAX_BYTES
    assert old.stat().st_size == big  # the last one kept, once
    log.write_bytes(b"small\n")
    n.cli("ui", check=False)
    assert log.read_bytes() == b"small\n"  # under the limit: appended to, not cut
    assert old.stat().st_size == big


PENDING_MARK = "\u2026"  # the pane's mark of a message sent but not acknowledged yet


def test_store_not_answering_is_one_line(make_node) -> None:
    n = make_node()
    n.cli("init")
    # The node's lock held, as by a running node, but no store behind its socket.
    lock = NodeLock(load_context(n.env).layout)
    assert lock.try_acquire()
    try:
        started = time.monotonic()
        result = n.cli("ui", check=False)
        took = time.monotonic() - started
    finally:
        lock.release()
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert took < 20


def test_message_typed_while_the_store_restarts_is_stored_once(node: Node, attach: Attach) -> None:
    tmux = attach(node)
    store = node.service_pid("store")
    os.kill(store, signal.SIGKILL)
    type_line(tmux, "typed while the store was down")
    screen = tmux.wait_until(
        lambda s: "typed while the store was down" in above_input(s), what="the line"
    )
    assert PENDING_MARK in row_with(screen, "typed while the store was down"), screen
    wait_for(
        lambda: node.status()["services"]["store"]["pid"] not in (None, store),
        what="the store to be restarted",
    )
    tmux.wait_until(
        lambda s: PENDING_MARK not in row_with(s, "typed while the store was down"),
        timeout=30,
        what="the acknowledgement",
    )
    assert texts(node) == ["typed while the store was down"]
    assert node.status()["services"]["store"]["restarts"] == 1


def redrawn(screen: str, rows: int) -> bool:
    """The ui has drawn a screen of ``rows`` rows (tmux alone only crops or pads the old one)."""
    lines = screen.splitlines()
    return len(lines) == rows and "#general" in lines[0] and lines[-1].startswith(">")


def test_resize_help_and_channels(shared: Node, attach: Attach) -> None:
    tmux = attach(shared)
    tmux.resize(60, 15)
    screen = tmux.wait_until(lambda s: redrawn(s, 15), what="the ui redrawn in 15 rows")
    assert max(len(row) for row in screen.splitlines()) <= 60
    tmux.resize(COLS, ROWS)
    tmux.wait_until(lambda s: redrawn(s, ROWS), what="the ui redrawn in 30 rows again")

    tmux.send_keys("F1")
    tmux.wait_for_text("Ctrl+Q")
    tmux.send_keys("Escape")
    tmux.wait_until(lambda s: "Ctrl+Q" not in s, what="the help to close")

    type_line(tmux, "/channel create dev")
    type_line(tmux, "/channel switch dev")
    tmux.wait_until(lambda s: "#dev" in s.splitlines()[0], what="#dev in the header")
    type_line(tmux, "said in dev")
    wait_for(lambda: texts(shared, "dev") == ["said in dev"], what="the message in #dev")
    assert "said in dev" not in texts(shared, "general")
    tmux.send_keys("M-1")  # ESC 1, as terminals send Alt+1: the first channel
    tmux.wait_until(lambda s: "#general" in s.splitlines()[0], what="#general in the header")


def test_bad_invite_code_is_a_clear_error(shared: Node, attach: Attach) -> None:
    tmux = attach(shared)
    type_line(tmux, "/join felund1.garbage")
    screen = tmux.wait_until(
        lambda s: "invite code" in status_line(s),
        timeout=60,  # the store's answer; a loaded machine (CI's two workers) is slow
        what="the error on the status line",
    )
    assert "Traceback" not in screen and "/join" not in input_line(screen)
    assert len(shared.json("circles")) == 1


def test_first_run_wizard_creates_a_circle(make_node, attach: Attach) -> None:
    n = make_node()
    n.cli("init", "--name", "carol", "--bind", "127.0.0.1")
    n.start()
    tmux = attach(n, wait_for_text="circle name or invite code")
    type_line(tmux, "friends")
    tmux.wait_for_text("your name")
    tmux.send_keys("Enter")
    circles = wait_for(lambda: n.json("circles"), what="a circle made by the wizard")
    assert [c["name"] for c in circles] == ["friends"]
    tmux.wait_for_text("#general")


def test_start_starts_a_stopped_node_and_attaches(make_node, attach: Attach) -> None:
    n = make_node()
    n.cli("init", "--name", "dave", "--bind", "127.0.0.1")
    n.circle_id = n.json("invite")["circle_id"]
    n.cli("send", "--circle-id", n.circle_id, "written while stopped")
    try:
        attach(n, "written while stopped", "--start")
        assert n.status()["running"] is True
    finally:
        # Started by the ui, in a session of its own: not this Node's process to stop.
        pid = int((n.home / "node.lock").read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: exited(pid), what="the node to stop")


def test_a_blocked_nodes_messages_leave_the_screen_and_come_back(make_node, attach: Attach) -> None:
    a, b = alice_and_bob(make_node)
    tmux = attach(a)
    b.cli("send", "--circle-id", b.circle_id, "bob before")
    tmux.wait_for_text("bob before", timeout=20)  # the path is live
    a.cli("block", "bob")  # from the command line, while the ui runs
    tmux.wait_until(lambda s: "bob before" not in s, 20, "bob's message leaving the screen")
    b.cli("send", "--circle-id", b.circle_id, "bob while blocked")
    wait_for(lambda: "bob while blocked" in texts(a), timeout=20, what="bob's message stored")
    type_line(tmux, "alice after")  # shown after bob's arrived: the screen is up to date
    screen = tmux.wait_until(lambda s: "alice after" in above_input(s), 20, "alice's message")
    assert "bob while blocked" not in screen and "bob before" not in screen
    a.cli("unblock", "bob")
    tmux.wait_until(
        lambda s: "bob before" in s and "bob while blocked" in s, 20, "bob's messages back"
    )


def test_the_screen_says_when_the_node_is_away_and_when_it_is_back(
    make_node, attach: Attach
) -> None:
    """`felund stop` under an attached ui: the header says disconnected since when, a line
    typed meanwhile waits; the node started again: reconnected, and the line is stored."""
    node = make_node("away")
    node.cli("init", "--bind", "127.0.0.1", "--name", "alice")
    node.circle_id = node.json("invite")["circle_id"]
    node.start()
    tmux = attach(node)
    tmux.wait_until(lambda s: "peers 0" in s.splitlines()[0], what="peers in the header")
    node.cli("stop")
    screen = tmux.wait_until(
        lambda s: "disconnected from the node since" in s.splitlines()[0],
        timeout=30,
        what="the header saying disconnected",
    )
    assert "peers" not in screen.splitlines()[0]
    assert "goes out once the node is back" in status_line(screen), screen
    type_line(tmux, "typed while away")
    tmux.wait_until(lambda s: "typed while away" in above_input(s), what="the pending line")
    node.start()
    screen = tmux.wait_until(
        lambda s: (
            "reconnected to the node at" in status_line(s) and "reconnected at" in s.splitlines()[0]
        ),
        timeout=60,
        what="reconnected, in the status line and in the header",
    )
    assert "disconnected" not in screen, screen
    tmux.wait_until(
        lambda s: "peers" in s.splitlines()[0], timeout=30, what="peers in the header again"
    )
    wait_for(lambda: "typed while away" in texts(node), timeout=30, what="the line stored")
    assert texts(node).count("typed while away") == 1


def test_the_header_and_slash_call_show_a_call_and_no_call_after_its_end(
    shared: Node, attach: Attach
) -> None:
    """A call written by a browser-side host (signed, handed to the store as the relay
    brings it) shows in the header and in /call; its end leaves "no call"."""
    secret = decode_invite(shared.call(OP_INVITE, {"circle_id": shared.circle_id})["code"]).secret
    host, sid = IdentityKey.generate(), "6f" * 16
    tmux = attach(shared)

    def hand(event: dict[str, Any]) -> None:
        wire = control_wire(secret, shared.circle_id, host.node_id, event, host, name="bob")
        assert shared.call(OP_APPEND, {"origin": "relay", "msgs": [wire]})["results"] == ["stored"]

    type_line(tmux, "/call")
    tmux.wait_for_text("no call in #general")
    words = "call in #general, started by bob, 1 in it"
    hand(events.call_event("create", shared.circle_id, host.node_id, sid))
    tmux.wait_until(lambda s: words in s.splitlines()[0], 10, "the call in the header")
    type_line(tmux, "/call")
    # The answer's lines as one screen: a capture may land between two lines' drawing.
    lines = (f"in it: bob ({host.node_id[:12]})", "join from a browser")
    tmux.wait_until(lambda s: all(line in s for line in lines), 10, "/call's answer")
    hand(events.call_event("end", shared.circle_id, host.node_id, sid))
    tmux.wait_until(lambda s: words not in s.splitlines()[0], 10, "the header without it")
    type_line(tmux, "/call")
    tmux.wait_for_text("no call in #general")  # the status line: /call's multi-line answer
    # above went to the pane and left the status line empty
