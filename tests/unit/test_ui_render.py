"""The ui's screen: sizes, wrapping of any text, styles, and drawing cost (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.protocol import UNVERIFIED_MARK
from felund.ui import pane as ui_pane
from felund.ui.input import LineEditor, view, window_offset
from felund.ui.model import Model
from felund.ui.pane import Msg, Pane, name_style
from felund.ui.render import cursor, render
from felund.ui.text import Line, clip, fit, width, wrap
from tests.unit.ui_store import (
    BOB,
    ME,
    T0,
    UiStore,
    circle,
    enter,
    example_store,
    made_up_row,
    started,
    store,
    utc,
)

__all__ = ["circle", "example_store", "store", "utc"]  # fixtures, used here

CJK = "\u4e2d\u6587\u5b57"  # three wide characters
EMOJI = "\U0001f600"
COMBINING = "e\u0301"  # e and a combining acute: one column


def text_of(line: Line) -> str:
    return "".join(t for t, _ in line)


def line_cols(line: Line) -> int:
    return sum(width(t) for t, _ in line)


def check_screen(screen: list[Line], rows: int, cols: int) -> None:
    assert len(screen) == rows
    for line in screen:
        assert line_cols(line) == cols, line


# --- widths and wrapping --------------------------------------------------------------
def test_widths_of_wide_and_combining_characters() -> None:
    assert width(CJK) == 6
    assert width(EMOJI) == 2
    assert width(COMBINING) == 1
    assert width("a\x1bb") == 3  # the escape shows as one replacement character
    assert clip(CJK, 5) == ("\u4e2d\u6587", 4)  # never half a wide character


def test_wrap_breaks_at_spaces_and_indents_continuations() -> None:
    lines = wrap([("aaa bbb ccc ddd", "text")], 8, 2)
    assert [text_of(x) for x in lines] == ["aaa bbb", "  ccc", "  ddd"]


@pytest.mark.parametrize("piece", [CJK, EMOJI * 3, COMBINING * 5, "abc"])
def test_wrap_never_exceeds_the_width_with_any_script(piece: str) -> None:
    text = " ".join([piece] * 40)
    for cols in (1, 2, 3, 7, 20):
        lines = wrap([("12:00 ", "time"), (text, "text")], cols, 6)
        assert all(line_cols(x) <= cols for x in lines)
        shown = "".join(text_of(x) for x in lines).replace(" ", "")
        if cols >= 2:  # every character is still there (a one-column pane shows "?")
            assert shown == ("12:00" + text).replace(" ", "")


def test_newlines_in_a_message_break_lines() -> None:
    lines = wrap([("one\ntwo", "text")], 20, 2)
    assert [text_of(x) for x in lines] == ["one", "  two"]


def test_fit_pads_and_clips_to_exact_width() -> None:
    assert line_cols(fit([("ab", "x")], 5)) == 5
    assert line_cols(fit([(CJK, "x")], 5)) == 5  # 4 columns of text, 1 of padding
    assert fit([("abcdef", "x")], 3) == [("abc", "x")]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(1, 60), st.integers(0, 10))
def test_wrap_any_text_fits(text: str, cols: int, indent: int) -> None:
    for line in wrap([(text, "text")], cols, indent):
        assert line_cols(line) <= cols


# --- the input line ------------------------------------------------------------------
def test_input_scrolls_horizontally_and_keeps_the_cursor_visible() -> None:
    editor = LineEditor()
    editor.set("x" * 1000)
    editor.scroll_to(20)
    shown, col = view(editor.text, editor.cursor, editor.offset, 20)
    assert width(shown) <= 20
    assert col == 19
    editor.home()
    editor.scroll_to(20)
    assert editor.offset == 0
    assert view(editor.text, editor.cursor, editor.offset, 20)[1] == 0


def test_input_window_of_a_huge_line_keeps_the_cursor_in_view() -> None:
    # How fast this is lives in bench/ui.py; here, that it is right at any cursor.
    text = (CJK + "a") * 30_000
    for cursor_ in range(0, len(text), 997):
        offset = window_offset(text, cursor_, 0, 80)
        assert offset <= cursor_
        assert width(text[offset:cursor_]) < 80


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.integers(1, 40), st.data())
def test_input_view_fits_any_text(text: str, cols: int, data: Any) -> None:
    editor = LineEditor()
    editor.set(text)
    editor.cursor = data.draw(st.integers(0, len(editor.text)))
    editor.scroll_to(cols)
    shown, col = view(editor.text, editor.cursor, editor.offset, cols)
    assert width(shown) <= cols
    assert 0 <= col < cols


# --- the screen -----------------------------------------------------------------------
def test_screen_layout_with_sidebar(store: UiStore, circle: str) -> None:
    store.set_read_mark("dev", store.seq_of(13))  # as an earlier session left it
    model = started(store)
    screen = render(model, 24, 100)
    check_screen(screen, 24, 100)
    header = text_of(screen[0])
    assert header.startswith(f" felund {ME[:8]}  friends  #general  peers 0")
    assert header.rstrip().endswith("F1 help  F2 invite  F3 settings  ^Q detach")
    assert screen[0][0][1] == "header"
    body = [text_of(x) for x in screen[1:-2]]
    assert body[0].startswith("friends")
    assert body[1].startswith("  #general ")
    assert body[2].startswith("  #dev (2) ")
    styles = {t.strip(): s for t, s in screen[3] if t.strip()}
    assert styles["#dev (2)"] == "sidebar.unread"
    assert {s for t, s in screen[2] if "#general" in t} == {"sidebar.active"}
    assert text_of(screen[-3]).rstrip().endswith("22:13 bob: message 10")
    assert text_of(screen[-2]).strip() == ""  # the status line, nothing to say yet
    assert text_of(screen[-1]).startswith("> ")


def test_narrow_terminal_hides_the_sidebar(store: UiStore, circle: str) -> None:
    model = started(store)
    screen = render(model, 10, 49)
    check_screen(screen, 10, 49)
    assert not any("#general " in text_of(x) for x in screen[1:-2])
    assert text_of(screen[-3]).startswith("22:13 bob: message 10")


def test_message_line_styles(store: UiStore, circle: str) -> None:
    model = started(store)
    enter(model, "waiting")
    screen = render(model, 24, 100)
    pending = next(x for x in screen if "waiting" in text_of(x))
    assert ("\u2026 ", "pending") in pending
    assert ("waiting", "pending") in pending
    plain = next(x for x in screen if "message 10" in text_of(x))
    assert (": message 10", "text") in plain
    assert ("bob", name_style(BOB)) in plain
    assert name_style(BOB) == name_style(BOB)
    assert name_style(BOB) in {f"name.{i}" for i in range(8)}


def test_an_unverified_message_is_marked(store: UiStore, circle: str) -> None:
    model = started(store)
    model.on_chat_msg_stored([store.bob_says(300, signed=False)])
    screen = render(model, 24, 100)
    unsigned = next(x for x in screen if "message 300" in text_of(x))
    assert (f"{UNVERIFIED_MARK}bob", name_style(BOB)) in unsigned
    signed = next(x for x in screen if "message 10" in text_of(x))
    assert ("bob", name_style(BOB)) in signed


def test_time_is_local() -> None:
    msg = Msg("m", BOB, "bob", T0, "hi")  # 2023-11-14 22:13:20 UTC
    assert text_of(ui_pane.format_msg(msg, 40)[0]) == "22:13 bob: hi"


@pytest.fixture
def formatted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The msg_id of every message ui_pane.format_msg wraps during the test, in order."""
    calls: list[str] = []
    real = ui_pane.format_msg

    def counting(msg: Msg, cols: int, look: ui_pane.Look) -> list[Line]:
        calls.append(msg.msg_id)
        return real(msg, cols, look)

    monkeypatch.setattr(ui_pane, "format_msg", counting)
    return calls


