"""What the ui shows, and the store's side of it (sans-IO).

``View`` holds the circles, channels, panes, overlays and the input line;
it takes the store's answers and the bus's events and returns the effects
(``Call``, ``Quit``) the app carries out. What keys and slash commands do
to it lives above it (``felund.ui.keys``, ``felund.ui.slash``), and
``felund.ui.model.Model`` joins the two: the contract is there.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from felund.errors import Malformed, UsageError
from felund.protocol import (
    CONTROL_CHANNEL,
    DEFAULT_CHANNEL,
    OP_BLOCKS,
    OP_CALLS,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_LEAVE,
    OP_CIRCLES,
    OP_CONTROL,
    OP_CURSOR,
    OP_INBOX,
    OP_INVITE,
    OP_MEMBER_REMOVE,
    OP_SETTINGS,
    OP_WHO,
    SVC_GOSSIP,
    SVC_STORE,
)
from felund.ui import commands as cmds
from felund.ui.input import LineEditor, prompt_cols
from felund.ui.markdown import mentions
from felund.ui.pane import NOTICE, PENDING, Look, Msg, Pane, clock
from felund.ui.state import (
    ChannelView,
    CircleView,
    Layout,
    calls_answer,
    get,
    layout,
    log_line,
    mark_key,
    row,
    strings,
)
from felund.v1 import chatmodel, events, ids


@dataclass(frozen=True, slots=True)
class Call:
    """A store RPC the app must make; its answer comes back by ``token``."""

    token: int
    op: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Quit:
    """Detach the ui; the node goes on."""


@dataclass(frozen=True, slots=True)
class Copy:
    """Put ``text`` on the terminal's clipboard (OSC 52), where the terminal allows it."""

    text: str


Effect = Call | Quit | Copy

INBOX_LIMIT: Final = 5000
DEBUG_LINES: Final = 500
MAX_ORPHANS: Final = 10_000  # rows of circles not listed yet, kept until they are
SETTINGS_FIELDS: Final = (("display_name", "display name"), ("relay_url", "relay URL"))
_NOTICE_PREFIX = "~"  # notice ids sort after hex msg ids of the same second
DETACH_CONFIRM_S: Final = 5.0  # a second Ctrl+Q this soon detaches despite pending posts
KICK_CONFIRM_S: Final = 10.0  # the same /kick again this soon after its plan removes
LEAVE_CONFIRM_S: Final = 10.0  # /circle leave again this soon leaves
INBOX_SHOWN: Final = 20  # /inbox's lines unless told
INBOX_MAX: Final = 200
# A store silent this long (three of its heartbeats, as the supervisor counts) is unreachable.
NODE_QUIET_S: Final = 3.0
RECONNECTED_SHOWN_S: Final = 10.0  # the header says "reconnected" this long
# Answers to what the ui asks by itself: their success is no action of the user's, so
# they leave an error in the status line where it is.
# (A settings or calls call with ``extra`` is the user's: a save, /call.)
_BACKGROUND: Final = frozenset({"circles", "channels", "inbox", "read_mark", "mark", "blocks"})


@dataclass(frozen=True, slots=True)
class _Req:
    """What an RPC in flight was for."""

    op: str
    kind: str
    circle_id: str = ""
    channel_id: str = ""
    extra: str = ""
    event: dict[str, Any] | None = None  # a channel's create, for "create_plan"


@dataclass(slots=True)
class _Gather:
    """/inbox in flight: one OP_INBOX per circle, shown when the last answers."""

    waiting: set[int]
    limit: int
    mentions: bool
    rows: list[tuple[str, str, Msg]]  # (circle name, channel, message)


