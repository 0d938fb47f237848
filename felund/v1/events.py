"""Control events as this node writes them, and people as users name them (sans-IO).

The one builder of the ``felund`` commands and the curses ui (the browser's
is its port, ``felund/web/lib/chatmodel.js``). Each event carries what our
fold reads and what the other implementation reads (addendum §2.3, §3.1):
``node_id`` beside ``actor_node_id`` (its readers take the member from
``node_id``), ``created_by`` on a create, ``circle_id`` in a circle's name
(its node ignores a name without one; its browser reads both), and, once
the writer has dated it, ``created_ts`` in a CHANNEL_EVT (``dated``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from felund.protocol import ACCESS_MODES, DEFAULT_CHANNEL, GIVEN_ROLES
from felund.v1.calls import CALL_OPS
from felund.v1.chatmodel import CHANNEL_OPS, CircleState, channel_name, key_hash
from felund.v1.ids import is_node_id

NEEDS_KEY = "a key channel needs a key"


def channel_event(
    op: str,
    circle_id: str,
    channel: str,
    node_id: str,
    *,
    access: str = "public",
    key: str = "",
    target: str = "",
) -> dict[str, Any]:
    """A CHANNEL_EVT of ``node_id`` (not ``rename``: see rename_event); ValueError if bad.

    ``key`` is hashed (never sent) for a create or join of a key channel;
    ``target`` is the node an ``approve`` lets in, as the writer resolved it
    (``made_private`` makes a create private).
    """
    if op not in CHANNEL_OPS or op == "rename":
        raise ValueError(f"no channel operation {op[:32]!r}")
    event: dict[str, Any] = {
        "t": "CHANNEL_EVT",
        "op": op,
        "circle_id": circle_id,
        "channel_id": channel_name(channel),
        "actor_node_id": node_id,
    }
    if op == "create":
        if access not in ACCESS_MODES:
            raise ValueError(f"access is one of {', '.join(ACCESS_MODES)}")
        if access == "key" and not key:
            raise ValueError(NEEDS_KEY)
        event["access_mode"] = access
        event["key_hash"] = key_hash(circle_id, event["channel_id"], key) if key else ""
        event["created_by"] = node_id
    elif op == "approve":
        if not target:
            raise ValueError("approve whom? name the person")
        event["target_node_id"] = target
    else:
        event["node_id"] = node_id
        if op == "join" and key:
            event["key_hash"] = key_hash(circle_id, event["channel_id"], key)
    return event


def made_private(event: dict[str, Any]) -> dict[str, Any]:
    """A key or invite channel's create, private: its messages sealed under a channel key
    (felund.trust.channels), read by its members only; ValueError for anything else."""
    if event.get("op") != "create" or event.get("access_mode") not in ("key", "invite"):
        raise ValueError("only a key or invite channel can be private")
    return {**event, "private": True}


def rename_event(circle_id: str, node_id: str, name: str) -> dict[str, Any]:
    """A display-name change of ``node_id`` in one circle."""
    return {
        "t": "CHANNEL_EVT",
        "op": "rename",
        "circle_id": circle_id,
        "node_id": node_id,
        "actor_node_id": node_id,
        "display_name": name,
    }


def circle_name_event(circle_id: str, name: str) -> dict[str, Any]:
    """A circle's name."""
    return {"t": "CIRCLE_NAME_EVT", "circle_id": circle_id, "name": name}


def owner_event(salt: str) -> dict[str, Any]:
    """The owner's proof its creator writes right after making a circle (felund.trust.owner)."""
    return {"salt": salt, "t": "CIRCLE_OWNER"}


def role_event(target: str, role: str) -> dict[str, Any]:
    """The owner makes ``target`` a "moderator", or a plain "member" again; ValueError if bad."""
    if role not in GIVEN_ROLES:
        raise ValueError(f"a role is {' or '.join(GIVEN_ROLES)}")
    op = "grant" if role == "moderator" else "revoke"
    return {"op": op, "role": "moderator", "t": "ROLE_EVT", "target_node_id": target}


