"""The `felund` command's answers to mistakes: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from felund.testing import Node
from felund.v1.invite import decode_invite


@pytest.fixture
def offline(make_node: Callable[..., Node]) -> Node:
    """A node with a circle, not running: commands work on its database under the lock."""
    node = make_node("answers")
    node.cli("init", "--bind", "127.0.0.1", "--name", "alice")
    node.circle_id = node.json("invite")["circle_id"]
    return node


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["send"], "give the message TEXT, or --stdin to send one message per line"),
        (["send", "x", "--stdin"], "give the message TEXT or --stdin, not both"),
        (["send", ""], "the message is empty"),
        (["send", "  "], "the message is empty"),
        (["inbox", "--limit", "abc"], "--limit: must be a whole number from 1 to 100000: 'abc'"),
        (["inbox", "--limit", "0"], "--limit: must be a whole number from 1 to 100000: '0'"),
        (["inbox", "--channel", "nosuch"], "there is no channel #nosuch"),
    ],
)
def test_a_mistake_is_one_clear_line_and_exit_2(offline: Node, args: list[str], says: str) -> None:
    got = offline.cli(*args, "--circle-id", offline.circle_id, check=False)
    assert got.returncode == 2, got
    assert says in got.stderr and len(got.stderr.strip().splitlines()) == 1, got.stderr
    offline.cli("send", "--circle-id", offline.circle_id, "the path is live")
    assert [m["text"] for m in offline.json("inbox", "--circle-id", offline.circle_id)] == [
        "the path is live"
    ]


def test_an_override_in_a_message_is_not_shown_but_kept(offline: Node) -> None:
    offline.cli("send", "--circle-id", offline.circle_id, "see \u202egpj.exe")
    shown = offline.cli("inbox", "--circle-id", offline.circle_id).stdout
    assert "see gpj.exe" in shown and "\u202e" not in shown
    kept = offline.json("inbox", "--circle-id", offline.circle_id)
    assert kept[0]["text"] == "see \u202egpj.exe"  # the data is the data; screens drop it


def test_invite_with_a_port_the_kernel_picks(make_node: Callable[..., Node]) -> None:
    """gossip.port 0: a stopped node says it has no fixed port; a running one names the
    port its gossip bound (the store used to raise ValueError on ":0")."""
    node = make_node("anyport", FELUND_GOSSIP_PORT="0")
    node.cli("init", "--bind", "127.0.0.1", "--name", "alice")
    got = node.cli("invite", check=False)
    assert got.returncode == 2, got
    assert "no fixed gossip port" in got.stderr and len(got.stderr.strip().splitlines()) == 1
    assert node.json("circles") == [], "nothing was created"
    node.start()
    bound = node.status()["gossip_addr"].rpartition(":")[2]
    assert bound != "0"
    code = node.json("invite")["code"]
    assert decode_invite(code).peer == f"127.0.0.1:{bound}"
