"""What every ``felund`` command shares: output, the node context, argument types."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from felund.actor.runtime import Context, load_context
from felund.errors import FelundError, InvalidMessage
from felund.v1.wire import check_channel_id


class UsageError(FelundError):
    """The user asked for something that cannot be done (exit status 2)."""


def out(text: str = "") -> None:
    """Write a line to stdout."""
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    """Write a line to stderr."""
    sys.stderr.write(text + "\n")


def json_out(value: Any) -> None:
    """Print a value as indented JSON."""
    out(json.dumps(value, ensure_ascii=False, indent=2))


_CTX: Context | None = None


def context() -> Context:
    """The node this command works on (loaded once)."""
    global _CTX  # noqa: PLW0603 - one node per command invocation
    if _CTX is None:
        _CTX = load_context()
    return _CTX


def channel_arg(value: str) -> str:
    """argparse type: a valid channel id."""
    try:
        return check_channel_id(value)
    except InvalidMessage:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not a channel: 1 to 32 of a-z, 0-9, - and _"
        ) from None
