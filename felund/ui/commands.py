"""The ui's slash commands: their table and help, parsing, control events,
Tab completion, and running them on the view model (sans-IO).

Control events come from the builder ``felund.cli.chat`` uses too
(``felund.v1.events``), so the ui and the ``felund`` command write the same
events; the store resolves whom an approve names, for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from felund.errors import UsageError
from felund.protocol import DEFAULT_CHANNEL, OP_CIRCLE_JOIN, OP_WHO
from felund.v1 import chatmodel, events

if TYPE_CHECKING:
    from felund.ui.model import Effect, Model
    from felund.ui.state import CircleView

COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "help": ("/help [command]", "list the commands, or explain one"),
    "invite": ("/invite", "show the invite code of the active circle (F2)"),
    "join": ("/join <code>", "join a circle with its invite code"),
    "circles": ("/circles", "list your circles"),
    "circle": ("/circle switch <n|name>", "switch to a circle by number (as /circles) or name"),
    "channels": ("/channels", "list the channels of the active circle (* = yours)"),
    "channel": (
        "/channel create <name> [public|key|invite] [key] | join <name> [key] | "
        "switch <name> | leave <name> | request <name> | approve <name> <person>",
        "create, join, switch to, leave a channel; ask to join or approve (invite channels)",
    ),
    "who": ("/who [channel]", "who is in the circle, or in one of its channels"),
    "name": ("/name [new name]", "show your display name, or change it in every circle"),
    "settings": ("/settings", "your display name and the relay URL (F3)"),
    "debug": ("/debug", "show the node's log records as they come (Esc closes)"),
    "quit": ("/quit", "detach; the node keeps running (Ctrl+Q)"),
}
CHANNEL_OPS: Final = ("create", "join", "switch", "leave", "request", "approve")
KEY_HELP: Final = (
    ("F1", "this help"),
    ("F2", "the active circle's invite code"),
    ("F3", "settings: display name, relay URL"),
    ("Ctrl+Q", "detach (the node keeps running)"),
    ("Esc", "close a window, back to the input"),
    ("Alt+1..9", "the Nth channel of the active circle"),
    ("Ctrl+N / Ctrl+P", "next / previous channel"),
    ("PageUp / PageDown", "scroll a page; End: back to the newest"),
    ("Up / Down", "lines sent before"),
    ("Tab", "complete a command, channel or name; again for the next"),
    ("Home / End, Ctrl+U, Ctrl+W", "start / end of line, clear it, delete a word"),
    ("//text", "send text that starts with a slash"),
)


def help_lines(command: str = "") -> list[str]:
    """The help text: every key and command, or one command's usage."""
    if command:
        name = command.lstrip("/")
        if name not in COMMANDS:
            raise UsageError(f"unknown command /{name} \u2014 /help lists them")
        usage, what = COMMANDS[name]
        return [usage, f"  {what}"]
    lines = ["Keys"]
    lines += [f"  {keys:<28} {what}" for keys, what in KEY_HELP]
    lines += ["", "Commands"]
    lines += [f"  {usage}\n      {what}" for usage, what in COMMANDS.values()]
    return lines


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed slash command: its name, words, and the text after the name."""

    name: str
    args: list[str]
    rest: str


def parse(line: str) -> Command:
    """A line starting with one slash, as a command; UsageError if unknown."""
    head, _, rest = line[1:].strip().partition(" ")
    name = head.lower()
    if name not in COMMANDS:
        raise UsageError(f"unknown command /{head[:32]} \u2014 /help lists them")
    return Command(name, rest.split(), rest.strip())


def channel_name(word: str) -> str:
    """A channel's name as typed (``#`` allowed), checked."""
    try:
        return chatmodel.channel_name(word)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_display_name(name: str) -> str:
    """A display name, checked as the store checks it."""
    name = name.strip()
    if not 0 < len(name) <= chatmodel.MAX_NAME or not name.isprintable():
        raise UsageError(f"names are 1 to {chatmodel.MAX_NAME} printable characters")
    return name