def kept_by_owner(
    before: CircleState, after: CircleState, circle_id: str, owner: str
) -> list[dict[str, Any]]:
    """What the owner writes with a demotion so that nobody loses by surprise what
    ``after`` (the state with it) takes away from ``before``: an approve of
    each member who stood in a channel only through the demoted one's
    approvals, and the circle's name if only that one had set it."""
    kept = [
        channel_event("approve", circle_id, cid, owner, target=target)
        for cid, channel in sorted(before.channels.items())
        if cid in after.channels  # a demotion makes and unmakes no channel
        for target in sorted(channel.members - after.channels[cid].members)
    ]
    if before.name and after.name != before.name:
        kept.append(circle_name_event(circle_id, before.name))
    return kept


def key_announce_event(node_id: str, public_key_b64: str, xpk_b64: str) -> dict[str, Any]:
    """This node's keys, announced once per circle: its signing key (pinned by readers at
    first sight) and its X25519 key ``xpk``, to which epoch secrets are wrapped."""
    return {"node_id": node_id, "pk": public_key_b64, "t": "KEY_ANNOUNCE", "xpk": xpk_b64}


def epoch_event(
    n: int, parent: str, removed: Iterable[str], wraps: dict[str, str]
) -> dict[str, Any]:
    """Epoch ``n`` after ``parent`` (epoch n-1's id, "" for n = 1): ``removed`` is
    cumulative (chatmodel.next_removed), ``wraps`` its secret wrapped to each member
    who stays (node id -> felund.trust.wrap). Sealed under the parent's secret."""
    if n < 1 or (n == 1) != (parent == ""):
        raise ValueError("epoch 1 has the root as parent, every later one an epoch id")
    return {
        "epoch": n,
        "parent": parent,
        "removed": sorted(set(removed)),
        "t": "EPOCH_EVT",
        "wraps": dict(sorted(wraps.items())),
    }


def epoch_link_event(epoch_id: str, prev_secret_hex: str) -> dict[str, Any]:
    """The secret of the epoch before ``epoch_id``, sealed under epoch ``epoch_id``: who
    holds the new epoch walks back and reads the history."""
    return {"epoch_id": epoch_id, "prev": prev_secret_hex, "t": "EPOCH_LINK"}


def channel_key_event(
    channel_id: str, n: int, parent: str, wraps: dict[str, str]
) -> dict[str, Any]:
    """Channel epoch ``n`` of a private invite channel after ``parent`` (channel epoch
    n-1's id, "" for n = 1): its secret wrapped to each member (felund.trust.channels).
    Sealed under the circle's newest epoch."""
    if n < 1 or (n == 1) != (parent == ""):
        raise ValueError("channel epoch 1 has no parent, every later one an epoch id")
    return {
        "channel_id": channel_id,
        "epoch": n,
        "parent": parent,
        "t": "CHANNEL_KEY_EVT",
        "wraps": dict(sorted(wraps.items())),
    }


def anchor_announce(node_id: str) -> dict[str, Any]:
    """This node's ANCHOR_ANNOUNCE (addendum §4.1): always on, so an anchor for v1 peers.
    Reachability and mobility are not known here: v1's own anchors say false too."""
    return {
        "t": "ANCHOR_ANNOUNCE",
        "node_id": node_id,
        "capabilities": {"can_anchor": True, "is_mobile": False, "public_reachable": False},
    }


def dated(event: dict[str, Any], created_ts: int) -> dict[str, Any]:
    """The event as written at ``created_ts``: a CHANNEL_EVT says its date (v1 reads it
    there), an ANCHOR_ANNOUNCE too, as ``announced_at`` (§4.1: equal to the date)."""
    if event.get("t") == "ANCHOR_ANNOUNCE":
        return {**event, "announced_at": created_ts}
    if event.get("t") != "CHANNEL_EVT":
        return event
    return {**event, "created_ts": created_ts}


def person_words(p: dict[str, Any]) -> str:
    """A person of an answer as users read it: name (start of its node id)."""
    return f"{p['display_name'] or '-'} ({p['node_id'][:12]})"


def unreadable_words(channel: str, stuck: list[dict[str, Any]]) -> str:
    """Why a key or invite channel would not reach everyone if private (``stuck``: the
    members whose client cannot read one): the CLI and the ui say it before asking."""
    return (
        f"#{channel} would be private (its messages sealed under its own key, read by its "
        f"members only), and {len(stuck)} member(s) use a client that cannot read a private "
        f"channel ({', '.join(map(person_words, stuck))}): they would not read it, even as "
        "members"
    )


def can_read_private(p: dict[str, Any]) -> bool:
    """Whether a person of a who answer can read a private channel (or is removed anyway)."""
    return bool(p["can_follow"]) or bool(p.get("removed"))


