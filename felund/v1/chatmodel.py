"""Circles, channels and people, derived from control events (sans-IO).

Control events are ordinary messages on the ``__control`` channel whose
text is a compact, key-sorted JSON object (v1 spec, "Control events").
The state is a pure function of the set of a circle's events and of the
reader's clock, ``now``, which only decides which events are due: every
node holding the same events derives the same state whatever order they
arrived in, Python and the browser (``felund/web/lib/chatmodel.js``)
alike. An event that does not parse, or that its author had no right to
make, changes nothing and is counted by reason.

The fold (the spec names the events, not their order; these rules are ours):

- **Due, or held.** An event dated more than ``MAX_SKEW_S`` after ``now``
  is held: stored, but it changes and orders nothing until the reader's
  clock is within the skew of its date (``due_at`` says when to derive
  again). Nodes agree on every event dated up to the real time; on one
  dated further ahead (a clock that runs fast, or a member's trick) they
  can differ only while their clocks straddle its due time, and they agree
  again once every clock has passed it. One dated 2**41 - 1 never counts,
  and nothing a peer dates moves the date of our own events.
- **Order.** Due events apply in (created_ts, hash) order, the hash being
  SHA-256 of ``msg_id|author|created_ts|text``: a tie breaks on a value
  no author picks outright (msg_ids are chosen by their authors).
- **Creates.** A channel is made by the one valid ``create`` of its id
  that is signed, if any is, with the smallest hash, whatever the dates: a
  create backdated to before the channel's real one wins nothing by its
  date. (Among unsigned ones, a v1 member can still try hashes until one
  wins: a coin toss per try.)
- **Waiting.** An event refused for want of another (its channel not made
  yet, its author not approved yet) waits, and is tried
  again, in order, as soon as an event gives what it waited for, whatever
  the dates: a join dated by a clock behind the creator's still counts.
- ``create`` makes its author a member. ``join``: anyone joins a public
  channel; a key channel refuses a join carrying another key's hash (a v1
  join carries none: its sender checked the key, addendum §2.3; a key
  channel made with an empty hash checks nothing, §2.2); an invite channel
  needs an ``approve`` first. ``request`` asks to join an invite channel;
  an ``approve`` allowed by the roles below makes ``target_node_id`` (a
  well-formed node id) a member. ``leave`` leaves (never ``general``).
  ``rename`` sets the author's display name, ``CIRCLE_NAME_EVT`` the circle's name (with or
  without ``circle_id``, §3.1): the last in order wins.
- Only one's own actions: ``actor_node_id`` and, for the ops it names the
  actor in, ``node_id`` must be the message's author.

Roles (issue 15), decided from signed events only (``signer``: the key the
store verified the event with; None: unsigned):

- **Owner.** The author of a signed ``CIRCLE_OWNER`` whose salt shows, with
  the signer's key, the circle's secret (``felund.trust.owner``). No proof:
  no owner (a circle made by a v1 client, or before keys).
- **Moderators.** ``ROLE_EVT`` grant/revoke counts when the owner signed it;
  per target the last in order wins. Only the owner writes them, so the
  roles are known before the channel fold and do not depend on its order.
- **Uses of a role.** In a circle with an owner, ``CIRCLE_NAME_EVT`` counts
  when the owner or a moderator signed it; an ``approve`` counts when the
  channel's creator, the owner or a moderator signed it. Roles are the
  final ones: a demoted moderator's approvals stop counting (its demoter
  re-approves whom they let in, ``felund.v1.events.kept_by_owner``).
- **Unsigned events** never grant or use a role; the others follow the rules
  above, except from an author that has signed events here: those cannot be
  told from a forgery and are ignored. Among creates of one channel a
  signed one beats an unsigned one, then the smallest hash.

Epochs (issue 16), decided from signed events only:

- **Valid.** An ``EPOCH_EVT`` is sound when it is signed by the owner or by
  someone the owner made moderator, its ``removed`` (cumulative, sorted) holds
  all of its parent's and never the owner, only the owner's new removals hold
  a moderator, its author is not in its parent's ``removed``, and its parent
  is a sound ``EPOCH_EVT`` of the epoch before ("" for epoch 1). A sound one
  counts when its author is the owner or a moderator now (the final roles,
  as for approvals) whom no epoch of the owner's removes, or a counting one
  is built on it: demoting or removing a moderator undoes none of its
  removals that others built on (no date has to say what came first), and
  one it wrote that nobody built on counts for nothing (so a removed
  moderator cannot fork the chain from an epoch before its removal).
  Its msg_id is the epoch's id.
- **The winning chain.** Epoch n's winner is, among the valid ones of epoch n
  whose parent is epoch n-1's winner, the one with the smallest msg_id: no
  date steers it. ``removed`` is the newest winner's; a losing branch's
  removals are ``uncovered`` until a later epoch covers them.
- **Keys to wrap to.** ``xkeys``: the X25519 key (``xpk``) of each author of a
  signed ``KEY_ANNOUNCE`` whose ``pk`` is the key that signed it (the last in
  order). ``EPOCH_LINK`` is the store's (it opens an older epoch): known,
  and it derives nothing.

Private channels (issue 16, second half):

- **Private.** A ``create`` of a key or invite channel carrying ``"private": true``
  makes it private: its messages are sealed under a channel key (the store's,
  ``felund.trust.channels``); the other implementation ignores the flag.
- **Channel epochs.** A ``CHANNEL_KEY_EVT`` (an invite channel's secret of channel
  epoch m, wrapped to its members) counts when signed by the channel's creator,
  the owner or a moderator; each channel's winning chain is chosen by the rule of
  the circle's epochs (one implementation, ``_winning_chain``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar

from felund.protocol import ACCESS_MODES, DEFAULT_CHANNEL
from felund.trust.identity import b64, is_derived_form, unb64
from felund.trust.owner import SALT_HEX_LEN, proves_owner
from felund.v1.ids import MSG_ID_LEN, SECRET_HEX_LEN, is_hex, is_node_id
from felund.v1.wire import MAX_TEXT_CHARS

CHANNEL_OPS = ("create", "join", "request", "approve", "leave", "rename")
ROLE_OPS = ("grant", "revoke")
MAX_EVENT_TEXT = 4096
MAX_NAME = 64
MAX_SKEW_S = 300
# An EPOCH_EVT carries a wrap per member: it may be as long as any message (about
# 48 wraps); every other control event stays within MAX_EVENT_TEXT.
MAX_EPOCH_TEXT = MAX_TEXT_CHARS
MAX_EPOCH = 2**31
MAX_REMOVED = 256
MAX_WRAPS = 256
MAX_WRAP_CHARS = 128
X_KEY_LEN = 32  # raw X25519 public key, and Ed25519's
# Events whose text may be as long as a message: they carry a wrap per member.
_WRAPPING = ("EPOCH_EVT", "CHANNEL_KEY_EVT")
# What our writers say when they refuse a removal (who_can says who may remove).
REMOVAL_REFUSALS = {
    "removes_owner": "the owner cannot be removed",
    "removes_self": "you cannot remove yourself: leave the circle instead",
    "already_removed": "already removed from this circle",
    "removes_moderator": "only the circle's owner removes a moderator",
}
CHANNEL_RULE = "channel names are 1 to 32 of a-z, 0-9, - and _, not starting with __"
_CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
# Ops whose node_id, when present, names the actor (v1 writes it so, addendum §2.3).
_NODE_ID_IS_ACTOR = frozenset({"join", "request", "leave", "rename"})


def is_channel_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a channel a user may make, join or post in."""
    return isinstance(name, str) and bool(_CHANNEL_RE.fullmatch(name)) and name[:2] != "__"


