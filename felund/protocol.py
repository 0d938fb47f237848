"""Protocol constants of the node: bus topics, RPC operations, limits.

Standard library only, so every module (and every test) can import it.
Topics are dotted and subscribed at a dot boundary (``chat.msg.`` matches
``chat.msg.stored``); an RPC operation is a topic sent to one actor's ROUTER.
"""

from __future__ import annotations

from typing import Final

# --- bus envelope -----------------------------------------------------------
ENVELOPE_MAGIC: Final = b"FLND1"
ENVELOPE_VERSION: Final = 1
# Hard cap enforced by libzmq (ZMQ_MAXMSGSIZE): a peer sending more is
# disconnected before we ever see the bytes.
BUS_MAX_MSG_SIZE: Final = 8 * 1024 * 1024
# Soft caps checked by the decoder, counted and dropped as "oversize".
MAX_TOPIC_SIZE: Final = 128
MAX_HEADER_SIZE: Final = 1024
MAX_BODY_SIZE: Final = 4 * 1024 * 1024

# --- event topics (pub/sub) -------------------------------------------------
TOPIC_MSG_STORED: Final = "chat.msg.stored"
TOPIC_CIRCLE_CHANGED: Final = "chat.circle.changed"
TOPIC_HEARTBEAT: Final = "sys.svc.heartbeat"
# A heartbeat's ``connectivity`` (relay-sync's and gossip's): {circle_id: report}, for at
# most this many circles (frames are bounded). Every report has ``last_message_ts``.
MAX_REPORTED_CIRCLES: Final = 1000
TOPIC_SVC_STATE: Final = "sys.svc.state"
# Log records of the node's processes, for a ui's /debug pane (never secrets: logs hold none).
TOPIC_LOG: Final = "sys.log"
TOPIC_SETTINGS_CHANGED: Final = "sys.settings.changed"  # the node's runtime settings changed

# --- RPC operations ---------------------------------------------------------
# store.ctl
OP_POST: Final = "store.post"  # compose, sign and append messages of this node
OP_APPEND: Final = "store.append"  # append wire messages received from peers
OP_SNAPSHOT: Final = "store.snapshot"  # messages with store_seq > since
OP_INBOX: Final = "store.inbox"  # newest messages of a circle/channel
OP_CIRCLES: Final = "store.circles"
OP_CIRCLE_CREATE: Final = "store.circle.create"
OP_CIRCLE_JOIN: Final = "store.circle.join"
OP_INVITE: Final = "store.invite"
OP_PEERS: Final = "store.peers"
OP_STATS: Final = "store.stats"
OP_CIRCLE_KEYS: Final = "store.circle.keys"  # circles with their secrets, for gossip
OP_FETCH: Final = "store.fetch"  # wire messages by msg_id
OP_PEERS_ADD: Final = "store.peers.add"  # addresses learned from peers, or reached
OP_PEERS_FORGET: Final = "store.peers.forget"  # learned addresses never to dial again
OP_CONTROL: Final = "store.control"  # a control event of this node (channels, names)
OP_CHANNELS: Final = "store.channels"
OP_WHO: Final = "store.who"
OP_CALLS: Final = "store.calls"  # the call of each channel of a circle (addendum §1)
OP_CIRCLE_LEAVE: Final = "store.circle.leave"
OP_CURSOR: Final = "store.cursor"  # a durable integer kept for a process (relay-sync's cursors)
OP_SETTINGS: Final = "store.settings"  # the node's runtime settings (display name, relay URL)
OP_ANCHOR_PAGE: Final = "store.anchor.page"  # a circle's messages by when they were stored
OP_BLOCKS: Final = "store.blocks"  # the nodes this node hides (local, never sent)
OP_MEMBER_REMOVE: Final = "store.member.remove"  # remove a member: a new epoch without it
# supervisor.ctl
OP_SUP_STATUS: Final = "supervisor.status"

# Reply topics: the operation with a suffix; errors carry a code and a text.
REPLY_OK_SUFFIX: Final = ".ok"
REPLY_ERR_SUFFIX: Final = ".err"