def test_a_long_message_is_wrapped_once_then_drawn_from_the_cache(
    store: UiStore, circle: str, formatted: list[str]
) -> None:
    model = started(store)
    long = store.bob_says(99, text="word " * 1600)  # 8000 characters: the most a message has
    model.on_chat_msg_stored([long])
    check_screen(render(model, 40, 120), 40, 120)
    assert formatted.count(long["msg_id"]) == 1
    check_screen(render(model, 40, 120), 40, 120)
    assert formatted.count(long["msg_id"]) == 1  # drawn again from the cache
    render(model, 40, 100)
    assert formatted.count(long["msg_id"]) == 2  # a new width wraps anew


def test_drawing_wraps_only_what_is_visible(formatted: list[str]) -> None:
    pane = Pane()
    for i in range(5000):
        pane.add(Msg(f"{i:032x}", BOB, "bob", T0 + i, f"message {i}", store_seq=i + 1), ME)
    assert len(pane.visible(20, 60)) == 20
    assert len(formatted) == 20
    pane.scroll_up(19, 20, 60)
    assert len(pane.visible(20, 60)) == 20
    assert len(formatted) < 60


def test_scroll_up_keeps_the_view_when_new_messages_come() -> None:
    pane = Pane()
    for i in range(100):
        pane.add(Msg(f"{i:032x}", BOB, "bob", T0 + i, f"m{i}", store_seq=i + 1), ME)
    pane.scroll_up(10, 5, 40)
    before = pane.visible(5, 40)
    pane.add(Msg(f"{200:032x}", BOB, "bob", T0 + 200, "new", store_seq=201), ME)
    assert pane.visible(5, 40) == before
    pane.scroll_down(1000, 40)
    assert pane.at_bottom
    assert text_of(pane.visible(5, 40)[-1]).endswith("new")


