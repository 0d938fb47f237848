"""One channel's messages as the ui's message pane shows them (sans-IO).

Messages are kept sorted by ``Msg.key``: created_ts, then the store's
order (store_seq), with what is not stored yet (pending, refused, the ui's
notices) after the stored messages of its second; msg_id, random within a
second, only breaks the remaining ties. A message that becomes stored moves
to its place. Deduplicated by msg_id.

The pane is drawn from the bottom up: only the messages on screen are
wrapped (and their lines cached per width), so drawing costs O(screen)
however long the history. Scrolling keeps an anchor, the message whose
lines end the pane and how many of its lines are hidden below, so new
messages do not move a pane scrolled up, and older ones loaded later do not
either.

Unread counting: the store_seqs of other people's messages, sorted; those
above the read mark are unread, in O(log n).
"""

from __future__ import annotations

import bisect
import functools
import time
import zlib
from dataclasses import dataclass

from felund.protocol import UNVERIFIED_MARK
from felund.ui.markdown import inline
from felund.ui.text import Line, Segment, wrap

PENDING = "pending"  # sent, no answer from the store yet
FAILED = "failed"  # the store refused it
STORED = "stored"
NOTICE = "notice"  # a line of the ui itself, never sent
_INDENT = 6  # continuation lines start under the name, past "HH:MM "
FULL_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class Look:
    """How messages are drawn: whose name is highlighted, and the full date and time or
    HH:MM. The view gives its panes one (a new one when it changes: the caches see it)."""

    me_name: str = ""
    full_time: bool = False


Key = tuple[int, int, int, str]  # created_ts, not stored yet (0/1), store_seq, msg_id


@dataclass(slots=True)
class Msg:
    """A message in a pane (or a notice of the ui)."""

    msg_id: str
    author_node_id: str
    display_name: str
    created_ts: int
    text: str
    store_seq: int = 0
    state: str = STORED
    error: str = ""
    verified: bool = True  # False: not signed by its author's key (a v1 writer): marked
    mention: bool = False  # names this node (counted in the sidebar while unread)

    @property
    def key(self) -> Key:
        """Where it sorts (see the module's docstring)."""
        # A stored message whose seq is not known yet (an answer without it)
        # keeps the unstored place until its row comes.
        if self.store_seq:
            return (self.created_ts, 0, self.store_seq, self.msg_id)
        return (self.created_ts, 1, 0, self.msg_id)


def name_style(node_id: str) -> str:
    """A person's colour: a stable hash of their node id, one of eight."""
    return f"name.{zlib.crc32(node_id.encode('utf-8', 'replace')) % 8}"


def clock(ts: int, fmt: str = "%H:%M") -> str:
    """HH:MM (or ``fmt``) of a timestamp, local time."""
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return "--:--"


@functools.lru_cache(maxsize=4096)
def day(ts: int) -> tuple[int, int]:
    """The local day of a timestamp, as (year, day of the year)."""
    try:
        t = time.localtime(ts)
    except (OverflowError, OSError, ValueError):
        return (0, 0)
    return t.tm_year, t.tm_yday


def day_line(ts: int, cols: int) -> Line:
    """The separator above a day's first message: ``— Tuesday 1 December 2026 —``."""
    try:
        t = time.localtime(ts)
        words = f"{time.strftime('%A', t)} {t.tm_mday} {time.strftime('%B %Y', t)}"
    except (OverflowError, OSError, ValueError):
        words = "?"
    text = f"\u2014 {words} \u2014"
    return [(text.center(max(cols, len(text))).rstrip()[: max(cols, 0)], "day")]


