"""What a node can be asked to do: the store's operations, one handler each.

The store actor serves these over its RPC endpoint; a command run while
the node is stopped calls the same handlers on the database directly, so
both paths behave the same. Handlers validate their whole request before
writing anything: a refused request leaves no trace.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from felund import metrics
from felund.config import relay_url_problem
from felund.errors import AuthError, InvalidMessage, InviteError, RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    DEFAULT_CHANNEL,
    ERR_BAD_INVITE,
    ERR_BAD_REQUEST,
    ERR_FORBIDDEN,
    ERR_UNKNOWN_CIRCLE,
    ERR_UNKNOWN_OP,
    MAX_ANCHOR_PAGE,
    MAX_BLOCKS,
    MAX_CURSOR_KEY,
    MAX_PEERS_PAGE,
    MAX_PEERS_PER_CIRCLE,
    MAX_POST_BATCH,
    MAX_SNAPSHOT_PAGE,
    OP_ANCHOR_PAGE,
    OP_APPEND,
    OP_BLOCKS,
    OP_CALLS,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLE_KEYS,
    OP_CIRCLE_LEAVE,
    OP_CIRCLES,
    OP_CONTROL,
    OP_CURSOR,
    OP_FETCH,
    OP_INBOX,
    OP_INVITE,
    OP_MEMBER_REMOVE,
    OP_PEERS,
    OP_PEERS_ADD,
    OP_PEERS_FORGET,
    OP_POST,
    OP_SETTINGS,
    OP_SNAPSHOT,
    OP_STATS,
    OP_WHO,
    PUSH_FRESH_S,
)
from felund.store import blocks as block_list
from felund.store import channelkeys, epochs
from felund.store.database import Circle, Database, Row
from felund.trust import channels as chan
from felund.trust import signing
from felund.trust.identity import IdentityKey, b64, fingerprint, is_derived_form
from felund.trust.owner import new_owned_secret
from felund.trust.wrap import (
    ROOT_KEY_ID,
    SECRET_LEN,
    epoch_key_id,
    parse_key_id,
    unwrap,
    wrap,
    wrap_context,
)
from felund.v1 import calls, chatmodel, events, ids
from felund.v1.invite import decode_invite, encode_invite, is_tcp_peer
from felund.v1.wire import (
    Draft,
    Opened,
    WireMessage,
    check_draft,
    compose_messages,
    open_message,
    parse_message,
    to_wire,
)

ORIGINS = ("local", "gossip", "relay", "import")
MAX_EPOCH_ROUNDS = 256  # secrets gained by one follow (each round gains one or stops)
CANNOT_FOLLOW = (
    "this circle has a new key since a member was removed, and this node writes "
    "unencrypted (node.encrypt_messages is off): turn encryption on to write in it"
)
NO_FIXED_PORT = (
    "this node has no fixed gossip port (gossip.port is 0: the kernel picks one at each "
    "start), so an invite code cannot name it: start the node (`felund run`) and ask again, "
    "or set gossip.port (FELUND_GOSSIP_PORT)"
)
# Operations that may write. While the database cannot even be opened (a full
# disk) the store refuses these at once and leaves reads unanswered: readers
# wait for the store as they do across its restarts.
WRITE_OPS = frozenset(
    {
        OP_POST,
        OP_APPEND,
        OP_CONTROL,
        OP_CIRCLE_CREATE,
        OP_CIRCLE_JOIN,
        OP_CIRCLE_LEAVE,
        OP_PEERS_ADD,
        OP_CURSOR,
        OP_SETTINGS,
        OP_BLOCKS,
        OP_MEMBER_REMOVE,
    }
)
_MAX_NAME = 64
_MAX_CODE = 4096
_MAX_PEERS_ADD = 256
_NAME_SETTING = "display_name"
_REJECTED_SETTING = "control_rejected"
_CURSOR_SETTING = "cursor"
_ANNOUNCED_SETTING = "key_announced"  # per circle: this node's KEY_ANNOUNCE is written
# "1": written without xpk (before epochs), so written once more; "2": with xpk.
_ANNOUNCED_WITH_XPK = "2"
_RELAY_URL_SETTING = "relay_url"  # absent: the configured relay.url; "": no relay
_REFUSALS = {
    "exists": "that channel exists already",
    "no_channel": "there is no such channel; create it first",
    "wrong_key": "wrong key for that channel",
    "not_approved": "that channel is by invitation: ask with `channel request`, then wait",
    "not_invite": "that channel is not by invitation; join it",
    "general": "#general cannot be left",
    "bad_channel": chatmodel.CHANNEL_RULE,
    "bad_name": f"names are 1 to {chatmodel.MAX_NAME} printable characters",
    "needs_key": "that channel has a key: join it with the key",
    "bad_target": "that node id is not well-formed (24 or 32 lowercase hex): no one to approve",
    "future": "dated too far ahead of this node's clock: try again in a few seconds",
    "owner_role": "the circle's owner stays its owner: it is made neither moderator nor member",
    "unsigned": "this node writes unsigned (its id cannot be signed for): it has no role to use",
}
# Why our writer refuses a call event of ours (what the call fold would refuse).
_CALL_REFUSALS = {
    "not_host": "only the call's host can do that",
    "no_session": "there is no such call (it ended, or never started)",
    "ended": "that call has ended",
    "exists": "that call exists already",
    "already": "already in that call",
    "full": "that call is full",
    "bad_target": "that node id is not well-formed (24 or 32 lowercase hex): no one to revoke",
}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the handlers need to know about this node."""

    node_id: str
    display_name: str
    encrypt: bool
    invite_peer: str  # host:port that other members should contact
    relay_url: str = ""  # the configured relay.url: used until a runtime setting replaces it
    key: IdentityKey | None = None  # signs what this node writes; None: it writes unsigned


@dataclass(slots=True)
class Outcome:
    """A handler's answer, and what it changed (for the store's events)."""

    reply: Any
    stored: list[dict[str, Any]] = field(default_factory=list)
    circles_changed: bool = False
    settings_changed: bool = False  # display name or relay URL: sys.settings.changed


