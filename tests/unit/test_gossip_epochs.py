"""Epochs in gossip: the handshake's choice of an epoch (both sides, sans-IO, on a fake clock),
and the catch-up session that follows when it is not the newest of both (over memory streams)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from felund.epochs import MAX_OFFERED, ROOT, CircleKeys
from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.gossip.handshake import (
    NO_COMMON_EPOCH,
    REKEYED,
    ClientHandshake,
    Established,
    ServerHandshake,
)
from felund.gossip.link import Link
from felund.gossip.sessions import NativeRun
from felund.protocol import CONTROL_CHANNEL
from felund.testing.memory import FakeClock, stream_pair
from felund.v1 import crypto
from tests.unit.gossip_host import CIRCLE, MemoryHost, messages

ROOT_SECRET, S1, S2, S3 = "a0" * 32, "b1" * 32, "c2" * 32, "d3" * 32
E1, E2, E3 = "1" * 32, "2" * 32, "3" * 32
SERVER_ID, CLIENT_ID = "s" * 24, "c" * 24


def _keys(*epochs: tuple[str, str]) -> CircleKeys:
    """A circle's keys, newest first (the store's order)."""
    return CircleKeys(CIRCLE, epochs)


AT_ROOT = _keys((ROOT, ROOT_SECRET))
AT_1 = _keys((E1, S1), (ROOT, ROOT_SECRET))
AT_2 = _keys((E2, S2), (E1, S1), (ROOT, ROOT_SECRET))
NEWCOMER_AT_2 = _keys((E2, S2))  # joined with an epoch-2 code: no root yet
OTHER_BRANCH = _keys((E3, S3))


def _client(keys: CircleKeys, clock: FakeClock, offer_native: bool = True) -> ClientHandshake:
    return ClientHandshake(
        keys=keys, node_id=CLIENT_ID, listen_addr="", offer_native=offer_native, now=clock()
    )


def _server(keys: CircleKeys, clock: FakeClock) -> ServerHandshake:
    return ServerHandshake({CIRCLE: keys}, SERVER_ID, clock())


def _frames(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def _pump(client: ClientHandshake, server: ServerHandshake) -> tuple[Established, Established]:
    for _ in range(4):
        if out := client.data_to_send():
            server.receive_data(out)
        if back := server.data_to_send():
            client.receive_data(back)
    assert client.established is not None and server.established is not None
    return client.established, server.established


def _agree(ours: Established, theirs: Established) -> None:
    """Both ends' channels are keyed alike: what one seals, the other opens."""
    assert ours.channel is not None and theirs.channel is not None
    assert theirs.channel.open(ours.channel.seal({"t": "PING"})[4:]) == {"t": "PING"}


# --- the choice ------------------------------------------------------------------------


def test_both_newest_equal_is_a_full_session_under_it() -> None:
    clock = FakeClock()
    client, server = _client(AT_2, clock), _server(AT_2, clock)
    hello = _frames(client.data_to_send())[0]
    assert hello["epochs"] == [E2, E1, ROOT]
    server.receive_data(v1proto.encode(hello, None))
    ours, theirs = _pump(client, server)
    assert (ours.epoch_id, theirs.epoch_id) == (E2, E2)
    assert not ours.catch_up and not theirs.catch_up
    assert ours.secret == theirs.secret == S2
    _agree(ours, theirs)


@pytest.mark.parametrize(
    ("client_keys", "server_keys", "chosen"),
    [
        (AT_1, AT_2, E1),  # the client lags one re-key
        (AT_2, AT_1, E1),  # the server does
        (AT_ROOT, AT_2, ROOT),  # a member offline through two re-keys
        (NEWCOMER_AT_2, AT_2, E2),  # both at 2, and the same: full (checked below)
    ],
)
def test_one_lagging_is_a_catch_up_session_under_the_newest_common(
    client_keys: CircleKeys, server_keys: CircleKeys, chosen: str
) -> None:
    clock = FakeClock()
    ours, theirs = _pump(_client(client_keys, clock), _server(server_keys, clock))
    assert (ours.epoch_id, theirs.epoch_id) == (chosen, chosen)
    lagging = client_keys.newest != server_keys.newest
    assert ours.catch_up is theirs.catch_up is lagging
    _agree(ours, theirs)


