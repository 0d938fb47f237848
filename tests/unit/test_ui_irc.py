"""The ui's issue-19 features, sans-IO against the real store: mentions, inline Markdown,
day separators, event notices, full times, the commands the other terminal client has,
the invite window, small terminals, the header's node state, the mouse, /debug lines."""

from __future__ import annotations

import curses

import pytest

from felund.protocol import (
    CONTROL_CHANNEL,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_LEAVE,
    OP_CIRCLES,
    OP_CONTROL,
    OP_INBOX,
)
from felund.ui import qr
from felund.ui.markdown import inline, mentions
from felund.ui.model import Model
from felund.ui.render import render
from felund.ui.state import log_line
from felund.ui.terminal import KeyReader, osc52
from felund.ui.text import Line
from tests.unit.ui_store import (
    BOB,
    T0,
    UiStore,
    calls,
    circle,
    enter,
    screen_text,
    started,
    store,
    utc,
)

__all__ = ["circle", "store", "utc"]  # fixtures, used here


def text_of(line: Line) -> str:
    return "".join(t for t, _ in line)


def styled(model: Model, text: str, rows: int = 24, cols: int = 100) -> list[tuple[str, str]]:
    """The segments of the first screen line showing ``text``."""
    screen = render(model, rows, cols)
    return next(line for line in screen if text in text_of(line))


# --- mentions and Markdown -------------------------------------------------------------
def test_inline_markdown_as_the_other_client_renders_it() -> None:
    assert inline("a **b** *c* `d *e*` ~~f~~ g", "text") == [
        ("a ", "text"),
        ("b", "text.bold"),
        (" ", "text"),
        ("c", "text.italic"),
        (" ", "text"),
        ("d *e*", "text.code"),  # a code span shows its text as written
        (" ", "text"),
        ("f", "text.strike"),
        (" g", "text"),
    ]
    for plain in ["2 * 3 * 4", "a ** b", "**", "`", "~~ x ~~", "*unpaired"]:
        assert inline(plain, "text") == [(plain, "text")], plain


def test_mentions_are_words_of_the_name_in_any_case() -> None:
    assert mentions("hey @Alice, look", "alice") and mentions("alice: hi", "alice")
    assert not mentions("malice aforethought", "alice")
    assert not mentions("alice2 is someone else", "alice")
    assert not mentions("anything", "") and not mentions("anything", "  ")
    assert inline("**hi @alice** and alice", "text", "alice") == [
        ("hi ", "text.bold"),
        ("@alice", "mention"),
        (" and ", "text"),
        ("alice", "mention"),
    ]


def test_a_mention_is_highlighted_and_counted_in_the_sidebar(store: UiStore, circle: str) -> None:
    model = started(store)
    model.on_key("M-2")  # #dev: #general's new messages stay unread
    rows = [
        store.bob_says(20, text="hello @alice, **look**"),
        store.bob_says(21, text="nothing for you"),
    ]
    model.on_chat_msg_stored(rows)
    (general,) = [line for line in render(model, 24, 100) if "#general (" in text_of(line)]
    assert text_of(general).split("\u2502")[0].strip() == "#general (2 @1)"
    assert general[0][1] == "sidebar.mention"
    model.on_key("M-1")  # read: neither count is left
    assert "#general (" not in screen_text(model)
    line = styled(model, "hello")
    assert ("@alice", "mention") in line and ("look", "text.bold") in line
    assert "**" not in text_of(line)
    # Your own words naming you are no mention; unsent, they show as typed.
    enter(model, "I am alice, **sure**")
    line = styled(model, "I am alice")
    assert ("alice", "mention") not in line and "**sure**" in text_of(line)
    assert model.pane().mentions() == 0


# --- day separators, event notices, full times --------------------------------------------
def test_a_days_first_message_has_a_separator_above_it(store: UiStore) -> None:
    store.circle_id = store.create_circle("friends")
    store.bob_says(1)
    store.bob_says(3600 * 3)  # the next day (UTC): T0 is Tuesday 22:13
    model = started(store)
    text = screen_text(model)
    assert "\u2014 Tuesday 14 November 2023 \u2014" in text
    assert "\u2014 Wednesday 15 November 2023 \u2014" in text
    lines = text.splitlines()
    tue = next(i for i, row in enumerate(lines) if "Tuesday" in row)
    wed = next(i for i, row in enumerate(lines) if "Wednesday" in row)
    assert "message 1" in lines[tue + 1] and "message 10800" in lines[wed + 1]
    assert styled(model, "Tuesday")[-2][1] == "day"


