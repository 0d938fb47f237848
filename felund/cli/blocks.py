"""``felund block``, ``unblock`` and ``blocks``: whom this node hides (local, never sent)."""

from __future__ import annotations

import argparse
from typing import Any

from felund.cli.common import JSON_HELP, err, json_out, out
from felund.protocol import OP_BLOCKS
from felund.store.client import NodeClient

_NODE_HELP = "a node id, its start, or a current name (`felund who`); one node exactly"


def cmd_block(args: argparse.Namespace, node: NodeClient) -> None:
    """Hide a node's messages here and refuse its calls."""
    answer = node.call(OP_BLOCKS, {"block": args.node})
    err(f"blocked {_who(answer)}: its messages are hidden here (nobody else is told)")


def cmd_unblock(args: argparse.Namespace, node: NodeClient) -> None:
    """Show a blocked node's messages again."""
    answer = node.call(OP_BLOCKS, {"unblock": args.node})
    err(f"unblocked {_who(answer)}")


def cmd_blocks(args: argparse.Namespace, node: NodeClient) -> None:
    """List the nodes blocked here."""
    blocked = node.call(OP_BLOCKS, {})["blocked"]
    if args.json:
        json_out(blocked)
        return
    if not blocked:
        err("nobody is blocked")
    for b in blocked:
        out(f"{b['display_name'] or '-':<24} {b['node_id']}")


def _who(answer: dict[str, Any]) -> str:
    name = next(
        (b["display_name"] for b in answer["blocked"] if b["node_id"] == answer["node_id"]), ""
    )
    return f"{name} ({answer['node_id']})" if name else answer["node_id"]


def add_commands(sub: Any) -> None:
    """Register these commands on the main parser's subcommands."""
    p = sub.add_parser("block", help="hide a node's messages here and refuse its calls")
    p.add_argument("node", help=_NODE_HELP)
    p.set_defaults(func=cmd_block)
    p = sub.add_parser("unblock", help="show a blocked node's messages again")
    p.add_argument("node", help=_NODE_HELP)
    p.set_defaults(func=cmd_unblock)
    p = sub.add_parser("blocks", help="list the nodes blocked here")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_blocks)
