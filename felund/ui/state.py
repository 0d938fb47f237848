"""The ui's picture of circles and channels, and the store's rows and answers read strictly.

Everything the store sends is foreign data to the ui: a row or an answer
not shaped as expected raises ``Malformed`` (never a KeyError deep in a
handler), which the model turns into a notice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from felund.errors import Malformed
from felund.protocol import DEFAULT_CHANNEL
from felund.ui.pane import STORED, Msg, Pane

SIDEBAR_COLS: Final = 20
SIDEBAR_NARROW_COLS: Final = 14  # below WIDE_COLS, the sidebar shrinks to this
WIDE_COLS: Final = 80
SIDEBAR_MIN_COLS: Final = 50  # narrower terminals hide the sidebar


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each part of the screen goes (row numbers; -1: not shown)."""

    header: int
    body_top: int
    body_height: int
    status: int
    input: int
    sidebar: int  # its width, separator included; 0 when hidden
    pane_cols: int


def layout(rows: int, cols: int, sidebar_shown: bool = True) -> Layout:
    """The screen's parts for a terminal of ``rows`` x ``cols``: the input line first; the
    sidebar narrower below WIDE_COLS, hidden below SIDEBAR_MIN_COLS or when not shown."""
    rows, cols = max(1, rows), max(1, cols)
    header = 0 if rows >= 2 else -1
    status = rows - 2 if rows >= 3 else -1
    body_top = 1
    body_height = max(0, rows - 3)
    sidebar = 0
    if sidebar_shown and cols >= SIDEBAR_MIN_COLS:
        sidebar = (SIDEBAR_COLS if cols >= WIDE_COLS else SIDEBAR_NARROW_COLS) + 1
    return Layout(header, body_top, body_height, status, rows - 1, sidebar, cols - sidebar)


def get(data: Any, key: str, typ: type) -> Any:
    """``data[key]``, which must be of exactly ``typ``; Malformed if not."""
    if not isinstance(data, dict):
        raise Malformed(key)
    value = data.get(key)
    if type(value) is not typ:
        raise Malformed(key)
    return value


def strings(data: Any, key: str) -> list[str]:
    """``data[key]``, which must be a list of strings."""
    items = get(data, key, list)
    if not all(isinstance(s, str) for s in items):
        raise Malformed(key)
    return list(items)


@dataclass(slots=True)
class ChannelView:
    """A channel as the ui knows it: OP_CHANNELS's facts and its messages."""

    channel_id: str
    pane: Pane = field(default_factory=Pane)
    listed: bool = False  # OP_CHANNELS named it
    member: bool = False
    access_mode: str = "public"
    private: bool = False  # sealed under a channel key: its members alone read it
    members: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    loading: bool = False
    loaded: bool = False


@dataclass(slots=True)
class CircleView:
    """A circle of this node, its channels and the names of its people."""

    circle_id: str
    name: str
    channels: dict[str, ChannelView] = field(default_factory=dict)
    names: dict[str, tuple[int, str]] = field(default_factory=dict)  # node -> (ts, name)
    refreshing: bool = False  # an OP_CHANNELS is in flight
    refresh_again: bool = False
    switch_to: str = ""  # a channel to show once this node is its member
    calls: dict[str, Any] | None = None  # the last store.calls answer (calls_answer checked it)

    def __post_init__(self) -> None:
        self.channels.setdefault(
            DEFAULT_CHANNEL, ChannelView(DEFAULT_CHANNEL, listed=True, member=True)
        )

    def channel(self, channel_id: str) -> ChannelView:
        """The channel, made (unlisted) if it is new."""
        view = self.channels.get(channel_id)
        if view is None:
            view = self.channels[channel_id] = ChannelView(channel_id)
        return view

    def joined(self) -> list[ChannelView]:
        """The channels shown in the sidebar: those this node is a member of."""
        ids_ = sidebar_order([c for c, v in self.channels.items() if v.listed and v.member])
        return [self.channels[c] for c in ids_]

    def see_name(self, node_id: str, ts: int, name: str) -> None:
        """Remember a person's name if it is the latest seen."""
        if name and self.names.get(node_id, (-1, ""))[0] <= ts:
            self.names[node_id] = (ts, name)


def sidebar_order(channels: list[str]) -> list[str]:
    """Channels as the sidebar lists them: #general first, then by name."""
    return sorted(channels, key=lambda c: (c != DEFAULT_CHANNEL, c))


def mark_key(circle_id: str, channel_id: str) -> str:
    """The durable cursor holding a channel's read mark."""
    return f"ui.read.{circle_id}.{channel_id}"


def row(raw: Any) -> tuple[str, str, Msg] | None:
    """A stored row as (circle_id, channel_id, Msg); None if it is not shaped as one, or
    sealed (kept for an epoch's secret not held yet: shown once it opens)."""
    if isinstance(raw, dict) and raw.get("sealed"):
        return None
    try:
        msg = Msg(
            msg_id=get(raw, "msg_id", str),
            author_node_id=get(raw, "author_node_id", str),
            display_name=get(raw, "display_name", str),
            created_ts=get(raw, "created_ts", int),
            text=get(raw, "text", str),
            store_seq=get(raw, "store_seq", int),
            state=STORED,
            verified=raw.get("verified") is not False,
        )
        return get(raw, "circle_id", str), get(raw, "channel_id", str), msg
    except Malformed:
        return None


_LOG_WHY: Final = ("reason", "error")  # why it happened: right after what
_LOG_HEAD: Final = ("ts", "event", *_LOG_WHY, "service", "level", "timestamp")
_LOG_SAME: Final = ("node_id", "pid")  # the same on every line of one node: not shown


def log_line(record: dict[str, Any]) -> str:
    """``HH:MM:SS event reason error [service level] key=value...`` of a log record:
    what happened and why first."""
    ts = record.get("ts")
    try:
        when = time.strftime("%H:%M:%S", time.localtime(float(ts)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        when = "--:--:--"
    head = [str(record.get("event", "-"))[:60]]
    head += [str(record[k])[:80] for k in _LOG_WHY if record.get(k) is not None]
    head += [f"[{str(record.get('service', '-'))[:20]} {str(record.get('level', '-'))[:10]}]"]
    rest = [
        f"{k}={str(v)[:200]}"
        for k, v in record.items()
        if k not in _LOG_HEAD and k not in _LOG_SAME
    ]
    return " ".join([when, *head, *rest])


def calls_answer(answer: Any) -> dict[str, Any]:
    """A ``store.calls`` answer, checked for what the screen reads (Malformed if not)."""
    for call in get(answer, "calls", list):
        get(call, "channel_id", str)
        get(call, "host", str)
        strings(call, "participants")
        strings(call, "viewers")
    names = get(answer, "names", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise Malformed("names")
    get(answer, "relay_url", str)
    return dict(answer)
