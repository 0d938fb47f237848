"""The calls of a circle, derived from its CALL_EVT control events (sans-IO).

Addendum §1: a call is a session made by a ``create`` on ``__control`` and
changed by ``join``, ``view``, ``leave``, ``revoke`` and ``end``. The v1
clients apply events once, in arrival order, and forget them on restart
(§1.3); here the calls are a pure function of the set of events and of the
reader's clock, as the channels are (``felund.v1.chatmodel``), and the
browser's port (``felund/web/lib/calls.js``) derives the same.

Our rules, where v1 leaves it open or its two clients disagree (§1.9):

- **Due, order, ties.** Events dated more than ``MAX_SKEW_S`` ahead are held,
  as in the channel fold. A session's events apply in (created_ts, hash)
  order, its ``create`` first: an event that arrives (or is dated) before its
  create waits for it instead of being lost (§0.2 "no buffering"). Of several
  creates of one session_id, the first in that order makes it.
- **Only one's own actions.** The node a ``create``, ``join``, ``view``,
  ``leave`` or ``end`` speaks for is the message's author: ``host_node_id``,
  ``node_id`` and ``actor_node_id``, where present, must name it. Every event
  the web writes passes (it names its own id in each); the host of a call is
  the author of its create.
- **Host authority.** ``end`` and ``revoke`` count only from the call's host.
  This is stricter than both v1 checks (§1.3 table: an ``end`` naming the host
  in ``host_node_id`` but sent by another node is ignored, as Python does, not
  taken, as the web does; an empty ``actor_node_id`` passes nothing). When the
  host is one of ours (a derived-form id that signs, ``chatmodel.signers``),
  only its signed events count: an unsigned event in its name is a forgery and
  changes nothing. For the other client's (unsigned) hosts the author is
  self-asserted, as in v1.
- **Bounds.** At most ``MAX_PARTICIPANTS`` participants and ``MAX_VIEWERS``
  viewers per call (a join or view beyond them is refused, in order),
  ``MAX_SESSIONS`` sessions per circle (first creates in order), event texts
  of at most ``MAX_EVENT_TEXT`` characters, session ids of at most
  ``MAX_SESSION_ID`` characters.
- **Blocked nodes.** The events of a node blocked here (``felund block``: local,
  never sent) are refused ("blocked"): its calls are not shown, and it is not
  shown in others' calls. The events stay stored and passed on, as its
  messages do (issue 15): an unblock shows its calls again.
- **Lifetime.** A call not ended is over ``CALL_IDLE_S`` after its last event:
  v1 forgets calls on restart, and a host whose page closed never ends its
  call; we keep every event, so without this a lost ``end`` would keep a
  call alive forever.
- **One call per channel.** ``Calls.by_channel`` gives, per channel, the live
  call whose create comes first in order (the web shows the first in its
  table, §1.1); the others stay in ``sessions``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from felund.protocol import DEFAULT_CHANNEL
from felund.v1.chatmodel import MAX_EVENT_TEXT, MAX_SKEW_S, ControlEvent, event_hash, signers
from felund.v1.ids import is_node_id

CALL_OPS = ("create", "join", "view", "leave", "end", "revoke")
# Accepted by v1 Python and never sent by anyone: no effect (§1.2).
INERT_OPS = ("invite", "signal.offer", "signal.answer", "signal.candidate")
MAX_PARTICIPANTS = 32
MAX_VIEWERS = 64
MAX_SESSIONS = 256
MAX_SESSION_ID = 64
MAX_CHANNEL_ID = 64
CALL_IDLE_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Call:
    """One live call."""

    session_id: str
    channel_id: str
    host: str
    created_ts: int
    last_ts: int  # the date of its last applied event
    participants: tuple[str, ...]  # sorted
    viewers: tuple[str, ...]  # sorted
    state: str  # "pending" (only the host so far) or "active"

    def summary(self) -> dict[str, Any]:
        """The call as answers carry it (JSON-able)."""
        return {
            "session_id": self.session_id,
            "channel_id": self.channel_id,
            "host": self.host,
            "created_ts": self.created_ts,
            "last_ts": self.last_ts,
            "participants": list(self.participants),
            "viewers": list(self.viewers),
            "state": self.state,
        }


@dataclass
class Calls:
    """The live calls of a circle, and what was refused (by reason, and per msg_id)."""

    sessions: dict[str, Call] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    refused: dict[str, str] = field(default_factory=dict)
    due_at: int | None = None  # when a held event falls due, or a call runs idle

    def by_channel(self) -> dict[str, Call]:
        """The call of each channel that has one: the live one created first."""
        out: dict[str, Call] = {}
        for call in self.sessions.values():  # in the order of their creates
            out.setdefault(call.channel_id, call)
        return out


@dataclass(frozen=True, slots=True)
class _Parsed:
    ev: ControlEvent
    hash: str
    op: str
    session_id: str
    body: dict[str, Any]


@dataclass
class _Session:
    create: _Parsed
    channel_id: str
    participants: set[str]
    viewers: set[str] = field(default_factory=set)
    active: bool = False
    ended: bool = False
    last_ts: int = 0


def derive_calls(
    events: Iterable[ControlEvent],
    circle_id: str = "",
    now: int | None = None,
    blocked: Collection[str] = frozenset(),
) -> Calls:
    """Fold a circle's control events into its live calls, as of ``now`` (default: the
    clock), refusing those of the nodes in ``blocked``."""
    clock = int(time.time()) if now is None else now
    calls = Calls()
    present: list[ControlEvent] = []
    for ev in events:
        if ev.created_ts > clock + MAX_SKEW_S:
            _hold(calls, ev.created_ts - MAX_SKEW_S)
        else:
            present.append(ev)
    ours = signers(present)
    by_session: dict[str, list[_Parsed]] = {}
    for ev in present:
        parsed = _parse(ev, circle_id)
        if isinstance(parsed, str):
            _refuse(calls, ev, parsed)
        elif parsed is not None:
            if ev.author in blocked:
                _refuse(calls, ev, "blocked")
            elif ev.signer is None and ev.author in ours:
                _refuse(calls, ev, "unsigned_from_signer")
            else:
                by_session.setdefault(parsed.session_id, []).append(parsed)
    made: list[_Session] = []
    for parts in by_session.values():
        parts.sort(key=_rank)
        creates = [p for p in parts if p.op == "create"]
        if not creates:
            for p in parts:
                _refuse(calls, p.ev, "no_session")
            continue
        first = creates[0]
        channel = first.body.get("channel_id")
        session = _Session(
            first,
            channel.strip() if isinstance(channel, str) and channel.strip() else DEFAULT_CHANNEL,
            {first.ev.author},
            last_ts=first.ev.created_ts,
        )
        made.append(session)
        for p in parts:
            if p is not first:
                why = "exists" if p.op == "create" else _apply(session, p, ours)
                if why:
                    _refuse(calls, p.ev, why)
    made.sort(key=lambda s: _rank(s.create))
    for n, session in enumerate(made):
        if n >= MAX_SESSIONS:
            _refuse(calls, session.create.ev, "too_many_sessions")
            continue
        if session.ended:
            continue
        idle_at = session.last_ts + CALL_IDLE_S
        if idle_at <= clock:
            continue
        _hold(calls, idle_at)
        sid = session.create.session_id
        calls.sessions[sid] = Call(
            sid,
            session.channel_id,
            session.create.ev.author,
            session.create.ev.created_ts,
            session.last_ts,
            tuple(sorted(session.participants)),
            tuple(sorted(session.viewers)),
            "active" if session.active else "pending",
        )
    return calls


def _rank(p: _Parsed) -> tuple[int, str]:
    return p.ev.created_ts, p.hash


def _hold(calls: Calls, at: int) -> None:
    calls.due_at = at if calls.due_at is None else min(calls.due_at, at)


def _refuse(calls: Calls, ev: ControlEvent, why: str) -> None:
    calls.rejected[why] += 1
    calls.refused[ev.msg_id] = why


# The fields that name the node an op speaks for (they must name its author).
_SELF_FIELDS = {
    "create": ("host_node_id", "actor_node_id"),
    "join": ("node_id", "actor_node_id"),
    "view": ("node_id", "actor_node_id"),
    "leave": ("node_id", "actor_node_id"),
    "end": ("host_node_id", "actor_node_id"),
    "revoke": ("actor_node_id",),
}


def _parse(ev: ControlEvent, circle_id: str) -> _Parsed | str | None:
    """A CALL_EVT's parts, why it is refused, or None (not a call event, or inert)."""
    try:
        body = json.loads(ev.text)
    except (ValueError, RecursionError):
        return None  # not JSON: the channel fold counts it
    if not isinstance(body, dict) or body.get("t") != "CALL_EVT":
        return None  # every other control event is the channel fold's
    if len(ev.text) > MAX_EVENT_TEXT:
        return "too_long"
    op = body.get("op")
    if op in INERT_OPS:
        return None
    if op not in CALL_OPS:
        return "bad_op"
    sid = body.get("session_id")
    if not isinstance(sid, str) or not sid.strip() or len(sid) > MAX_SESSION_ID:
        return "bad_session"
    if circle_id and body.get("circle_id", circle_id) != circle_id:
        return "other_circle"
    if any(f in body and body[f] != ev.author for f in _SELF_FIELDS[op]):
        return "actor_mismatch"
    if op == "create":
        channel = body.get("channel_id", "")
        if not isinstance(channel, str) or len(channel) > MAX_CHANNEL_ID:
            return "bad_channel"
    if op == "revoke" and not is_node_id(body.get("target_node_id")):
        return "bad_target"
    return _Parsed(ev, event_hash(ev), op, sid, body)


def _apply(s: _Session, p: _Parsed, ours: set[str]) -> str | None:
    """Apply one event to its (made) session: None, or why it changes nothing."""
    if s.ended:
        return "ended"
    author, host = p.ev.author, s.create.ev.author
    if p.op in ("end", "revoke"):
        if author != host:
            return "not_host"
        if host in ours and p.ev.signer is None:
            return "unsigned"
    if p.op == "join":
        if author in s.participants:
            return "already"
        if len(s.participants) >= MAX_PARTICIPANTS:
            return "full"
        s.participants.add(author)
        s.active = s.active or len(s.participants) > 1
    elif p.op == "view":
        if author in s.viewers:
            return "already"
        if len(s.viewers) >= MAX_VIEWERS:
            return "full"
        s.viewers.add(author)
        s.active = True
    elif p.op == "leave":
        s.participants.discard(author)
        s.viewers.discard(author)
    elif p.op == "revoke":
        target = p.body["target_node_id"]
        s.participants.discard(target)
        s.viewers.discard(target)
    else:  # end
        s.ended = True
    s.last_ts = max(s.last_ts, p.ev.created_ts)
    return None
