"""The ui's slash commands as text: their table and help, parsing, names,
control events, Tab completion (sans-IO; what they do to the view is
``felund.ui.slash``).

Control events come from the builder ``felund.cli.chat`` uses too
(``felund.v1.events``), so the ui and the ``felund`` command write the same
events; the store resolves whom an approve names, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from felund.errors import UsageError
from felund.protocol import ACCESS_MODES, GIVEN_ROLES, UNVERIFIED_MARK
from felund.v1 import chatmodel, events

COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "help": ("/help [command]", "list the commands, or explain one"),
    "invite": ("/invite", "show the invite code of the active circle (F2)"),
    "join": ("/join <code>", "join a circle with its invite code"),
    "circles": ("/circles", "list your circles"),
    "circle": (
        "/circle switch <n|name> | create [name] | name <new name> | leave",
        "switch to a circle by number (as /circles) or name; create one; rename the active "
        "circle; leave it (asks again; its history is kept)",
    ),
    "inbox": (
        "/inbox [--mentions|-m] [N]",
        "the newest N messages (20) of all your circles, or those that name you",
    ),
    "channels": ("/channels", "list the channels of the active circle (* = yours)"),
    "channel": (
        "/channel create <name> [public|key|invite] [key] [private|shared] | join <name> [key] | "
        "switch <name> | leave <name> | request <name> | requests <name> | "
        "approve <name> <person>",
        "create, join, switch to, leave a channel; ask to join, see who asked, or approve "
        "(invite channels); "
        "a key or invite channel is private (read by its members only) unless shared (read "
        "by every member of the circle); with neither said, one some members cannot read "
        "is not made, and they are named",
    ),
    "who": (
        "/who [channel]",
        "who is in the circle, or in one of its channels, with roles (? = no key seen)",
    ),
    "call": (
        "/call",
        "the call in this channel (a browser starts one): who is in it, how to join it",
    ),
    "role": (
        "/role moderator|member <person>",
        "make someone a moderator, or a member again (the circle's owner only)",
    ),
    "kick": (
        "/kick <person>",
        "remove someone from the circle: a new key for everyone else (owner or moderator); "
        "says what it will do, and the same /kick again within 10 s does it",
    ),
    "name": ("/name [new name]", "show your display name, or change it in every circle"),
    "settings": ("/settings", "your display name and the relay URL (F3)"),
    "time": ("/time", "show the full date and time of every message, or HH:MM again"),
    "debug": ("/debug", "show the node's log records as they come (Esc closes)"),
    "quit": ("/quit", "detach; the node keeps running (Ctrl+Q)"),
}
CHANNEL_OPS: Final = ("create", "join", "switch", "leave", "request", "requests", "approve")
CIRCLE_OPS: Final = ("switch", "create", "name", "leave")
PRIVACY: Final = ("private", "shared")
KEY_HELP: Final = (
    ("F1", "this help"),
    ("F2", "the active circle's invite code"),
    ("F3", "settings: display name, relay URL"),
    ("F4", "hide or show the sidebar"),
    ("Ctrl+Q", "detach (the node keeps running)"),
    ("Esc", "close a window, back to the input"),
    ("Alt+1..9", "the Nth channel of the active circle"),
    ("Ctrl+N / Ctrl+P", "next / previous channel"),
    ("PageUp / PageDown", "scroll a page; End: back to the newest"),
    ("mouse", "click the sidebar to switch; wheel scrolls; Shift+drag selects"),
    ("Up / Down", "lines sent before"),
    ("Tab", "complete a command, channel or name; again for the next"),
    ("Home / End, Ctrl+U, Ctrl+W", "start / end of line, clear it, delete a word"),
    ("//text", "send text that starts with a slash"),
)


KEY_COLUMN: Final = max(len(keys) for keys, _ in KEY_HELP) + 2
MIN_WHAT_COLS: Final = 30  # narrower beside the keys, what a key does goes below it


def help_lines(command: str = "", cols: int = 0) -> list[str]:
    """The help text: every key and command, or one command's usage; in ``cols`` too
    narrow for the keys beside what they do, each key above it."""
    if command:
        name = command.lstrip("/")
        if name not in COMMANDS:
            raise UsageError(f"unknown command /{name} \u2014 /help lists them")
        usage, what = COMMANDS[name]
        return [usage, f"  {what}"]
    lines = ["Keys"]
    if cols and cols < 2 + KEY_COLUMN + MIN_WHAT_COLS:
        lines += [f"  {keys}\n      {what}" for keys, what in KEY_HELP]
    else:
        lines += [f"  {keys:<{KEY_COLUMN}}{what}" for keys, what in KEY_HELP]
    lines += ["", "Commands"]
    lines += [f"  {usage}\n      {what}" for usage, what in COMMANDS.values()]
    lines += ["", "Marks", f"  {UNVERIFIED_MARK}name: not signed by its author's key (unverified)"]
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


def create_args(args: list[str]) -> tuple[str, str, str, str]:
    """``/channel create <name> [access] [key] [private|shared]`` as (name, access, key,
    privacy: "private", "shared" or "" when not said)."""
    usage = "usage: /channel create <name> [public|key|invite] [key] [private|shared]"
    words = args[2:]
    access = words.pop(0) if words else "public"
    # A key channel's next word is its key, whatever it spells; otherwise it is the privacy.
    key = words.pop(0) if words and (access == "key" or words[0] not in PRIVACY) else ""
    privacy = words.pop(0) if words else ""
    if len(args) < 2 or words or privacy not in ("", *PRIVACY):
        raise UsageError(usage)
    if privacy and access not in ("key", "invite"):
        raise UsageError("private and shared go with a key or invite channel")
    return channel_name(args[1]), access, key, privacy


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
            return _matching(word, list(ACCESS_MODES))
        if words[1] == "create" and (n, words[3:4]) in ((4, ["invite"]), (5, ["key"])):
            return _matching(word, list(PRIVACY))
    if cmd == "/who" and n == 1:
        return _channel_words(word, ctx)
    if cmd == "/role" and n == 1:
        return _matching(word, list(GIVEN_ROLES))
    if cmd == "/circle":
        if n == 1:
            return _matching(word, list(CIRCLE_OPS))
        if n == 2:
            return _matching(word, ctx.circles)
    return None


def _channel_words(word: str, ctx: Context) -> list[str]:
    hash_ = "#" if word.startswith("#") else ""
    return _matching(word[len(hash_) :], ctx.channels, hash_)


def _matching(prefix: str, names: list[str], lead: str = "") -> list[str]:
    low = prefix.lower()
    return sorted({lead + n for n in names if n.lower().startswith(low) and n})
