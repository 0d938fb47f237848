"""Circles, channels and people, derived from control events (sans-IO).

Control events are ordinary messages on the ``__control`` channel whose
text is a compact, key-sorted JSON object (v1 spec, "Control events").
The state is a fold of a circle's events in (created_ts, msg_id) order, so
every node holding the same events derives the same state whatever order
they arrived in. An event that does not parse, or that its author had no
right to make, changes nothing and is counted by reason.

Rules (the spec names the events, not all their rights; these are ours):
- ``create`` makes a channel (first create wins); its creator is a member.
- ``join``: anyone joins a public channel; a key channel needs the key's
  hash; an invite channel needs an ``approve`` first.
- ``request`` asks to join an invite channel; ``approve`` by a member makes
  ``target_node_id`` a member.
- ``leave`` leaves a channel (never ``general``); ``rename`` sets the
  author's display name; ``CIRCLE_NAME_EVT`` names the circle.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from felund.protocol import DEFAULT_CHANNEL

ACCESS_MODES = ("public", "key", "invite")
CHANNEL_OPS = ("create", "join", "request", "approve", "leave", "rename")
MAX_EVENT_TEXT = 4096
MAX_NAME = 64
_CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")
_NODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def key_hash(key: str) -> str:
    """The hash of a channel key that control events carry (never the key itself)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def members_text(channel_id: str, members: Iterable[str]) -> str:
    """How many are in a channel, in words: #general has everyone, and lists nobody."""
    if channel_id == DEFAULT_CHANNEL:
        return "everyone"
    n = len(set(members))
    return f"{n} member" if n == 1 else f"{n} members"