def removal_words(plan: dict[str, Any]) -> list[str]:
    """What a removal (``store.member.remove``'s answer) will do, in words: the CLI and
    the ui say it before asking."""
    lines = [
        f"this removes {person_words(plan)}: every other member moves to a new key "
        f"(epoch {plan['epoch']}); {plan['display_name'] or 'they'} will read and write "
        "nothing new, and their invite codes admit nobody"
    ]
    stuck = plan["cannot_follow"]
    if stuck:
        verb = "uses" if len(stuck) == 1 else "use"
        lines.append(
            f"{len(stuck)} member(s) {verb} a client that cannot follow "
            f"({', '.join(person_words(p) for p in stuck)}): they need a new invite code"
        )
    return lines


def resolve_person(
    people: Iterable[tuple[str, str]], who: str, where: str = "in this circle"
) -> str:
    """The node ``who`` names among ``(node_id, current name)``: a full node id, the start
    of exactly one, or exactly one's name; ValueError saying why not.

    A name that is also the start of another's id names no one: a member
    cannot take an approval meant for another by choosing such a name.
    """
    who = who.strip()
    if not who:
        raise ValueError("name someone: a node id, its start, or a name")
    if is_node_id(who):
        return who
    found = {node for node, name in people if (name and name == who) or node.startswith(who)}
    if len(found) == 1:
        return found.pop()
    if found:
        raise ValueError(f'"{who}" could be {len(found)} people: give more of a node id')
    raise ValueError(f'no one {where} is "{who}" (by node id, its start, or name)')


def call_event(
    op: str,
    circle_id: str,
    node_id: str,
    session_id: str = "",
    *,
    channel: str = DEFAULT_CHANNEL,
    target: str = "",
) -> dict[str, Any]:
    """A CALL_EVT of ``node_id`` with the keys the web writes (addendum §1.2); ValueError if bad.

    A ``create`` without ``session_id`` gets a new one (32 hex, as the web's);
    ``target`` is the viewer or participant a ``revoke`` removes.
    """
    if op not in CALL_OPS:
        raise ValueError(f"no call operation {op[:32]!r}")
    if op == "create":
        session_id = session_id or secrets.token_hex(16)
    if not session_id:
        raise ValueError("which call? name its session")
    event: dict[str, Any] = {"t": "CALL_EVT", "op": op, "session_id": session_id}
    if op == "create":
        event.update(host_node_id=node_id, circle_id=circle_id, channel_id=channel_name(channel))
    elif op == "end":
        event["host_node_id"] = node_id
    elif op == "revoke":
        if not is_node_id(target):
            raise ValueError("revoke whom? name the viewer")
        event["target_node_id"] = target
    else:
        event["node_id"] = node_id
        if op == "leave":
            event["reason"] = "user_left"
    event["actor_node_id"] = node_id
    return event


def call_words(call: dict[str, Any], names: dict[str, str]) -> str:
    """A call (``Call.summary``) as the header says it: call in #general, started by alice,
    3 in it."""
    host = names.get(call["host"]) or call["host"][:8]
    watching = f", {len(call['viewers'])} watching" if call["viewers"] else ""
    n = len(call["participants"])
    return f"call in #{call['channel_id']}, started by {host}, {n} in it{watching}"


def call_lines(answer: dict[str, Any], channel: str = "") -> list[str]:
    """The calls of a ``store.calls`` answer (of one channel if named) as `felund calls` and
    the ui's /call print them: who is in each, and how to join one from a browser."""
    names: dict[str, str] = answer["names"]
    found = [c for c in answer["calls"] if not channel or c["channel_id"] == channel]
    if not found:
        return [f"no call in #{channel}" if channel else "no call"]
    lines = []
    for c in found:
        lines.append(call_words(c, names))
        for label, who in (("in it", c["participants"]), ("watching", c["viewers"])):
            if who:
                people = ", ".join(f"{names.get(n) or '-'} ({n[:12]})" for n in who)
                lines.append(f"  {label}: {people}")
    relay = answer["relay_url"]
    lines.append(
        f"join from a browser: open {relay.rstrip('/')}/, join the circle with its invite "
        "code, then F4 (the call panel)"
        if relay
        else "join from a browser: a browser joins through a relay, and this node has none "
        "(felund relay url URL)"
    )
    return lines
