"""Our node as a v1 anchor: a v1 peer speaking the real v1 frames (tests/v1peer.py's
handshake, then frames by hand) pushes to it and pulls from it, and it announces itself."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from felund.protocol import CONTROL_CHANNEL
from felund.testing import Node, metric_total, wait_for
from felund.v1.invite import encode_invite
from tests.v1peer import (
    MAX_PLAIN_FRAME,
    STREAM_LIMIT,
    RawConn,
    V1Peer,
    decrypt_message,
    open_frame,
)

pytestmark = pytest.mark.timeout(300)
ENVELOPE_KEYS = {"msg_id", "circle_id", "channel_id", "author_node_id", "created_ts", "enc"}


@pytest.fixture
def anchor(make_node: Callable[..., Node]) -> Iterator[tuple[Node, str, str]]:
    """A running node in a new circle: (node, circle_id, secret)."""
    secret = secrets.token_hex(32)
    node = make_node("anchor", FELUND_GOSSIP_ANCHOR_ANNOUNCE_INTERVAL_S="3")
    node.cli("init", "--bind", "127.0.0.1", "--name", "anchor")
    circle = node.cli("join", "--code", encode_invite(secret, "")).stdout.strip()
    node.start()
    yield node, circle, secret


class Session:
    """One v1 session with the node, by hand, every line it sends measured."""

    def __init__(self, peer: V1Peer, port: int) -> None:
        self.conn: RawConn
        self.conn, self.welcome = peer.handshake("127.0.0.1", port)
        self.circle_id = peer.circle_id
        self.longest = 0

    def recv(self) -> dict[str, Any]:
        line = self.conn._file.readline(STREAM_LIMIT)
        assert line.endswith(b"\n"), "the node closed the session"
        self.longest = max(self.longest, len(line))
        body = line.rstrip(b"\n")
        if self.conn.key is None:
            frame: dict[str, Any] = json.loads(body)
            return frame
        return open_frame(self.conn.key, body)

    def expect(self, t: str) -> dict[str, Any]:
        frame = self.recv()
        assert frame["t"] == t, frame
        return frame

    def round(self) -> None:
        """The v1 round, asking for nothing and offering nothing."""
        empty = {"circle_id": self.circle_id}
        self.conn.send({"t": "PEERS", **empty, "peers": []})
        self.conn.send({"t": "MSGS_HAVE", **empty, "msg_ids": []})
        assert {self.recv()["t"], self.recv()["t"]} == {"PEERS", "MSGS_HAVE"}
        self.conn.send({"t": "MSGS_REQ", **empty, "msg_ids": []})
        self.expect("MSGS_REQ")
        self.conn.send({"t": "MSGS_SEND", **empty, "messages": []})
        self.expect("MSGS_SEND")

    def push_pull(self, envelopes: list[Any], since: int) -> dict[str, Any]:
        """The anchor exchange: the ack, then the ANCHOR_MSGS answer."""
        self.conn.send({"t": "ANCHOR_PUSH", "circle_id": self.circle_id, "envelopes": envelopes})
        assert self.expect("ANCHOR_PUSH_ACK")["stored"] == len(envelopes)
        self.conn.send({"t": "ANCHOR_PULL", "circle_id": self.circle_id, "since": since})
        return self.expect("ANCHOR_MSGS")


def _envelope(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: msg[k] for k in ENVELOPE_KEYS}


@pytest.mark.parametrize("enc_session", [True, False], ids=["sealed", "plain"])
def test_a_v1_peer_pushes_and_pulls_everything_in_lines_that_fit(
    anchor: tuple[Node, str, str], enc_session: bool
) -> None:
    node, circle, secret = anchor
    port = int(node.env["FELUND_GOSSIP_PORT"])
    texts = [f"{i:03d} " + "long text " * 80 for i in range(500)]
    node.cli("send", "--circle-id", circle, "--stdin", stdin=("\n".join(texts) + "\n").encode())
    peer = V1Peer(secret, encrypt_session=enc_session, encrypt_messages=True)
    pushed = [_envelope(peer.post(f"pushed {i}")) for i in range(3)]
    # A push with garbage among it: refused one by one and counted, the rest stored.
    bad_enc = {**pushed[0], "msg_id": "f" * 32}  # its enc does not open under this id
    garbage = [bad_enc, "not a message", {"msg_id": 1}]
    bad_before = metric_total(node.metrics(), "felund_bad_input_total", source="gossip")

    session = Session(peer, port)
    assert session.welcome["can_anchor"] is True
    session.round()
    answer = session.push_pull([*pushed, *garbage], since=0)
    session.conn.close()
    wait_for(
        lambda: {f"pushed {i}" for i in range(3)} <= {m["text"] for m in node.inbox(circle)},
        what="the pushed envelopes in the node's store",
    )
    assert metric_total(node.metrics(), "felund_bad_input_total", source="gossip") >= (
        bad_before + 3
    )

    # Paging on with the server_time of each answer, a session each, as a v1 initiator does.
    got: list[dict[str, Any]] = list(answer["envelopes"])
    since, sessions, longest = answer["server_time"], 1, session.longest
    while answer["envelopes"] and sessions < 200:
        session = Session(peer, port)
        session.round()
        answer = session.push_pull([], since)
        session.conn.close()
        got += answer["envelopes"]
        since, sessions = answer["server_time"], sessions + 1
        longest = max(longest, session.longest)
    assert longest <= MAX_PLAIN_FRAME, longest  # every line the node wrote fits v1's limit
    assert sessions > 10  # pages, not one frame over the limit
    assert all(set(e) == ENVELOPE_KEYS for e in got)
    opened = [decrypt_message(peer.secret, e)[1] for e in got]
    chats = [e for e, t in zip(got, opened, strict=True) if e["channel_id"] != CONTROL_CHANNEL]
    # Everything the node received, in the order it was stored, and none twice.
    ids = [e["msg_id"] for e in chats]
    assert len(ids) == len(set(ids)) == 503
    assert [t for e, t in zip(got, opened, strict=True) if e in chats] == [
        *texts,
        *(f"pushed {i}" for i in range(3)),
    ]


def test_the_node_announces_itself_once_an_interval(anchor: tuple[Node, str, str]) -> None:
    node, circle, _ = anchor

    def announcements() -> list[dict[str, Any]]:
        found = []
        for m in node.inbox(circle, CONTROL_CHANNEL):
            event = json.loads(m["text"])
            if event.get("t") == "ANCHOR_ANNOUNCE":
                found.append({**event, "created_ts": m["created_ts"], "text": m["text"]})
        return found

    wait_for(lambda: len(announcements()) >= 2, timeout=30, what="two announcements")
    first, second = announcements()[:2]
    assert first["text"] == json.dumps(
        {
            "announced_at": first["created_ts"],
            "capabilities": {"can_anchor": True, "is_mobile": False, "public_reachable": False},
            "node_id": node.json("status")["node_id"],
            "t": "ANCHOR_ANNOUNCE",
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    assert second["created_ts"] - first["created_ts"] >= 2  # 3 s apart, not a burst


def test_our_v1_initiator_ends_cleanly_at_an_anchor(make_node: Callable[..., Node]) -> None:
    """A node of ours that speaks v1 (offers no native protocol) dials an anchor: it takes
    no part in the exchange and closes after the round; the anchor, waiting for a push,
    ends at once, and the round counts as good on both sides."""
    # Neither offers the native protocol: b, dialling a back, would open a native
    # session, and a does not dial a node it has one with.
    v1_only = {"FELUND_GOSSIP_OFFER_NATIVE": "false", "FELUND_GOSSIP_ROUND_INTERVAL_S": "0.5"}
    b = make_node("b", **v1_only)
    b.cli("init", "--bind", "127.0.0.1", "--name", "b")
    b.start()
    code = b.json("invite", "--name", "c", "--json")["code"]
    a = make_node("a", **v1_only)
    a.cli("init", "--bind", "127.0.0.1", "--name", "a")
    circle = a.cli("join", "--code", code).stdout.strip()
    a.start()
    a.cli("send", "--circle-id", circle, "from a")
    b.cli("send", "--circle-id", circle, "from b")
    wait_for(lambda: "from b" in {m["text"] for m in a.inbox(circle)}, what="b's message on a")
    wait_for(lambda: "from a" in {m["text"] for m in b.inbox(circle)}, what="a's message on b")

    def served() -> list[dict[str, Any]]:
        return [
            e
            for e in b.log_events()
            if e.get("event") == "gossip.session" and e.get("inbound") and e["protocol"] == "v1"
        ]

    wait_for(lambda: len(served()) >= 3, timeout=60, what="three v1 rounds served by b")
    assert all(e["outcome"] == "ok" for e in served()), served()
    assert all(e["seconds"] < 2.0 for e in served()), served()  # no wait for a push