def channel_name(word: str) -> str:
    """A channel's name as typed (one leading ``#`` allowed); ValueError(CHANNEL_RULE) if bad."""
    name = word.removeprefix("#")
    if not is_channel_name(name):
        raise ValueError(CHANNEL_RULE)
    return name


def key_hash(circle_id: str, channel_id: str, key: str) -> str:
    """The hash of a channel key that control events carry: SHA-256 of
    ``circle_id|channel_id|key`` (addendum §2.1), never the key itself."""
    return hashlib.sha256(f"{circle_id}|{channel_id}|{key}".encode()).hexdigest()


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
    private: bool = False  # sealed under a channel key (a key or invite channel made so)
    keys: list[ChannelKey] = field(default_factory=list)  # the winning chain, epoch 1 first


@dataclass(frozen=True, slots=True)
class Epoch:
    """A valid EPOCH_EVT: epoch ``n`` of a circle, made by ``author``."""

    n: int
    epoch_id: str  # the EPOCH_EVT's msg_id
    parent: str  # epoch n-1's id ("" for the root)
    author: str
    removed: frozenset[str]  # cumulative
    wraps: dict[str, str]  # node id -> this epoch's secret wrapped to it

    def summary(self) -> dict[str, Any]:
        """The epoch as plain data."""
        return {
            "n": self.n,
            "epoch_id": self.epoch_id,
            "parent": self.parent,
            "author": self.author,
            "removed": sorted(self.removed),
            "wraps": dict(sorted(self.wraps.items())),
        }


