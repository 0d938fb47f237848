"""Peer table poisoning (issue 14): a member floods a node with learned addresses.

704 native PEERS frames of 64 addresses with 128-character node ids, as in
the issue. Before the fix the node stored all 45,000, ``store.peers``
answered them in one bus message near its size limit, and ``felund peers``
and sync broke in both directions, even across restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from felund.protocol import MAX_PEERS_PER_CIRCLE
from felund.testing import Node, wait_for, wire_message
from felund.v1.invite import decode_invite
from tests.integration.native_member import send_frames

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
FRAMES, PER_FRAME = 704, 64


def _texts(node: Node, circle_id: str) -> set[str]:
    return {m["text"] for m in node.json("inbox", "--circle-id", circle_id, "--limit", "1000")}


def _syncs_both_ways(a: Node, b: Node, circle_id: str, tag: str) -> None:
    a.cli("send", "--circle-id", circle_id, f"a {tag}")
    b.cli("send", "--circle-id", circle_id, f"b {tag}")
    wait_for(lambda: f"a {tag}" in _texts(b, circle_id), timeout=60, what=f"a's {tag} on b")
    wait_for(lambda: f"b {tag}" in _texts(a, circle_id), timeout=60, what=f"b's {tag} on a")


def _peers_answer(node: Node, circle_id: str) -> list[str]:
    started = time.monotonic()
    peers = node.json("peers")
    assert time.monotonic() - started < 10, "felund peers took too long"
    return [p["addr"] for p in peers if p["circle_id"] == circle_id]


def _flood(secret: str, circle_id: str) -> list[dict[str, Any]]:
    """The issue's PEERS frames, then one good message."""
    now = int(time.time())
    frames: list[dict[str, Any]] = []
    for f in range(FRAMES):
        peers = [
            {"node_id": f"{f:03d}{i:02d}".ljust(128, "x"), "addr": _addr(f, i), "last_seen": now}
            for i in range(PER_FRAME)
        ]
        frames.append({"t": "PEERS", "circle_id": circle_id, "peers": peers})
    frames.append({"t": "MSGS", "msgs": [wire_message(secret, "flooder", "after the flood")]})
    return frames


def _addr(frame: int, i: int) -> str:
    return f"10.{frame >> 8}.{frame & 255}.{i + 1}:9999"


def test_a_flood_of_learned_addresses_breaks_nothing(make_node: Callable[..., Node]) -> None:
    a = make_node("a", FELUND_GOSSIP_ROUND_INTERVAL_S="0.5")
    b = make_node("b", FELUND_GOSSIP_ROUND_INTERVAL_S="0.5")
    for n, name in ((a, "a"), (b, "b")):
        n.cli("init", "--bind", "127.0.0.1", "--name", name)
    code = a.cli("invite").stdout.strip()
    circle_id = b.cli("join", "--code", code).stdout.strip()
    a.start()
    b.start()
    _syncs_both_ways(a, b, circle_id, "before")

    secret = decode_invite(code).secret
    frames = _flood(secret, circle_id)
    port = int(a.env["FELUND_GOSSIP_PORT"])
    asyncio.run(send_frames(port, secret, circle_id, "flooder", frames))
    # Frames are handled in order: once the message is stored, so was every PEERS.
    wait_for(lambda: "after the flood" in _texts(a, circle_id), timeout=120, what="the message")
    assert len(_peers_answer(a, circle_id)) <= MAX_PEERS_PER_CIRCLE
    _syncs_both_ways(a, b, circle_id, "after")

    for n in (a, b):
        assert n.stop() == 0
        n.start()
    assert len(_peers_answer(a, circle_id)) <= MAX_PEERS_PER_CIRCLE
    _syncs_both_ways(a, b, circle_id, "after restarts")
