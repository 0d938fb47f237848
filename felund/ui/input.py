"""The ui's input line: editing, history of sent lines, horizontal scrolling (sans-IO).

The cursor is an index into ``text`` (code points); it never rests on a
combining character, so Left/Right move over what the eye sees as one
character. ``window`` keeps the cursor visible with O(width) work whatever
the text's length, so a pasted 100k-character line stays responsive.
"""

from __future__ import annotations

import unicodedata

from felund.ui.text import clip, glyph

MAX_HISTORY = 500


def _clean(typed: str) -> str:
    # A pasted run may hold line breaks or tabs: the line stays one line.
    typed = typed.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if typed.isprintable():
        return typed
    return "".join(ch for ch in typed if unicodedata.category(ch) not in ("Cc", "Cs"))


def _zero_width(ch: str) -> bool:
    return glyph(ch)[1] == 0


class LineEditor:
    """One line of text with a cursor, and the history of the lines taken from it."""

    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0
        self.offset = 0  # index of the first character shown
        self.history: list[str] = []
        self._hist_pos: int | None = None  # index into history while browsing it
        self._draft = ""

    def set(self, text: str) -> None:
        """Replace the text; the cursor goes to its end."""
        self.text = _clean(text)
        self.cursor = len(self.text)
        self.offset = 0
        self._hist_pos = None

    def insert(self, typed: str) -> None:
        """Insert typed (or pasted) text at the cursor."""
        typed = _clean(typed)
        self.text = self.text[: self.cursor] + typed + self.text[self.cursor :]
        self.cursor += len(typed)

    def left(self) -> None:
        """Move one character left."""
        while self.cursor > 0:
            self.cursor -= 1
            if not _zero_width(self.text[self.cursor]):
                break

    def right(self) -> None:
        """Move one character right (past its combining characters)."""
        if self.cursor < len(self.text):
            self.cursor += 1
        while self.cursor < len(self.text) and _zero_width(self.text[self.cursor]):
            self.cursor += 1

    def home(self) -> None:
        """Move to the start."""
        self.cursor = 0

    def end(self) -> None:
        """Move to the end."""
        self.cursor = len(self.text)

    def backspace(self) -> None:
        """Delete the character before the cursor."""
        end = self.cursor
        self.left()
        self.text = self.text[: self.cursor] + self.text[end:]

    def delete(self) -> None:
        """Delete the character under the cursor."""
        start = self.cursor
        self.right()
        self.text = self.text[:start] + self.text[self.cursor :]
        self.cursor = start

    def kill_line(self) -> None:
        """Clear the line (Ctrl+U)."""
        self.text = ""
        self.cursor = 0
        self.offset = 0

    def kill_word(self) -> None:
        """Delete the word before the cursor, and the spaces after it (Ctrl+W)."""
        end = self.cursor
        i = end
        while i > 0 and self.text[i - 1] == " ":
            i -= 1
        while i > 0 and self.text[i - 1] != " ":
            i -= 1
        self.text = self.text[:i] + self.text[end:]
        self.cursor = i

    def take(self) -> str:
        """The line, now cleared and remembered in the history (if not blank)."""
        line = self.text
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-MAX_HISTORY]
        self._hist_pos = None
        self.kill_line()
        return line

    def history_prev(self) -> None:
        """Show the previous line of the history (Up)."""
        if not self.history:
            return
        if self._hist_pos is None:
            self._draft = self.text
            self._hist_pos = len(self.history)
        self._hist_pos = max(0, self._hist_pos - 1)
        self._show(self.history[self._hist_pos])

    def history_next(self) -> None:
        """Show the next line of the history, then the draft (Down)."""
        if self._hist_pos is None:
            return
        self._hist_pos += 1
        if self._hist_pos >= len(self.history):
            self._hist_pos = None
            self._show(self._draft)
        else:
            self._show(self.history[self._hist_pos])

    def _show(self, text: str) -> None:
        self.text = text
        self.cursor = len(text)

    def scroll_to(self, cols: int) -> None:
        """Move ``offset`` so the cursor is visible in ``cols`` columns."""
        self.offset = window_offset(self.text, self.cursor, self.offset, cols)


def window_offset(text: str, cursor: int, offset: int, cols: int) -> int:
    """The first index to show so that ``cursor`` fits in ``cols`` columns.

    Keeps ``offset`` if the cursor is visible from there; else the cursor goes
    to the nearest edge. Costs O(cols), not O(len(text)).
    """
    cols = max(1, cols)
    cursor = min(max(cursor, 0), len(text))
    if offset > cursor:
        return cursor
    used = 0
    i = offset
    while i < cursor:  # is the cursor within cols - 1 columns of offset?
        used += glyph(text[i])[1]
        if used > cols - 1:
            break
        i += 1
    if i >= cursor:
        return max(0, offset)
    start = cursor
    used = 0
    while start > 0:  # cursor at the right edge, one column kept for it
        w = glyph(text[start - 1])[1]
        if used + w > cols - 1:
            break
        used += w
        start -= 1
    return start


def view(text: str, cursor: int, offset: int, cols: int) -> tuple[str, int]:
    """What the input line shows in ``cols`` columns, and the cursor's column."""
    offset = window_offset(text, cursor, offset, cols)
    shown, _ = clip(text[offset : offset + 4 * max(1, cols)], cols)
    _, col = clip(text[offset:cursor], cols)
    return shown, min(col, max(0, cols - 1))


def prompt_cols(prompt: str, cols: int) -> int:
    """The columns the prompt takes in ``cols``: one is always left for the text."""
    return clip(prompt, max(0, cols - 1))[1]
