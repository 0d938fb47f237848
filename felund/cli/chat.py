"""``felund`` commands for circles, channels and people (control events)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from felund import home, lazy
from felund.cli.common import CIRCLE_HELP, JSON_HELP, context, err, json_out, out
from felund.errors import UsageError
from felund.protocol import (
    ACCESS_MODES,
    GIVEN_ROLES,
    OP_CALLS,
    OP_CHANNELS,
    OP_CIRCLE_LEAVE,
    OP_CIRCLES,
    OP_CONTROL,
    OP_MEMBER_REMOVE,
    OP_WHO,
)
from felund.store.client import NodeClient
from felund.v1 import ids

if TYPE_CHECKING:
    from felund.v1 import chatmodel, events
else:  # loaded by the commands that use them (``felund.lazy``)
    chatmodel, events = lazy.module("felund.v1.chatmodel"), lazy.module("felund.v1.events")


def _control(
    node: NodeClient, circle_id: str, event: dict[str, Any], channel_key: str = ""
) -> None:
    """Write one control event of this node into a circle (with the key of the key channel
    it creates or joins: the store keeps it to read and write the channel if private)."""
    node_id = home.load_node_id(context().layout)
    now = int(time.time())
    body = {
        "circle_id": circle_id,
        "msg_id": ids.new_msg_id(node_id, now),
        "created_ts": now,
        "event": event,
    }
    node.call(OP_CONTROL, {**body, "channel_key": channel_key} if channel_key else body)


def cmd_channels(args: argparse.Namespace, node: NodeClient) -> None:
    """List a circle's channels."""
    answer = node.call(OP_CHANNELS, {"circle_id": args.circle_id})
    if args.json:
        json_out(answer["channels"])
        return
    for c in answer["channels"]:
        mark = "*" if c["member"] else " "
        extra = f"  requests: {', '.join(c['requests'])}" if c["requests"] else ""
        access = c["access_mode"] + (" private" if c.get("private") else "")
        out(
            f"{mark} #{c['channel_id']:<20} {access:<15} "
            f"{chatmodel.members_text(c['channel_id'], c['members'])}{extra}"
        )


def cmd_channel(args: argparse.Namespace, node: NodeClient) -> None:
    """Create, join, leave, request or approve a channel."""
    try:
        event = events.channel_event(
            args.op,
            args.circle_id,
            args.name,
            home.load_node_id(context().layout),
            access=args.access,
            key=args.key or "",
            target=args.node or "",
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.shared and args.private:
        raise UsageError("--shared or --private, not both")
    if args.op == "create" and args.access != "public":
        if _private(args, node):
            event = events.made_private(event)
    elif args.shared or args.private:
        raise UsageError("--shared and --private go with creating a key or invite channel")
    _control(node, args.circle_id, event, args.key if args.op in ("create", "join") else "")
    private = " (private)" if event.get("private") else ""
    err(f"{args.op}: #{args.name}{private}")


def _private(args: argparse.Namespace, node: NodeClient) -> bool:
    """Whether a new key or invite channel is private: unless --shared, and, when members
    use a client that cannot read a private channel, if --private or the user says so."""
    if args.shared or args.private:
        return bool(args.private)
    people = node.call(OP_WHO, {"circle_id": args.circle_id})["people"]
    stuck = [p for p in people if not events.can_read_private(p)]
    if not stuck:
        return True
    err(events.unreadable_words(args.name, stuck))
    if not sys.stdin.isatty():
        raise UsageError(
            "not created: give --private (private anyway) or --shared (readable by every "
            "member of the circle, as a channel of the other implementation)"
        )
    sys.stderr.write("make it private anyway? [y: private / N: shared] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_rename(args: argparse.Namespace, node: NodeClient) -> None:
    """Change this node's display name, in every circle."""
    circles = node.call(OP_CIRCLES, {})["circles"]
    if not circles:
        raise UsageError("join or create a circle first: a name is shown to circles")
    node_id = home.load_node_id(context().layout)
    for c in circles:
        _control(node, c["circle_id"], events.rename_event(c["circle_id"], node_id, args.name))
    err(f"you are now {args.name!r} in {len(circles)} circle(s)")


def cmd_circle(args: argparse.Namespace, node: NodeClient) -> None:
    """Name or leave a circle."""
    if args.action == "name":
        _control(node, args.circle_id, events.circle_name_event(args.circle_id, args.name))
        return
    answer = node.call(
        OP_CIRCLE_LEAVE, {"circle_id": args.circle_id, "delete_history": args.delete_history}
    )
    err(
        "left the circle"
        + (
            " and deleted its history"
            if answer["history_deleted"]
            else "; its history is kept (--delete-history removes it)"
        )
    )


def cmd_members(args: argparse.Namespace, node: NodeClient) -> None:
    """Everyone of a circle: name, role, key fingerprint, last seen."""
    people = node.call(OP_WHO, {"circle_id": args.circle_id})["people"]
    if args.json:
        json_out(people)
        return
    for p in people:
        seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["last_seen"]))
        name = ("" if p["verified"] else "?") + ("" if p["can_follow"] else "!")
        name += p["display_name"] or "-"
        role = "removed" if p["removed"] else p["role"]
        out(
            f"{name:<24} {role:<9} {p['node_id']}  "
            f"{p['fingerprint'] or 'no key seen':<39}  last seen {seen}"
        )
    if not all(p["verified"] for p in people):
        err("? = no key seen: what they write shows unverified")
    if not all(p["can_follow"] for p in people):
        err("! = cannot follow a re-key (no X25519 key seen): needs a new invite code after one")


