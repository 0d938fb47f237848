"""The ui's screen as a pure function of its view model (sans-IO).

``render(model, rows, cols)`` gives ``rows`` lines, each a list of
``(text, style)`` segments exactly ``cols`` columns wide; ``cursor`` gives
where the terminal's cursor goes. Styles are names the app maps to curses
attributes: ``header``, ``sidebar``, ``sidebar.active``, ``sidebar.unread``,
``time``, ``name.0``..``name.7``, ``text``, ``pending``, ``failed``,
``notice``, ``input``, ``overlay``, ``error``.

The screen, top to bottom: the header, then the sidebar (hidden below 50
columns) beside the message pane or a window over it (help, invite,
settings, debug), the status line, the input line. A small terminal keeps
the input line first, then the header, then the status line. Drawing costs
O(screen): the pane wraps only the messages it shows.
"""

from __future__ import annotations

import re

from felund.ui import qr
from felund.ui.commands import help_lines
from felund.ui.input import prompt_cols, view
from felund.ui.pane import clock
from felund.ui.state import Layout
from felund.ui.text import Line, clip, fit, width, wrap
from felund.ui.view import SETTINGS_FIELDS, View
from felund.v1.events import call_words

__all__ = ["Line", "cursor", "render"]

HINTS = "F1 help  F2 invite  F3 settings  ^Q detach"
SHORT_HINTS = "F1 help"  # on a header with no room for all of them
SEPARATOR = "\u2502"
_COLUMN_GAP = re.compile(r"\S {2,}(?=\S)")  # the gap before a second column
_WIZARD = {
    "circle": [
        "Welcome to felund.",
        "",
        "You are in no circle yet: a circle is a small private group, with channels.",
        "",
        "Type a name for a new circle, or paste an invite code someone gave you, then Enter.",
    ],
    "name": ["Now your display name, as the people of the circle will see it; then Enter."],
    "working": ["Setting up the circle\u2026"],
}


def render(model: View, rows: int, cols: int) -> list[Line]:
    """The screen: ``rows`` lines of exactly ``cols`` columns each."""
    if rows <= 0 or cols <= 0:
        return [[] for _ in range(max(0, rows))]
    lay = model.layout(rows, cols)
    screen: list[Line] = [[(" " * cols, "text")] for _ in range(rows)]
    if lay.header >= 0:
        screen[lay.header] = fit(_header(model, cols), cols, "header")
    for i, line in enumerate(_body(model, lay)):
        screen[lay.body_top + i] = fit(line, cols)
    if lay.status >= 0:
        screen[lay.status] = fit(_status(model, cols), cols)
    screen[lay.input] = fit(_input(model, cols), cols, "input")
    return screen


def cursor(model: View, rows: int, cols: int) -> tuple[int, int]:
    """Where the terminal's cursor goes: in the input line, at the editor's cursor."""
    rows, cols = max(1, rows), max(1, cols)
    shown = prompt_cols(model.prompt, cols)
    _, col = view(model.input.text, model.input.cursor, model.input.offset, cols - shown)
    return rows - 1, min(cols - 1, shown + col)


# --- header, status, input ---------------------------------------------------------
def _header(model: View, cols: int) -> Line:
    circle, channel = model.active_circle(), model.active_channel()
    parts = [f" felund {model.node_id[:8]}"]
    if circle is not None:
        parts.append(circle.name or circle.circle_id[:8])
    if channel is not None:
        parts.append(f"#{channel.channel_id}")
        calls = circle.calls if circle is not None else None
        found = (
            [c for c in calls["calls"] if c["channel_id"] == channel.channel_id] if calls else []
        )
        if calls and found:
            parts.append(call_words(found[0], calls["names"]))
    if model.disconnected_since is not None:
        parts.append(f"disconnected from the node since {clock(int(model.disconnected_since))}")
    elif model.reconnected_at is not None:
        parts.append(f"reconnected at {clock(int(model.reconnected_at))}")
    elif circle is not None and circle.circle_id in model.gossip:
        peers, last = model.gossip[circle.circle_id]
        parts.append(f"peers {peers}" + (f", last message {clock(int(last))}" if last else ""))
    else:
        parts.append(f"peers {model.peers}")
    left = "  ".join(parts)
    hints = HINTS if width(left) + width(HINTS) + 3 <= cols else SHORT_HINTS
    gap = cols - width(left) - width(hints) - 1
    text = f"{left}{' ' * gap}{hints} " if gap >= 2 else f"{left}  {hints}"
    return [(text, "header")]


def _status(model: View, cols: int) -> Line:
    line: Line = [(model.status, model.status_style)]
    if model.overlay is None and not model.pane().at_bottom:
        tag = " [scrolled: End for the newest]"
        room = cols - width(tag)
        line = [(clip(model.status, max(0, room - 1))[0], model.status_style)]
        line = [*fit(line, max(0, room)), (tag, "notice")]
    return line


def _input(model: View, cols: int) -> Line:
    shown = prompt_cols(model.prompt, cols)
    prompt, _ = clip(model.prompt, shown)
    text, _ = view(model.input.text, model.input.cursor, model.input.offset, cols - shown)
    return [(prompt, "input"), (text, "input")]


