"""The ui's terminal: keys read from curses, and the renderer's lines drawn on it.

No bus and no view model here: ``KeyReader`` turns what curses reads into the
keys of ``felund.ui.model``'s contract, ``styles`` maps the renderer's style
names to curses attributes, ``Screen`` draws ``felund.ui.render``'s lines.
"""

from __future__ import annotations

import base64
import contextlib
import curses

from felund.ui.text import Line

ESC_DELAY_MS = 25  # ms curses waits after ESC for the rest of a key's sequence


def setup(win: curses.window) -> None:
    """Raw keys, no echo, a visible cursor, reads that never block."""
    curses.raw()  # Ctrl+Q, Ctrl+C and friends are keys, not flow control or signals
    curses.noecho()
    curses.set_escdelay(ESC_DELAY_MS)
    win.keypad(True)
    win.nodelay(True)
    # Clicks and the wheel come as KEY_MOUSE (Shift+drag still selects text in most
    # terminals); no click interval, so a press is reported at once.
    curses.mousemask(curses.ALL_MOUSE_EVENTS)
    curses.mouseinterval(0)
    with contextlib.suppress(curses.error):
        curses.curs_set(1)


CONTROL_KEYS = {
    "\x11": "C-q",
    "\x03": "C-q",  # raw mode: Ctrl+C is a key, and detaching is what it should do
    "\x0e": "C-n",
    "\x10": "C-p",
    "\x15": "C-u",
    "\x17": "C-w",
    "\t": "TAB",
    "\n": "ENTER",
    "\r": "ENTER",
    "\x7f": "BACKSPACE",
    "\x08": "BACKSPACE",
    "\x1b": "ESC",
}
CURSES_KEYS = {
    curses.KEY_F1: "F1",
    curses.KEY_F2: "F2",
    curses.KEY_F3: "F3",
    curses.KEY_F4: "F4",
    curses.KEY_UP: "UP",
    curses.KEY_DOWN: "DOWN",
    curses.KEY_LEFT: "LEFT",
    curses.KEY_RIGHT: "RIGHT",
    curses.KEY_PPAGE: "PGUP",
    curses.KEY_NPAGE: "PGDN",
    curses.KEY_HOME: "HOME",
    curses.KEY_END: "END",
    curses.KEY_BACKSPACE: "BACKSPACE",
    curses.KEY_DC: "DELETE",
    curses.KEY_ENTER: "ENTER",
}


_CLICK = curses.BUTTON1_PRESSED | curses.BUTTON1_CLICKED
_WHEEL_UP = curses.BUTTON4_PRESSED
_WHEEL_DOWN = getattr(curses, "BUTTON5_PRESSED", 0)  # ncurses 6 with the extended mouse


