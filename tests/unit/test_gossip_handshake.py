"""The gossip handshake's state machines, both sides, v1 and native, in memory, on a fake clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from felund.epochs import root_only
from felund.errors import PeerError
from felund.gossip import v1_frames as v1proto
from felund.gossip.handshake import (
    HANDSHAKE_TIMEOUT_S,
    ClientHandshake,
    Established,
    ServerHandshake,
)
from felund.gossip.link import accept, handshake
from felund.testing.memory import FakeClock, stream_pair
from felund.v1 import crypto, ids

SECRET = "ab" * 32
CIRCLE = ids.circle_id(SECRET)
SERVER_ID, CLIENT_ID = "s" * 24, "c" * 24
KEYS = {CIRCLE: root_only(CIRCLE, SECRET)}


def _client(clock: FakeClock, secret: str = SECRET, offer_native: bool = True) -> ClientHandshake:
    return ClientHandshake(
        keys=root_only(CIRCLE, secret),
        node_id=CLIENT_ID,
        listen_addr="127.0.0.1:7777",
        offer_native=offer_native,
        now=clock(),
    )


def _server(clock: FakeClock) -> ServerHandshake:
    return ServerHandshake(KEYS, SERVER_ID, clock())


def _pump(client: ClientHandshake, server: ServerHandshake) -> tuple[Established, Established]:
    """Move bytes both ways until both sides are done (bounded: four frames)."""
    for _ in range(4):
        out = client.data_to_send()
        if out:
            server.receive_data(out)
        back = server.data_to_send()
        if back:
            client.receive_data(back)
    assert client.established is not None
    assert server.established is not None
    return client.established, server.established


def _frames(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_native_offer_taken_by_both_sides() -> None:
    clock = FakeClock()
    ours, theirs = _pump(_client(clock), _server(clock))
    assert ours.native and theirs.native
    assert (ours.peer_node_id, theirs.peer_node_id) == (SERVER_ID, CLIENT_ID)
    assert theirs.peer_listen_addr == "127.0.0.1:7777"
    assert ours.is_client and not theirs.is_client
    assert ours.channel is not None and theirs.channel is not None
    # The two channels agree: what one seals, the other opens.
    sealed = ours.channel.seal({"t": "PING"})
    assert theirs.channel.open(sealed[4:]) == {"t": "PING"}


def test_without_the_offer_the_session_is_v1_and_sealed() -> None:
    clock = FakeClock()
    ours, theirs = _pump(_client(clock, offer_native=False), _server(clock))
    assert not ours.native and not theirs.native
    assert ours.v1_key is not None and ours.v1_key == theirs.v1_key


def test_the_v1_frames_are_v1s() -> None:
    """What goes on the wire is the v1 handshake, plus the native keys when offered."""
    clock = FakeClock()
    client, server = _client(clock), _server(clock)
    hello = _frames(client.data_to_send())
    assert [f["t"] for f in hello] == ["HELLO"]
    assert hello[0]["native"] == 2 and hello[0]["circle_id"] == CIRCLE
    server.receive_data(v1proto.encode(hello[0], None))
    challenge = _frames(server.data_to_send())
    assert challenge[0]["t"] == "CHALLENGE" and challenge[0]["native"] == 2


def test_a_wrong_secret_gets_auth_failed_then_the_error() -> None:
    clock = FakeClock()
    client, server = _client(clock, secret="cd" * 32), _server(clock)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    with pytest.raises(PeerError) as refused:
        server.receive_data(client.data_to_send())
    assert refused.value.kind == "auth"
    error = server.data_to_send()  # queued before the error was raised: the caller sends it
    assert _frames(error) == [{"t": "ERROR", "err": "Auth failed"}]
    with pytest.raises(PeerError) as told:
        client.receive_data(error)
    assert told.value.kind == "refused"


def test_an_unknown_circle_is_told_so() -> None:
    clock = FakeClock()
    server = ServerHandshake({}, SERVER_ID, clock())
    with pytest.raises(PeerError) as refused:
        server.receive_data(_client(clock).data_to_send())
    assert refused.value.kind == "unknown_circle"
    assert _frames(server.data_to_send()) == [{"t": "ERROR", "err": "Unknown circle_id"}]


def test_a_forged_server_proof_is_refused() -> None:
    clock = FakeClock()
    client, server = _client(clock), _server(clock)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    welcome = _frames(server.data_to_send())[0]
    welcome["proof"] = "00" * 32
    with pytest.raises(PeerError) as refused:
        client.receive_data(v1proto.encode(welcome, None))
    assert refused.value.kind == "auth"


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (b"GET / HTTP/1.1\r\n", "garbage"),
        (b"[1, 2, 3]\n", "garbage"),
        (b'{"t": "MSGS_SEND"}\n', "unexpected"),
        (b'{"t": "HELLO", "circle_id": 5}\n', "frame"),
        (b'{"t": "HELLO", "circle_id": "x", "node_id": "no spaces"}\n', "frame"),
    ],
)
def test_a_bad_first_line_is_refused_without_an_answer(first: bytes, kind: str) -> None:
    server = _server(FakeClock())
    with pytest.raises(PeerError) as refused:
        server.receive_data(first)
    assert refused.value.kind == kind
    assert server.data_to_send() == b""


def test_an_endless_line_is_refused_at_the_limit_not_buffered() -> None:
    server = _server(FakeClock())
    server.receive_data(b"{" + b"a" * (v1proto.MAX_READ_LINE - 2))  # still under the limit
    with pytest.raises(PeerError) as refused:
        server.receive_data(b"a")
    assert refused.value.kind == "too_long"


def test_a_close_mid_line_and_between_lines() -> None:
    clock = FakeClock()
    server = _server(clock)
    server.receive_data(b'{"t": "HEL')
    with pytest.raises(PeerError, match="mid-line"):
        server.receive_data(b"")
    with pytest.raises(PeerError) as closed:
        _server(clock).receive_data(b"")
    assert closed.value.kind == "closed"


def test_the_deadline_is_on_the_callers_clock() -> None:
    clock = FakeClock()
    server = _server(clock)
    server.receive_data(_client(clock).data_to_send())  # progress does not move the deadline
    clock.advance(HANDSHAKE_TIMEOUT_S - 0.1)
    server.expire(clock())
    clock.advance(0.1)
    with pytest.raises(PeerError) as late:
        server.expire(clock())
    assert late.value.kind == "timeout"


def test_bytes_after_the_handshake_are_the_sessions() -> None:
    clock = FakeClock()
    client, server = _client(clock), _server(clock)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send() + b"first session bytes")
    assert server.established is not None
    assert server.established.rest == b"first session bytes"


def test_the_v1_session_key_is_the_specs() -> None:
    clock = FakeClock()
    client, server = _client(clock, offer_native=False), _server(clock)
    hello = _frames(client.data_to_send())[0]
    server.receive_data(v1proto.encode(hello, None))
    challenge = _frames(server.data_to_send())[0]
    client.receive_data(v1proto.encode(challenge, None))
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.established is not None
    assert client.established.v1_key == crypto.session_key(
        SECRET, hello["nonce"], challenge["nonce"]
    )


# --- the byte movers (felund.gossip.link) over an in-memory stream ------------------


def test_accept_and_handshake_over_memory_streams() -> None:
    async def run() -> tuple[bool, bool, bytes]:
        mine, theirs = stream_pair()
        server = asyncio.create_task(accept(theirs, KEYS, SERVER_ID))
        link = await handshake(
            mine,
            keys=KEYS[CIRCLE],
            node_id=CLIENT_ID,
            listen_addr="",
            offer_native=True,
        )
        served = await server
        mine.write(b"after")  # the session's first bytes reach the other side's link
        return link.native, served.native, await served.read(1.0)

    assert asyncio.run(run()) == (True, True, b"after")


def test_accept_sends_the_error_before_failing() -> None:
    async def run() -> tuple[str, bytes]:
        mine, theirs = stream_pair()
        server = asyncio.create_task(accept(theirs, {}, SERVER_ID))
        mine.write(_client(FakeClock()).data_to_send())
        with pytest.raises(PeerError) as refused:
            await server
        return refused.value.kind, await asyncio.wait_for(mine.read(1000), 1.0)

    kind, answer = asyncio.run(run())
    assert kind == "unknown_circle"
    assert _frames(answer) == [{"t": "ERROR", "err": "Unknown circle_id"}]


def test_accept_gives_up_at_the_deadline() -> None:
    clock = FakeClock()

    async def run() -> str:
        mine, theirs = stream_pair()
        server = asyncio.create_task(accept(theirs, KEYS, SERVER_ID, clock))
        await asyncio.sleep(0)
        clock.advance(HANDSHAKE_TIMEOUT_S)
        mine.write(b"{")  # half a line: the wait after it is for no time at all
        with pytest.raises(PeerError) as late:
            await asyncio.wait_for(server, 5.0)
        return late.value.kind

    assert asyncio.run(run()) == "timeout"


@pytest.mark.parametrize("anchor", [True, False])
def test_hello_and_welcome_say_whether_this_node_anchors(anchor: bool) -> None:
    clock = FakeClock()
    client = ClientHandshake(
        keys=KEYS[CIRCLE],
        node_id=CLIENT_ID,
        listen_addr="127.0.0.1:7777",
        offer_native=False,
        now=clock(),
        can_anchor=anchor,
    )
    server = ServerHandshake(KEYS, SERVER_ID, clock(), can_anchor=anchor)
    hello = client.data_to_send()
    assert _frames(hello)[0]["can_anchor"] is anchor
    server.receive_data(hello)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    welcome = server.data_to_send()
    assert _frames(welcome)[0]["can_anchor"] is anchor
    client.receive_data(welcome)
    assert client.established is not None  # an anchor's WELCOME is a WELCOME