def test_joins_leaves_and_renames_are_said_in_the_pane(store: UiStore, circle: str) -> None:
    model = started(store)
    rows = [
        store.bob_does({"t": "CHANNEL_EVT", "op": "leave", "channel_id": "dev"}, n=30),
        store.bob_does({"t": "CHANNEL_EVT", "op": "join", "channel_id": "dev"}, n=31),
        store.bob_does(
            {"t": "CHANNEL_EVT", "op": "rename", "node_id": BOB, "display_name": "robert"}, n=32
        ),
    ]
    assert all(r["channel_id"] == CONTROL_CHANNEL for r in rows)
    model.on_chat_msg_stored(rows)
    model.on_chat_msg_stored(rows)  # again (catch-up after a reload): said once
    general = screen_text(model)
    assert general.count("bob is now known as robert") == 1
    model.on_key("M-2")
    dev = screen_text(model)
    assert dev.count("bob left #dev") == 1 and dev.count("bob joined #dev") == 1
    assert styled(model, "left #dev")[-2][1] == "notice"


def test_slash_time_shows_full_dates_and_times(store: UiStore, circle: str) -> None:
    model = started(store)
    assert "2023-11-14 22:13:30 bob: message 10" not in screen_text(model)
    enter(model, "/time")
    assert "2023-11-14 22:13:30 bob: message 10" in screen_text(model)
    enter(model, "/time")
    assert "22:13 bob: message 10" in screen_text(model)


# --- commands -------------------------------------------------------------------------
def test_circle_create_name_and_leave(store: UiStore, circle: str) -> None:
    model = started(store)
    effects = enter(model, "/circle create book club")
    assert [c.body for c in calls(effects, OP_CIRCLE_CREATE)] == [{"name": "book club"}]
    store.drive(model, effects)
    assert "book club" in [c.name for c in model.circles.values()]
    made = model.active_circle()
    assert made is not None and made.name == "book club"

    store.drive(model, enter(model, "/circle name reading"))
    named = [c for c in store.calls if c.op == OP_CONTROL][-1]
    gone = made.circle_id
    assert named.body["event"] == {"t": "CIRCLE_NAME_EVT", "circle_id": gone, "name": "reading"}
    store.drive(model, model.on_chat_circle_changed())
    assert made.name == "reading"

    assert calls(enter(model, "/circle leave"), "") == []  # said first
    assert "/circle leave again within 10 s" in model.status and model.status_style == "error"
    effects = enter(model, "/circle leave")
    assert [c.body for c in calls(effects, OP_CIRCLE_LEAVE)] == [
        {"circle_id": gone, "delete_history": False}
    ]
    store.drive(model, effects)
    assert gone not in model.circles and model.status.startswith("left reading")
    assert [c for c in store.calls if c.op == OP_CIRCLES]


def test_inbox_across_circles_and_its_mentions(store: UiStore, circle: str) -> None:
    work = store.join_work()
    store.bob_says(40, text="ping alice in friends")
    store.bob_says(41, circle_id=work, text="work news")
    store.bob_says(42, circle_id=work, text="@alice, the report")
    model = started(store)
    effects = enter(model, "/inbox 3")
    assert sorted(c.body["circle_id"] for c in calls(effects, OP_INBOX)) == sorted([circle, work])
    store.drive(model, effects)
    text = screen_text(model, rows=40)
    assert "the newest messages of all your circles:" in text
    for line in ["friends #general bob: ping alice in friends", "work #general bob: work news",
                 "work #general bob: @alice, the report"]:  # fmt: skip
        assert line in text
    assert "message 15" not in text.split("all your circles:")[1]  # only the newest 3

    store.drive(model, enter(model, "/inbox -m"))
    mentioned = screen_text(model, rows=40).split("messages naming you")[1]
    assert "ping alice" in mentioned and "the report" in mentioned
    assert "work news" not in mentioned
    for bad in ["/inbox 0", "/inbox lots", "/inbox 5 6"]:
        enter(model, bad)
        assert model.status.startswith("usage: /inbox"), bad


def test_channel_requests_names_who_asked(store: UiStore, circle: str) -> None:
    store.i_do({"t": "CHANNEL_EVT", "op": "create", "channel_id": "vip", "access_mode": "invite"})
    store.bob_does({"t": "CHANNEL_EVT", "op": "request", "channel_id": "vip"})
    model = started(store)
    enter(model, "/channel requests vip")
    text = screen_text(model)
    assert "asked to join #vip:" in text and f"bob  {BOB[:8]}" in text
    enter(model, "/channel requests dev")
    assert model.status == "nobody asked to join #dev"
    enter(model, "/channel requests nope")
    assert model.status_style == "error"


# --- the invite window ------------------------------------------------------------------
def test_f2_draws_a_qr_code_when_the_window_has_room(store: UiStore, circle: str) -> None:
    model = started(store)
    store.drive(model, model.on_key("F2"))
    (code,) = store.copied
    picture = qr.lines(code)
    assert picture and all(len(row) == len(picture[0]) for row in picture)
    big = screen_text(model, rows=60, cols=200)
    assert picture[0] in big and picture[-1] in big
    small = screen_text(model, rows=24, cols=200)
    assert "\u2588" not in small and code in small  # no room: the code alone
    assert osc52("ab") == b"\x1b]52;c;YWI=\x07"


