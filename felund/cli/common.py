"""What every ``felund`` command shares: output, the node context, argument types."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from felund import lazy
from felund.actor.context import Context, load_context
from felund.protocol import CONTROL_CHANNEL, DEFAULT_CHANNEL, UNVERIFIED_MARK, on_screen

if TYPE_CHECKING:
    from felund.v1 import chatmodel
else:  # only a --channel argument needs it (``felund.lazy``)
    chatmodel = lazy.module("felund.v1.chatmodel")

JSON_HELP = "print JSON instead of text"
UNVERIFIED_HELP = (
    f"a {UNVERIFIED_MARK} before a name: the message is not signed by its author's key "
    "(a v1 client wrote it, or it lost its signature on the way)"
)
CIRCLE_HELP = "the circle's id (`felund circles` lists them)"


def out(text: str = "") -> None:
    """Write a line to stdout (as every screen shows text: ``protocol.on_screen``)."""
    sys.stdout.write(on_screen(text) + "\n")


def err(text: str) -> None:
    """Write a line to stderr (as every screen shows text: ``protocol.on_screen``)."""
    sys.stderr.write(on_screen(text) + "\n")


def json_out(value: Any) -> None:
    """Print a value as indented JSON: the data as it is, for programs (no ``on_screen``)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def message_line(row: dict[str, Any]) -> str:
    """A stored message as one line of text: date, channel, author (marked if unverified)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_ts"]))
    mark = "" if row.get("verified", True) else UNVERIFIED_MARK
    who = row["display_name"] or row["author_node_id"][:8]
    return f"{when} #{row['channel_id']} <{mark}{who}> {row['text']}"


_CTX: Context | None = None


def context() -> Context:
    """The node this command works on (loaded once)."""
    global _CTX  # noqa: PLW0603 - one node per command invocation
    if _CTX is None:
        _CTX = load_context()
    return _CTX


def channel_arg(value: str) -> str:
    """argparse type: a channel's name (``__control`` too, to read control events)."""
    if value in (CONTROL_CHANNEL, DEFAULT_CHANNEL):
        return value  # argparse checks a default too: `felund send` needs no chat model
    try:
        return chatmodel.channel_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