class View:
    """What the ui shows, and the store's side of it: answers and bus events in, effects out."""

    def __init__(
        self,
        node_id: str,
        clock: Callable[[], float] = time.time,
        new_msg_id: Callable[[str, int], str] = ids.new_msg_id,
        node_quiet_s: float = NODE_QUIET_S,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.new_msg_id = new_msg_id
        self.node_quiet_s = node_quiet_s
        self.heard = clock()  # the store's last heartbeat (at attach it had just answered)
        self.disconnected_since: float | None = None  # the node unreachable since then
        self.reconnected_at: float | None = None  # back since then (shown for a while)
        self.gossip: dict[str, tuple[int, float | None]] = {}  # circle -> (peers, last message)
        self.rows, self.cols = 24, 80
        self.dirty = True
        self.mode = "loading"
        self.wizard_step = "circle"  # circle -> name -> working
        self.wizard_choice: tuple[str, str] = ("create", "")
        self.circles: dict[str, CircleView] = {}
        self.active: tuple[str, str] | None = None
        self._want_circle = ""  # a circle to show once it is listed
        self.peers = 0
        self.settings = {"display_name": "", "relay_url": ""}
        self.blocked: frozenset[str] = frozenset()  # nodes whose messages are not shown
        self.status = ""
        self.status_style = "notice"
        self.overlay: str | None = None
        self.overlay_scroll = 0
        self.invite_code = ""
        self.settings_field = 0
        self.settings_editing = False
        self.settings_draft = ""  # the input line, kept while a setting is edited
        self.debug_lines: deque[str] = deque(maxlen=DEBUG_LINES)
        self.input = LineEditor()
        self.system = Pane()  # notices while there is no channel to show them in
        self.system.mark_known = True
        self._calls: dict[int, _Req] = {}
        self._token = 0
        self._circles_inflight = False
        self._circles_again = False
        self._orphans: dict[str, list[tuple[str, Msg]]] = {}
        self._orphan_count = 0
        self.completion: tuple[int, list[str], int] | None = None  # start, candidates, index
        self.full_time = False  # /time: messages with their full date and time
        self.sidebar_shown = True  # F4 hides it (small terminals)
        self._look = Look()
        self._notice_seq = 0
        self._detach_warned: float | None = None  # when detaching last warned of pending posts
        self._kick_planned: tuple[str, str, float] | None = None  # circle, whom as typed, when
        self._leave_armed: tuple[str, float] | None = None  # circle, when /circle leave was said
        self._inbox: _Gather | None = None  # /inbox: the circles' answers so far

    # --- what the renderer reads ----------------------------------------------
    def active_circle(self) -> CircleView | None:
        """The circle shown, if any."""
        return self.circles.get(self.active[0]) if self.active else None

    def active_channel(self) -> ChannelView | None:
        """The channel shown, if any."""
        circle = self.active_circle()
        return circle.channels.get(self.active[1]) if circle and self.active else None

    def pane(self) -> Pane:
        """The messages the pane shows: the active channel's, else the ui's notices."""
        channel = self.active_channel()
        pane = channel.pane if channel else self.system
        pane.look = self.look()
        return pane

    def look(self) -> Look:
        """How messages are drawn now (the same object while nothing changes: panes cache)."""
        if (self._look.me_name, self._look.full_time) != (self.display_name, self.full_time):
            self._look = Look(self.display_name, self.full_time)
        return self._look

    def sidebar(self) -> list[tuple[CircleView, list[ChannelView]]]:
        """Circles in order, each with the channels shown under it."""
        return [(c, c.joined()) for c in self.circles.values()]

    def sidebar_rows(self, height: int) -> list[tuple[CircleView, ChannelView | None]]:
        """The sidebar's lines top down, a circle (channel None) or one of its channels,
        scrolled to keep the active channel in view."""
        rows: list[tuple[CircleView, ChannelView | None]] = []
        active_at = 0
        for circle, channels in self.sidebar():
            rows.append((circle, None))
            for view in channels:
                if self.active == (circle.circle_id, view.channel_id):
                    active_at = len(rows)
                rows.append((circle, view))
        start = max(0, active_at - height + 1)
        return rows[start : start + height]

    def layout(self, rows: int, cols: int) -> Layout:
        """The screen's parts: the sidebar as F4 left it, and out of the invite window's
        way (its code on one line)."""
        return layout(rows, cols, self.sidebar_shown and self.overlay != "invite")

    @property
    def display_name(self) -> str:
        """This node's display name, as the store last said (or as renamed here)."""
        return self.settings["display_name"]

    @property
    def prompt(self) -> str:
        """What the input line starts with."""
        if self.settings_editing:
            return SETTINGS_FIELDS[self.settings_field][1] + "> "
        if self.mode == "wizard":
            if self.wizard_step == "circle":
                return "circle name or invite code> "
            if self.wizard_step == "name":
                return "your name> "
        return "> "

    # --- RPC plumbing -----------------------------------------------------------
    def on_reply(self, token: int, answer: Any) -> list[Effect]:
        """The store answered a call."""
        req = self._calls.pop(token, None)
        if req is None:
            return []
        self.dirty = True
        mine = req.kind not in _BACKGROUND and (req.kind not in ("settings", "calls") or req.extra)
        if self.status_style == "error" and mine:
            self.status = ""  # it went through: the last error is over
        try:
            if req.kind == "inbox_all":
                return self._inbox_part(token, get(answer, "msgs", list))
            return self._REPLIES[req.kind](self, req, answer)
        except Malformed:
            return self._fail(req, "bad_reply", f"unexpected answer to {req.op}", token)

    def on_error(self, token: int, code: str, text: str) -> list[Effect]:
        """A call failed: the store's error code and text, or ``"timeout"``."""
        req = self._calls.pop(token, None)
        if req is None:
            return []
        self.dirty = True
        return self._fail(req, str(code), str(text) or str(code), token)

    def _fail(self, req: _Req, code: str, text: str, token: int = 0) -> list[Effect]:
        effects: list[Effect] = []
        circle = self.circles.get(req.circle_id)
        if req.kind == "post":
            self._settle(req, None, text)
        elif req.kind == "circles":
            effects += self._circles_done()
        elif req.kind == "channels" and circle:
            effects += self._channels_done(circle)
        elif req.kind == "inbox" and circle:
            circle.channel(req.channel_id).loading = False
        elif req.kind == "invite":
            self.invite_code = ""
        elif req.kind == "wizard":
            self.wizard_step = "circle"
        elif req.kind == "control" and circle:
            circle.switch_to = ""
        elif req.kind == "inbox_all":
            effects += self._inbox_part(token, None)
        if req.kind not in ("mark", "read_mark", "post"):
            self.notice(text, error=True)
        return effects

    # --- start and store events ---------------------------------------------------
    def start(self) -> list[Effect]:
        """The first calls: circles and settings."""
        self._circles_inflight = True
        return [
            self.call(OP_CIRCLES, {}, "circles"),
            self.call(OP_SETTINGS, {}, "settings"),
            self.call(OP_BLOCKS, {}, "blocks"),
        ]

    def on_sys_settings_changed(self, body: Any = None) -> list[Effect]:
        """The node's settings changed (a rename, the relay, a block): ask for them again."""
        return [self.call(OP_SETTINGS, {}, "settings"), self.call(OP_BLOCKS, {}, "blocks")]

    def on_chat_circle_changed(self, body: Any = None) -> list[Effect]:
        """Circles were joined, created, left or renamed: list them again."""
        if self._circles_inflight:
            self._circles_again = True
            return []
        self._circles_inflight = True
        return [self.call(OP_CIRCLES, {}, "circles")]

    def _circles_done(self) -> list[Effect]:
        self._circles_inflight = False
        if self._circles_again:
            self._circles_again = False
            return self.on_chat_circle_changed()
        return []

    def on_chat_msg_stored(self, rows: Iterable[Any]) -> list[Effect]:
        """Messages the store took: shown, counted as unread, or kept for later."""
        self.dirty = True
        effects: list[Effect] = []
        active_grew = False
        for raw in rows if isinstance(rows, list | tuple) else ():
            parsed = row(raw)
            if parsed is None:
                continue
            circle_id, channel_id, msg = parsed
            circle = self.circles.get(circle_id)
            if circle is None:
                self._keep_orphan(circle_id, channel_id, msg)
                continue
            effects += self._add_row(circle, channel_id, msg)
            active_grew |= self.active == (circle_id, channel_id)
        if active_grew:
            effects += self.read_active()
        return effects

    def _add_row(self, circle: CircleView, channel_id: str, msg: Msg) -> list[Effect]:
        if channel_id == CONTROL_CHANNEL:
            self._see_control(circle, msg)
            return self._refresh(circle)
        if msg.author_node_id in self.blocked:
            return []  # blocked here (felund block): never on screen, nor counted unread
        circle.see_name(msg.author_node_id, msg.created_ts, msg.display_name)
        msg.mention = msg.author_node_id != self.node_id and mentions(msg.text, self.display_name)
        circle.channel(channel_id).pane.add(msg, self.node_id)
        return []

    def _see_control(self, circle: CircleView, msg: Msg) -> None:
        """A control row: names learned, and joins, leaves and renames said in the pane."""
        try:
            event = json.loads(msg.text)
        except (ValueError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        who = self.person(circle, msg.author_node_id, msg.display_name)
        op, channel, name = event.get("op"), event.get("channel_id"), event.get("display_name")
        # A peer's event: only names as the store takes them are said.
        if event.get("t") == "CIRCLE_NAME_EVT" and isinstance(event.get("name"), str):
            said = event["name"][: chatmodel.MAX_NAME]
            self._event_notice(circle, DEFAULT_CHANNEL, msg, f"{who} named the circle {said}")
        elif op in ("join", "leave") and chatmodel.is_channel_name(channel):
            did = "joined" if op == "join" else "left"
            self._event_notice(circle, channel, msg, f"{who} {did} #{channel}")
        elif op == "rename" and isinstance(name, str):
            circle.see_name(msg.author_node_id, msg.created_ts, name)
            if msg.author_node_id == self.node_id:
                self.settings["display_name"] = name
            if name != who:
                said = name[: chatmodel.MAX_NAME]
                self._event_notice(circle, DEFAULT_CHANNEL, msg, f"{who} is now known as {said}")

    def person(self, circle: CircleView, node_id: str, fallback: str = "") -> str:
        """A person's latest name in a circle."""
        return circle.names.get(node_id, (0, ""))[1] or fallback or node_id[:8] or "?"

    def _event_notice(self, circle: CircleView, channel_id: str, msg: Msg, text: str) -> None:
        # Its id follows the event's: the same row again (catch-up, reload) adds nothing.
        note = Msg(_NOTICE_PREFIX + msg.msg_id, msg.author_node_id, "", msg.created_ts, text)
        note.state = NOTICE
        circle.channel(channel_id).pane.add(note, self.node_id)

    def _keep_orphan(self, circle_id: str, channel_id: str, msg: Msg) -> None:
        if self._orphan_count >= MAX_ORPHANS:
            return  # the circle's inbox, loaded once it is listed, holds them too
        self._orphans.setdefault(circle_id, []).append((channel_id, msg))
        self._orphan_count += 1

    def on_sys_svc_heartbeat(self, body: Any) -> list[Effect]:
        """A service's heartbeat: the store's says the node answers; gossip's carries the
        peer count, and per circle the peers and when a message last crossed."""
        if not isinstance(body, dict):
            return []
        if body.get("service") == SVC_STORE:
            return self._heard()
        if body.get("service") != SVC_GOSSIP:
            return []
        # ``sessions`` is what a gossip without the ``peers`` count reports.
        n = body.get("peers", body.get("sessions"))
        if type(n) is int and n >= 0 and n != self.peers:
            self.peers = n
            self.dirty = True
        report = body.get("connectivity")
        if isinstance(report, dict):
            gossip = {}
            for circle_id in self.circles:  # only ours: the report is foreign data
                entry = report.get(circle_id)
                if not isinstance(entry, dict):
                    continue
                peers, ts = entry.get("peers"), entry.get("last_message_ts")
                if type(peers) is int and peers >= 0:
                    # Unix seconds: neither a NaN, an infinity nor a date past year 5000.
                    last = float(ts) if isinstance(ts, int | float) and 0 < ts < 1e11 else None
                    gossip[circle_id] = (peers, last)
            if gossip != self.gossip:
                self.gossip = gossip
                self.dirty = True
        return []

    def _heard(self) -> list[Effect]:
        """The store heartbeated: the node answers (again)."""
        self.heard = self.clock()
        if self.disconnected_since is None:
            return []
        self.disconnected_since = None
        self.reconnected_at = self.heard
        # Replaces the disconnection's error, and any timeout said meanwhile.
        self.notice(f"reconnected to the node at {clock(int(self.heard))}")
        return self.on_chat_circle_changed()  # what changed meanwhile

    def on_tick(self) -> list[Effect]:
        """Time passed: a store silent for ``node_quiet_s`` means the node is unreachable."""
        if (
            self.reconnected_at is not None
            and self.clock() - self.reconnected_at > RECONNECTED_SHOWN_S
        ):
            self.reconnected_at = None
            self.dirty = True
        if self.disconnected_since is None and self.clock() - self.heard > self.node_quiet_s:
            self.disconnected_since, self.reconnected_at = self.heard, None
            self.peers, self.gossip = 0, {}
            # The header says since when; this line, short enough for 80 columns, what
            # becomes of what is typed meanwhile.
            self.notice("what you send waits here and goes out once the node is back", error=True)
        return []

    def on_sys_log(self, record: Any) -> list[Effect]:
        """A log record of the node, for the /debug pane."""
        if isinstance(record, dict):
            self.debug_lines.append(log_line(record))
            self.dirty |= self.overlay == "debug"
        return []

    def on_resize(self, rows: int, cols: int) -> list[Effect]:
        """The terminal's new size."""
        self.rows, self.cols = max(1, int(rows)), max(1, int(cols))
        self.dirty = True
        self._scroll_input()
        return []

    # --- answers ------------------------------------------------------------------
    def _on_circles(self, req: _Req, answer: Any) -> list[Effect]:
        items = get(answer, "circles", list)
        effects: list[Effect] = []
        listed: dict[str, CircleView] = {}
        for item in items:
            circle_id, name = get(item, "circle_id", str), get(item, "name", str)
            circle = self.circles.get(circle_id)
            if circle is None:
                circle = CircleView(circle_id, name)
                effects += self._refresh(circle)
            circle.name = name
            listed[circle_id] = circle
        self.circles = listed
        for circle_id in [c for c in self._orphans if c in listed]:
            for channel_id, msg in self._orphans.pop(circle_id):
                self._orphan_count -= 1
                effects += self._add_row(listed[circle_id], channel_id, msg)
        effects += self._place_active()
        return effects + self._circles_done()

    def _place_active(self) -> list[Effect]:
        if self.circles and self.mode != "chat" and self.wizard_step != "working":
            self.mode = "chat"
        if self.mode == "loading" and not self.circles:
            self.mode = "wizard"
        if self._want_circle in self.circles:
            circle_id, self._want_circle = self._want_circle, ""
            return self.switch(circle_id, DEFAULT_CHANNEL)
        if self.active_circle() is None:
            self.active = None
            if self.circles:
                return self.switch(next(iter(self.circles)), DEFAULT_CHANNEL)
        return []

    def _on_settings(self, req: _Req, answer: Any) -> list[Effect]:
        for key in self.settings:
            if isinstance(answer, dict) and isinstance(answer.get(key), str):
                self.settings[key] = answer[key]
        if req.extra:
            self.notice(req.extra)
        return []

    def _on_blocks(self, req: _Req, answer: Any) -> list[Effect]:
        blocked = frozenset(get(b, "node_id", str) for b in get(answer, "blocked", list))
        if blocked == self.blocked:
            return []
        # Every channel loaded again: a block hides what is shown, an unblock shows
        # what was left out.
        self.blocked = blocked
        effects: list[Effect] = []
        for circle in self.circles.values():
            for view in circle.channels.values():
                view.pane, view.loaded = Pane(), False
                if view.listed and view.member and not view.loading:
                    effects += self._load(circle, view)
        return effects

    def _refresh(self, circle: CircleView) -> list[Effect]:
        """Ask for a circle's channels again (one call in flight per circle)."""
        if circle.refreshing:
            circle.refresh_again = True
            return []
        circle.refreshing = True
        return [
            self.call(
                OP_CHANNELS, {"circle_id": circle.circle_id}, "channels", circle_id=circle.circle_id
            )
        ]

    def _channels_done(self, circle: CircleView) -> list[Effect]:
        circle.refreshing = False
        if circle.refresh_again:
            circle.refresh_again = False
            return self._refresh(circle)
        return []

    def _on_channels(self, req: _Req, answer: Any) -> list[Effect]:
        circle = self.circles.get(req.circle_id)
        if circle is None:
            return []
        effects = self._channels_done(circle)
        items = get(answer, "channels", list)
        name = answer.get("name")
        if isinstance(name, str) and name:
            circle.name = name
        listed = set()
        for item in items:
            view = circle.channel(get(item, "channel_id", str))
            view.access_mode = get(item, "access_mode", str)
            view.private = item.get("private") is True
            view.members = strings(item, "members")
            view.requests = strings(item, "requests")
            view.member = get(item, "member", bool)
            view.listed = True
            listed.add(view.channel_id)
        for view in circle.channels.values():
            if view.channel_id not in listed and view.channel_id != DEFAULT_CHANNEL:
                view.listed = view.member = False
            if view.listed and view.member and not (view.loaded or view.loading):
                effects += self._load(circle, view)
        effects.append(
            self.call(
                OP_CALLS, {"circle_id": circle.circle_id}, "calls", circle_id=circle.circle_id
            )
        )
        return effects + self._after_channels(circle)

    def _on_calls(self, req: _Req, answer: Any) -> list[Effect]:
        """The calls of a circle: kept for the header; for /call (extra "show") said."""
        checked = calls_answer(answer)
        circle = self.circles.get(req.circle_id)
        if circle is not None:
            circle.calls = checked
        if req.extra == "show":
            self.notice("\n".join(events.call_lines(checked, req.channel_id)))
        return []

    def _after_channels(self, circle: CircleView) -> list[Effect]:
        wanted = circle.channels.get(circle.switch_to)
        if wanted and wanted.member and wanted.listed:
            circle.switch_to = ""
            return self.switch(circle.circle_id, wanted.channel_id)
        active = self.active_channel()
        if self.active and self.active[0] == circle.circle_id and not (active and active.member):
            return self.switch(circle.circle_id, DEFAULT_CHANNEL)
        return []

    def _load(self, circle: CircleView, view: ChannelView) -> list[Effect]:
        view.loading = True
        ctx = {"circle_id": circle.circle_id, "channel_id": view.channel_id}
        return [
            self.call(OP_INBOX, {**ctx, "limit": INBOX_LIMIT}, "inbox", **ctx),
            self.call(OP_CURSOR, {"key": mark_key(**ctx)}, "read_mark", **ctx),
        ]

    def _on_inbox(self, req: _Req, answer: Any) -> list[Effect]:
        circle = self.circles.get(req.circle_id)
        if circle is None:
            return []
        view = circle.channel(req.channel_id)
        view.loading, view.loaded = False, True
        for raw in get(answer, "msgs", list):
            parsed = row(raw)
            if parsed is not None and parsed[:2] == (req.circle_id, req.channel_id):
                self._add_row(circle, req.channel_id, parsed[2])
        return self.read_active() if self.active == (req.circle_id, req.channel_id) else []

    def _on_read_mark(self, req: _Req, answer: Any) -> list[Effect]:
        circle = self.circles.get(req.circle_id)
        if circle is None:
            return []
        pane = circle.channel(req.channel_id).pane
        pane.read_mark = max(pane.read_mark, get(answer, "value", int))
        pane.mark_known = True
        return self.read_active() if self.active == (req.circle_id, req.channel_id) else []

    def read_active(self) -> list[Effect]:
        """Move the active channel's read mark to its newest message, if shown."""
        channel = self.active_channel()
        if channel is None or self.active is None or not channel.pane.at_bottom:
            return []
        pane = channel.pane
        newest = pane.newest_other()
        if not pane.mark_known or newest <= pane.read_mark:
            return []
        pane.read_mark = newest
        key = mark_key(*self.active)
        return [self.call(OP_CURSOR, {"key": key, "value": newest}, "mark")]

    def _on_post(self, req: _Req, answer: Any) -> list[Effect]:
        seqs = get(answer, "seqs", list)
        seq = seqs[0] if seqs and type(seqs[0]) is int else None
        self._settle(req, seq, "")
        return []

    def _settle(self, req: _Req, seq: int | None, error: str) -> None:
        circle = self.circles.get(req.circle_id)
        if circle is not None:
            circle.channel(req.channel_id).pane.settle(req.extra, seq, error)

    def _on_control(self, req: _Req, answer: Any) -> list[Effect]:
        circle = self.circles.get(req.circle_id)
        if req.extra:
            self.notice(req.extra)
        return self._refresh(circle) if circle else []

    def _on_invite(self, req: _Req, answer: Any) -> list[Effect]:
        if self.active and self.active[0] == req.circle_id:
            self.invite_code = get(answer, "code", str)
            if self.overlay == "invite":
                return [Copy(self.invite_code)]
        return []

    def _on_left(self, req: _Req, answer: Any) -> list[Effect]:
        circle = self.circles.get(req.circle_id)
        self.notice(f"left {circle.name if circle else 'the circle'}; its history is kept")
        return self.on_chat_circle_changed()

    def _on_joined(self, req: _Req, answer: Any) -> list[Effect]:
        """A circle was created or joined (by a command or by the wizard)."""
        circle_id = get(answer, "circle_id", str)
        self._want_circle = circle_id
        effects: list[Effect] = []
        if req.kind == "wizard":
            self.mode, self.wizard_step = "chat", "circle"
            event = events.rename_event(circle_id, self.node_id, req.extra)
            effects.append(self.control(circle_id, event))
            self.settings["display_name"] = req.extra
        code = answer.get("code")
        if isinstance(code, str):
            self.invite_code = code
        what = "created" if req.op == OP_CIRCLE_CREATE else "joined"
        self.notice(
            f"{what} circle {answer.get('name') or circle_id[:8]} \u2014 F2 shows its invite"
        )
        return effects + self.on_chat_circle_changed()

    def _on_who(self, req: _Req, answer: Any) -> list[Effect]:
        lines = []
        unverified = False
        for person in get(answer, "people", list):
            node = get(person, "node_id", str)
            seen = person.get("last_seen")
            when = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(seen)) if type(seen) is int else "?"
            )
            role = "removed" if person.get("removed") else person.get("role")
            role = f"  {role}" if role in ("owner", "moderator", "removed") else ""
            mark = "" if person.get("verified", True) else "?"
            unverified = unverified or bool(mark)
            name = person.get("display_name") or "-"
            lines.append(f"  {mark}{name}  {node[:8]}{role}  last seen {when}")
        if unverified:
            lines.append("  (? = no key seen: what they write is unverified)")
        where = f"#{req.channel_id}" if req.channel_id else "the circle"
        self.notice("\n".join([f"in {where}:", *lines]) if lines else f"nobody in {where} yet")
        return []

    def _on_kick_plan(self, req: _Req, answer: Any) -> list[Effect]:
        """What /kick will do: said, and armed for the same /kick within KICK_CONFIRM_S."""
        get(answer, "node_id", str)
        self._kick_planned = (req.circle_id, req.extra, self.clock())
        lines = events.removal_words(answer)
        again = f"/kick {req.extra} again within {KICK_CONFIRM_S:.0f} s to remove"
        self.notice("\n".join([*lines, again]), error=True)
        return []

    def _on_create_plan(self, req: _Req, answer: Any) -> list[Effect]:
        """Who is in the circle: a channel everyone can read is made private; else it is
        not made, and those who could not read it are named."""
        event = req.event
        assert event is not None  # create_channel sends it with every "create_plan"
        people = get(answer, "people", list)
        for p in people:  # what can_read_private and person_words read
            get(p, "can_follow", bool), get(p, "node_id", str), get(p, "display_name", str)
        stuck = [p for p in people if not events.can_read_private(p)]
        if not stuck:
            return [self._create(req.circle_id, events.made_private(event), req.extra)]
        self.notice(
            f"not created: {events.unreadable_words(event.get('channel_id', ''), stuck)}\n"
            "repeat it with private (private anyway) or shared (readable by every member of "
            "the circle, as a channel of the other implementation)",
            error=True,
        )
        return []

    def _on_kick(self, req: _Req, answer: Any) -> list[Effect]:
        self.notice(
            f"removed {events.person_words(answer)}: the circle is at epoch "
            f"{get(answer, 'epoch', int)} \u2014 F2 shows its new invite code"
        )
        return []

    def _ignore(self, req: _Req, answer: Any) -> list[Effect]:
        return []

    _REPLIES: Final[dict[str, Callable[[View, _Req, Any], list[Effect]]]] = {
        "circles": _on_circles,
        "settings": _on_settings,
        "channels": _on_channels,
        "inbox": _on_inbox,
        "read_mark": _on_read_mark,
        "mark": _ignore,
        "post": _on_post,
        "control": _on_control,
        "invite": _on_invite,
        "join": _on_joined,
        "wizard": _on_joined,
        "who": _on_who,
        "calls": _on_calls,
        "blocks": _on_blocks,
        "kick_plan": _on_kick_plan,
        "create_plan": _on_create_plan,
        "kick": _on_kick,
        "left": _on_left,
    }

    # --- for felund.ui.keys and felund.ui.slash -----------------------------------
    def call(self, op: str, body: dict[str, Any], kind: str, **ctx: Any) -> Call:
        """A store call; ``kind`` (a key of the answer handlers) says what its answer is for."""
        self._token += 1
        self._calls[self._token] = _Req(op, kind, **ctx)
        return Call(self._token, op, body)

    def detach(self) -> list[Effect]:
        """Leave the ui; with posts not yet acknowledged, only once asked twice."""
        pending = self.pending_posts()
        now = self.clock()
        warned = self._detach_warned
        if pending and (warned is None or not 0 <= now - warned <= DETACH_CONFIRM_S):
            self._detach_warned = now
            head = f"{pending} message(s) not yet acknowledged by the node"
            again = " \u2014 Ctrl+Q again to detach anyway"
            why = " (they are dropped from this screen; the node may still store them)"
            # The longest that fits the status line.
            said = [head + again + why, head + again, f"{pending} unsent" + again]
            self.notice(next((t for t in said if len(t) <= self.cols), said[-1]), error=True)
            return []
        return [Quit()]

    def inbox(self, limit: int, mentions_only: bool) -> list[Effect]:
        """/inbox: the newest ``limit`` messages of every circle (or those naming this node)."""
        if not self.circles:
            raise UsageError("no circles yet: create one, or /join <code>")
        effects = [
            self.call(OP_INBOX, {"circle_id": c, "limit": INBOX_MAX}, "inbox_all", circle_id=c)
            for c in self.circles
        ]
        self._inbox = _Gather({e.token for e in effects}, limit, mentions_only, [])
        return list(effects)

    def _inbox_part(self, token: int, msgs: list[Any] | None) -> list[Effect]:
        gather = self._inbox
        if gather is None or token not in gather.waiting:
            return []
        gather.waiting.discard(token)
        for raw in msgs or ():
            parsed = row(raw)
            if parsed is None or raw.get("blocked") or parsed[2].author_node_id in self.blocked:
                continue
            circle_id, channel_id, msg = parsed
            circle = self.circles.get(circle_id)
            gather.rows.append((circle.name if circle else circle_id[:8], channel_id, msg))
        if gather.waiting:
            return []
        self._inbox = None
        rows = [
            (name, channel_id, m)
            for name, channel_id, m in gather.rows
            if not gather.mentions
            or (m.author_node_id != self.node_id and mentions(m.text, self.display_name))
        ]
        rows.sort(key=lambda r: r[2].key)
        rows = rows[-gather.limit :]
        what = "messages naming you" if gather.mentions else "messages"
        lines = [f"the newest {what} of all your circles:" if rows else f"no {what} yet"]
        for name, channel_id, m in rows:
            when = clock(m.created_ts, "%d %b %H:%M")
            who = m.display_name or m.author_node_id[:8]
            lines.append(f"{when} {name} #{channel_id} {who}: {' '.join(m.text.split())}")
        self.notice("\n".join(lines))
        return []

    def leave(self, circle_id: str) -> list[Effect]:
        """/circle leave: said first; the same again within LEAVE_CONFIRM_S leaves."""
        armed, self._leave_armed = self._leave_armed, None
        now = self.clock()
        if armed is not None and armed[0] == circle_id and 0 <= now - armed[1] <= LEAVE_CONFIRM_S:
            body = {"circle_id": circle_id, "delete_history": False}
            return [self.call(OP_CIRCLE_LEAVE, body, "left", circle_id=circle_id)]
        self._leave_armed = (circle_id, now)
        name = self.circles[circle_id].name if circle_id in self.circles else circle_id[:8]
        self.notice(
            f"/circle leave again within {LEAVE_CONFIRM_S:.0f} s to leave {name}", error=True
        )
        return []

    def kick(self, circle_id: str, who: str) -> list[Effect]:
        """/kick: first ask the store what the removal would do (said, not done); the same
        /kick again within KICK_CONFIRM_S of that answer does it."""
        planned, self._kick_planned = self._kick_planned, None
        body: dict[str, Any] = {"circle_id": circle_id, "node": who}
        again = planned is not None and planned[:2] == (circle_id, who)
        if again and planned is not None and 0 <= self.clock() - planned[2] <= KICK_CONFIRM_S:
            return [self.call(OP_MEMBER_REMOVE, body, "kick", circle_id=circle_id)]
        body["dry_run"] = True
        return [self.call(OP_MEMBER_REMOVE, body, "kick_plan", circle_id=circle_id, extra=who)]

    def create_channel(
        self, circle_id: str, event: dict[str, Any], key: str, privacy: str
    ) -> list[Effect]:
        """/channel create: a key or invite channel is private unless ``privacy`` is
        "shared"; not said, the store is first asked who is in the circle (private only
        if every member can read it: ``_on_create_plan``)."""
        if event["access_mode"] == "public" or privacy:
            private = privacy == "private"
            return [self._create(circle_id, events.made_private(event) if private else event, key)]
        body = {"circle_id": circle_id}
        return [self.call(OP_WHO, body, "create_plan", circle_id=circle_id, extra=key, event=event)]

    def _create(self, circle_id: str, event: dict[str, Any], key: str) -> Call:
        name = event["channel_id"]
        circle = self.circles.get(circle_id)
        if circle is not None:
            circle.switch_to = name
        done = f"created #{name}" + (" (private)" if event.get("private") else "")
        return self.control(circle_id, event, done, key)

    def pending_posts(self) -> int:
        """Messages sent from this screen that the store has not acknowledged yet."""
        count = 0
        for req in self._calls.values():
            if req.kind != "post":
                continue
            circle = self.circles.get(req.circle_id)
            channel = circle.channels.get(req.channel_id) if circle else None
            msg = channel.pane.msgs.get(req.extra) if channel else None
            # Its stored row may have come before the answer: then it is stored.
            # One no longer shown (its circle left meanwhile) still awaits the store.
            count += msg is None or msg.state == PENDING
        return count

    def notice(self, text: str, error: bool = False) -> None:
        """Show a line in the status area; several go into the pane instead (a heading
        alone, left in the status line, would say nothing)."""
        self.status = "" if "\n" in text else text
        self.status_style = "error" if error else "notice"
        self.dirty = True
        if "\n" in text:
            self._notice_seq += 1
            msg_id = f"{_NOTICE_PREFIX}{self._notice_seq:012d}"
            note = Msg(msg_id, "", "", int(self.clock()), text, state=NOTICE)
            self.pane().add(note, self.node_id)

    def switch(self, circle_id: str, channel_id: str) -> list[Effect]:
        """Show a channel, from its newest message; it is read."""
        circle = self.circles.get(circle_id)
        if circle is None:
            return []
        if not self.active or self.active[0] != circle_id:
            self.invite_code = ""
        self.active = (circle_id, channel_id)
        circle.channel(channel_id).pane.to_bottom()
        self.dirty = True
        return self.read_active()

    def open(self, overlay: str) -> list[Effect]:
        """Open a window over the pane (again: close it)."""
        if self.overlay == overlay:
            return self.close()
        self.close()
        self.overlay, self.overlay_scroll = overlay, 0
        if overlay == "settings":
            self.settings_field = 0
            return [self.call(OP_SETTINGS, {}, "settings")]
        if overlay == "invite":
            circle = self.active_circle()
            if circle is None:
                self.overlay = None
                self.notice("no circle yet: create one, or /join <code>", error=True)
                return []
            self.invite_code = ""
            body = {"circle_id": circle.circle_id}
            return [self.call(OP_INVITE, body, "invite", circle_id=circle.circle_id)]
        return []

    def close(self) -> list[Effect]:
        """Close the window over the pane; back to the input."""
        if self.settings_editing:
            self.end_edit()
        self.overlay = None
        return []

    def end_edit(self) -> None:
        """Leave a settings field; the input line gets back what it held."""
        self.settings_editing = False
        self.input.set(self.settings_draft)

    def control(
        self, circle_id: str, event: dict[str, Any], done: str = "", channel_key: str = ""
    ) -> Call:
        """Write a control event of this node; ``done`` is the notice once written;
        ``channel_key``: the key of the key channel it creates or joins (the store keeps
        it to read and write the channel if it is private)."""
        ts = int(self.clock())
        body = {
            "circle_id": circle_id,
            "msg_id": self.new_msg_id(self.node_id, ts),
            "created_ts": ts,
            "event": event,
        }
        if channel_key:
            body["channel_key"] = channel_key
        return self.call(OP_CONTROL, body, "control", circle_id=circle_id, extra=done)

    def rename(self, name: str) -> list[Effect]:
        """Change this node's display name in every circle, as ``felund rename`` does."""
        name = cmds.check_display_name(name)
        if not self.circles:
            raise UsageError("join or create a circle first: a name is shown to circles")
        self.settings["display_name"] = name
        self.notice(f"you are now {name!r} in {len(self.circles)} circle(s)")
        return [self.control(c, events.rename_event(c, self.node_id, name)) for c in self.circles]

    def _scroll_input(self) -> None:
        self.input.scroll_to(self.cols - prompt_cols(self.prompt, self.cols))