# --- status, header, small terminals --------------------------------------------------------
def test_an_error_clears_on_the_next_action_that_works(store: UiStore, circle: str) -> None:
    model = started(store)
    store.drive(model, enter(model, "/join felund1.garbage"))
    assert model.status_style == "error" and model.status
    store.drive(model, model.on_chat_circle_changed())  # the ui's own refreshes: no action
    store.drive(model, model.on_sys_settings_changed())
    assert model.status_style == "error" and model.status
    store.drive(model, enter(model, "it works"))
    assert model.status == ""


def test_a_small_terminal_keeps_help_readable_and_the_detach_warning_whole(
    store: UiStore, circle: str
) -> None:
    model = started(store, rows=16, cols=60)
    model.on_key("F1")
    screen = render(model, 16, 60)
    body = [text_of(line).split("\u2502", 1)[-1] for line in screen[1:-2]]
    keys = [row for row in body if row.startswith("  ") and not row.startswith("   ")]
    assert "  F1" in [row.rstrip() for row in keys]  # each key whole, on its own line
    assert any(row.strip() == "this help" for row in body)
    assert len(text_of(screen[1]).split("\u2502")[0]) == 14  # a narrower sidebar
    model.on_key("ESC")

    model.on_key("F4")
    assert "\u2502" not in screen_text(model, rows=16, cols=60)
    model.on_key("F4")
    assert "\u2502" in screen_text(model, rows=16, cols=60)

    enter(model, "one")
    enter(model, "two")
    model.on_key("C-q")
    assert model.status == "2 unsent \u2014 Ctrl+Q again to detach anyway"
    assert screen_text(model, rows=16, cols=60).splitlines()[-2].rstrip() == model.status


# --- the mouse ---------------------------------------------------------------------------
def test_a_click_in_the_sidebar_switches_and_the_wheel_scrolls(store: UiStore) -> None:
    store.friends(general=range(1, 100), dev=())
    model = started(store)
    rows = screen_text(model).splitlines()
    dev_row = next(i for i, row in enumerate(rows) if row.startswith("  #dev"))
    model.on_click(dev_row, 3)
    assert model.active is not None and model.active[1] == "dev"
    model.on_click(dev_row - 2, 3)  # the circle's name: its #general
    assert model.active[1] == "general"
    model.on_click(dev_row, 50)  # in the pane: nothing
    assert model.active[1] == "general"
    model.on_key("WHEEL_UP")
    assert not model.pane().at_bottom and "message 96" in screen_text(model).splitlines()[-3]
    model.on_key("WHEEL_DOWN")
    assert model.pane().at_bottom


def test_mouse_reports_become_clicks_and_wheel_keys() -> None:
    reader = KeyReader()
    reader.feed("a")
    reader.mouse((0, 4, 7, 0, curses.BUTTON1_PRESSED))
    reader.mouse((0, 4, 7, 0, curses.BUTTON4_PRESSED))
    reader.mouse((0, 4, 7, 0, curses.BUTTON5_PRESSED))
    reader.mouse((0, 4, 7, 0, curses.BUTTON1_RELEASED))  # the click was the press
    assert reader.take() == ["a", (7, 4), "WHEEL_UP", "WHEEL_DOWN"]


# --- /debug ------------------------------------------------------------------------------
def test_debug_lines_lead_with_the_event_and_its_reason() -> None:
    record = {
        "ts": T0,
        "service": "gossip",
        "level": "warning",
        "event": "gossip.dial_failed",
        "reason": "refused",
        "node_id": "b" * 24,
        "pid": 4242,
        "peer": "127.0.0.1:9999",
    }
    line = log_line(record)
    assert line == "22:13:20 gossip.dial_failed refused [gossip warning] peer=127.0.0.1:9999"
    assert log_line({"event": "x"}).startswith("--:--:-- x [- -]")
    failed = {"ts": T0, "service": "gossip", "event": "peer.disconnected", "error": "Timeout"}
    assert log_line(failed | {"pid": 1}) == "22:13:20 peer.disconnected Timeout [gossip -]"


@pytest.mark.parametrize("cols", [8, 20, 40, 60, 100])
def test_full_times_wrap_within_the_width(store: UiStore, circle: str, cols: int) -> None:
    model = started(store, cols=cols)
    enter(model, "/time")
    screen = render(model, 24, cols)
    for line in screen:
        assert len(text_of(line)) == cols
    full = [t for line in screen for t, s in line if s == "time" and t.startswith("2023-11-14")]
    assert full or cols < 20  # narrower, the time itself wraps
