"""Which private channels need a new channel epoch from this node, and to whom (sans-IO).

One rule serves create, approve, leave and a circle removal alone: the newest
channel epoch of a private invite channel must be wrapped to every member that
can unwrap it (not removed from the circle, an X25519 key announced) and to
nobody who left or was removed. When it is not, a member of the channel allowed
to write one (its creator, the owner, a moderator) writes the next. Checked
after each fold and at the store's start, so a writer killed half-way writes it
at restart; two writers at once are settled by the chain's winner rule, and
both secrets are kept by the members (every valid branch is unwrapped).
"""

from __future__ import annotations

from typing import Any

from felund.trust.identity import b64
from felund.trust.wrap import xpk_of
from felund.v1.chatmodel import Channel, CircleState, key_hash

MAX_TYPED_KEY = 1024  # characters of a key channel's key


def recipients(state: CircleState, channel: Channel) -> dict[str, bytes]:
    """The members of ``channel`` a channel epoch is wrapped to: not removed from the
    circle, with a usable X25519 key (node id -> key)."""
    return {
        node: xpk
        for node in sorted(channel.members)
        if node not in state.removed
        and (xpk := state.xkeys.get(node)) is not None
        and xpk_of(b64(xpk)) is not None
    }


def rekeys_due(state: CircleState, me: str) -> list[str]:
    """The private invite channels whose next epoch ``me`` writes now."""
    due = []
    for channel in state.channels.values():
        if not (
            channel.private
            and channel.access_mode == "invite"
            and me in channel.members
            and me not in state.removed
            and (me == channel.creator or state.moderates(me))
        ):
            continue
        wanted = set(recipients(state, channel))
        tip = channel.keys[-1] if channel.keys else None
        wrapped = set(tip.wraps) if tip else set()
        # A wrap missing, or one to a node that left or was removed; not a wrap to a member
        # whose key this node has not seen yet (two writers would undo each other's).
        gone = wrapped - (channel.members - state.removed)
        if wanted and (tip is None or wanted - wrapped or gone):
            due.append(channel.channel_id)
    return sorted(due)


def cannot_seal(channel: Channel, encrypts: bool = True) -> str:
    """Why this node cannot write in a private channel it is a member of."""
    name = channel.channel_id
    if not encrypts:
        return (
            f"#{name} is private and this node writes unencrypted (node.encrypt_messages is "
            "off): turn encryption on to write in it"
        )
    if channel.access_mode == "key":
        return (
            f"#{name} is private and this node does not hold its key: "
            f"join it with the key (`felund channel join {name} --key KEY`)"
        )
    return (
        f"#{name} is private and this node does not hold its newest key yet: it comes "
        "from its owner or a moderator once they have seen you approved; try again soon"
    )


def typed_key_problem(circle_id: str, event: dict[str, Any], typed: str) -> str | None:
    """Why a key given with a control event is not kept: it must be the key of the key
    channel the event creates or joins (its key_hash); None: it is (or none was given)."""
    if not typed:
        return None
    if len(typed) > MAX_TYPED_KEY:
        return f"channel_key must be at most {MAX_TYPED_KEY} characters"
    channel_id = event.get("channel_id")
    if (
        event.get("t") != "CHANNEL_EVT"
        or event.get("op") not in ("create", "join")
        or not isinstance(channel_id, str)
        or event.get("key_hash") != key_hash(circle_id, channel_id, typed)
    ):
        return "channel_key goes with the create or join of its key channel, and its key_hash"
    return None
