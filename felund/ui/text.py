"""Display width, clipping and wrapping of text for the curses ui (sans-IO).

Widths are terminal columns as ``wcwidth`` measures them: a wide character
(CJK, most emoji) takes two, a combining character none and stays with the
character before it. Control characters and lone surrogates never reach
the terminal: they show as U+FFFD (a tab as a space), so a message cannot
move the cursor or change colours.

A ``Line`` is a list of ``(text, style)`` segments; styles are names the
app maps to curses attributes (see ``felund.ui.render``).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Iterator

from wcwidth import wcwidth

from felund.protocol import on_screen

Segment = tuple[str, str]
Line = list[Segment]

REPLACEMENT = "\ufffd"
_TOO_WIDE = "?"  # stands for a wide character in a one-column space


@functools.lru_cache(maxsize=8192)
def _slow_glyph(ch: str) -> tuple[str, int]:
    if ch == "\t":
        return " ", 1
    if unicodedata.category(ch) == "Cs":
        return REPLACEMENT, 1
    w = wcwidth(ch)
    if w < 0:
        return REPLACEMENT, 1
    return ch, w


def glyph(ch: str) -> tuple[str, int]:
    """What one character shows as, and its width in columns (0 for combining)."""
    if " " <= ch < "\x7f":  # printable ASCII, the common case, without a call
        return ch, 1
    return _slow_glyph(ch)


def clusters(text: str) -> Iterator[tuple[str, int]]:
    """The text as (cluster, width): a character with the zero-width ones after it."""
    base = ""
    base_w = 0
    for ch in text:
        shown, w = glyph(ch)
        if w == 0 and base:
            base += shown
            continue
        if base:
            yield base, base_w
        base, base_w = shown, w
    if base:
        yield base, base_w


def width(text: str) -> int:
    """The display width of ``text`` in columns."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(w for _, w in clusters(text))


def clip(text: str, cols: int) -> tuple[str, int]:
    """The longest start of ``text`` that fits in ``cols`` columns, and its width."""
    if cols <= 0:
        return "", 0
    if text.isascii() and text.isprintable():
        part = text[:cols]
        return part, len(part)
    parts: list[str] = []
    used = 0
    for cl, w in clusters(text):
        if used + w > cols:
            break
        parts.append(cl)
        used += w
    return "".join(parts), used


def fit(line: Iterable[Segment], cols: int, fill_style: str = "text") -> Line:
    """``line`` clipped or padded with spaces to exactly ``cols`` columns."""
    out: Line = []
    used = 0
    for raw, style in line:
        if used >= cols:
            break
        text = on_screen(raw)  # every line of the screen passes here
        part, w = clip(text, cols - used)
        if part:
            out.append((part, style))
            used += w
        if w < width(text):  # clipped: a wide character may leave one column
            break
    if used < cols:
        out.append((" " * (cols - used), fill_style))
    return out


def line_width(line: Iterable[Segment]) -> int:
    """The display width of a line of segments."""
    return sum(width(text) for text, _ in line)


class _Wrapper:
    """Greedy word wrapping of styled clusters; continuation lines indented."""

    def __init__(self, cols: int, indent: int) -> None:
        self.cols = max(1, cols)
        # A continuation line keeps two columns at least: room for a wide character.
        self.indent = indent if 0 < indent <= self.cols - 2 else 0
        self.lines: list[list[tuple[str, int, str]]] = []
        self.cur: list[tuple[str, int, str]] = []
        self.cur_w = 0
        self.start = 0  # clusters before this index are the indent
        self.brk = -1  # index in cur of the last space, where a line may break

    def _finish(self, clusters_: list[tuple[str, int, str]]) -> None:
        self.lines.append(clusters_)
        self.cur = []
        self.cur_w = 0
        self.brk = -1
        self.start = 0
        if self.indent:
            self.cur.append((" " * self.indent, self.indent, "text"))
            self.cur_w = self.indent
            self.start = 1

    def newline(self) -> None:
        self._finish(self.cur)

    def add(self, cl: str, w: int, style: str) -> None:
        if w > self.cols - self.indent:
            cl, w = _TOO_WIDE, 1
        if self.cur_w + w > self.cols:
            if cl == " ":
                self._finish(self.cur)  # the space is where the line breaks
                return
            self._break(w)
        if cl == " " and len(self.cur) > self.start:
            self.brk = len(self.cur)
        self.cur.append((cl, w, style))
        self.cur_w += w

    def _break(self, w: int) -> None:
        if self.brk >= 0:
            head, tail = self.cur[: self.brk], self.cur[self.brk + 1 :]
            tail_w = sum(w for _, w, _ in tail)
            if self.indent + tail_w + w <= self.cols:
                self._finish(head)
                for item in tail:
                    self.cur.append(item)
                    self.cur_w += item[1]
                return
        self._finish(self.cur)

    def result(self) -> list[Line]:
        # A line holding only the indent (after a break at the very end) shows nothing.
        lines = (
            self.lines if self.lines and len(self.cur) <= self.start else [*self.lines, self.cur]
        )
        return [_segments(cl) for cl in lines]


def _segments(items: list[tuple[str, int, str]]) -> Line:
    line: Line = []
    for cl, _, style in items:
        if line and line[-1][1] == style:
            line[-1] = (line[-1][0] + cl, style)
        else:
            line.append((cl, style))
    return line


def wrap(segments: Iterable[Segment], cols: int, indent: int = 0) -> list[Line]:
    """Word-wrap styled text to ``cols`` columns; newlines break lines.

    Continuation lines start with ``indent`` spaces. No line is wider than
    ``cols`` (at least 1); a word longer than a line is cut.
    """
    wrapper = _Wrapper(cols, indent)
    for text, style in segments:
        for i, para in enumerate(text.split("\n")):
            if i:
                wrapper.newline()
            for cl, w in clusters(para):
                wrapper.add(cl, w, style)
    return wrapper.result()