def test_overlays_replace_the_pane(store: UiStore, circle: str) -> None:
    model = started(store)
    model.on_key("F1")
    screen = render(model, 30, 100)
    check_screen(screen, 30, 100)
    assert any("Ctrl+N / Ctrl+P" in text_of(x) for x in screen)
    assert not any("message 10" in text_of(x) for x in screen)
    # A key's description wraps under the description, not under the keys.
    (tab,) = [i for i, x in enumerate(screen) if "complete a command" in text_of(x)]
    column = text_of(screen[tab]).index("complete a command")
    assert text_of(screen[tab + 1])[:column].strip(" │") == ""
    assert text_of(screen[tab + 1])[column] != " "
    for _ in range(5):
        model.on_key("PGDN")
    assert any("/quit" in text_of(x) for x in render(model, 30, 100))


def test_cursor_sits_after_the_prompt_and_text(store: UiStore, circle: str) -> None:
    model = started(store)
    enter(model, "")
    for ch in "h" + CJK:
        model.on_key(ch)
    assert cursor(model, 24, 100) == (23, 2 + 1 + 6)
    model.on_key("HOME")
    assert cursor(model, 24, 100) == (23, 2)


# --- any size, any text, never wider than the screen -------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 130),
    texts=st.lists(st.text(max_size=60), max_size=8),
    name=st.text(max_size=30),
    overlay=st.sampled_from([None, "F1", "F2", "F3", "/debug"]),
)
def test_render_fits_any_size_and_text(
    example_store: UiStore,
    *,
    rows: int,
    cols: int,
    texts: list[str],
    name: str,
    overlay: str | None,
) -> None:
    model = started(example_store)
    circle_id = example_store.circle_id
    rows_ = [
        made_up_row(circle_id, 100 + i, text=t, display_name=name) for i, t in enumerate(texts)
    ]
    model.on_chat_msg_stored(rows_)
    model.on_sys_log({"ts": T0, "service": name, "level": "info", "event": "e\n\x1b[31m"})
    if overlay == "/debug":
        enter(model, "/debug")
    elif overlay:
        model.on_key(overlay)
    for t in texts[:2]:
        model.on_key(t or "x")
    model.on_resize(rows, cols)
    screen = render(model, rows, cols)
    check_screen(screen, rows, cols)
    for line in screen:
        assert not any(ch in text_of(line) for ch in "\n\r\x1b\t")
    r, c = cursor(model, rows, cols)
    assert (r, c) == (rows - 1, c)
    assert 0 <= c < cols


def test_first_run_wizard_screen(store: UiStore) -> None:
    model: Model = started(store)  # no circle yet
    screen = render(model, 12, 60)
    check_screen(screen, 12, 60)
    assert any("Welcome to felund" in text_of(x) for x in screen)
    assert text_of(screen[-1]).startswith("circle name or invite code> ")