class KeyReader:
    """Turns what ``get_wch`` returns into the contract's keys.

    Runs of typed characters become one key (a paste is one edit); ESC then a
    digit is Alt+digit (``M-1``), as terminals send it. A click is a (row, col)
    among the keys, for ``Model.on_click``.
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._esc = False
        self.keys: list[str | tuple[int, int]] = []
        self.resized = False

    def feed(self, ch: str | int) -> None:
        """One character or key code."""
        if self._esc:
            self._esc = False
            if isinstance(ch, str) and len(ch) == 1 and ch in "123456789":
                self._push(f"M-{ch}")
                return
            self._push("ESC")
        if isinstance(ch, int):
            if ch == curses.KEY_RESIZE:
                self.resized = True
            elif ch in CURSES_KEYS:
                self._push(CURSES_KEYS[ch])
        elif ch == "\x1b":
            self._flush_text()
            self._esc = True
        elif ch in CONTROL_KEYS:
            self._push(CONTROL_KEYS[ch])
        elif ch.isprintable():
            self._text.append(ch)

    def mouse(self, event: tuple[int, int, int, int, int]) -> None:
        """What ``curses.getmouse`` read: (id, x, y, z, buttons)."""
        _, x, y, _, buttons = event
        if buttons & _WHEEL_UP:
            self._push("WHEEL_UP")
        elif buttons & _WHEEL_DOWN:
            self._push("WHEEL_DOWN")
        elif buttons & _CLICK:
            self._flush_text()
            self.keys.append((y, x))

    def take(self) -> list[str | tuple[int, int]]:
        """The keys read since the last call (a lone ESC is ESC)."""
        if self._esc:
            self._esc = False
            self._push("ESC")
        self._flush_text()
        keys, self.keys = self.keys, []
        return keys

    def _push(self, key: str) -> None:
        self._flush_text()
        self.keys.append(key)

    def _flush_text(self) -> None:
        if self._text:
            self.keys.append("".join(self._text))
            self._text = []


_NAME_COLORS = (
    curses.COLOR_RED,
    curses.COLOR_GREEN,
    curses.COLOR_YELLOW,
    curses.COLOR_BLUE,
    curses.COLOR_MAGENTA,
    curses.COLOR_CYAN,
)


def styles() -> dict[str, int]:
    """Curses attributes of the renderer's styles; colour pairs when the terminal has them."""
    attrs = {
        "header": curses.A_REVERSE | curses.A_BOLD,
        "sidebar": curses.A_NORMAL,
        "sidebar.active": curses.A_REVERSE,
        "sidebar.unread": curses.A_BOLD,
        "time": curses.A_DIM,
        "text": curses.A_NORMAL,
        "pending": curses.A_DIM,
        "failed": curses.A_BOLD | curses.A_UNDERLINE,
        "notice": curses.A_DIM,
        "input": curses.A_NORMAL,
        "overlay": curses.A_REVERSE,
        "invite": curses.A_BOLD,  # not reversed: a copy of its line is the code alone
        "qr": curses.A_NORMAL,
        "day": curses.A_BOLD,
        "mention": curses.A_BOLD | curses.A_REVERSE,
        "sidebar.mention": curses.A_BOLD | curses.A_UNDERLINE,
        "error": curses.A_BOLD,
        **{f"name.{i}": curses.A_BOLD for i in range(8)},
        **_markdown_styles(),
    }
    if not curses.has_colors():
        return attrs
    background = -1
    try:
        curses.use_default_colors()
    except curses.error:
        background = curses.COLOR_BLACK
    many = curses.COLORS >= 16
    names = [
        *_NAME_COLORS,
        10 if many else curses.COLOR_WHITE,  # bright green, else plain white
        13 if many else curses.COLOR_WHITE,  # bright magenta
    ]
    pairs: dict[str, tuple[int, int]] = {f"name.{i}": (c, background) for i, c in enumerate(names)}
    pairs |= {
        "header": (curses.COLOR_WHITE, curses.COLOR_BLUE),
        "failed": (curses.COLOR_RED, background),
        "error": (curses.COLOR_RED, background),
        "notice": (curses.COLOR_CYAN, background),
        "mention": (curses.COLOR_YELLOW, background),
        "sidebar.mention": (curses.COLOR_YELLOW, background),
        # Dark modules black on white, whatever the terminal's own colours.
        "qr": (curses.COLOR_BLACK, curses.COLOR_WHITE),
    }
    for number, (style, (fg, bg)) in enumerate(pairs.items(), start=1):
        if number >= curses.COLOR_PAIRS:
            break
        curses.init_pair(number, fg, bg)
        # A coloured header needs no reverse video (which would swap its colours).
        attrs[style] = (attrs[style] & ~curses.A_REVERSE) | curses.color_pair(number)
    return attrs


def _markdown_styles() -> dict[str, int]:
    """``**bold**``, ``*italic*``, `` `code` `` and ``~~strike~~`` of a stored message's
    text (``felund.ui.markdown``); curses has no strike-through: it is dim."""
    return {
        "text.bold": curses.A_BOLD,
        "text.italic": getattr(curses, "A_ITALIC", curses.A_UNDERLINE),
        "text.code": curses.A_REVERSE,
        "text.strike": curses.A_DIM,
    }


def osc52(text: str) -> bytes:
    """The escape sequence that puts ``text`` on the terminal's clipboard."""
    return b"\x1b]52;c;" + base64.b64encode(text.encode()) + b"\x07"


class Screen:
    """Draws the renderer's lines; curses sends the terminal only what changed."""

    def __init__(self, win: curses.window) -> None:
        self.win = win
        self.attrs = styles()
        self._last: tuple[list[Line], tuple[int, int]] | None = None

    def size(self) -> tuple[int, int]:
        """(rows, cols) of the terminal."""
        rows, cols = self.win.getmaxyx()
        return rows, cols

    def draw(self, lines: list[Line], cursor: tuple[int, int], force: bool = False) -> bool:
        """Show ``lines`` with the cursor at (y, x); False if nothing changed."""
        if not force and self._last == (lines, cursor):
            return False
        self._last = (lines, cursor)
        rows, cols = self.size()
        plain = curses.A_NORMAL
        for y, line in enumerate(lines[:rows]):
            self.win.move(y, 0)
            for text, style in line:
                try:
                    self.win.addstr(text, self.attrs.get(style, plain))
                except curses.error:
                    break  # the bottom-right cell: written, but the cursor cannot move on
        y, x = cursor
        with contextlib.suppress(curses.error):
            self.win.move(min(max(y, 0), rows - 1), min(max(x, 0), cols - 1))
        self.win.refresh()
        return True

    def invalidate(self) -> None:
        """Repaint everything at the next draw (after a resize)."""
        self._last = None
        self.win.clear()