# --- service names and endpoints -------------------------------------------
SVC_SUPERVISOR: Final = "supervisor"
SVC_STORE: Final = "store"
SVC_GOSSIP: Final = "gossip"
SVC_RELAY_SYNC: Final = "relay-sync"
SVC_CLI: Final = "cli"
SVC_BENCH: Final = "bench"
SVC_UI: Final = "ui"

# The supervisor's gossip listening socket, inherited by the gossip process.
GOSSIP_FD_ENV: Final = "FELUND_INHERITED_GOSSIP_FD"  # not FELUND_GOSSIP_*: that is config
# The supervisor's pid, given to each child: a child whose supervisor died before
# the child read its parent would take its new parent (init) for the supervisor.
SUPERVISOR_PID_ENV: Final = "FELUND_INHERITED_SUPERVISOR_PID"  # not FELUND_SUPERVISOR_*

ENDPOINT_EVENTS_IN: Final = "bus.in"  # XSUB side of the proxy; publishers connect
ENDPOINT_EVENTS_OUT: Final = "bus.out"  # XPUB side; subscribers connect
ENDPOINT_STORE_CTL: Final = "store.ctl"
ENDPOINT_SUPERVISOR_CTL: Final = "supervisor.ctl"

# --- RPC error codes ----------------------------------------------------------
ERR_BAD_REQUEST: Final = "bad_request"
ERR_UNKNOWN_OP: Final = "unknown_op"
ERR_UNKNOWN_CIRCLE: Final = "unknown_circle"
ERR_BAD_INVITE: Final = "bad_invite"
ERR_FORBIDDEN: Final = "forbidden"
ERR_INTERNAL: Final = "internal"
ERR_DISK_FULL: Final = "disk_full"  # nothing of the request was stored; retry when space returns

# --- store limits -----------------------------------------------------------
MAX_POST_BATCH: Final = 1000  # messages in one store.post / store.append
MAX_SNAPSHOT_PAGE: Final = 2000
MAX_PEERS_PAGE: Final = 500  # rows of one store.peers answer
# Addresses learned from members, per circle: past this the store drops the
# ones never reached first (and never the user's own: invite code, config).
MAX_PEERS_PER_CIRCLE: Final = 256
# chat.msg.stored events carry a message's wire form (for gossip to push on)
# when it is this node's, or one younger than this from relay-sync: older ones
# are a backlog, which reconciliation spreads, and events stay small while one
# loads. Gossip pushes on what its own peers sent once the store took it, so
# its rows never carry the wire form (decoding it was a tenth of its CPU).
PUSH_FRESH_S: Final = 300.0
MAX_CURSOR_KEY: Final = 128  # characters of a store.cursor key
MAX_ANCHOR_PAGE: Final = 200  # rows of one store.anchor.page answer (v1's ANCHOR_MSGS cap)
MAX_BLOCKS: Final = 1000  # nodes one node may block
DEFAULT_CHANNEL: Final = "general"
CONTROL_CHANNEL: Final = "__control"
# Who may join a channel, and what the owner makes someone (ROLE_EVT grants or revokes
# the one role there is): here, so that a command's parser names them without loading
# the chat model.
ACCESS_MODES: Final = ("public", "key", "invite")
GIVEN_ROLES: Final = ("moderator", "member")


# Bidirectional formatting characters (U+202A-U+202E, U+2066-U+2069): a name or a
# message holding an override (U+202E) would show text reversed from what it is, so
# every screen of ours (CLI, curses ui, browser) drops them; stored data keeps them.
_BIDI_CONTROLS: Final = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


# Before the name on a message not signed by its author's key (a v1 writer, or a hop
# that dropped the signature): the CLI's lines, exports and the curses ui.
UNVERIFIED_MARK: Final = "?"


def on_screen(text: str) -> str:
    """``text`` as our screens show it: without bidirectional formatting characters."""
    return text.translate(_BIDI_CONTROLS)