def channel_event(op: str, circle_id: str, name: str, node_id: str, **what: str) -> dict[str, Any]:
    """A CHANNEL_EVT from the shared builder (``felund.v1.events.channel_event``)."""
    try:
        return events.channel_event(op, circle_id, name, node_id, **what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def create_args(args: list[str]) -> tuple[str, str, str]:
    """``/channel create <name> [access] [key]`` as (name, access, key)."""
    if not 2 <= len(args) <= 4:
        raise UsageError("usage: /channel create <name> [public|key|invite] [key]")
    access = args[2] if len(args) > 2 else "public"
    key = args[3] if len(args) > 3 else ""
    return channel_name(args[1]), access, key


@dataclass(frozen=True, slots=True)
class Context:
    """What completion may offer: the active circle's channels, people, circles."""

    channels: list[str]
    people: list[str]
    circles: list[str]


def completions(before: str, ctx: Context) -> tuple[int, list[str]]:
    """Where the word before the cursor starts, and what it may become."""
    start = before.rfind(" ") + 1
    word = before[start:]
    words = before[:start].split()
    if before.startswith("/"):
        found = _command_words(words, word, ctx)
        if found is not None:
            return start, found
    if not word:
        return start, []
    at = "@" if word.startswith("@") else ""
    return start, _matching(word[len(at) :], ctx.people, at)


def _command_words(words: list[str], word: str, ctx: Context) -> list[str] | None:
    if not words:
        return _matching(word, [f"/{c}" for c in COMMANDS])
    cmd, n = words[0].lower(), len(words)
    if cmd == "/help" and n == 1:
        return _matching(word, list(COMMANDS))
    if cmd == "/channel":
        if n == 1:
            return _matching(word, list(CHANNEL_OPS))
        if n == 2 and words[1] in CHANNEL_OPS and words[1] != "create":
            return _channel_words(word, ctx)
        if n == 3 and words[1] == "create":
            return _matching(word, list(chatmodel.ACCESS_MODES))
    if cmd == "/who" and n == 1:
        return _channel_words(word, ctx)
    if cmd == "/circle":
        if n == 1:
            return _matching(word, ["switch"])
        if n == 2:
            return _matching(word, ctx.circles)
    return None


def _channel_words(word: str, ctx: Context) -> list[str]:
    hash_ = "#" if word.startswith("#") else ""
    return _matching(word[len(hash_) :], ctx.channels, hash_)


def _matching(prefix: str, names: list[str], lead: str = "") -> list[str]:
    low = prefix.lower()
    return sorted({lead + n for n in names if n.lower().startswith(low) and n})


def sidebar_order(channels: list[str]) -> list[str]:
    """Channels as the sidebar lists them: #general first, then by name."""
    return sorted(channels, key=lambda c: (c != DEFAULT_CHANNEL, c))


# --- running commands on the view model ---------------------------------------------
def run(model: Model, line: str) -> list[Effect]:
    """Carry out a slash command; UsageError for a mistake in it."""
    cmd = parse(line)
    return _HANDLERS[cmd.name](model, cmd)


def _circle_or_fail(model: Model) -> CircleView:
    circle = model.active_circle()
    if circle is None:
        raise UsageError("no circle yet: create one, or /join <code>")
    return circle


def _help(model: Model, cmd: Command) -> list[Effect]:
    if not cmd.args:
        return model.open("help")
    model.notice("\n".join(help_lines(cmd.args[0])))
    return []


def _join(model: Model, cmd: Command) -> list[Effect]:
    if len(cmd.args) != 1:
        raise UsageError("usage: /join <invite code>")
    model.notice("joining\u2026")
    return [model.call(OP_CIRCLE_JOIN, {"code": cmd.args[0]}, "join")]


def _circles(model: Model, cmd: Command) -> list[Effect]:
    if not model.circles:
        raise UsageError("no circles yet: create one, or /join <code>")
    lines = ["your circles (/circle switch N):"]
    for n, circle in enumerate(model.circles.values(), 1):
        mark = "*" if model.active and model.active[0] == circle.circle_id else " "
        lines.append(f"{mark} {n}. {circle.name or '(no name)'}  {circle.circle_id}")
    model.notice("\n".join(lines))
    return []


def _circle(model: Model, cmd: Command) -> list[Effect]:
    if len(cmd.args) < 2 or cmd.args[0] != "switch":
        raise UsageError("usage: /circle switch <n|name>")
    target = cmd.rest.split(None, 1)[1]
    circles = list(model.circles.values())
    found = [c for c in circles if target.lower() in (c.name.lower(), c.circle_id)]
    if target.isdigit() and 0 < int(target) <= len(circles):
        found = [circles[int(target) - 1]]
    if not found:
        raise UsageError(f"no circle {target!r}: /circles lists them")
    return model.switch(found[0].circle_id, DEFAULT_CHANNEL)


def _channels(model: Model, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    lines = [f"channels of {circle.name or circle.circle_id[:8]} (* = yours):"]
    for view in sorted(circle.channels.values(), key=lambda v: v.channel_id):
        if view.listed:
            mark = "*" if view.member else " "
            extra = f"  requests: {len(view.requests)}" if view.requests else ""
            lines.append(
                f"{mark} #{view.channel_id}  {view.access_mode}  "
                f"{chatmodel.members_text(view.channel_id, view.members)}{extra}"
            )
    model.notice("\n".join(lines))
    return []


def _channel(model: Model, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    op = cmd.args[0] if cmd.args else ""
    if op not in CHANNEL_OPS or len(cmd.args) < 2:
        raise UsageError("usage: " + COMMANDS["channel"][0])
    if op == "create":
        name, access, key = create_args(cmd.args)
        event = channel_event(op, circle.circle_id, name, model.node_id, access=access, key=key)
        circle.switch_to = name
        return [model.control(circle.circle_id, event, f"created #{name}")]
    name = channel_name(cmd.args[1])
    if op == "switch":
        return _switch(model, circle, name)
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
    return [model.control(circle.circle_id, event, done)]


def _switch(model: Model, circle: CircleView, name: str) -> list[Effect]:
    view = circle.channels.get(name)
    if view is None or not view.listed:
        raise UsageError(f"there is no channel #{name}: /channels lists them")
    if not view.member:
        raise UsageError(f"you are not in #{name}: /channel join {name}")
    return model.switch(circle.circle_id, name)


def _who(model: Model, cmd: Command) -> list[Effect]:
    circle = _circle_or_fail(model)
    channel = channel_name(cmd.args[0]) if cmd.args else ""
    body = {"circle_id": circle.circle_id, "channel_id": channel}
    return [model.call(OP_WHO, body, "who", circle_id=circle.circle_id, channel_id=channel)]


def _name(model: Model, cmd: Command) -> list[Effect]:
    if not cmd.rest:
        model.notice(f"you are {model.display_name!r}" if model.display_name else "no name yet")
        return []
    return model.rename(cmd.rest)


_HANDLERS: Final[dict[str, Callable[[Model, Command], list[Effect]]]] = {
    "help": _help,
    "invite": lambda m, c: m.open("invite"),
    "join": _join,
    "circles": _circles,
    "circle": _circle,
    "channels": _channels,
    "channel": _channel,
    "who": _who,
    "name": _name,
    "settings": lambda m, c: m.open("settings"),
    "debug": lambda m, c: m.open("debug"),
    "quit": lambda m, c: m.detach(),
}
