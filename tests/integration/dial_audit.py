"""A member names fake peers to a real node; every connect() and name look-up is recorded.

Run by tests/integration/test_gossip_dialing.py inside a network namespace
with only loopback up (``unshare --net``), so that nothing can reach the
world whatever the code does. Every Python process of it loads ``HOOK`` as
its ``sitecustomize`` (the test puts it on PYTHONPATH), which writes each
``socket.connect`` to an IP address and each ``socket.getaddrinfo`` to the
file named by ``AUDIT_CONNECT_LOG`` (audit hooks: no LD_PRELOAD).

What happens: node A is in a circle whose invite code names ``localhost``
and a port where a decoy listens (a name the user gave: A may resolve it).
A hostile member of that circle opens native sessions to A under several
node ids and sends PEERS frames naming the issue's addresses (metadata,
public DNS, multicast, broadcast, unspecified, low ports, names of its
choosing) and thousands in 10/8, plus one address where a second decoy
listens; then one good message, stored once every frame before it was.
Then it waits (bounded) until A has dialled the second decoy a few times:
the dial loop has run several rounds over what it learned. It prints a
JSON summary for the test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from felund.testing import Node, free_port, wait_for, wire_message
from felund.v1.invite import encode_invite
from tests.integration.native_member import send_frames

Frame = dict[str, Any]

SECRET = "5e" * 32
HOOK = """\
import os
import sys

_path = os.environ.get("AUDIT_CONNECT_LOG")
if _path:
    _fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _audit(event, args):
        if event == "socket.connect" and isinstance(args[1], tuple):
            line = f"connect {os.getpid()} {args[1][0]} {args[1][1]}\\n"
        elif event == "socket.getaddrinfo":
            line = f"getaddrinfo {os.getpid()} {args[0]!r} {args[1]!r}\\n"
        else:
            return
        os.write(_fd, line.encode())

    sys.addaudithook(_audit)
"""
# The list, each as a member would send it.
FAKE = [
    "169.254.169.254:80",
    "169.254.169.254:9999",
    "8.8.8.8:53",
    "192.168.1.1:80",
    "224.0.0.1:9999",
    "239.255.255.250:1900",
    "255.255.255.255:9999",
    "0.0.0.0:22",
    "0.0.0.0:9999",
    "127.0.0.1:22",
    "[::]:9999",
    "[ff02::1]:9999",
    "[fe80::1]:9999",
    "[fd00:ec2::254]:80",
    "100.100.100.200:9999",
    "attacker-chosen.example:9999",
    "metadata.google.internal:80",
    "localhost:22",
]
SPRAY = 2560  # addresses in 10/8, as in the issue
FRAMES_PER_SESSION = 40


class Decoy:
    """A TCP listener on 127.0.0.1 that counts connections and closes them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.accepted += 1
            conn.close()


def _spray(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:9999"


def _session(who: str, circle_id: str, peer_frames: list[list[dict[str, Any]]]) -> list[Frame]:
    """A member's frames: PEERS, then one good message (stored once all came before)."""
    frames: list[Frame] = [
        {"t": "PEERS", "circle_id": circle_id, "peers": entries} for entries in peer_frames
    ]
    frames.append({"t": "MSGS", "msgs": [wire_message(SECRET, who, f"after the PEERS of {who}")]})
    return frames


def main() -> None:
    """Run the scenario; print its summary as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    invited, named = Decoy(), Decoy()
    node = Node(args.workdir / "a", FELUND_GOSSIP_PORT=str(free_port()))
    node.env["FELUND_GOSSIP_ROUND_INTERVAL_S"] = "0.5"
    node.cli("init", "--bind", "127.0.0.1", "--name", "a")
    circle_id = node.cli(
        "join", "--code", encode_invite(SECRET, f"localhost:{invited.port}")
    ).stdout.strip()
    port = int(node.env["FELUND_GOSSIP_PORT"])
    now = int(time.time())
    try:
        node.start()  # inside: a node that starts too slowly is stopped all the same
        wait_for(lambda: invited.accepted, timeout=60, what="a to dial the invite's name")
        first = [{"node_id": "n" * 128, "addr": a, "last_seen": now} for a in FAKE]
        first.append({"node_id": "decoy", "addr": f"127.0.0.1:{named.port}", "last_seen": now})
        sessions = {"member-1": [first]}
        spray = [{"node_id": "n" * 128, "addr": _spray(i), "last_seen": now} for i in range(SPRAY)]
        sessions["member-2"] = [spray[i : i + 64] for i in range(0, SPRAY, 64)]
        sessions["member-3"] = [
            [{"node_id": "n" * 128, "addr": f"evil{i}-{j}.example:9999"} for j in range(64)]
            for i in range(FRAMES_PER_SESSION)
        ]
        for who, peer_frames in sessions.items():
            frames = _session(who, circle_id, peer_frames)
            asyncio.run(send_frames(port, SECRET, circle_id, who, frames))

        def stored() -> bool:
            inbox = node.cli("inbox", "--circle-id", circle_id).stdout
            return all(f"after the PEERS of {who}" in inbox for who in sessions)

        wait_for(stored, timeout=60, interval=0.2, what="each member's message stored")
        wait_for(lambda: named.accepted >= 3, timeout=60, what="a to dial the named decoy")
        peers = node.json("peers")
    finally:
        node.stop()
    summary = {
        "gossip_port": port,
        "decoys": [invited.port, named.port],
        "named_accepted": named.accepted,
        "peers": [p["addr"] for p in peers if p["circle_id"] == circle_id],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
