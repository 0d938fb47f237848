"""`felund block`: a blocked node's messages are hidden here (inbox, export), and only here."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from felund.testing import Node, wait_for

pytestmark = pytest.mark.timeout(180)


def _pair(make_node: Callable[..., Node]) -> tuple[Node, Node, str]:
    """Two running nodes, "amy" and "bob", in one circle."""
    a = make_node("a")
    a.cli("init", "--bind", "127.0.0.1", "--name", "amy")
    a.start()
    code = a.json("invite", "--name", "c", "--json")["code"]
    b = make_node("b")
    b.cli("init", "--bind", "127.0.0.1", "--name", "bob")
    circle = b.cli("join", "--code", code).stdout.strip()
    b.start()
    return a, b, circle


def _stored(node: Node, circle: str, text: str) -> bool:
    return text in {m["text"] for m in node.inbox(circle)}


def _shown(node: Node, circle: str) -> str:
    return node.cli("inbox", "--circle-id", circle).stdout


def test_block_hides_a_nodes_messages_here_and_unblock_shows_them(
    make_node: Callable[..., Node],
) -> None:
    a, b, circle = _pair(make_node)
    bob = b.json("status")["node_id"]
    b.cli("send", "--circle-id", circle, "before the block")
    wait_for(lambda: _stored(a, circle, "before the block"), what="bob's first message on a")
    assert "before the block" in _shown(a, circle)  # the path is live

    # A name matching nobody: exit 2, and nothing is stored.
    nobody = a.cli("block", "carol", check=False)
    assert nobody.returncode == 2, nobody
    assert "no one in your circles" in nobody.stderr
    assert a.json("blocks", "--json") == []

    blocked = a.cli("block", "bob")
    assert bob in blocked.stderr
    assert a.json("blocks", "--json") == [{"node_id": bob, "display_name": "bob"}]
    assert "before the block" not in _shown(a, circle)
    a.cli("send", "--circle-id", circle, "amy still talks")
    b.cli("send", "--circle-id", circle, "while blocked")
    wait_for(lambda: _stored(a, circle, "while blocked"), what="bob's new message, stored on a")
    shown = _shown(a, circle)
    assert "while blocked" not in shown and "amy still talks" in shown
    marked = {m["text"]: m["blocked"] for m in a.json("inbox", "--circle-id", circle, "--json")}
    assert marked["while blocked"] is True and marked["amy still talks"] is False
    text = a.cli("export", "--circle-id", circle, "--format", "txt").stdout
    assert "while blocked" not in text and "amy still talks" in text
    lines = a.cli("export", "--circle-id", circle).stdout.splitlines()
    assert "while blocked" in {json.loads(line)["text"] for line in lines}  # the data stays whole
    # Never sent: bob's node shows amy's messages and knows of no block.
    wait_for(lambda: _stored(b, circle, "amy still talks"), what="amy's message on bob")
    assert b.json("blocks", "--json") == []

    a.cli("unblock", "bob")
    shown = _shown(a, circle)
    assert "while blocked" in shown and "before the block" in shown
    assert a.json("blocks", "--json") == []