class Ops:
    """The operations, bound to one database and one node identity."""

    def __init__(self, db: Database, node: NodeInfo) -> None:
        self.db = db
        self.node = node
        self._signer_pk = node.key.public if node.key is not None else None
        self._states: dict[str, chatmodel.CircleState] = {}
        self._calls: dict[str, calls.Calls] = {}
        # (circle, epoch id) whose wrap to this node was opened: not again while it is held.
        self._unwrapped: set[tuple[str, str]] = set()
        # Each circle's newest key id as circles_changed last told gossip and relay-sync
        # (absent: not since this process started, so told at its next follow).
        self._newest_told: dict[str, str | None] = {}
        # id(raw) -> (raw, its parse): peers' messages parsed ahead (``parse_ahead``). The
        # raw map is held with its parse, so its id cannot name another object meanwhile.
        self._ahead: dict[int, tuple[object, WireMessage | InvalidMessage]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], Outcome]] = {
            OP_POST: self.post,
            OP_APPEND: self.append,
            OP_SNAPSHOT: self.snapshot,
            OP_INBOX: self.inbox,
            OP_CIRCLES: self.circles,
            OP_CIRCLE_CREATE: self.circle_create,
            OP_CIRCLE_JOIN: self.circle_join,
            OP_INVITE: self.invite,
            OP_PEERS: self.peers,
            OP_STATS: self.stats,
            OP_PEERS_ADD: self.peers_add,
            OP_PEERS_FORGET: self.peers_forget,
            OP_CIRCLE_KEYS: self.circle_keys,
            OP_FETCH: self.fetch,
            OP_CONTROL: self.control,
            OP_CHANNELS: self.channels,
            OP_WHO: self.who,
            OP_CALLS: self.calls,
            OP_CIRCLE_LEAVE: self.circle_leave,
            OP_CURSOR: self.cursor,
            OP_SETTINGS: self.settings,
            OP_ANCHOR_PAGE: self.anchor_page,
            OP_BLOCKS: self.blocks,
            OP_MEMBER_REMOVE: self.member_remove,
        }

    def handle(self, op: str, body: Any) -> Outcome:
        """Run one operation; RPCError if the request is refused."""
        handler = self._handlers.get(op)
        if handler is None:
            raise RPCError(ERR_UNKNOWN_OP, f"unknown operation {op[:64]!r}")
        if not isinstance(body, dict):
            raise RPCError(ERR_BAD_REQUEST, "request body must be a map")
        out = handler(body)
        touched = sorted({r["circle_id"] for r in out.stored if r["channel_id"] == CONTROL_CHANNEL})
        for circle_id in touched:
            self._forget(circle_id)
        for circle_id in touched:
            self._follow(circle_id, out)
            self.calls_of(circle_id)  # refused call events are counted as they arrive
        return out

    # --- epochs -------------------------------------------------------------
    def follow_all(self) -> Outcome:
        """At the store's start: in every circle, take what secrets the events give, open
        what waited for them, and finish or start a re-key that is ours to write (a
        remover killed between its EPOCH_EVT and its EPOCH_LINK finishes here)."""
        out = Outcome(reply=None)
        for circle in self.db.circles():
            self._follow(circle.circle_id, out)
        return out

    def _follow(self, circle_id: str, out: Outcome) -> None:
        """After a circle's control events changed: keep the epoch secrets they give this
        node (its wraps, EPOCH_LINKs), open the rows sealed under them, then write what
        re-key is due here; ``out`` gains the rows, and circles_changed if the newest moved."""
        circle = self.db.circle(circle_id)
        if circle is None:
            return
        # Each round holds one more epoch or stops: bounded by the epochs there are.
        for _ in range(MAX_EPOCH_ROUNDS):
            gained = self._unwrap(circle_id) + self._walk_links(circle_id)
            parts = self._unwrap_channels(circle_id)
            if not gained and not parts:
                break
            for key_id, channel_id in self.keys(circle_id).opened_by(gained, parts):
                out.stored += self._reopen(circle_id, key_id, channel_id)
            self._forget(circle_id)
        # Refused by this node's own writer (a moderator and an uncovered moderator): the
        # owner covers it; the request that brought the events must not fail for it.
        with contextlib.suppress(RPCError):
            self._rekey_due(circle, out)
        # Against what gossip and relay-sync were last told, not the keys before this call:
        # those are derived from the events just stored already, and an event that moves
        # the chain alone (a demotion undoing an epoch) gains no secret here.
        newest = self.keys(circle_id).newest
        told = newest.key_id if newest is not None else None
        if self._newest_told.get(circle_id, _UNTOLD) != told:
            out.circles_changed = True  # they move to the newest
            self._newest_told[circle_id] = told

    def _unwrap(self, circle_id: str) -> list[epochs.Held]:
        """The secrets of valid epochs wrapped to this node and not held yet, now kept."""
        key, me = self.node.key, self.node.node_id
        if key is None:
            return []
        state = self.state(circle_id)
        held = self.keys(circle_id, state).held
        gained = []
        for e in state.epoch_events.values():
            have = held.get(epoch_key_id(e.n, e.epoch_id))
            if me not in e.wraps or (have and (circle_id, e.epoch_id) in self._unwrapped):
                continue
            secret = unwrap(key.x_private, e.wraps[me], wrap_context(circle_id, e.epoch_id, me))
            if secret is None or len(secret) != SECRET_LEN:
                continue
            self._unwrapped.add((circle_id, e.epoch_id))
            if have is None or have.secret != secret.hex():
                # A wrap in a valid (signed) epoch beats a link's candidate kept before it.
                self.db.add_epoch_key(circle_id, e.epoch_id, e.n, secret.hex(), replace=True)
                gained.append(epochs.Held(e.n, e.epoch_id, secret.hex()))
        return gained

    def _unwrap_channels(self, circle_id: str) -> list[tuple[str, str]]:
        """The (channel, part) of private channels' epochs wrapped to this node and not held
        yet, their secrets now kept."""
        key, me = self.node.key, self.node.node_id
        if key is None:
            return []
        state = self.state(circle_id)
        held = self.keys(circle_id, state).parts
        gained = []
        for k in state.channel_keys.values():
            part = chan.invite_part(k.n, k.epoch_id)
            if me not in k.wraps or (k.channel_id, part) in held:
                continue
            context = chan.channel_wrap_context(circle_id, k.channel_id, k.epoch_id, me)
            secret = unwrap(key.x_private, k.wraps[me], context)
            if secret is not None and len(secret) == SECRET_LEN:
                self.db.add_channel_key(circle_id, k.channel_id, part, secret.hex())
                gained.append((k.channel_id, part))
        return gained

    def _walk_links(self, circle_id: str) -> list[epochs.Held]:
        """Older epochs' secrets from the EPOCH_LINKs read: each candidate kept only if it
        opens the EPOCH_EVT it names (so a bogus one costs nothing)."""
        held = self.keys(circle_id).held
        gained: list[epochs.Held] = []
        for ev in self._control_events(circle_id):
            link = epochs.link_of(ev.text)
            if link is None:
                continue
            epoch_id, prev = link
            sealed = self.db.sealed_row(epoch_id)
            if sealed is None or sealed[1] in held or sealed[2] != CONTROL_CHANNEL:
                continue
            wire, key, _ = sealed
            parsed = parse_key_id(key)
            if parsed is None or (parsed[0] == 0 and ids.circle_id(prev) != circle_id):
                continue
            try:
                open_message(prev, circle_id, parse_message(wire))
            except (InvalidMessage, AuthError):
                continue
            n, parent_id = parsed
            if n == 0:
                self.db.set_root_secret(circle_id, prev)
            else:
                self.db.add_epoch_key(circle_id, parent_id, n, prev)
            found = epochs.Held(n, parent_id, prev)
            held = {**held, found.key_id: found}
            gained.append(found)
        return gained

    def _reopen(
        self, circle_id: str, key_id: str, channel_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Open the rows sealed under a key just held (of ``channel_id`` only, for a private
        channel's): each judged as if it came now, stored with a new store_seq (readers
        see it then), or dropped and counted."""
        stored: list[dict[str, Any]] = []
        keys = self.keys(circle_id)
        while True:
            page = self.db.sealed_wires(circle_id, key_id, MAX_POST_BATCH, channel_id)
            if not page:
                return stored
            for wire, origin in page:
                try:
                    row = self._open(keys, parse_message(wire), True, {})
                    if row.sealed_key is not None:
                        raise AuthError("still sealed")  # cannot be: its key is held
                except InvalidMessage as exc:
                    self._reject(exc.kind)
                    self.db.drop_sealed(wire["msg_id"])
                    continue
                except AuthError:
                    self._reject("auth")
                    self.db.drop_sealed(wire["msg_id"])
                    continue
                stored.append(_stored_row(self.db.open_sealed(row), row, origin))

    def _rekey_due(self, circle: Circle, out: Outcome) -> None:
        """Write what re-key is this node's to write: the EPOCH_LINK of an epoch of ours
        that lacks it, and, as owner or moderator holding the newest secret, the next
        epoch for removals a losing branch made and the winner does not cover."""
        cid, me = circle.circle_id, self.node.node_id
        state = self.state(cid)
        if me in state.removed or self.node.key is None:
            return
        keys = self.keys(cid, state)
        linked = self._links_of(cid, me)
        for e in state.epoch_events.values():
            if e.author != me or e.epoch_id in linked:
                continue
            mine = keys.held.get(epoch_key_id(e.n, e.epoch_id))
            parent = keys.held.get(epoch_key_id(e.n - 1, e.parent))
            if mine and parent:
                out.stored += self._link(circle, mine, parent).stored
        tip = state.epochs[-1].epoch_id if state.epochs else ""
        if (
            state.uncovered
            and state.moderates(me)
            and keys.newest is not None
            and keys.newest.epoch_id == tip
        ):
            out.stored += self._issue(circle).stored
        keys, state = self.keys(cid), self.state(cid)  # after what was written above
        tip = state.epochs[-1].epoch_id if state.epochs else ""
        if keys.newest is None or keys.newest.epoch_id != tip:
            return  # a channel epoch is written under the circle's newest
        for channel_id in channelkeys.rekeys_due(state, me):
            out.stored += self._channel_epoch(circle, channel_id).stored

    def _channel_epoch(self, circle: Circle, channel_id: str) -> Outcome:
        """Write a private invite channel's next epoch: a fresh secret wrapped to each of
        its members who can unwrap it (this node too), kept here as written."""
        cid, me = circle.circle_id, self.node.node_id
        state = self.state(cid)
        channel = state.channels[channel_id]
        tip = channel.keys[-1] if channel.keys else None
        now = max(int(time.time()), self.db.newest_local(cid, CONTROL_CHANNEL) + 1)
        event_id = ids.new_msg_id(me, now)
        secret = os.urandom(SECRET_LEN)
        wraps = {
            node_id: wrap(
                secret, xpk, chan.channel_wrap_context(cid, channel_id, event_id, node_id)
            )
            for node_id, xpk in channelkeys.recipients(state, channel).items()
        }
        n = tip.n + 1 if tip else 1
        event = events.channel_key_event(channel_id, n, tip.epoch_id if tip else "", wraps)
        out = self._control(circle, event, event_id, now)
        self.db.add_channel_key(cid, channel_id, chan.invite_part(n, event_id), secret.hex())
        self._forget(cid)
        return out

    def _links_of(self, circle_id: str, author: str) -> set[str]:
        """The epoch ids ``author``'s EPOCH_LINKs in a circle name."""
        return {
            link[0]
            for ev in self._control_events(circle_id)
            if ev.author == author and (link := epochs.link_of(ev.text)) is not None
        }

    def _issue(self, circle: Circle, removing: str = "") -> Outcome:
        """Start the next epoch: removed = the chain's, the uncovered and ``removing``; its
        secret wrapped to every other member with an X25519 key (and to this node); the
        EPOCH_EVT sealed under the newest epoch, then its EPOCH_LINK under the new one."""
        cid, me = circle.circle_id, self.node.node_id
        state = self.state(cid)
        keys = self.keys(cid, state)
        parent = keys.newest
        tip = state.epochs[-1].epoch_id if state.epochs else ""
        if parent is None or parent.epoch_id != tip:
            raise RPCError(ERR_FORBIDDEN, epochs.NOT_CAUGHT_UP)
        removed = chatmodel.next_removed(state, removing)
        now = max(int(time.time()), self.db.newest_local(cid, CONTROL_CHANNEL) + 1)
        epoch_id = ids.new_msg_id(me, now)
        secret = os.urandom(SECRET_LEN)
        wraps: dict[str, str] = {}
        for node_id, xpk in sorted(state.xkeys.items()):
            if node_id in removed:
                continue
            try:
                wraps[node_id] = wrap(secret, xpk, wrap_context(cid, epoch_id, node_id))
            except ValueError:  # a low-order key: its announcer shut itself out, not us
                continue
        event = events.epoch_event(parent.n + 1, parent.epoch_id, removed, wraps)
        out = self._control(circle, event, epoch_id, now)  # sealed under the parent
        new = epochs.Held(parent.n + 1, epoch_id, secret.hex())
        self.db.add_epoch_key(cid, epoch_id, new.n, new.secret)
        out.stored += self._link(circle, new, parent).stored
        out.circles_changed = True
        return out

    def _link(self, circle: Circle, new: epochs.Held, parent: epochs.Held) -> Outcome:
        """The EPOCH_LINK of ``new``: ``parent``'s secret, sealed under ``new``."""
        cid, me = circle.circle_id, self.node.node_id
        now = max(int(time.time()), self.db.newest_local(cid, CONTROL_CHANNEL) + 1)
        text = chatmodel.event_text(events.epoch_link_event(new.epoch_id, parent.secret))
        out = self._write(circle, CONTROL_CHANNEL, [(ids.new_msg_id(me, now), now, text)], new)
        self._forget(cid)
        return out

    # --- circles, channels, people ------------------------------------------
    def state(self, circle_id: str) -> chatmodel.CircleState:
        """A circle's state as its control events say, derived once and kept
        (until a control event arrives, or one held as dated ahead falls due)."""
        now = int(time.time())
        state = self._states.get(circle_id)
        if state is None or (state.due_at is not None and now >= state.due_at):
            # The root secret proves the owner; a circle left, or joined by an epoch's code: none.
            circle = self.db.circle(circle_id)
            secret = epochs.root_of(circle_id, circle.secret) if circle else ""
            state = chatmodel.derive(self._control_events(circle_id), circle_id, now, secret)
            self._states[circle_id] = state
            self._count_rejections(circle_id, state.rejected)
        return state

    def keys(self, circle_id: str, state: chatmodel.CircleState | None = None) -> epochs.Keys:
        """The epoch secrets held for a circle, the newest winner (by ``state``'s chain,
        derived when not given) among them."""
        circle = self.db.circle(circle_id)
        rows = self.db.epoch_keys(circle_id)
        chain: list[str] = []
        if rows:  # only then can the chain name one held
            if state is None:
                state = self.state(circle_id)
            chain = [e.epoch_id for e in state.epochs]
        return epochs.keys_of(
            circle_id,
            circle.secret if circle else "",
            rows,
            chain,
            self.db.channel_keys(circle_id),
        )

    def calls_of(self, circle_id: str) -> calls.Calls:
        """A circle's live calls as its control events say, derived once and kept
        (until a control event arrives, one held falls due, or a call runs idle)."""
        now = int(time.time())
        found = self._calls.get(circle_id)
        if found is None or (found.due_at is not None and now >= found.due_at):
            blocked = block_list.blocked(self.db)
            found = calls.derive_calls(self._control_events(circle_id), circle_id, now, blocked)
            self._calls[circle_id] = found
            self._count_rejections(circle_id, found.rejected, "call")
        return found

    def _control_events(self, circle_id: str) -> list[chatmodel.ControlEvent]:
        rows = self.db.control_events(circle_id, CONTROL_CHANNEL)
        return [chatmodel.ControlEvent(*row) for row in rows]

    def _count_rejections(
        self, circle_id: str, rejected: collections.Counter[str], source: str = "control"
    ) -> None:
        # Once per event, across re-derivations and restarts: what was counted
        # is kept in the database beside the events (per fold: channels, calls).
        key = f"{_REJECTED_SETTING}:{circle_id}"
        if source != "control":
            key = f"{_REJECTED_SETTING}:{source}:{circle_id}"
        seen = collections.Counter(json.loads(self.db.setting(key) or "{}"))
        fresh = rejected - seen
        for reason, n in fresh.items():
            metrics.BAD_INPUT.labels(source, reason).inc(n)
        if fresh:
            self.db.set_setting(key, json.dumps(dict(rejected | seen)))

    def _forget(self, circle_id: str) -> None:
        self._states.pop(circle_id, None)
        self._calls.pop(circle_id, None)

    def forget_derived(self) -> None:
        """Drop every derived state: a rolled-back transaction may have fed it."""
        self._states.clear()
        self._calls.clear()
        self._unwrapped.clear()
        self._newest_told.clear()

    def display_name(self) -> str:
        """This node's display name: the latest rename, else the configured one."""
        return self.db.setting(_NAME_SETTING) or self.node.display_name

    def relay_url(self) -> str:
        """The relay this node uses: the runtime setting if set, else the configured one."""
        stored = self.db.setting(_RELAY_URL_SETTING)
        return self.node.relay_url if stored is None else stored

    def current_settings(self) -> dict[str, str]:
        """The effective runtime settings, as ``store.settings`` answers and events carry them."""
        return {"display_name": self.display_name(), "relay_url": self.relay_url()}

    def settings(self, body: dict[str, Any]) -> Outcome:
        """The node's runtime settings; with ``relay_url``, set it first ("" turns the relay off).

        The display name is not set here: it changes by a rename control event,
        so that every circle learns it.
        """
        if "display_name" in body:
            raise RPCError(ERR_BAD_REQUEST, "the display name changes by a rename (felund rename)")
        unknown = sorted(str(k)[:32] for k in body if k != "relay_url")
        if unknown:
            raise RPCError(ERR_BAD_REQUEST, f"unknown settings: {', '.join(unknown)}")
        url = _get(body, "relay_url", str, None)
        changed = False
        if url is not None:
            problem = relay_url_problem(url)
            if problem:
                raise RPCError(ERR_BAD_REQUEST, problem)
            changed = url != self.relay_url()
            # Stored even when equal to the configured value: the setting wins from now on.
            self.db.set_setting(_RELAY_URL_SETTING, url)
        return Outcome(self.current_settings(), settings_changed=changed)

    def channels(self, body: dict[str, Any]) -> Outcome:
        """The channels of a circle, with their access and members."""
        circle = self._circle(body)
        state = self.state(circle.circle_id)
        me = self.node.node_id
        return Outcome(
            {
                "name": state.name or circle.name,
                "channels": [
                    {
                        "channel_id": c.channel_id,
                        "access_mode": c.access_mode,
                        "creator": c.creator,
                        "members": sorted(c.members),
                        "requests": sorted(c.requests),
                        "member": c.channel_id == DEFAULT_CHANNEL or me in c.members,
                        "private": c.private,
                        "can_post": state.can_post(c.channel_id, me),
                    }
                    for c in sorted(state.channels.values(), key=lambda c: c.channel_id)
                ],
            }
        )

    def who(self, body: dict[str, Any]) -> Outcome:
        """The people of a circle (or of one channel), by latest name, with last seen."""
        circle = self._circle(body)
        state = self.state(circle.circle_id)
        channel_id = _get(body, "channel_id", str, "") or None
        people = self._people(circle.circle_id, state)
        if channel_id is not None:
            channel = _existing_channel(state, channel_id)
            if channel_id != DEFAULT_CHANNEL:
                people = [p for p in people if p["node_id"] in channel.members]
        return Outcome({"people": sorted(people, key=lambda p: -p["last_seen"])})

    def _people(self, circle_id: str, state: chatmodel.CircleState) -> list[dict[str, Any]]:
        """Everyone who wrote in a circle (control events too), by current name, with
        their role and key (the one their messages verified with; verified: one was),
        whether they were removed, and whether they can follow a re-key."""
        keys = self.db.signers(circle_id)
        authors = self.db.authors(circle_id)
        stuck = set(chatmodel.cannot_follow(state, [a[0] for a in authors]))
        return [
            {
                "node_id": node_id,
                "display_name": state.names.get(node_id, name),
                "last_seen": last_seen,
                "role": state.role_of(node_id),
                "fingerprint": fingerprint(keys[node_id]) if node_id in keys else "",
                "verified": node_id in keys,
                "removed": node_id in state.removed,
                "can_follow": node_id not in stuck,  # else it needs a new code after a re-key
            }
            for node_id, name, last_seen in authors
        ]

    def calls(self, body: dict[str, Any]) -> Outcome:
        """The call of each channel of a circle that has one (addendum §1), the names of
        the people in them, and the relay whose page a browser joins them from."""
        circle = self._circle(body)
        cid = circle.circle_id
        live = sorted(self.calls_of(cid).by_channel().values(), key=lambda c: c.channel_id)
        people = self._people(cid, self.state(cid)) if live else []
        named = {p["node_id"]: p["display_name"] for p in people}
        in_calls = {n for c in live for n in (c.host, *c.participants, *c.viewers)}
        return Outcome(
            {
                "calls": [c.summary() for c in live],
                "names": {n: named.get(n, "") for n in sorted(in_calls)},
                "relay_url": self.relay_url(),
            }
        )

    def member_remove(self, body: dict[str, Any]) -> Outcome:
        """Remove a member (``node``: a node id, its start or a name): the next epoch, whose
        secret every other member gets and it does not. With ``dry_run``, only what it
        would do: whom, and the members who cannot follow (they need a new invite code)."""
        circle = self._circle(body)
        cid, me = circle.circle_id, self.node.node_id
        state = self.state(cid)
        target = self._person(cid, state, _get(body, "node", str))
        parent = state.epochs[-1] if state.epochs else None
        n = (parent.n if parent else 0) + 1
        removed = chatmodel.next_removed(state, target)
        trial = events.epoch_event(n, parent.epoch_id if parent else "", removed, {})
        problem = chatmodel.writer_problem(state, trial, me)
        if problem:
            raise RPCError(ERR_FORBIDDEN, self._refusal(cid, state, trial, problem))
        people = self._people(cid, state)
        reply = {
            "node_id": target,
            "display_name": next((p["display_name"] for p in people if p["node_id"] == target), ""),
            "epoch": n,
            "cannot_follow": [
                {"node_id": p["node_id"], "display_name": p["display_name"]}
                for p in people
                if not p["can_follow"] and p["node_id"] != target
            ],
            "removed": False,
        }
        if _get(body, "dry_run", bool, False):
            return Outcome(reply)
        out = self._issue(circle, target)
        reply["removed"] = True
        out.reply = reply
        return out

    def circle_leave(self, body: dict[str, Any]) -> Outcome:
        """Stop being in a circle: forget its secret and peers (and history if asked)."""
        circle = self._circle(body)
        delete = _get(body, "delete_history", bool, False)
        self.db.remove_circle(circle.circle_id, delete)
        self._forget(circle.circle_id)
        return Outcome(
            {"circle_id": circle.circle_id, "history_deleted": delete}, circles_changed=True
        )

    # --- writes -------------------------------------------------------------
    def post(self, body: dict[str, Any]) -> Outcome:
        """Compose, authenticate and store messages written on this node."""
        circle = self._circle(body)
        channel_id = _get(body, "channel_id", str, DEFAULT_CHANNEL)
        if not chatmodel.is_channel_name(channel_id):
            raise RPCError(ERR_BAD_REQUEST, chatmodel.CHANNEL_RULE)
        state = self.state(circle.circle_id)
        if not state.can_post(channel_id, self.node.node_id):
            channel = state.channels.get(channel_id)
            if channel is None:
                raise RPCError(
                    ERR_FORBIDDEN,
                    f"there is no channel #{channel_id} in this circle; create it first",
                )
            article = "an" if channel.access_mode[:1] in "aeiou" else "a"
            raise RPCError(
                ERR_FORBIDDEN,
                f"you may not post in #{channel_id}: it is {article} "
                f"{channel.access_mode} channel you have not joined",
            )
        items = _get(body, "msgs", list)
        if not 0 < len(items) <= MAX_POST_BATCH:
            raise RPCError(ERR_BAD_REQUEST, f"msgs must hold 1 to {MAX_POST_BATCH} messages")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RPCError(ERR_BAD_REQUEST, f"msgs[{i}] must be a map")
            if isinstance(item.get("text"), str) and not item["text"].strip():
                # Every writer of ours skips blank lines (send --stdin, the ui): one rule here.
                raise RPCError(ERR_BAD_REQUEST, f"msgs[{i}]: the message is empty")
        return self._write(
            circle,
            channel_id,
            [
                (_get(m, "msg_id", str), _get(m, "created_ts", int), _get(m, "text", str))
                for m in items
            ],
        )

    def control(self, body: dict[str, Any]) -> Outcome:
        """Write a control event of this node, if the circle's rules allow it."""
        circle = self._circle(body)
        event = _get(body, "event", dict)
        msg_id, created_ts = _get(body, "msg_id", str), _get(body, "created_ts", int)
        typed = _get(body, "channel_key", str, "")
        problem = channelkeys.typed_key_problem(circle.circle_id, event, typed)
        if problem:
            raise RPCError(ERR_BAD_REQUEST, problem)
        if self.db.seq_of(msg_id) is not None:
            # A retried request whose first try was stored: answer it again, as
            # stored, rather than judge the event against its own effect.
            text = chatmodel.event_text(event)
            out = self._write(circle, CONTROL_CHANNEL, [(msg_id, created_ts, text)])
        else:
            out = self._control(circle, event, msg_id, created_ts)
        if typed:
            out.stored += self._keep_typed_key(circle.circle_id, event["channel_id"], typed)
        return out

    def _keep_typed_key(self, circle_id: str, channel_id: str, typed: str) -> list[dict[str, Any]]:
        """Keep the key this node created or joined a key channel with (never logged), and
        open what its messages waited for (the history of the circle epochs held)."""
        if not self.db.add_channel_key(circle_id, channel_id, chan.KEY_PART, typed):
            return []
        stored: list[dict[str, Any]] = []
        for key_id, cid in self.keys(circle_id).opened_by([], [(channel_id, chan.KEY_PART)]):
            stored += self._reopen(circle_id, key_id, cid)
        return stored

    def _control(
        self, circle: Circle, event: dict[str, Any], msg_id: str, created_ts: int
    ) -> Outcome:
        """Date, check and write one control event of this node."""
        cid, me = circle.circle_id, self.node.node_id
        state = self.state(cid)
        if event.get("op") == "approve" or event.get("t") == "ROLE_EVT":
            target = event.get("target_node_id")
            if not isinstance(target, str):
                raise RPCError(ERR_BAD_REQUEST, "target_node_id is required: whom it is about")
            event = {**event, "target_node_id": self._person(cid, state, target)}
        # After our own last event of the circle, so that ours keep their order
        # (ties break by hash), but never after a peer's: a date it chose must
        # not push ours past the horizon the fold holds events beyond.
        created_ts = max(created_ts, self.db.newest_local(cid, CONTROL_CHANNEL) + 1)
        if event.get("op") == "leave":
            # Except the approve or join a leave undoes (the fold applies events by date):
            # an approver's date may run a few seconds ahead of ours.
            created_ts = max(created_ts, self._admitted_at(cid, event.get("channel_id")) + 1)
        event = events.dated(event, created_ts)
        text = chatmodel.event_text(event)
        problem = chatmodel.writer_problem(state, event, me)
        if not problem:
            mine = chatmodel.ControlEvent(msg_id, me, created_ts, text, self._writes_as())
            after = [*self._control_events(cid), mine]
            trial = chatmodel.derive(after, cid, int(time.time()), circle.secret)
            problem = trial.refused.get(msg_id)
            if not problem and event.get("t") == "CALL_EVT":
                blocked = block_list.blocked(self.db)
                trial_calls = calls.derive_calls(after, cid, int(time.time()), blocked)
                problem = trial_calls.refused.get(msg_id)
                if problem:
                    why = _CALL_REFUSALS.get(problem, f"refused: {problem}")
                    raise RPCError(ERR_FORBIDDEN, why)
        if problem:
            raise RPCError(ERR_FORBIDDEN, self._refusal(cid, state, event, problem))
        out = self._write(circle, CONTROL_CHANNEL, [(msg_id, created_ts, text)])
        self._forget(cid)  # what follows in this request sees it
        if event.get("op") == "rename":
            out.settings_changed = event["display_name"] != self.display_name()
            self.db.set_setting(_NAME_SETTING, event["display_name"])
        if event.get("t") == "CIRCLE_NAME_EVT":
            out.circles_changed = True
        if event.get("t") == "ROLE_EVT" and event["op"] == "revoke":
            for kept in events.kept_by_owner(state, trial, cid, me):
                more = self._control(circle, kept, ids.new_msg_id(me, created_ts), created_ts)
                out.stored += more.stored
                out.circles_changed |= more.circles_changed
        return out

    def _admitted_at(self, circle_id: str, channel_id: object) -> int:
        """The date of the newest due create, join or approve that made this node a member
        of ``channel_id`` (0 if none)."""
        me, horizon = self.node.node_id, int(time.time()) + chatmodel.MAX_SKEW_S
        newest = 0
        for ev in self._control_events(circle_id):
            if ev.created_ts > horizon or '"CHANNEL_EVT"' not in ev.text:
                continue
            try:
                body = json.loads(ev.text)
            except (ValueError, RecursionError):
                continue
            if not isinstance(body, dict) or body.get("channel_id") != channel_id:
                continue
            mine = ev.author == me and body.get("op") in ("create", "join")
            if mine or (body.get("op") == "approve" and body.get("target_node_id") == me):
                newest = max(newest, ev.created_ts)
        return newest

    def _refusal(
        self, circle_id: str, state: chatmodel.CircleState, event: dict[str, Any], problem: str
    ) -> str:
        """Why our writer refuses an event, in words; for a role, who can do it."""
        if problem == "not_allowed":
            people = self._people(circle_id, state)
            return chatmodel.who_can(
                state, event, {p["node_id"]: p["display_name"] for p in people}
            )
        return _REFUSALS.get(problem) or chatmodel.REMOVAL_REFUSALS.get(
            problem, f"refused: {problem}"
        )

    def _writes_as(self) -> bytes | None:
        """The key what this node writes is signed with (None: it writes unsigned)."""
        key = self.node.key
        return key.public if key is not None and self.node.encrypt else None

    def _person(self, circle_id: str, state: chatmodel.CircleState, who: str) -> str:
        """The node ``who`` names in a circle (events.resolve_person), or a refusal."""
        people = [(p["node_id"], p["display_name"]) for p in self._people(circle_id, state)]
        try:
            return events.resolve_person(people, who)
        except ValueError as exc:
            raise RPCError(ERR_BAD_REQUEST, str(exc)) from None

    def _write(
        self,
        circle: Circle,
        channel_id: str,
        items: list[tuple[str, int, str]],
        under: epochs.Held | None = None,
    ) -> Outcome:
        """Compose, authenticate and store (msg_id, created_ts, text) of this node, sealed
        under the newest epoch held (or ``under``: an EPOCH_LINK under the epoch it links)."""
        cid = circle.circle_id
        if self.node.node_id in self.state(cid).removed:
            raise RPCError(ERR_FORBIDDEN, "you were removed from this circle")
        keys = self.keys(cid)
        seal = under or keys.newest
        if seal is None or (not self.node.encrypt and seal.n):
            # Unencrypted messages carry no key_id: v1's, under the root, which nobody reads
            # once the circle has a newer epoch.
            raise RPCError(ERR_FORBIDDEN, CANNOT_FOLLOW)
        secret, key_id = seal.secret, seal.key_id
        channel = self.state(cid).channels.get(channel_id)
        if channel is not None and channel.private:
            private = keys.channel_seal(channel)
            if private is None or not self.node.encrypt:
                raise RPCError(ERR_FORBIDDEN, channelkeys.cannot_seal(channel, self.node.encrypt))
            key_id, secret = private
        name = self.display_name()
        key, signer = self.node.key, self._writes_as()
        drafts = [
            Draft(
                msg_id=msg_id,
                circle_id=circle.circle_id,
                channel_id=channel_id,
                author_node_id=self.node.node_id,
                created_ts=created_ts,
                display_name=name,
                text=text,
            )
            for msg_id, created_ts, text in items
        ]
        for i, draft in enumerate(drafts):
            try:
                check_draft(draft)  # to say which one; compose_messages checks them again
            except InvalidMessage as exc:
                raise RPCError(ERR_BAD_REQUEST, f"msgs[{i}]: {exc}") from None
        # Signed together: one signature for each batch of up to BATCH_LEAVES.
        msgs = compose_messages(secret, drafts, encrypt=self.node.encrypt, key=key, key_id=key_id)
        # Ours: verified, signed or not.
        rows = [Row(m, name, d["text"], True, signer) for m, d in zip(msgs, drafts, strict=True)]
        out = Outcome(reply=None)
        seqs: list[int | None] = []
        for row, seq in zip(rows, self.db.insert_messages(rows, "local"), strict=True):
            if seq is None:
                metrics.STORE_DUPLICATES.inc()
                seqs.append(self.db.seq_of(row.msg.msg_id))
                continue
            seqs.append(seq)
            out.stored.append(_stored_row(seq, row, "local"))
        if out.stored:
            metrics.STORE_APPENDS.labels("local").inc(len(out.stored))
        out.reply = {"seqs": seqs, "stored": len(out.stored), "last_seq": self.db.last_seq}
        return out

    def announce_key(self, circle: Circle) -> list[dict[str, Any]]:
        """Write this node's KEY_ANNOUNCE in a circle, once, and once more if the one
        written lacked the X25519 key (the rows stored, if any)."""
        key, me = self.node.key, self.node.node_id
        setting = f"{_ANNOUNCED_SETTING}:{circle.circle_id}"
        if key is None or not self.node.encrypt or self.db.setting(setting) == _ANNOUNCED_WITH_XPK:
            return []
        if me in self.state(circle.circle_id).removed:
            return []  # it writes nothing there any more
        now = max(int(time.time()), self.db.newest_local(circle.circle_id, CONTROL_CHANNEL) + 1)
        event = events.key_announce_event(me, b64(key.public), b64(key.x_public))
        text = chatmodel.event_text(event)
        out = self._write(circle, CONTROL_CHANNEL, [(ids.new_msg_id(me, now), now, text)])
        self.db.set_setting(setting, _ANNOUNCED_WITH_XPK)
        return out.stored

    def announce_keys(self) -> list[dict[str, Any]]:
        """Announce this node's key in every circle where it has not yet (a node that had
        circles before it had a key); the rows stored."""
        return [row for c in self.db.circles() for row in self.announce_key(c)]

    def parse_ahead(self, appends: list[list[Any]]) -> None:
        """Parse peers' messages of appends to come (what ``append`` does first; it takes
        these instead). Needs nothing of the database, so a caller runs it while a commit
        runs. What was parsed ahead before and not taken is dropped."""
        ahead: dict[int, tuple[object, WireMessage | InvalidMessage]] = {}
        for raws in appends:
            for raw in raws[:MAX_POST_BATCH]:
                try:
                    ahead[id(raw)] = (raw, parse_message(raw))
                except InvalidMessage as exc:
                    ahead[id(raw)] = (raw, exc)
        self._ahead = ahead

    def _parse(self, raw: object) -> WireMessage:
        got = self._ahead.pop(id(raw), None)
        if got is None or got[0] is not raw:
            return parse_message(raw)
        if isinstance(got[1], InvalidMessage):
            raise got[1]
        return got[1]

    def append(self, body: dict[str, Any]) -> Outcome:
        """Verify and store messages received from peers; refuse the bad ones one by one.

        The one full check of a peer's message (parse_message, then the MAC or
        the decryption): producers pass messages on as they came, gossip after
        only a look at their shape, so nothing here may rely on a check of theirs.
        """
        origin = _get(body, "origin", str)
        if origin not in ORIGINS[1:]:
            raise RPCError(ERR_BAD_REQUEST, f"origin must be one of {', '.join(ORIGINS[1:])}")
        items = _get(body, "msgs", list)
        if len(items) > MAX_POST_BATCH:
            raise RPCError(ERR_BAD_REQUEST, f"at most {MAX_POST_BATCH} messages per request")
        results: list[str] = []
        parsed: list[tuple[int, WireMessage, Circle]] = []
        secrets: dict[str, Circle | None] = {}
        for raw in items:
            try:
                msg = self._parse(raw)
                if msg.circle_id not in secrets:
                    secrets[msg.circle_id] = self.db.circle(msg.circle_id)
                circle = secrets[msg.circle_id]
                if circle is None:
                    raise InvalidMessage("unknown_circle", "not a circle of this node")
            except InvalidMessage as exc:
                results.append(self._reject(exc.kind))
                continue
            parsed.append((len(results), msg, circle))
            results.append("")
        held = self.db.held({msg.msg_id for _, msg, _ in parsed})
        accepted: list[tuple[int, Row]] = []
        keys: dict[str, epochs.Keys] = {}
        room: dict[str, int] = {}
        for i, msg, circle in parsed:
            if circle.circle_id not in keys:
                keys[circle.circle_id] = self.keys(circle.circle_id)
            try:
                # A message held is not judged again: its first verdict stands.
                row = self._open(keys[circle.circle_id], msg, msg.msg_id not in held, room)
            except InvalidMessage as exc:
                results[i] = self._reject(exc.kind)
                continue
            except AuthError:
                results[i] = self._reject("auth")
                continue
            accepted.append((i, row))
        new = self.db.insert_messages([row for _, row in accepted], origin, held)
        out = Outcome(reply=None)
        for (i, row), seq in zip(accepted, new, strict=True):
            if seq is None:
                results[i] = "duplicate"
                continue
            results[i] = "stored"
            out.stored.append(_stored_row(seq, row, origin))
        # Counted once a request: each inc is a write to a metric file.
        if len(accepted) > len(out.stored):
            metrics.STORE_DUPLICATES.inc(len(accepted) - len(out.stored))
        if out.stored:
            metrics.STORE_APPENDS.labels(origin).inc(len(out.stored))
        out.reply = {"results": results, "last_seq": self.db.last_seq}
        return out

    def _open(self, keys: epochs.Keys, msg: WireMessage, judge: bool, room: dict[str, int]) -> Row:
        """The row of a peer's message: opened by its key_id and judged (``judge``: not held
        yet), or kept sealed for an epoch not held yet (``room``: sealed rows each circle
        may still take); InvalidMessage or AuthError to refuse it."""
        cid = msg.circle_id
        key = msg.enc["key_id"] if msg.enc is not None else ROOT_KEY_ID
        secret = keys.secret_for(key, msg.channel_id)
        if secret is None:
            if not keys.plausible(key):
                raise InvalidMessage("unknown_key", "no epoch of this circle has that key")
            if judge:
                if cid not in room:
                    room[cid] = epochs.MAX_SEALED - self.db.sealed_count(cid)
                if room[cid] <= 0:
                    raise InvalidMessage("sealed_full", "too many messages wait for a key")
                room[cid] -= 1
            return Row(msg, "", "", False, None, key)
        row = self._verdict(msg, open_message(secret, cid, msg), judge)
        if judge:
            self._judge(keys, msg, row, key)
        return row

    def _judge(self, keys: epochs.Keys, msg: WireMessage, row: Row, key: str) -> None:
        """Refuse what a removed member wrote, and what is unsigned under an older epoch
        (a removed member could forge that with its old secret)."""
        if msg.author_node_id in self.state(msg.circle_id).removed:
            raise InvalidMessage("removed", "its author was removed from the circle")
        epoch = chan.epoch_of_key_id(key)
        if not row.verified and keys.newest is not None and epoch != keys.newest.key_id:
            raise InvalidMessage("stale_epoch", "unsigned, under an epoch that is not the newest")

    def _verdict(self, msg: WireMessage, opened: Opened, judge: bool) -> Row:
        """The row of a peer's message as its signature has it (signing.check), pinning
        the key of an older id at first sight; InvalidMessage to refuse it."""
        if opened.signed is None or not judge:
            return Row(msg, opened.display_name, opened.text, False, None)
        author = msg.author_node_id
        # Our own id is signed for by our own key only, whatever a peer says first.
        pinned = self._signer_pk if author == self.node.node_id else None
        if pinned is None and not is_derived_form(author):
            pinned = self.db.pinned(msg.circle_id, author)
        verdict = signing.check(
            opened.signed,
            pinned=pinned,
            msg_id=msg.msg_id,
            circle_id=msg.circle_id,
            channel_id=msg.channel_id,
            author_node_id=author,
            created_ts=msg.created_ts,
            display_name=opened.display_name,
            text=opened.text,
        )
        pk = opened.signed.pk
        if verdict is signing.Verdict.FIRST_SIGHT:
            self.db.pin(msg.circle_id, author, pk)
        return Row(msg, opened.display_name, opened.text, True, pk)

    @staticmethod
    def _reject(kind: str) -> str:
        metrics.STORE_REJECTED.labels(kind).inc()
        return f"rejected:{kind}"

    def circle_create(self, body: dict[str, Any]) -> Outcome:
        """Create a circle with a fresh secret; answer its id and invite code.

        A node that signs makes the secret commit to its key and writes, first,
        the signed proof that makes it the circle's owner (felund.trust.owner).
        A name is written as a control event too, so that it travels with the
        circle to whoever joins.
        """
        name = _name(body)
        pk = self._writes_as()
        secret, salt = new_owned_secret(pk) if pk is not None else (ids.new_secret(), "")
        now = int(time.time())
        circle = Circle(ids.circle_id(secret), secret, name, now)
        self.db.add_circle(circle)
        out = Outcome(reply=None, circles_changed=True)
        firsts = [events.owner_event(salt)] if salt else []
        if name:
            firsts.append(events.circle_name_event(circle.circle_id, name))
        for event in firsts:
            msg_id = ids.new_msg_id(self.node.node_id, now)
            out.stored += self._control(circle, event, msg_id, now).stored
        out.stored += self.announce_key(circle)
        out.reply = {
            "circle_id": circle.circle_id,
            "name": name,
            "code": self._code(epochs.Held(0, "", secret), circle.circle_id),
        }
        return out

    def circle_join(self, body: dict[str, Any]) -> Outcome:
        """Join the circle of an invite code (joining twice is harmless)."""
        code = _get(body, "code", str)
        if len(code) > _MAX_CODE:
            raise RPCError(ERR_BAD_INVITE, "invite code is too long")
        # A code copied from a screen where it wrapped carries line breaks.
        code = "".join(code.split())
        try:
            invite = decode_invite(code)
        except InviteError as exc:
            raise RPCError(ERR_BAD_INVITE, str(exc)) from None
        # An epoch's code names its circle: its secret is not the root's, from which the
        # id derives. It is kept as circles.secret (and as that epoch's) until the
        # EPOCH_LINK walk reaches the root (``epochs.root_of`` tells the two apart).
        circle_id = invite.circle_id or ids.circle_id(invite.secret)
        circle = Circle(circle_id, invite.secret, _name(body), int(time.time()))
        joined = self.db.add_circle(circle)
        out = Outcome(
            {"circle_id": circle_id, "joined": joined, "peer": invite.peer, "relay_url": ""},
            circles_changed=joined,
        )
        if invite.epoch:
            given = epochs.Held(invite.epoch, invite.epoch_id, invite.secret)
            before = self.keys(circle_id).newest
            self.db.add_epoch_key(circle_id, given.epoch_id, given.n, given.secret)
            for key_id, channel_id in self.keys(circle_id).opened_by([given], []):
                out.stored += self._reopen(circle_id, key_id, channel_id)  # what waited for it
            self._forget(circle_id)
            self._follow(circle_id, out)
            out.circles_changed |= self.keys(circle_id).newest != before
        out.stored += self.announce_key(self.db.circle(circle_id) or circle)
        if invite.peer and "//" not in invite.peer:
            self.db.add_peer(circle_id, invite.peer)  # gossip wants host:port
        elif invite.peer:
            out.reply["relay_url"] = self._adopt_relay(invite.peer)
            out.settings_changed = bool(out.reply["relay_url"])
        return out

    def _adopt_relay(self, peer: str) -> str:
        """The relay URL of an invite, made this node's relay if it has none; "" if not adopted.

        A code made in a browser names the relay its circle lives at, and the
        circle is reachable nowhere else: a node without a relay of its own
        takes that one rather than join a circle it cannot sync.
        """
        url = f"https:{peer}" if peer.startswith("//") else peer
        if self.relay_url() or relay_url_problem(url):
            return ""
        self.db.set_setting(_RELAY_URL_SETTING, url)
        return url

    # --- reads --------------------------------------------------------------
    def snapshot(self, body: dict[str, Any]) -> Outcome:
        """A page of messages after ``since``, and the store_seq the answer covers.

        With ``circle_id``, of that circle only; with ``exclude_origin``, without the
        messages of that origin (relay-sync pushes what it did not pull); with
        ``with_wire``, each one's wire form; with ``as_stored``, rows as their stored
        events carried them (the wire form of those pushed on: ``pushed_on``), for a
        follower that lost or set aside events to take them as it would have.
        """
        since = _get(body, "since", int, 0)
        limit = min(_get(body, "limit", int, MAX_SNAPSHOT_PAGE), MAX_SNAPSHOT_PAGE)
        if since < 0 or limit < 1:
            raise RPCError(ERR_BAD_REQUEST, "since must be >= 0 and limit >= 1")
        # Not necessarily a circle of this node: one just left still has its messages.
        circle_id = _get(body, "circle_id", str, None)
        if circle_id is not None and not ids.is_hex(circle_id, 24):
            raise RPCError(ERR_BAD_REQUEST, "circle_id must be 24 hex digits")
        exclude = _get(body, "exclude_origin", str, "")
        if exclude and exclude not in ORIGINS:
            raise RPCError(ERR_BAD_REQUEST, f"exclude_origin must be one of {', '.join(ORIGINS)}")
        with_wire = _get(body, "with_wire", bool, False)
        as_stored = _get(body, "as_stored", bool, False)
        rows = self.db.since(
            since,
            limit,
            with_wire=with_wire or as_stored,
            circle_id=circle_id,
            exclude_origin=exclude,
            with_pruned=_get(body, "with_pruned", bool, False),
        )
        if as_stored and not with_wire:
            now = time.time()
            for r in rows:
                if "wire" in r and not pushed_on(r["origin"], r["created_ts"], now):
                    del r["wire"]
        metrics.STORE_ROWS_READ.labels("all" if circle_id is None else "circle").inc(len(rows))
        more = len(rows) == limit and rows[-1]["store_seq"] < self.db.last_seq
        covers = rows[-1]["store_seq"] if more else self.db.last_seq
        return Outcome({"msgs": rows, "covers": covers, "more": more})

    def inbox(self, body: dict[str, Any]) -> Outcome:
        """The newest messages of a circle, or of one of its channels."""
        circle = self._circle(body)
        channel = _get(body, "channel_id", str, "") or None
        limit = _get(body, "limit", int, 50)
        if not 1 <= limit <= 100_000:
            raise RPCError(ERR_BAD_REQUEST, "limit must be between 1 and 100000")
        if channel is not None and channel != CONTROL_CHANNEL:
            _existing_channel(self.state(circle.circle_id), channel)
        msgs = self.db.newest(circle.circle_id, channel, limit, hidden=CONTROL_CHANNEL)
        blocked = set(block_list.blocked(self.db))
        for m in msgs:
            m["blocked"] = m["author_node_id"] in blocked
        return Outcome({"msgs": msgs})

    def circles(self, body: dict[str, Any]) -> Outcome:
        """The circles of this node (never their secrets)."""
        return Outcome(
            {
                "circles": [
                    {
                        "circle_id": c.circle_id,
                        "name": self.state(c.circle_id).name or c.name,
                        "joined_ts": c.joined_ts,
                    }
                    for c in self.db.circles()
                ]
            }
        )

    def invite(self, body: dict[str, Any]) -> Outcome:
        """The invite code of a circle, naming this node as the peer to contact: of its
        newest epoch held (after a removal, one that names the circle and the epoch)."""
        circle = self._circle(body)
        newest = self.keys(circle.circle_id).newest
        assert newest is not None  # a circle held has a secret
        return Outcome(
            {
                "circle_id": circle.circle_id,
                "code": self._code(newest, circle.circle_id),
                "epoch": newest.n,
            }
        )

    def _code(self, epoch: epochs.Held, circle_id: str) -> str:
        """An invite code of an epoch naming this node's gossip address (past the root, it
        names the circle and the epoch too)."""
        if self.node.invite_peer.endswith(":0"):
            # gossip.port 0 and a node not running (a running one is told its port):
            # the kernel picks a port at each start, so no code could name it.
            raise RPCError(ERR_BAD_REQUEST, NO_FIXED_PORT)
        if epoch.n == 0:
            return encode_invite(epoch.secret, self.node.invite_peer)
        return encode_invite(
            epoch.secret,
            self.node.invite_peer,
            circle_id=circle_id,
            epoch=epoch.n,
            epoch_id=epoch.epoch_id,
        )

    def peers(self, body: dict[str, Any]) -> Outcome:
        """Known peer addresses, a page at a time (of one circle, or all): ``after`` is the
        (circle_id, addr) of the last row of the page before; ``more`` says if one follows."""
        circle_id = _get(body, "circle_id", str, None)
        after = _get(body, "after", list, [])
        limit = _get(body, "limit", int, MAX_PEERS_PAGE)
        if not 1 <= limit <= MAX_PEERS_PAGE:
            raise RPCError(ERR_BAD_REQUEST, f"limit must be 1-{MAX_PEERS_PAGE}")
        if after and (len(after) != 2 or not all(isinstance(a, str) for a in after)):
            raise RPCError(ERR_BAD_REQUEST, "after must be [circle_id, addr]")
        rows = self.db.peers(circle_id, (after[0], after[1]) if after else None, limit + 1)
        return Outcome({"peers": rows[:limit], "more": len(rows) > limit})

    def peers_add(self, body: dict[str, Any]) -> Outcome:
        """Remember peer addresses (invalid entries are skipped): learned from members (each
        with the node it is said to be, at most MAX_PEERS_PER_CIRCLE per circle), or
        ``reached``: where this node's gossip met the node (then dated, kept over others)."""
        items = _get(body, "peers", list)
        reached = _get(body, "reached", bool, False)
        if len(items) > _MAX_PEERS_ADD:
            raise RPCError(ERR_BAD_REQUEST, f"at most {_MAX_PEERS_ADD} peers per request")
        known = {c.circle_id for c in self.db.circles()}
        added = 0
        touched = set()
        for p in items:
            if not isinstance(p, dict) or p.get("circle_id") not in known:
                continue
            addr, node_id, seen = p.get("addr"), p.get("node_id", ""), p.get("last_seen", 0)
            if not (
                isinstance(addr, str)
                and is_tcp_peer(addr)
                and isinstance(node_id, str)
                and len(node_id) <= 128
                and (node_id or reached)  # no node id: the user's own address (invite)
                and type(seen) is int
                and seen >= 0
            ):
                continue
            # A member's word on when it last saw an address counts for nothing here.
            self.db.add_peer(p["circle_id"], addr, node_id, seen if reached else 0)
            touched.add(p["circle_id"])
            added += 1
        for circle_id in touched:
            self.db.trim_peers(circle_id, MAX_PEERS_PER_CIRCLE)
        return Outcome({"added": added})

    def peers_forget(self, body: dict[str, Any]) -> Outcome:
        """Forget learned peer addresses (gossip's: never reached, or not to be dialled)."""
        items = _get(body, "peers", list)
        if len(items) > _MAX_PEERS_ADD:
            raise RPCError(ERR_BAD_REQUEST, f"at most {_MAX_PEERS_ADD} peers per request")
        forgotten = 0
        for p in items:
            if isinstance(p, dict) and isinstance(p.get("circle_id"), str):
                addr = p.get("addr")
                if isinstance(addr, str):
                    forgotten += self.db.forget_peer(p["circle_id"], addr)
        return Outcome({"forgotten": forgotten})

    def circle_keys(self, body: dict[str, Any]) -> Outcome:
        """Circles with their secrets, for the node's own gossip and relay processes: the
        newest epoch's (what transports use), and every epoch's held, newest first."""
        circles = []
        for c in self.db.circles():
            keys = self.keys(c.circle_id)
            if keys.newest is None:
                continue
            circles.append(
                {
                    "circle_id": c.circle_id,
                    "secret": keys.newest.secret,
                    "name": c.name,
                    "epochs": [
                        {"id": h.epoch_id, "n": h.n, "secret": h.secret} for h in keys.answered()
                    ],
                }
            )
        return Outcome({"circles": circles})

    def fetch(self, body: dict[str, Any]) -> Outcome:
        """The wire form of messages by msg_id (those held; unknown ids are skipped),
        packed (``wire.pack_wire``) when ``packed`` is true."""
        msg_ids = _get(body, "msg_ids", list)
        if len(msg_ids) > MAX_POST_BATCH or not all(isinstance(m, str) for m in msg_ids):
            raise RPCError(ERR_BAD_REQUEST, f"msg_ids must be up to {MAX_POST_BATCH} strings")
        if _get(body, "packed", bool, False):
            return Outcome({"msgs": self.db.packed_wire_of(msg_ids)})
        return Outcome({"msgs": self.db.wire_of(msg_ids)})

    def blocks(self, body: dict[str, Any]) -> Outcome:
        """The nodes blocked here, each with its latest name; ``block`` or ``unblock`` one
        first, named by node id, its start, or a current name (events.resolve_person).

        Local: kept in this node's settings, never written as an event.
        """
        block, unblock = _get(body, "block", str, None), _get(body, "unblock", str, None)
        if block is not None and unblock is not None:
            raise RPCError(ERR_BAD_REQUEST, "block or unblock, not both")
        now = set(block_list.blocked(self.db))
        people = self._people_everywhere()
        node = ""
        if block is not None:
            node = self._anyone(people, block)
            if node == self.node.node_id:
                raise RPCError(ERR_BAD_REQUEST, "that is this node: it cannot block itself")
            if node not in now and len(now) >= MAX_BLOCKS:
                raise RPCError(ERR_BAD_REQUEST, f"at most {MAX_BLOCKS} nodes can be blocked")
            changed = node not in now
            now.add(node)
        elif unblock is not None:
            node = self._anyone([*people, *((n, "") for n in now)], unblock)
            changed = node in now
            now.discard(node)
        else:
            changed = False
        if changed:
            block_list.set_blocked(self.db, now)
            self._calls.clear()  # a blocked node's calls are refused here (felund.v1.calls)
        names = dict(reversed(people))  # a node named in two circles: its first name
        listed = [{"node_id": n, "display_name": names.get(n, "")} for n in sorted(now)]
        # sys.settings.changed tells a running ui to show or hide the node's messages.
        return Outcome({"node_id": node, "blocked": listed}, settings_changed=changed)

    def _people_everywhere(self) -> list[tuple[str, str]]:
        """(node id, current name) of every author in every circle of this node."""
        return [
            (p["node_id"], p["display_name"])
            for circle in self.db.circles()
            for p in self._people(circle.circle_id, self.state(circle.circle_id))
        ]

    @staticmethod
    def _anyone(people: list[tuple[str, str]], who: str) -> str:
        """The node ``who`` names among ``people`` (events.resolve_person), or a refusal."""
        try:
            return events.resolve_person(people, who, "in your circles")
        except ValueError as exc:
            raise RPCError(ERR_BAD_REQUEST, str(exc)) from None

    def anchor_page(self, body: dict[str, Any]) -> Outcome:
        """A circle's messages stored at ``since`` (Unix seconds) or later and after store_seq
        ``after``, oldest first, each with when it was stored: what this node answers a v1
        peer's ANCHOR_PULL from (``felund.gossip.v1_anchor``)."""
        circle = self._circle(body)
        since, after = _get(body, "since", int), _get(body, "after", int, 0)
        limit = _get(body, "limit", int, MAX_ANCHOR_PAGE)
        if not (0 <= since < 2**62 and 0 <= after < 2**62 and 1 <= limit <= MAX_ANCHOR_PAGE):
            raise RPCError(
                ERR_BAD_REQUEST, f"since and after must be >= 0, limit 1-{MAX_ANCHOR_PAGE}"
            )
        first = max(after + 1, self.db.first_seq_stored_since(since))
        return Outcome({"rows": self.db.stored_from(circle.circle_id, first, limit)})

    def cursor(self, body: dict[str, Any]) -> Outcome:
        """A durable cursor of a process: set it when ``value`` is given; its value (0 if unset)."""
        key = _get(body, "key", str)
        if not 0 < len(key) <= MAX_CURSOR_KEY or not key.isprintable():
            raise RPCError(
                ERR_BAD_REQUEST, f"key must be 1 to {MAX_CURSOR_KEY} printable characters"
            )
        setting = f"{_CURSOR_SETTING}:{key}"
        value = _get(body, "value", int, None)
        if value is not None:
            if not 0 <= value < 2**62:
                raise RPCError(ERR_BAD_REQUEST, "value must be an integer from 0 to 2**62 - 1")
            self.db.set_setting(setting, str(value))
            return Outcome({"value": value})
        stored = self.db.setting(setting)
        return Outcome({"value": int(stored) if stored is not None else 0})

    def stats(self, body: dict[str, Any]) -> Outcome:
        """Counts for status and metrics."""
        return Outcome(
            {
                "messages": self.db.message_count(),
                "last_seq": self.db.last_seq,
                "circles": len(self.db.circles()),
                "db_bytes": self.db.size_bytes(),
            }
        )

    def _circle(self, body: dict[str, Any]) -> Circle:
        circle_id = _get(body, "circle_id", str)
        circle = self.db.circle(circle_id) if ids.is_hex(circle_id, 24) else None
        if circle is None:
            raise RPCError(ERR_UNKNOWN_CIRCLE, f"this node is not in circle {circle_id[:64]!r}")
        return circle


_MISSING: Any = object()


def _existing_channel(state: chatmodel.CircleState, channel_id: str) -> chatmodel.Channel:
    """The channel named ``channel_id``, or the one error that says there is none."""
    channel = state.channels.get(channel_id)
    if channel is None:
        raise RPCError(ERR_BAD_REQUEST, f"there is no channel #{channel_id}")
    return channel


def _get(body: dict[str, Any], key: str, typ: type, default: Any = _MISSING) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise RPCError(ERR_BAD_REQUEST, f"{key} is required")
        return default
    if type(value) is not typ:
        raise RPCError(ERR_BAD_REQUEST, f"{key} must be a {typ.__name__}")
    return value


def _name(body: dict[str, Any]) -> str:
    name: str = _get(body, "name", str, "")
    if len(name) > _MAX_NAME or not name.isprintable():
        raise RPCError(ERR_BAD_REQUEST, f"name must be at most {_MAX_NAME} printable characters")
    return name


_UNTOLD = "?"  # no key id: a circle's newest not told yet


def _stored_row(seq: int, row: Row, origin: str) -> dict[str, Any]:
    """A stored message as events carry it: a snapshot row, plus the wire form to push on."""
    msg = row.msg
    out = {
        "store_seq": seq,
        "msg_id": msg.msg_id,
        "circle_id": msg.circle_id,
        "channel_id": msg.channel_id,
        "author_node_id": msg.author_node_id,
        "display_name": row.display_name,
        "created_ts": msg.created_ts,
        "text": row.text,
        "origin": origin,
        "verified": row.verified,
    }
    if row.sealed_key is not None:
        out["sealed"] = True  # relayed and reconciled, shown nowhere
    if pushed_on(origin, msg.created_ts, time.time()):
        out["wire"] = to_wire(msg)
    return out


def pushed_on(origin: str, created_ts: int, now: float) -> bool:
    """Whether gossip pushes a stored message on to its peers (its event carries the wire
    form): ours, and peers' fresh ones that gossip did not bring (it pushes those itself)."""
    return origin == "local" or (origin != "gossip" and created_ts >= now - PUSH_FRESH_S)
