"""What each slash command does to the ui's view (sans-IO); their text is ``felund.ui.commands``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from felund.errors import UsageError
from felund.protocol import (
    DEFAULT_CHANNEL,
    GIVEN_ROLES,
    OP_CALLS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_WHO,
)
from felund.ui.commands import (
    CHANNEL_OPS,
    COMMANDS,
    Command,
    channel_event,
    channel_name,
    check_display_name,
    create_args,
    help_lines,
    parse,
)
from felund.ui.state import ChannelView, CircleView
from felund.ui.view import INBOX_MAX, INBOX_SHOWN, Effect, View
from felund.v1 import chatmodel, events


def run(model: View, line: str) -> list[Effect]:
    """Carry out a slash command; UsageError for a mistake in it."""
    cmd = parse(line)
    return _HANDLERS[cmd.name](model, cmd)


def _circle_or_fail(model: View) -> CircleView:
    circle = model.active_circle()
    if circle is None:
        raise UsageError("no circle yet: create one, or /join <code>")
    return circle


def _help(model: View, cmd: Command) -> list[Effect]:
    if not cmd.args:
        return model.open("help")
    model.notice("\n".join(help_lines(cmd.args[0])))
    return []


def _join(model: View, cmd: Command) -> list[Effect]:
    if len(cmd.args) != 1:
        raise UsageError("usage: /join <invite code>")
    model.notice("joining\u2026")
    return [model.call(OP_CIRCLE_JOIN, {"code": cmd.args[0]}, "join")]


def _circles(model: View, cmd: Command) -> list[Effect]:
    if not model.circles:
        raise UsageError("no circles yet: create one, or /join <code>")
    lines = ["your circles (/circle switch N):"]
    for n, circle in enumerate(model.circles.values(), 1):
        mark = "*" if model.active and model.active[0] == circle.circle_id else " "
        lines.append(f"{mark} {n}. {circle.name or '(no name)'}  {circle.circle_id}")
    model.notice("\n".join(lines))
    return []


def _circle(model: View, cmd: Command) -> list[Effect]:
    op = cmd.args[0] if cmd.args else ""
    if op == "create":
        name = check_display_name(cmd.rest.split(None, 1)[1]) if len(cmd.args) > 1 else ""
        return [model.call(OP_CIRCLE_CREATE, {"name": name}, "join")]
    if op == "name" and len(cmd.args) > 1:
        circle = _circle_or_fail(model)
        name = check_display_name(cmd.rest.split(None, 1)[1])
        event = events.circle_name_event(circle.circle_id, name)
        return [model.control(circle.circle_id, event, f"the circle is now named {name}")]
    if op == "leave" and len(cmd.args) == 1:
        return model.leave(_circle_or_fail(model).circle_id)
    if len(cmd.args) < 2 or op != "switch":
        raise UsageError("usage: " + COMMANDS["circle"][0])
    target = cmd.rest.split(None, 1)[1]
    circles = list(model.circles.values())
    found = [c for c in circles if target.lower() in (c.name.lower(), c.circle_id)]
    if target.isdigit() and 0 < int(target) <= len(circles):
        found = [circles[int(target) - 1]]
    if not found:
        raise UsageError(f"no circle {target!r}: /circles lists them")
    return model.switch(found[0].circle_id, DEFAULT_CHANNEL)


def _inbox(model: View, cmd: Command) -> list[Effect]:
    words = list(cmd.args)
    mentions_only = False
    for flag in ("--mentions", "-m"):
        while flag in words:
            words.remove(flag)
            mentions_only = True
    if len(words) > 1 or (words and not (words[0].isdigit() and 0 < int(words[0]) <= INBOX_MAX)):
        raise UsageError(f"usage: {COMMANDS['inbox'][0]} (N from 1 to {INBOX_MAX})")
    return model.inbox(int(words[0]) if words else INBOX_SHOWN, mentions_only)


def _time(model: View, cmd: Command) -> list[Effect]:
    model.full_time = not model.full_time
    model.notice(
        "full dates and times shown: /time again for HH:MM"
        if model.full_time
        else "times shown as HH:MM"
    )
    return []


def _listed(circle: CircleView, name: str) -> ChannelView:
    view = circle.channels.get(name)
    if view is None or not view.listed:
        raise UsageError(f"there is no channel #{name}: /channels lists them")
    return view


def _requests(model: View, circle: CircleView, name: str) -> list[Effect]:
    view = _listed(circle, name)
    if not view.requests:
        model.notice(f"nobody asked to join #{name}")
        return []
    people = [f"  {model.person(circle, node)}  {node[:8]}" for node in view.requests]
    approve = f"/channel approve {name} <person> lets one in"
    model.notice("\n".join([f"asked to join #{name}:", *people, approve]))
    return []


def _channels(model: View, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    lines = [f"channels of {circle.name or circle.circle_id[:8]} (* = yours):"]
    for view in sorted(circle.channels.values(), key=lambda v: v.channel_id):
        if view.listed:
            mark = "*" if view.member else " "
            extra = f"  requests: {len(view.requests)}" if view.requests else ""
            access = view.access_mode + (" private" if view.private else "")
            lines.append(
                f"{mark} #{view.channel_id}  {access}  "
                f"{chatmodel.members_text(view.channel_id, view.members)}{extra}"
            )
    model.notice("\n".join(lines))
    return []


def _channel(model: View, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    op = cmd.args[0] if cmd.args else ""
    if op not in CHANNEL_OPS or len(cmd.args) < 2:
        raise UsageError("usage: " + COMMANDS["channel"][0])
    if op == "create":
        name, access, key, privacy = create_args(cmd.args)
        event = channel_event(op, circle.circle_id, name, model.node_id, access=access, key=key)
        return model.create_channel(circle.circle_id, event, key, privacy)
    name = channel_name(cmd.args[1])
    if op == "switch":
        return _switch(model, circle, name)
    if op == "requests":
        return _requests(model, circle, name)
    if op == "leave" and name == DEFAULT_CHANNEL:
        raise UsageError("#general cannot be left")
    if op == "approve":
        if len(cmd.args) < 3:
            raise UsageError("usage: /channel approve <name> <person>")
        who = cmd.rest.split(None, 2)[2]  # a name may have spaces
        event = channel_event(op, circle.circle_id, name, model.node_id, target=who)
        return [model.control(circle.circle_id, event, f"approved {who} in #{name}")]
    key = cmd.args[2] if op == "join" and len(cmd.args) > 2 else ""
    event = channel_event(op, circle.circle_id, name, model.node_id, key=key)
    if op == "join":
        circle.switch_to = name
    done = {"join": f"joined #{name}", "leave": f"left #{name}"}.get(
        op, f"asked to join #{name}; a member must approve"
    )
    return [model.control(circle.circle_id, event, done, key)]


def _switch(model: View, circle: CircleView, name: str) -> list[Effect]:
    view = _listed(circle, name)
    if not view.member:
        raise UsageError(f"you are not in #{name}: /channel join {name}")
    return model.switch(circle.circle_id, name)


def _who(model: View, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    channel = channel_name(cmd.args[0]) if cmd.args else ""
    body = {"circle_id": circle.circle_id, "channel_id": channel}
    return [model.call(OP_WHO, body, "who", circle_id=circle.circle_id, channel_id=channel)]


# What a browser's /call does (addendum §1.2). The node has no microphone or camera, so it
# writes none of them: a host or participant without media breaks the call for everyone
# (its peers' connections to it never carry audio, its viewers get nothing, §1.4).
_BROWSER_ONLY: Final = ("start", "join", "view", "leave", "end", "revoke")


def _call(model: View, cmd: Command) -> list[Effect]:
    if cmd.args and cmd.args[0] in _BROWSER_ONLY:
        raise UsageError(
            f"/call {cmd.args[0]} is a browser's: this node has no microphone or camera, so it "
            "starts, joins and ends no call (/call says how to join from a browser)"
        )
    if cmd.args:
        raise UsageError("usage: " + COMMANDS["call"][0])
    circle = _circle_or_fail(model)
    channel = model.active[1] if model.active else DEFAULT_CHANNEL
    body = {"circle_id": circle.circle_id}
    return [
        model.call(
            OP_CALLS, body, "calls", circle_id=circle.circle_id, channel_id=channel, extra="show"
        )
    ]


def _role(model: View, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    if len(cmd.args) < 2 or cmd.args[0] not in GIVEN_ROLES:
        raise UsageError("usage: " + COMMANDS["role"][0])
    who = cmd.rest.split(None, 1)[1]  # a name may have spaces
    event = events.role_event(who, cmd.args[0])
    return [model.control(circle.circle_id, event, f"{who} is now a {cmd.args[0]}")]


def _kick(model: View, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    if not cmd.rest:
        raise UsageError("usage: " + COMMANDS["kick"][0])
    return model.kick(circle.circle_id, cmd.rest)  # a name may have spaces


def _name(model: View, cmd: Command) -> list[Effect]:
    if not cmd.rest:
        model.notice(f"you are {model.display_name!r}" if model.display_name else "no name yet")
        return []
    return model.rename(cmd.rest)


_HANDLERS: Final[dict[str, Callable[[View, Command], list[Effect]]]] = {
    "help": _help,
    "invite": lambda m, c: m.open("invite"),
    "join": _join,
    "circles": _circles,
    "circle": _circle,
    "inbox": _inbox,
    "time": _time,
    "channels": _channels,
    "channel": _channel,
    "who": _who,
    "call": _call,
    "role": _role,
    "kick": _kick,
    "name": _name,
    "settings": lambda m, c: m.open("settings"),
    "debug": lambda m, c: m.open("debug"),
    "quit": lambda m, c: m.detach(),
}