def format_msg(msg: Msg, cols: int, look: Look = Look()) -> list[Line]:
    """A message as screen lines at most ``cols`` wide."""
    name = (msg.display_name or msg.author_node_id[:8] or "?").replace("\n", " ")
    segs: list[Segment] = []
    text_style = "text"
    when = clock(msg.created_ts, FULL_TIME if look.full_time else "%H:%M") + " "
    if msg.state == NOTICE:
        segs = [(when, "time"), (msg.text, "notice")]
    else:
        if msg.state == PENDING:
            segs.append(("\u2026 ", "pending"))
            text_style = "pending"
        elif msg.state == FAILED:
            segs.append(("! ", "failed"))
            text_style = "failed"
        segs += [
            (when, "time"),
            ((UNVERIFIED_MARK if not msg.verified else "") + name, name_style(msg.author_node_id)),
            (": ", "text"),
        ]
        if msg.state == STORED:
            segs += inline(msg.text, text_style, look.me_name if msg.mention else "")
        else:
            segs.append((msg.text, text_style))
    if cols < 20:
        indent = 2 if cols >= 8 else 0
    else:
        indent = len(when) if cols >= 20 + len(when) else _INDENT
    lines = wrap(segs, cols, indent)
    if msg.state == FAILED:
        reason = "not sent: " + (msg.error or "refused")
        lines += wrap([(" " * indent, "text"), (reason, "notice")], cols, indent)
    return lines