@dataclass(frozen=True, slots=True)
class ChannelKey:
    """A valid CHANNEL_KEY_EVT: channel epoch ``n`` of an invite channel, made by ``author``."""

    n: int
    epoch_id: str  # the CHANNEL_KEY_EVT's msg_id
    parent: str  # channel epoch n-1's id ("" for the first)
    author: str
    channel_id: str
    wraps: dict[str, str]  # node id -> this channel epoch's secret wrapped to it


@dataclass(slots=True)
class CircleState:
    """What a circle's control events say."""

    circle_id: str = ""
    name: str = ""
    channels: dict[str, Channel] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # node_id -> display name
    rejected: Counter[str] = field(default_factory=Counter)
    refused: dict[str, str] = field(default_factory=dict)  # msg_id -> why (held: "future")
    # When the earliest held event falls due (the state must be derived again), if any.
    due_at: int | None = None
    owner: str = ""  # "" : no owner proved (a v1 circle, or one made before keys)
    moderators: set[str] = field(default_factory=set)
    epochs: list[Epoch] = field(default_factory=list)  # the winning chain, epoch 1 first
    removed: frozenset[str] = frozenset()  # the newest winner's
    uncovered: frozenset[str] = frozenset()  # removals of losing branches no winner holds
    xkeys: dict[str, bytes] = field(default_factory=dict)  # node id -> X25519 public key
    epoch_events: dict[str, Epoch] = field(default_factory=dict)  # every valid one, any branch
    # Every valid CHANNEL_KEY_EVT, any channel and branch, by its id.
    channel_keys: dict[str, ChannelKey] = field(default_factory=dict)

    def role_of(self, node_id: str) -> str:
        """``node_id``'s role in the circle: "owner", "moderator" or "member"."""
        if node_id and node_id == self.owner:
            return "owner"
        return "moderator" if node_id in self.moderators else "member"

    def moderates(self, node_id: str) -> bool:
        """Whether ``node_id`` is the circle's owner or one of its moderators."""
        return self.role_of(node_id) != "member"

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
            "owner": self.owner,
            "moderators": sorted(self.moderators),
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
                    "private": c.private,
                    "keys": [k.epoch_id for k in c.keys],
                }
                for cid, c in sorted(self.channels.items())
            },
            "epochs": [e.summary() for e in self.epochs],
            "removed": sorted(self.removed),
            "uncovered": sorted(self.uncovered),
            "xkeys": {n: b64(k) for n, k in sorted(self.xkeys.items())},
            "epoch_events": sorted(self.epoch_events),
            "channel_keys": sorted(self.channel_keys),
        }


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A control message as the store holds it."""

    msg_id: str
    author: str
    created_ts: int
    text: str
    signer: bytes | None = None  # the raw public key that signed it; None: unsigned


def event_hash(ev: ControlEvent) -> str:
    """The value ties break on: hex SHA-256 of ``msg_id|author|created_ts|text``."""
    data = f"{ev.msg_id}|{ev.author}|{ev.created_ts}|{ev.text}"
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Parsed:
    """An event that parsed, with what its effect depends on."""

    ev: ControlEvent
    hash: str
    kind: str  # "circle_name", "owner", "role", or a CHANNEL_EVT op
    body: dict[str, Any]
    cid: str = ""  # the channel, for channel ops but rename


def derive(
    events: Iterable[ControlEvent],
    circle_id: str = "",
    now: int | None = None,
    secret: str = "",
) -> CircleState:
    """Fold a circle's control events into its state, as of ``now`` (default: the clock);
    ``secret`` (the circle's, of epoch 0) is what an owner's proof is checked against."""
    horizon = (int(time.time()) if now is None else now) + MAX_SKEW_S
    state = CircleState(circle_id=circle_id)
    state.channels[DEFAULT_CHANNEL] = Channel(DEFAULT_CHANNEL)
    present: list[ControlEvent] = []
    for ev in events:
        if ev.created_ts > horizon:
            _refuse(state, ev, "future")
            falls_due = ev.created_ts - MAX_SKEW_S
            state.due_at = falls_due if state.due_at is None else min(state.due_at, falls_due)
        else:
            present.append(ev)
    known = signers(present)
    due: list[_Parsed] = []
    for ev in present:
        parsed = (
            "unsigned_from_signer"
            if ev.signer is None and ev.author in known
            else _parse(ev, circle_id)
        )
        if isinstance(parsed, str):
            _refuse(state, ev, parsed)
        elif parsed is not None:
            due.append(parsed)
    due.sort(key=_rank)
    ever_moderators = _roles(state, due, secret)
    _epochs(state, due, ever_moderators)
    _xkeys(state, due)
    creates: dict[str, _Parsed] = {}
    for p in due:
        if p.kind == "create" and (
            p.cid not in creates or _create_rank(p) < _create_rank(creates[p.cid])
        ):
            creates[p.cid] = p
    _Fold(state, creates).run([p for p in due if p.kind not in _NOT_CHANNEL_KINDS])
    _channel_keys(state, due)
    return state


def signers(events: Iterable[ControlEvent]) -> set[str]:
    """The authors whose unsigned events are forgeries: derived-form ids that signed one."""
    # Only a derived-form id is known to sign everything it writes: an older
    # id's events from before its key still count (pinned at first sight, it
    # can be forged until then, as in v1), and a v1 peer whose random id has
    # the mark never signs, so it is never in this set.
    return {ev.author for ev in events if ev.signer is not None and is_derived_form(ev.author)}


# Folded by their own functions: before the channels, and channel keys after them.
_NOT_CHANNEL_KINDS = frozenset({"owner", "role", "epoch", "xkey", "chan_key"})


def _create_rank(p: _Parsed) -> tuple[bool, str]:
    return p.ev.signer is None, p.hash  # a signed create first, then the smallest hash


def _roles(state: CircleState, due: list[_Parsed], secret: str) -> set[str]:
    """The owner and moderators, from the owner's proofs and role events (in order);
    returns whom the owner ever made moderator."""
    proofs = []
    for p in due:
        if p.kind != "owner":
            continue
        if p.ev.signer is None:
            _refuse(state, p.ev, "unsigned")
        elif not _proves(secret, p.ev.signer, p.body["salt"]):
            _refuse(state, p.ev, "bad_proof")
        else:
            proofs.append(p)
    # Every valid proof comes from the creator's key: one node, unless it ran two ids.
    state.owner = proofs[0].ev.author if proofs else ""
    granted: dict[str, str] = {}
    ever: set[str] = set()
    for p in due:
        if p.kind != "role":
            continue
        if p.ev.signer is None:
            _refuse(state, p.ev, "unsigned")
        elif p.ev.author != state.owner:
            _refuse(state, p.ev, "not_allowed")
        else:
            granted[p.body["target_node_id"]] = p.body["op"]
            if p.body["op"] == "grant":
                ever.add(p.body["target_node_id"])
    state.moderators = {n for n, op in granted.items() if op == "grant"} - {state.owner}
    return ever


def _epochs(state: CircleState, due: list[_Parsed], ever_moderators: set[str]) -> None:
    """The valid EPOCH_EVTs, their winning chain, and the removals it leaves uncovered."""
    sound: dict[str, Epoch] = {}
    written: dict[str, ControlEvent] = {}
    # Lower epochs first: a parent is judged before its children.
    for p in sorted((p for p in due if p.kind == "epoch"), key=_epoch_rank):
        why = _epoch_problem(state, p, sound, ever_moderators)
        if why:
            _refuse(state, p.ev, why)
        else:
            body = p.body
            written[p.ev.msg_id] = p.ev
            sound[p.ev.msg_id] = Epoch(
                body["epoch"],
                p.ev.msg_id,
                body["parent"],
                p.ev.author,
                frozenset(body["removed"]),
                dict(body["wraps"]),
            )
    # One counts when the owner or a moderator (the final roles) wrote it or built on it:
    # demoting a moderator undoes none of its removals that were built on, and no date
    # has to say which came first. A moderator the owner removed (on any branch: only
    # the owner removes one) has no say left, as if demoted, or it could fork.
    valid = state.epoch_events
    by_owner = frozenset().union(*(e.removed for e in sound.values() if e.author == state.owner))
    for e in sound.values():
        if state.moderates(e.author) and e.author not in by_owner:
            step: Epoch | None = e
            while step is not None and step.epoch_id not in valid:
                valid[step.epoch_id] = step
                step = sound.get(step.parent)
    for epoch_id, ev in written.items():
        if epoch_id not in valid:
            _refuse(state, ev, "not_allowed")  # a former moderator's, built on by nobody
    state.epochs = _winning_chain(valid.values())
    state.removed = state.epochs[-1].removed if state.epochs else frozenset()
    intents = frozenset().union(*(e.removed for e in valid.values()))
    state.uncovered = intents - state.removed


class _Link(Protocol):
    @property
    def epoch_id(self) -> str: ...
    @property
    def parent(self) -> str: ...


_L = TypeVar("_L", bound=_Link)


def _winning_chain(valid: Iterable[_L]) -> list[_L]:
    """The winning chain of a scope's valid epochs (the circle's, or one channel's):
    winner(0) is the root (""); winner(n) is, among those whose parent is winner(n-1),
    the one with the smallest id. It stops where no candidate is."""
    first_child: dict[str, _L] = {}
    for e in valid:
        if e.parent not in first_child or e.epoch_id < first_child[e.parent].epoch_id:
            first_child[e.parent] = e
    chain = []
    head = first_child.get("")
    while head is not None:  # ids are unique and each step is one epoch up: it ends
        chain.append(head)
        head = first_child.get(head.epoch_id)
    return chain


def _parent_problem(n: int, parent_id: str, valid: dict[str, Any]) -> str | None:
    """Why an epoch's parent is not a valid epoch of its scope just before it; None: it is."""
    if n == 1:
        return None
    parent = valid.get(parent_id)
    if parent is None:
        return "no_parent"
    return "parent_mismatch" if parent.n != n - 1 else None


def _epoch_rank(p: _Parsed) -> tuple[int, str, str]:
    return p.body["epoch"], p.ev.msg_id, p.hash


def _channel_keys(state: CircleState, due: list[_Parsed]) -> None:
    """The valid CHANNEL_KEY_EVTs of invite channels, and each channel's winning chain."""
    valid: dict[str, dict[str, ChannelKey]] = {}  # per channel
    for p in sorted((p for p in due if p.kind == "chan_key"), key=_epoch_rank):
        channel = state.channels.get(p.cid)
        mine = valid.setdefault(p.cid, {})
        why = (
            "unsigned"
            if p.ev.signer is None
            else "no_channel"
            if channel is None
            else "not_invite"
            if channel.access_mode != "invite"
            else "not_allowed"
            if p.ev.author != channel.creator and not state.moderates(p.ev.author)
            else _parent_problem(p.body["epoch"], p.body["parent"], mine)
        )
        if why:
            _refuse(state, p.ev, why)
            continue
        key = ChannelKey(
            p.body["epoch"],
            p.ev.msg_id,
            p.body["parent"],
            p.ev.author,
            p.cid,
            dict(p.body["wraps"]),
        )
        mine[key.epoch_id] = key
        state.channel_keys[key.epoch_id] = key
    for cid, keys in valid.items():
        if cid in state.channels:
            state.channels[cid].keys = _winning_chain(keys.values())


def _epoch_problem(
    state: CircleState, p: _Parsed, sound: dict[str, Epoch], ever_moderators: set[str]
) -> str | None:
    """Why an EPOCH_EVT does not count whatever is built on it, given the sound ones of
    lower epochs; None: it may count."""
    author, n = p.ev.author, p.body["epoch"]
    if p.ev.signer is None:
        return "unsigned"
    if author != state.owner and author not in ever_moderators:
        return "not_allowed"
    removed = frozenset(p.body["removed"])
    if state.owner in removed:
        return "removes_owner"
    why = _parent_problem(n, p.body["parent"], sound)
    if why:
        return why
    before = sound[p.body["parent"]].removed if n > 1 else frozenset()
    if author in before:
        return "removed_author"
    if not before <= removed:
        return "removed_shrinks"
    if author != state.owner and (removed - before) & state.moderators:
        return "removes_moderator"
    return None


def _xkeys(state: CircleState, due: list[_Parsed]) -> None:
    """Each author's X25519 key, from its signed KEY_ANNOUNCEs (the last in order)."""
    for p in due:
        if p.kind != "xkey":
            continue
        xpk = unb64(p.body["xpk"], X_KEY_LEN)
        if p.ev.signer is None:
            _refuse(state, p.ev, "unsigned")
        elif unb64(p.body["pk"], X_KEY_LEN) != p.ev.signer:
            _refuse(state, p.ev, "not_signer")
        elif xpk is not None:  # it parsed: always
            state.xkeys[p.ev.author] = xpk


def cannot_follow(state: CircleState, people: Iterable[str]) -> list[str]:
    """Who of ``people`` (the members seen in the circle) cannot follow a re-key: not
    removed, and no X25519 key announced (v1 clients, nodes or browsers from before)."""
    return sorted({n for n in people if n not in state.removed and n not in state.xkeys})


def next_removed(state: CircleState, node_id: str = "") -> list[str]:
    """The cumulative ``removed`` of the next epoch: the newest winner's, the uncovered
    removals, and ``node_id`` if given."""
    return sorted(state.removed | state.uncovered | ({node_id} if node_id else set()))


def _proves(secret: str, signer: bytes, salt: str) -> bool:
    return is_hex(secret, SECRET_HEX_LEN) and proves_owner(secret, signer, salt)


def writer_problem(state: CircleState, event: dict[str, Any], node_id: str = "") -> str | None:
    """What our writers refuse before the fold is asked: a create of a channel
    that exists (a contest nobody should start knowingly), a join of a key
    channel without its key (the fold lets a v1 join without one in), a role
    for the owner, a removal ``REMOVAL_REFUSALS`` names, and what ``node_id``'s
    role does not allow ("not_allowed": ``who_can`` says who can)."""
    kind = event.get("t")
    if kind == "EPOCH_EVT":
        return _removal_problem(state, event, node_id)
    if kind == "ROLE_EVT":
        if node_id != state.owner or not node_id:
            return "not_allowed"
        return "owner_role" if event.get("target_node_id") == node_id else None
    if kind == "CIRCLE_NAME_EVT":
        return "not_allowed" if state.owner and not state.moderates(node_id) else None
    if kind != "CHANNEL_EVT":
        return None
    channel = state.channels.get(str(event.get("channel_id")))
    if channel is None:
        return None
    op = event.get("op")
    if op == "create":
        return "exists"
    if op == "join" and channel.key_hash and "key_hash" not in event:
        return "needs_key"
    if op == "approve" and node_id != channel.creator and not state.moderates(node_id):
        return "not_allowed"
    return None


def _removal_problem(state: CircleState, event: dict[str, Any], node_id: str) -> str | None:
    """Why ``node_id`` may not write this EPOCH_EVT: whom it newly removes, and its role."""
    if not node_id or not state.moderates(node_id):
        return "not_allowed"
    removed = event.get("removed")
    new = set(removed if isinstance(removed, list) else ()) - state.removed
    if state.owner in new:
        return "removes_owner"
    if node_id in new:
        return "removes_self"
    if not new:
        return "already_removed"
    if state.role_of(node_id) == "moderator" and new & state.moderators:
        return "removes_moderator"
    return None


def who_can(state: CircleState, event: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """The sentence a writer refused as "not_allowed" shows: who can do what ``event`` does.

    ``names`` (node id -> name) names people; default the names the events gave.
    """
    known = state.names if names is None else names

    def who(node_id: str) -> str:
        return known.get(node_id) or node_id[:8]

    circle_owner = f"the circle's owner ({who(state.owner)})"
    if event.get("t") == "ROLE_EVT":
        if not state.owner:
            return "this circle has no owner (made by a v1 client or before keys): no moderators"
        return f"only {circle_owner} can name moderators"
    if event.get("t") == "CIRCLE_NAME_EVT":
        return f"only {circle_owner} or a moderator can rename this circle"
    if event.get("t") == "EPOCH_EVT":
        if not state.owner:
            return (
                "this circle has no owner (made by a v1 client or before keys): "
                "no one can remove a member"
            )
        return f"only {circle_owner} or a moderator can remove a member"
    cid = str(event.get("channel_id"))
    channel = state.channels.get(cid)
    creator = f"#{cid}'s owner ({who(channel.creator)})" if channel else f"#{cid}'s owner"
    if not state.owner:
        return f"only {creator} can approve into #{cid}"
    return f"only {creator}, the circle's owner or a moderator can approve into #{cid}"


def _refuse(state: CircleState, ev: ControlEvent, why: str) -> None:
    state.rejected[why] += 1
    state.refused[ev.msg_id] = why


_NOT_JSON = object()


def _parse(ev: ControlEvent, circle_id: str) -> _Parsed | str | None:
    """An event's parts, or why it is refused whatever else holds (None: no effect)."""
    if len(ev.text) > MAX_EPOCH_TEXT:
        return "too_long"
    try:
        body = json.loads(ev.text)
    except (ValueError, RecursionError):
        body = _NOT_JSON
    if len(ev.text) > MAX_EVENT_TEXT and not (
        isinstance(body, dict) and body.get("t") in _WRAPPING
    ):
        return "too_long"
    if body is _NOT_JSON:
        return "not_json"
    if not isinstance(body, dict):
        return "not_object"
    if circle_id and body.get("circle_id", circle_id) != circle_id:
        return "other_circle"
    actor = body.get("actor_node_id", body.get("node_id", ev.author))
    if actor != ev.author:
        return "actor_mismatch"  # only one's own actions
    kind = body.get("t")
    if kind == "CIRCLE_NAME_EVT":
        if not _good_name(body.get("name")):
            return "bad_name"
        return _Parsed(ev, event_hash(ev), "circle_name", body)
    if kind == "CHANNEL_EVT":
        return _parse_channel_event(ev, body)
    if kind == "CIRCLE_OWNER":
        if not is_hex(body.get("salt"), SALT_HEX_LEN):
            return "bad_proof"
        return _Parsed(ev, event_hash(ev), "owner", body)
    if kind == "ROLE_EVT":
        if body.get("op") not in ROLE_OPS or body.get("role") != "moderator":
            return "bad_role"
        if not is_node_id(body.get("target_node_id")):
            return "bad_target"
        return _Parsed(ev, event_hash(ev), "role", body)
    if kind == "EPOCH_EVT":
        return _parse_epoch(ev, body)
    if kind == "CHANNEL_KEY_EVT":
        return _parse_channel_key(ev, body)
    if kind == "KEY_ANNOUNCE" and "xpk" in body:
        if unb64(body["xpk"], X_KEY_LEN) is None or unb64(body.get("pk"), X_KEY_LEN) is None:
            return "bad_key"
        return _Parsed(ev, event_hash(ev), "xkey", body)
    if kind in ("ANCHOR_ANNOUNCE", "CALL_EVT", "KEY_ANNOUNCE", "EPOCH_LINK"):
        return None  # known, and about nothing derived here (EPOCH_LINK is the store's)
    return "unknown_type"


def _number_problem(ev: ControlEvent, body: dict[str, Any]) -> str | None:
    """What is malformed in an epoch's number or parent (an EPOCH_EVT's or a
    CHANNEL_KEY_EVT's); None: nothing."""
    n = body.get("epoch")
    # Its msg_id names the epoch (in key ids and invite codes): 32 hex, as ours are.
    if type(n) is not int or not 1 <= n <= MAX_EPOCH or not is_hex(ev.msg_id, MSG_ID_LEN):
        return "bad_epoch"
    parent = body.get("parent")
    if not (parent == "" if n == 1 else is_hex(parent, MSG_ID_LEN)):
        return "bad_parent"
    return None


def _wraps_problem(body: dict[str, Any]) -> str | None:
    """What is malformed in an epoch's wraps; None: nothing."""
    wraps = body.get("wraps")
    if not (
        isinstance(wraps, dict)
        and len(wraps) <= MAX_WRAPS
        and all(
            is_node_id(k) and isinstance(v, str) and 0 < len(v) <= MAX_WRAP_CHARS
            for k, v in wraps.items()
        )
    ):
        return "bad_wraps"
    return None


def _parse_channel_key(ev: ControlEvent, body: dict[str, Any]) -> _Parsed | str:
    cid = body.get("channel_id")
    if not is_channel_name(cid):
        return "bad_channel"
    why = _number_problem(ev, body) or _wraps_problem(body)
    return why or _Parsed(ev, event_hash(ev), "chan_key", body, cid)


def _parse_epoch(ev: ControlEvent, body: dict[str, Any]) -> _Parsed | str:
    why = _number_problem(ev, body)
    if why:
        return why
    removed = body.get("removed")
    if not (
        isinstance(removed, list)
        and len(removed) <= MAX_REMOVED
        and all(is_node_id(r) for r in removed)
        and removed == sorted(set(removed))
    ):
        return "bad_removed"
    return _wraps_problem(body) or _Parsed(ev, event_hash(ev), "epoch", body)


def _good_key_hash(digest: str) -> bool:
    # "" is what the v1 TUI writes for a key channel it does not check (addendum §2.2).
    return digest == "" or _HEX64_RE.fullmatch(digest) is not None


def _good_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable()


def _parse_channel_event(ev: ControlEvent, body: dict[str, Any]) -> _Parsed | str:
    op = body.get("op")
    if op not in CHANNEL_OPS:
        return "unknown_op"
    if op in _NODE_ID_IS_ACTOR and body.get("node_id", ev.author) != ev.author:
        return "actor_mismatch"
    if op == "rename":
        if not _good_name(body.get("display_name")):
            return "bad_name"
        return _Parsed(ev, event_hash(ev), op, body)
    cid = body.get("channel_id")
    if not is_channel_name(cid):
        return "bad_channel"
    if op == "create":
        if cid == DEFAULT_CHANNEL:
            return "exists"
        mode = body.get("access_mode", "public")
        if mode not in ACCESS_MODES:
            return "bad_access_mode"
        digest = body.get("key_hash", "")
        if mode == "key" and not (isinstance(digest, str) and _good_key_hash(digest)):
            return "bad_key_hash"
    elif op == "approve" and not is_node_id(body.get("target_node_id")):
        return "bad_target"
    elif op == "leave" and cid == DEFAULT_CHANNEL:
        return "general"
    return _Parsed(ev, event_hash(ev), op, body, cid)


# What an event refused for want of another waits for: (what, channel, node).
# The event that gives it wakes the waiters.
_Key = tuple[str, str, str]
_WAIT_REASONS = {"channel": "no_channel", "approved": "not_approved"}


def _rank(p: _Parsed) -> tuple[int, str]:
    return p.ev.created_ts, p.hash


class _Fold:
    """One pass over the due events, in order, with the ones waiting for another."""

    def __init__(self, state: CircleState, creates: dict[str, _Parsed]) -> None:
        self.state = state
        self.creates = creates
        self.waiting: dict[_Key, list[_Parsed]] = {}
        self.woken: deque[_Parsed] = deque()

    def run(self, due: list[_Parsed]) -> None:
        for p in due:
            self._try(p)
            while self.woken:  # what an event gave applies right after it
                self._try(self.woken.popleft())
        for key, waiters in self.waiting.items():
            for p in waiters:
                _refuse(self.state, p.ev, _WAIT_REASONS[key[0]])

    def _try(self, p: _Parsed) -> None:
        outcome = self._apply(p)
        if isinstance(outcome, tuple):
            self.waiting.setdefault(outcome, []).append(p)
        elif outcome is not None:
            _refuse(self.state, p.ev, outcome)

    def _wake(self, key: _Key) -> None:
        self.woken.extend(sorted(self.waiting.pop(key, ()), key=_rank))

    def _apply(self, p: _Parsed) -> str | _Key | None:
        """Apply one event: None, why it is refused, or what it waits for."""
        state, author, body = self.state, p.ev.author, p.body
        if p.kind == "circle_name":
            if state.owner and p.ev.signer is None:
                return "unsigned"
            if state.owner and not state.moderates(author):
                return "not_allowed"
            state.name = body["name"]
            return None
        if p.kind == "rename":
            state.names[author] = body["display_name"]
            return None
        cid = p.cid
        if p.kind == "create":
            if self.creates[cid] is not p:
                return "exists"
            mode = body.get("access_mode", "public")
            digest = body.get("key_hash", "") if mode == "key" else ""
            private = mode != "public" and body.get("private") is True
            state.channels[cid] = Channel(
                cid, mode, digest, author, p.ev.created_ts, {author}, private=private
            )
            self._wake(("channel", cid, ""))
            return None
        channel = state.channels.get(cid)
        if channel is None:
            return ("channel", cid, "")
        if p.kind == "join":
            if channel.key_hash and body.get("key_hash", channel.key_hash) != channel.key_hash:
                return "wrong_key"
            if channel.access_mode == "invite" and author not in channel.approved:
                return ("approved", cid, author)
            channel.members.add(author)
            return None
        if p.kind == "request":
            if channel.access_mode != "invite":
                return "not_invite"
            channel.requests.add(author)
            return None
        if p.kind == "approve":
            if p.ev.signer is None:
                return "unsigned"
            if author != channel.creator and not state.moderates(author):
                return "not_allowed"
            target = body["target_node_id"]
            channel.approved.add(target)
            channel.members.add(target)
            channel.requests.discard(target)
            self._wake(("approved", cid, target))
            return None
        channel.members.discard(author)  # leave
        return None