# --- the body: sidebar and pane ------------------------------------------------------
def _body(model: View, lay: Layout) -> list[Line]:
    height = lay.body_height
    if height <= 0:
        return []
    pane = _pane(model, height, lay.pane_cols)
    pane = [[(" ", "text")]] * (height - len(pane)) + pane  # the newest line sits lowest
    if not lay.sidebar:
        return pane
    side_cols = lay.sidebar - 1
    side = _sidebar(model, height, side_cols)
    return [
        [*fit(s, side_cols, "sidebar"), (SEPARATOR, "sidebar"), *fit(p, lay.pane_cols)]
        for s, p in zip(side, pane, strict=True)
    ]


def _sidebar(model: View, height: int, cols: int) -> list[Line]:
    """Circles and their channels; unread counts, and the unread ones naming you after @."""
    lines: list[Line] = []
    for circle, view_ in model.sidebar_rows(height):
        if view_ is None:
            lines.append([(circle.name or circle.circle_id[:8], "sidebar")])
            continue
        unread, mentioned = view_.pane.unread(), view_.pane.mentions()
        suffix = (f" ({unread}" + (f" @{mentioned}" if mentioned else "") + ")") if unread else ""
        label, _ = clip(f"  #{view_.channel_id}", cols - len(suffix))
        style = "sidebar.mention" if mentioned else "sidebar.unread" if unread else "sidebar"
        if model.active == (circle.circle_id, view_.channel_id):
            style = "sidebar.active"
        lines.append([(label + suffix, style)])
    return lines + [[("", "sidebar")]] * (height - len(lines))


def _pane(model: View, height: int, cols: int) -> list[Line]:
    if model.overlay == "help":
        lines = _wrapped(help_lines(cols=cols), cols, "overlay")
        return _scrolled(lines, height, model.overlay_scroll)
    if model.overlay == "invite":
        return _invite(model, height, cols)[:height]
    if model.overlay == "settings":
        return _wrapped(_settings_text(model), cols, "overlay")[:height]
    if model.overlay == "debug":
        return _debug(model, height, cols)
    if model.mode == "wizard":
        return _wrapped(_WIZARD.get(model.wizard_step, []), cols, "notice")[:height]
    if model.mode == "loading":
        return [[("asking the node for your circles\u2026", "notice")]]
    return model.pane().visible(height, cols)


def _wrapped(texts: list[str], cols: int, style: str) -> list[Line]:
    out: list[Line] = []
    for text in texts:
        out += wrap([(text, style)], cols, _hanging(text, cols))
    return out


def _hanging(text: str, cols: int) -> int:
    """Where a wrapped line goes on: under the second column of a two-column line
    ("  F1    this help"), so a wrapped description does not look like a new key."""
    gap = _COLUMN_GAP.search(text.split("\n", 1)[0])
    column = width(text[: gap.end()]) if gap else 0
    return column if 2 < column <= cols // 2 else 2


def _scrolled(lines: list[Line], height: int, scroll: int) -> list[Line]:
    start = min(scroll, max(0, len(lines) - height))
    return lines[start : start + height]


def _invite(model: View, height: int, cols: int) -> list[Line]:
    """The code on a line of its own, never wrapped (a copy of it is the code); below it, its
    QR code if the window has room. It is on the clipboard too (OSC 52), where the terminal
    lets a program put it there."""
    circle = model.active_circle()
    head = _wrapped([f"Invite code of {circle.name if circle else ''}:"], cols, "overlay")
    if not model.invite_code:
        return head + _wrapped(["asking the node\u2026"], cols, "overlay")
    code = model.invite_code
    fits = width(code) <= cols
    tail = _wrapped(
        [
            "",
            (
                "Copied to the clipboard if the terminal allows (OSC 52)."
                if fits
                else f"Too narrow to show it whole ({width(code)} columns): widen the window;"
                " it was put on the clipboard if the terminal allows (OSC 52)."
            ),
            "Whoever has it can join the circle and read it: give it privately.",
            "They paste it at their first run, or type /join CODE.  Esc closes.",
        ],
        cols,
        "overlay",
    )
    lines = [*head, [(clip(code, cols)[0], "invite")], *tail]
    picture = qr.lines(code)
    if picture and len(lines) + 1 + len(picture) <= height and width(picture[0]) <= cols:
        lines += [[("", "text")], *[[(row, "qr")] for row in picture]]
    return lines


def _settings_text(model: View) -> list[str]:
    lines = ["Settings: Up/Down choose, Enter edits (Enter saves, Esc cancels), Esc closes", ""]
    for i, (key, label) in enumerate(SETTINGS_FIELDS):
        mark = ">" if i == model.settings_field else " "
        value = model.settings.get(key) or "(not set)"
        lines.append(f"{mark} {label}: {value}")
    if model.settings_editing:
        lines += ["", "editing below, in the input line"]
    return lines


def _debug(model: View, height: int, cols: int) -> list[Line]:
    records = list(model.debug_lines)
    end = max(0, len(records) - model.overlay_scroll) if records else 0
    shown = records[max(0, end - (height - 1)) : end]
    title = f"node log ({len(records)} records, PageUp/PageDown, Esc closes) {clock_now(model)}"
    return [[(title, "notice")], *[[(clip(r, cols)[0], "overlay")] for r in shown]]


def clock_now(model: View) -> str:
    """The model clock's HH:MM."""
    return clock(int(model.clock()))