def test_the_session_is_keyed_under_the_chosen_epochs_secret() -> None:
    clock = FakeClock()
    client, server = _client(AT_1, clock), _server(AT_2, clock)
    hello = _frames(client.data_to_send())[0]
    server.receive_data(v1proto.encode(hello, None))
    challenge = _frames(server.data_to_send())[0]
    assert challenge["epoch"] == E1
    client.receive_data(v1proto.encode(challenge, None))
    auth = _frames(client.data_to_send())[0]
    assert crypto.verify_handshake_token(S1, CLIENT_ID, CIRCLE, challenge["nonce"], auth["token"])
    server.receive_data(v1proto.encode(auth, None))
    welcome = _frames(server.data_to_send())[0]
    assert welcome["epoch_id"] == E2  # the server's newest: the client learns it lags


def test_no_common_epoch_is_an_error_both_sides_see() -> None:
    clock = FakeClock()
    client, server = _client(OTHER_BRANCH, clock), _server(AT_2, clock)
    with pytest.raises(PeerError) as refused:
        server.receive_data(client.data_to_send())
    assert refused.value.kind == "no_common_epoch"
    error = server.data_to_send()
    assert _frames(error) == [{"t": "ERROR", "err": NO_COMMON_EPOCH}]
    with pytest.raises(PeerError) as told:
        client.receive_data(error)
    assert (told.value.kind, told.value.detail) == ("refused", NO_COMMON_EPOCH)


def test_v1_after_a_re_key_is_refused_with_the_new_code_sentence() -> None:
    clock = FakeClock()
    v1_client = _client(AT_ROOT, clock, offer_native=False)  # a HELLO without epochs
    server = _server(AT_1, clock)
    with pytest.raises(PeerError) as refused:
        server.receive_data(v1_client.data_to_send())
    assert refused.value.kind == "old_epoch"
    assert _frames(server.data_to_send()) == [{"t": "ERROR", "err": REKEYED}]


def test_a_native_hello_without_epochs_is_a_root_session_until_a_re_key() -> None:
    """A node of ours from before epochs: native, no ``epochs``: as before at the root."""
    clock = FakeClock()
    old = _client(AT_ROOT, clock)
    hello = _frames(old.data_to_send())[0]
    del hello["epochs"]
    server = _server(AT_ROOT, clock)
    server.receive_data(v1proto.encode(hello, None))
    challenge = _frames(server.data_to_send())[0]
    assert "epoch" not in challenge and challenge["native"] == 2
    rekeyed = _server(AT_1, clock)
    with pytest.raises(PeerError):
        rekeyed.receive_data(v1proto.encode(hello, None))
    assert _frames(rekeyed.data_to_send()) == [{"t": "ERROR", "err": REKEYED}]


def test_v1_at_the_root_is_as_before() -> None:
    clock = FakeClock()
    ours, theirs = _pump(_client(AT_ROOT, clock, offer_native=False), _server(AT_ROOT, clock))
    assert not ours.native and ours.v1_key == theirs.v1_key is not None
    assert (ours.epoch_id, ours.catch_up) == (theirs.epoch_id, theirs.catch_up) == ("", False)


def test_a_re_keyed_client_does_not_speak_to_a_server_without_epochs() -> None:
    """A v1 server's CHALLENGE names no epoch: no HELLO_AUTH under the root goes out."""
    clock = FakeClock()
    client = _client(AT_1, clock)
    client.data_to_send()
    challenge = {"t": "CHALLENGE", "nonce": "ab" * 16}
    with pytest.raises(PeerError) as refused:
        client.receive_data(v1proto.encode(challenge, None))
    assert refused.value.kind == "old_epoch"
    assert client.data_to_send() == b""


def test_a_challenge_naming_an_epoch_not_offered_is_refused() -> None:
    clock = FakeClock()
    client = _client(AT_1, clock)
    client.data_to_send()
    challenge = {"t": "CHALLENGE", "nonce": "ab" * 16, "native": 2, "epoch": E2}
    with pytest.raises(PeerError) as refused:
        client.receive_data(v1proto.encode(challenge, None))
    assert refused.value.kind == "frame"
    assert client.data_to_send() == b""


def test_a_welcome_without_the_servers_epoch_is_refused() -> None:
    clock = FakeClock()
    client, server = _client(AT_1, clock), _server(AT_1, clock)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    welcome = _frames(server.data_to_send())[0]
    del welcome["epoch_id"]
    with pytest.raises(PeerError) as refused:
        client.receive_data(v1proto.encode(welcome, None))
    assert refused.value.kind == "frame"