def event_text(event: dict[str, Any]) -> str:
    """The text of a control message: compact, key-sorted JSON, as the spec says."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@dataclass(slots=True)
class Channel:
    """One channel of a circle."""

    channel_id: str
    access_mode: str = "public"
    key_hash: str = ""
    creator: str = ""
    created_ts: int = 0
    members: set[str] = field(default_factory=set)
    approved: set[str] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)


@dataclass(slots=True)
class CircleState:
    """What a circle's control events say."""

    circle_id: str = ""
    name: str = ""
    channels: dict[str, Channel] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # node_id -> display name
    rejected: Counter[str] = field(default_factory=Counter)
    newest_ts: int = 0  # of every event seen, applied or not: a new event must not sort earlier

    def can_post(self, channel_id: str, node_id: str) -> bool:
        """Whether ``node_id`` may post in ``channel_id``."""
        if channel_id == DEFAULT_CHANNEL:
            return True
        channel = self.channels.get(channel_id)
        if channel is None:
            return False
        return channel.access_mode == "public" or node_id in channel.members

    def summary(self) -> dict[str, Any]:
        """The state as plain data (for answers, and to compare states)."""
        return {
            "name": self.name,
            "names": dict(sorted(self.names.items())),
            "channels": {
                cid: {
                    "access_mode": c.access_mode,
                    "key_hash": c.key_hash,
                    "creator": c.creator,
                    "created_ts": c.created_ts,
                    "members": sorted(c.members),
                    "approved": sorted(c.approved),
                    "requests": sorted(c.requests),
                }
                for cid, c in sorted(self.channels.items())
            },
        }


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A control message as the store holds it."""

    msg_id: str
    author: str
    created_ts: int
    text: str


# Refusals that a later event of the same second can lift: created_ts has
# whole seconds, so a join written just after its create may sort before it.
_WAITS_ON_ANOTHER = frozenset({"no_channel", "not_approved", "not_member"})


def derive(events: Iterable[ControlEvent], circle_id: str = "") -> CircleState:
    """Fold a circle's control events into its state, deterministically.

    Events apply in (created_ts, msg_id) order; within one second, an event
    refused for want of another is tried again after the rest of its second,
    until nothing more applies.
    """
    state = CircleState(circle_id=circle_id)
    state.channels[DEFAULT_CHANNEL] = Channel(DEFAULT_CHANNEL)
    by_second: dict[int, list[ControlEvent]] = {}
    for ev in sorted(events, key=lambda e: (e.created_ts, e.msg_id)):
        by_second.setdefault(ev.created_ts, []).append(ev)
        state.newest_ts = ev.created_ts
    for second in by_second.values():
        pending = second
        while pending:
            waiting: list[tuple[ControlEvent, str]] = []
            for ev in pending:
                problem = apply(state, ev)
                if problem in _WAITS_ON_ANOTHER:
                    waiting.append((ev, problem))
                elif problem:
                    state.rejected[problem] += 1
            if len(waiting) == len(pending):  # nothing more applies this second
                for _, problem in waiting:
                    state.rejected[problem] += 1
                break
            pending = [ev for ev, _ in waiting]
    return state


def apply(state: CircleState, ev: ControlEvent) -> str | None:
    """Apply one event; the reason it was ignored, if it was."""
    if len(ev.text) > MAX_EVENT_TEXT:
        return "too_long"
    try:
        body = json.loads(ev.text)
    except (ValueError, RecursionError):
        return "not_json"
    if not isinstance(body, dict):
        return "not_object"
    if state.circle_id and body.get("circle_id", state.circle_id) != state.circle_id:
        return "other_circle"
    actor = body.get("actor_node_id", body.get("node_id", ev.author))
    if actor != ev.author:
        return "actor_mismatch"  # only one's own actions
    kind = body.get("t")
    if kind == "CIRCLE_NAME_EVT":
        name = body.get("name")
        if not _good_name(name):
            return "bad_name"
        state.name = name
        return None
    if kind == "CHANNEL_EVT":
        return _channel_event(state, ev, body)
    if kind in ("ANCHOR_ANNOUNCE", "CALL_EVT"):
        return None  # known, and not about channels or names
    return "unknown_type"


def _good_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable()


def _channel_event(state: CircleState, ev: ControlEvent, body: dict[str, Any]) -> str | None:
    op = body.get("op")
    if op not in CHANNEL_OPS:
        return "unknown_op"
    if op == "rename":
        name = body.get("display_name")
        if not _good_name(name):
            return "bad_name"
        state.names[ev.author] = name
        return None
    cid = body.get("channel_id")
    if not isinstance(cid, str) or not _CHANNEL_RE.fullmatch(cid) or cid.startswith("__"):
        return "bad_channel"
    channel = state.channels.get(cid)
    if op == "create":
        return _create(state, ev, cid, body) if channel is None else "exists"
    if channel is None:
        return "no_channel"
    if op == "join":
        return _join(channel, ev.author, body)
    if op == "request":
        if channel.access_mode != "invite":
            return "not_invite"
        channel.requests.add(ev.author)
        return None
    if op == "approve":
        target = body.get("target_node_id")
        if not isinstance(target, str) or not _NODE_RE.fullmatch(target):
            return "bad_target"
        if ev.author not in channel.members:
            return "not_member"
        channel.approved.add(target)
        channel.members.add(target)
        channel.requests.discard(target)
        return None
    # leave
    if cid == DEFAULT_CHANNEL:
        return "general"
    channel.members.discard(ev.author)
    return None


def _create(state: CircleState, ev: ControlEvent, cid: str, body: dict[str, Any]) -> str | None:
    mode = body.get("access_mode", "public")
    if mode not in ACCESS_MODES:
        return "bad_access_mode"
    digest = body.get("key_hash", "")
    if mode == "key" and not (isinstance(digest, str) and _HEX64_RE.fullmatch(digest)):
        return "bad_key_hash"
    state.channels[cid] = Channel(
        cid, mode, digest if mode == "key" else "", ev.author, ev.created_ts, {ev.author}
    )
    return None


def _join(channel: Channel, author: str, body: dict[str, Any]) -> str | None:
    if channel.access_mode == "key" and body.get("key_hash") != channel.key_hash:
        return "wrong_key"
    if channel.access_mode == "invite" and author not in channel.approved:
        return "not_approved"
    channel.members.add(author)
    return None