def cmd_member(args: argparse.Namespace, node: NodeClient) -> None:
    """Remove a member: says whom and who cannot follow, asks (unless --yes), re-keys."""
    body = {"circle_id": args.circle_id, "node": args.node}
    plan = node.call(OP_MEMBER_REMOVE, {**body, "dry_run": True})
    for line in events.removal_words(plan):
        err(line)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("not removed: give --yes to remove without being asked")
        sys.stderr.write("remove? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err("not removed")
            return
    done = node.call(OP_MEMBER_REMOVE, body)
    err(
        f"removed {events.person_words(done)}: the circle is at epoch {done['epoch']}; "
        f"`felund invite --circle-id {args.circle_id}` prints its new invite code"
    )


def cmd_role(args: argparse.Namespace, node: NodeClient) -> None:
    """The circle's owner makes someone a moderator, or a plain member again."""
    try:
        event = events.role_event(args.node, args.role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _control(node, args.circle_id, event)
    err(f"{args.node} is now a {args.role} of this circle")


def cmd_who(args: argparse.Namespace, node: NodeClient) -> None:
    """Who is in a circle or channel, and when each was last seen."""
    people = node.call(OP_WHO, {"circle_id": args.circle_id, "channel_id": args.channel or ""})[
        "people"
    ]
    if args.json:
        json_out(people)
        return
    for p in people:
        seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["last_seen"]))
        out(f"{p['display_name'] or '-':<24} {p['node_id']}  last seen {seen}")


def cmd_calls(args: argparse.Namespace, node: NodeClient) -> None:
    """The call of each channel of a circle: who started it, who is in it, how to join."""
    answer = node.call(OP_CALLS, {"circle_id": args.circle_id})
    if args.json:
        json_out(answer)
        return
    for line in events.call_lines(answer):
        out(line)


def add_commands(sub: Any, channel_arg: Any) -> None:
    """Register these commands on the main parser's subcommands."""
    p = sub.add_parser("channels", help="list a circle's channels")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_channels)

    p = sub.add_parser("channel", help="create, join, leave, request or approve a channel")
    p.add_argument(
        "op", choices=("create", "join", "leave", "request", "approve"), help="what to do"
    )
    p.add_argument("name", type=channel_arg, help="the channel")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--access", choices=ACCESS_MODES, default="public", help="who may join (create)")
    p.add_argument("--key", help="the channel's key (key channels; only its hash is sent)")
    p.add_argument(
        "--private",
        action="store_true",
        help="create: a key or invite channel sealed for its members only (the default, but "
        "asked when members use a client that cannot read it)",
    )
    p.add_argument(
        "--shared",
        action="store_true",
        help="create: a key or invite channel every member of the circle can read (as v1's)",
    )
    p.add_argument(
        "--node",
        help="whom to approve (invite channels): a node id, its start, or a name (`felund who`)",
    )
    p.set_defaults(func=cmd_channel)

    p = sub.add_parser("rename", help="change your display name")
    p.add_argument("name", help="your new display name")
    p.set_defaults(func=cmd_rename)

    circle = sub.add_parser("circle", help="name or leave a circle").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = circle.add_parser("name", help="give a circle a name every member sees")
    p.add_argument("name", help="the circle's new name")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.set_defaults(func=cmd_circle)
    p = circle.add_parser("leave", help="stop syncing a circle and forget its secret")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--delete-history", action="store_true", help="delete its messages too")
    p.set_defaults(func=cmd_circle)

    p = sub.add_parser("members", help="a circle's people: role, key fingerprint, last seen")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_members)

    member = sub.add_parser("member", help="remove a member from a circle").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = member.add_parser(
        "remove", help="remove a member: a new key for everyone else (owner or moderator)"
    )
    p.add_argument("node", help="whom: a node id, its start, or a name (`felund members`)")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    p.set_defaults(func=cmd_member)

    p = sub.add_parser("role", help="make someone a moderator, or a member again (owner only)")
    p.add_argument("role", choices=GIVEN_ROLES, help="the role to give")
    p.add_argument("node", help="whom: a node id, its start, or a name (`felund members`)")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.set_defaults(func=cmd_role)

    p = sub.add_parser("who", help="who is in a circle or channel")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--channel", type=channel_arg, help="one channel only (default: the circle)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_who)

    p = sub.add_parser("calls", help="the calls in a circle's channels, and who is in them")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_calls)