@pytest.mark.parametrize(
    "epochs",
    [[], [E1] * (MAX_OFFERED + 1), ["not hex"], [5], "x" * 32, ["AB" * 16]],
)
def test_a_malformed_epochs_list_is_refused_without_an_answer(epochs: object) -> None:
    clock = FakeClock()
    hello = _frames(_client(AT_1, clock).data_to_send())[0]
    hello["epochs"] = epochs
    server = _server(AT_1, clock)
    with pytest.raises(PeerError) as refused:
        server.receive_data(v1proto.encode(hello, None))
    assert refused.value.kind == "frame"
    assert server.data_to_send() == b""


def test_a_hello_offers_at_most_the_newest_eight() -> None:
    held = (*((f"{n:032x}", f"{n:064x}") for n in range(20, 0, -1)), (ROOT, ROOT_SECRET))
    hello = _frames(_client(_keys(*held), FakeClock()).data_to_send())[0]
    assert hello["epochs"] == [e for e, _ in held[:MAX_OFFERED]]


# --- the catch-up session ------------------------------------------------------------------


def _control(count: int, author: str, start: int) -> list[dict[str, Any]]:
    return [{**m, "channel_id": CONTROL_CHANNEL} for m in messages(count, author, start)]


def _link(stream: object, is_client: bool, catch_up: bool) -> Link:
    key = bytes(range(32))
    agreed = Established(
        CIRCLE,
        S1,
        "server" if is_client else "client",
        is_client=is_client,
        native=True,
        channel=nativeproto.Channel(key, is_client),
        epoch_id=E1,
        catch_up=catch_up,
    )
    return Link(stream, agreed)  # type: ignore[arg-type]


async def _until(done: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not done():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_a_catch_up_session_moves_control_events_only_and_no_addresses() -> None:
    a_chat, a_control = messages(30, "a" * 24), _control(3, "a" * 24, 1_700_000_100)
    b_chat, b_control = messages(20, "b" * 24), _control(2, "b" * 24, 1_700_000_500)
    a, b = MemoryHost(a_chat + a_control), MemoryHost(b_chat + b_control)
    b.peers = [{"node_id": "n1", "addr": "10.0.0.1:9999", "last_seen": 5}]

    async def run() -> None:
        mine, theirs = stream_pair()
        client = NativeRun(_link(mine, True, True), "server", a, anti_entropy_s=3600)
        server = NativeRun(_link(theirs, False, True), "client", b, anti_entropy_s=3600)
        runs = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
        await _until(lambda: len(a.control[CIRCLE]) == len(b.control[CIRCLE]) == 5, "control")
        client.close()
        for task in runs:
            with pytest.raises(PeerError) as ended:
                await asyncio.wait_for(task, 5)
            assert ended.value.kind == "closed"  # not a refusal: nothing else was sent

    asyncio.run(run())
    control = {m["msg_id"] for m in a_control + b_control}
    assert set(a.held) == {m["msg_id"] for m in a_chat} | control
    assert set(b.held) == {m["msg_id"] for m in b_chat} | control
    assert a.learned == []  # no PEERS frame in a catch-up session


def test_a_peer_sending_messages_in_a_catch_up_session_is_refused() -> None:
    """A peer that takes the session for a full one (or lies) gets its control events stored
    and the rest refused: the session ends with the refusal."""
    a = MemoryHost(messages(10, "a" * 24) + _control(1, "a" * 24, 1_700_000_900))
    b = MemoryHost()

    async def run() -> str:
        mine, theirs = stream_pair()
        client = NativeRun(_link(mine, True, False), "server", a, anti_entropy_s=3600)
        server = NativeRun(_link(theirs, False, True), "client", b, anti_entropy_s=3600)
        runs = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
        with pytest.raises(PeerError) as refused:
            await asyncio.wait_for(runs[1], 10)
        client.close()
        with pytest.raises(PeerError):
            await asyncio.wait_for(runs[0], 5)
        return refused.value.detail

    assert "not_control" in asyncio.run(run())
    assert list(b.control[CIRCLE].ids((0, ""), (2**63 - 1, ""))) == list(b.held)
    assert len(b.held) == 1