class Pane:
    """A channel's messages, its read mark and its scroll position."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.msgs: dict[str, Msg] = {}
        self.other_seqs: list[int] = []  # store_seqs of messages of other people
        self.mention_seqs: list[int] = []  # those of them that name this node
        self.look = Look()  # set by the view (``View.pane``) before drawing
        self.read_mark = 0
        self.mark_known = False  # the durable mark was read (or never will be)
        self.anchor: Key | None = None  # None: the pane follows the end
        self.anchor_skip = 0  # lines of the anchor message hidden below the pane
        # msg_id -> (cols, the message, its look, a day separator above it?, its lines)
        self._cache: dict[str, tuple[int, Msg, Look, bool, list[Line]]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, msg: Msg, me: str) -> bool:
        """Add or update a message; whether it was new."""
        old = self.msgs.get(msg.msg_id)
        if old is not None:
            if old.state == STORED and old.store_seq:
                return False  # already have the stored form
            if msg.state == STORED and msg.store_seq:
                self._replace(old, msg, me)
            return False
        self.msgs[msg.msg_id] = msg
        bisect.insort(self.keys, msg.key)
        self._count(msg, me)
        return True

    def _replace(self, old: Msg, new: Msg, me: str) -> None:
        self._move(old.key, new.key)
        self.msgs[new.msg_id] = new
        self._cache.pop(new.msg_id, None)
        self._count(new, me)

    def _move(self, old: Key, new: Key) -> None:
        """A message's key changed: re-sort it, and keep an anchor on it there."""
        if old == new:
            return
        i = bisect.bisect_left(self.keys, old)
        if i < len(self.keys) and self.keys[i] == old:
            del self.keys[i]
        bisect.insort(self.keys, new)
        if self.anchor == old:
            self.anchor = new

    def _count(self, msg: Msg, me: str) -> None:
        if msg.store_seq and msg.author_node_id != me and msg.state == STORED:
            bisect.insort(self.other_seqs, msg.store_seq)
            if msg.mention:
                bisect.insort(self.mention_seqs, msg.store_seq)

    def settle(self, msg_id: str, seq: int | None, error: str = "") -> bool:
        """A post was answered: stored (with its seq) or refused; whether it changed."""
        msg = self.msgs.get(msg_id)
        if msg is None or msg.state not in (PENDING, FAILED):
            return False
        old = msg.key
        if error:
            msg.state, msg.error = FAILED, error
        else:
            msg.state, msg.error = STORED, ""
            msg.store_seq = seq or msg.store_seq
        self._move(old, msg.key)
        self._cache.pop(msg_id, None)
        return True

    # --- unread ---------------------------------------------------------------
    def unread(self) -> int:
        """Messages of others above the read mark (0 until the mark is known)."""
        if not self.mark_known:
            return 0
        return len(self.other_seqs) - bisect.bisect_right(self.other_seqs, self.read_mark)

    def mentions(self) -> int:
        """Unread messages that name this node."""
        if not self.mark_known:
            return 0
        return len(self.mention_seqs) - bisect.bisect_right(self.mention_seqs, self.read_mark)

    def newest_other(self) -> int:
        """The store_seq the read mark moves to when the pane is read."""
        return self.other_seqs[-1] if self.other_seqs else 0

    # --- lines and scrolling -----------------------------------------------------
    def lines_at(self, i: int, cols: int) -> list[Line]:
        """The screen lines of the i-th message, wrapped to ``cols`` (cached), below a
        day separator if it is the first of its day."""
        key = self.keys[i]
        msg = self.msgs[key[-1]]
        new_day = i == 0 or day(self.keys[i - 1][0]) != day(key[0])
        cached = self._cache.get(msg.msg_id)
        if (
            cached is not None
            and cached[0] == cols
            and cached[1] is msg
            and cached[2] is self.look
            and cached[3] == new_day
        ):
            return cached[4]
        lines = format_msg(msg, cols, self.look)
        if new_day:
            lines = [day_line(msg.created_ts, cols), *lines]
        self._cache[msg.msg_id] = (cols, msg, self.look, new_day, lines)
        return lines

    def _anchor_pos(self, cols: int) -> tuple[int, int]:
        last = len(self.keys) - 1
        if self.anchor is None:
            return last, 0
        i = min(bisect.bisect_left(self.keys, self.anchor), last)
        n = len(self.lines_at(i, cols))
        return i, min(self.anchor_skip, n - 1)

    @property
    def at_bottom(self) -> bool:
        """Whether the pane shows the newest lines."""
        return self.anchor is None

    def to_bottom(self) -> None:
        """Follow the end again."""
        self.anchor = None
        self.anchor_skip = 0

    def visible(self, height: int, cols: int) -> list[Line]:
        """The lines the pane shows, at most ``height``, oldest first."""
        if not self.keys or height <= 0:
            return []
        i, skip = self._anchor_pos(cols)
        lines = self.lines_at(i, cols)
        out = list(reversed(lines[: len(lines) - skip]))
        while len(out) < height and i > 0:
            i -= 1
            out.extend(reversed(self.lines_at(i, cols)))
        del out[height:]
        out.reverse()
        return out

    def scroll_up(self, n: int, height: int, cols: int) -> None:
        """Show ``n`` older lines, stopping where the first line tops the pane."""
        if not self.keys:
            return
        i, skip = self._anchor_pos(cols)
        skip += n
        while i > 0 and skip >= len(self.lines_at(i, cols)):
            skip -= len(self.lines_at(i, cols))
            i -= 1
        skip = min(skip, len(self.lines_at(i, cols)) - 1)
        self.anchor, self.anchor_skip = self.keys[i], skip
        self._clamp_top(height, cols)

    def _clamp_top(self, height: int, cols: int) -> None:
        i, skip = self._anchor_pos(cols)
        shown = len(self.lines_at(i, cols)) - skip
        while shown < height and i > 0:
            i -= 1
            shown += len(self.lines_at(i, cols))
        if shown < height:  # the history is shorter than the pane from here
            self.scroll_down(height - shown, cols)

    def scroll_down(self, n: int, cols: int) -> None:
        """Show ``n`` newer lines; at the end, follow it again."""
        if self.anchor is None or not self.keys:
            return
        i, skip = self._anchor_pos(cols)
        skip -= n
        while skip < 0:
            i += 1
            if i >= len(self.keys):
                self.to_bottom()
                return
            skip += len(self.lines_at(i, cols))
        if i == len(self.keys) - 1 and skip == 0:
            self.to_bottom()
            return
        self.anchor, self.anchor_skip = self.keys[i], skip
