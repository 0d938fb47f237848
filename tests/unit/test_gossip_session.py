"""The native session: its state machine on a fake clock, and its driver over memory streams."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip.events import MsgsReceived, MsgsWanted
from felund.gossip.handshake import Established
from felund.gossip.link import Link
from felund.gossip.native_session import (
    IDLE_TIMEOUT_S,
    QUEUE_BYTES,
    ROUND_QUIET_S,
    ROUND_STALL_S,
    NativeSession,
)
from felund.gossip.sessions import NativeRun
from felund.testing.memory import FakeClock, stream_pair
from felund.v1.wire import pack_wire
from tests.unit.gossip_host import CIRCLE, MemoryHost, messages

KEY = bytes(range(32))


def _pair(a: MemoryHost, b: MemoryHost, clock: FakeClock) -> tuple[NativeSession, NativeSession]:
    client = NativeSession(nativeproto.Channel(KEY, True), True, a.index[CIRCLE], clock())
    server = NativeSession(nativeproto.Channel(KEY, False), False, b.index[CIRCLE], clock())
    return client, server


def _serve(session: NativeSession, host: MemoryHost, data: bytes, clock: FakeClock) -> None:
    """Feed bytes to a session and do what its events ask, as the driver does (at once)."""
    session.receive_data(data, clock())
    while (event := session.next_event(clock())) is not None:
        if isinstance(event, MsgsReceived):
            host.received.extend(m["msg_id"] for m in event.msgs)
            host.store(event.msgs)
            session.stored(event.msgs, clock())
        elif isinstance(event, MsgsWanted):
            session.send_msgs([pack_wire(host.held[i]) for i in event.msg_ids])
        else:
            host.learned.extend(("peer", p) for p in event.peers)


def _pump(
    client: NativeSession,
    server: NativeSession,
    hosts: tuple[MemoryHost, MemoryHost],
    clock: FakeClock,
) -> int:
    """Move bytes both ways until neither side has any to send; the number of trips."""
    for trip in range(100):
        out = client.data_to_send()
        if out:
            _serve(server, hosts[1], out, clock)
        back = server.data_to_send()
        if back:
            _serve(client, hosts[0], back, clock)
        if not out and not back:
            return trip
    raise AssertionError("no end to the exchange")


def test_a_round_brings_each_side_exactly_what_it_lacked() -> None:
    shared = messages(200, "s" * 24)
    a = MemoryHost(shared + messages(100, "a" * 24))
    b = MemoryHost(shared + messages(50, "b" * 24))
    clock = FakeClock()
    client, server = _pair(a, b, clock)
    client.start_round(clock())
    _pump(client, server, (a, b), clock)
    assert a.held.keys() == b.held.keys()
    assert len(a.held) == 350
    # Nothing travelled twice, and only what the other lacked.
    assert len(a.received) == len(set(a.received)) == 50
    assert len(b.received) == len(set(b.received)) == 100


def test_in_sync_costs_one_round_trip() -> None:
    held = messages(500, "s" * 24)
    a, b = MemoryHost(held), MemoryHost(held)
    clock = FakeClock()
    client, server = _pair(a, b, clock)
    client.start_round(clock())
    assert _pump(client, server, (a, b), clock) <= 2
    assert not a.received and not b.received


def test_the_round_settles_after_the_exchange_and_what_it_awaited() -> None:
    a, b = MemoryHost(), MemoryHost(messages(10, "b" * 24))
    clock = FakeClock()
    client, server = _pair(a, b, clock)
    client.start_round(clock())
    # Quiet is not settled while the peer has not answered (a slow first answer).
    clock.advance(ROUND_QUIET_S * 10)
    assert client.settled_in(clock()) > 0
    # The exchange, with what the client is sent held back from its store.
    held_back: list[dict[str, object]] = []
    for _ in range(10):
        out = client.data_to_send()
        if out:
            _serve(server, b, out, clock)
        back = server.data_to_send()
        if back:
            client.receive_data(back, clock())
            while (event := client.next_event(clock())) is not None:
                assert isinstance(event, MsgsReceived)
                held_back.extend(event.msgs)
    assert client.awaiting == {m["msg_id"] for m in held_back} == b.held.keys()
    clock.advance(ROUND_STALL_S - 1)
    assert client.settled_in(clock()) == pytest.approx(1)  # awaited, not yet stored
    client.stored(held_back, clock())
    assert not client.awaiting
    assert client.settled_in(clock()) == pytest.approx(ROUND_QUIET_S)
    clock.advance(ROUND_QUIET_S)
    assert client.settled_in(clock()) == 0


def test_a_round_that_stalls_settles_anyway() -> None:
    clock = FakeClock()
    client, _ = _pair(MemoryHost(), MemoryHost(), clock)
    client.start_round(clock())
    clock.advance(ROUND_STALL_S)
    assert client.settled_in(clock()) == 0


def test_ping_is_answered_peers_reported_bye_ends() -> None:
    clock = FakeClock()
    a, b = MemoryHost(), MemoryHost()
    client, server = _pair(a, b, clock)
    client.send_peers(CIRCLE, [{"node_id": "n1", "addr": "10.0.0.1:9999", "last_seen": 5}])
    _serve(server, b, client.data_to_send(), clock)
    assert b.learned == [("peer", {"addr": "10.0.0.1:9999", "node_id": "n1", "last_seen": 5})]
    ping = nativeproto.Channel(KEY, True)
    ping._sent = 1  # the client's next frame
    server.receive_data(ping.seal({"t": "PING"}) + ping.seal({"t": "BYE"}), clock())
    assert server.next_event(clock()) is None
    assert server.ended
    answer = nativeproto.FrameBuffer(nativeproto.Channel(KEY, True))
    answer.feed(server.data_to_send())
    assert answer.next_frame() == {"t": "PONG"}


def test_the_idle_deadline_is_on_the_callers_clock() -> None:
    clock = FakeClock()
    client, server = _pair(MemoryHost(), MemoryHost(), clock)
    clock.advance(IDLE_TIMEOUT_S - 1)
    server.receive_data(client.data_to_send() or b"\0", clock())  # anything moves it
    clock.advance(IDLE_TIMEOUT_S - 1)
    server.expire(clock())
    clock.advance(1)
    with pytest.raises(PeerError) as idle:
        server.expire(clock())
    assert idle.value.kind == "timeout"


def _refused(data: bytes) -> str:
    _, server = _pair(MemoryHost(), MemoryHost(), FakeClock())
    with pytest.raises(PeerError) as refused:
        server.receive_data(data, 0.0)
        server.next_event(0.0)
    return refused.value.kind


def test_bad_frames_are_refused_each_with_its_kind() -> None:
    ours = nativeproto.Channel(KEY, True)
    assert _refused(b"\xff\xff\xff\xff") == "oversize"  # from the header, before a body
    assert _refused(b"\x00\x00\x00\x02ab") == "garbage"
    tampered = bytearray(ours.seal({"t": "PING"}))
    tampered[-1] ^= 1
    assert _refused(bytes(tampered)) == "auth"
    replayed = nativeproto.Channel(KEY, True).seal({"t": "PING"})
    assert _refused(replayed + replayed) == "auth"  # counter nonces: the second fails
    assert _refused(nativeproto.Channel(KEY, True).seal({"t": "HELLO"})) == "frame"
    recon = {"t": "RECON", "start": False, "ranges": []}
    assert _refused(nativeproto.Channel(KEY, True).seal(recon)) == "frame"  # outside a round
    msgs = {"t": "MSGS", "msgs": "not a list"}
    assert _refused(nativeproto.Channel(KEY, True).seal(msgs)) == "frame"


def test_only_the_client_starts_a_round() -> None:
    clock = FakeClock()
    client, _ = _pair(MemoryHost(), MemoryHost(), clock)
    server_side = nativeproto.Channel(KEY, False)
    client.receive_data(server_side.seal({"t": "RECON", "start": True, "ranges": []}), clock())
    with pytest.raises(PeerError, match="only the client"):
        client.next_event(clock())


def test_a_push_to_a_peer_that_does_not_read_is_refused_at_the_cap() -> None:
    clock = FakeClock()
    client, _ = _pair(MemoryHost(), MemoryHost(), clock)
    big = [msgpack.packb({"msg_id": "x" * 16, "text": "y" * 200_000})]
    pushed = 0
    while client.push(big):
        pushed += 1
        assert pushed < 100
    assert client.queued >= QUEUE_BYTES and not client.has_room
    taken = client.data_to_send(limit=1)  # whole frames, one at least
    assert nativeproto.frame_length(taken[:4]) == len(taken) - 4
    assert client.has_room


# --- the driver (felund.gossip.sessions.NativeRun) over memory streams ----------------


def _link(stream: object, is_client: bool) -> Link:
    agreed = Established(
        CIRCLE,
        "secret",
        "server" if is_client else "client",
        is_client=is_client,
        native=True,
        channel=nativeproto.Channel(KEY, is_client),
    )
    return Link(stream, agreed)  # type: ignore[arg-type]


def test_two_runs_converge_then_push_then_end() -> None:
    a = MemoryHost(messages(300, "a" * 24))
    b = MemoryHost(messages(200, "b" * 24))
    b.peers = [{"node_id": "n1", "addr": "10.0.0.1:9999", "last_seen": 5}]

    async def run() -> tuple[int, int]:
        mine, theirs = stream_pair()
        client = NativeRun(_link(mine, True), "server", a, anti_entropy_s=3600)
        server = NativeRun(_link(theirs, False), "client", b, anti_entropy_s=3600)
        runs = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
        deadline = asyncio.get_running_loop().time() + 10
        while len(a.held) != 500 or len(b.held) != 500:
            assert asyncio.get_running_loop().time() < deadline, (len(a.held), len(b.held))
            await asyncio.sleep(0.01)
        fresh = messages(1, "a" * 24, start=1_800_000_000)
        a.store(fresh)
        client.push([pack_wire(fresh[0])])
        while fresh[0]["msg_id"] not in b.held:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        client.close()
        for task in runs:
            with pytest.raises(PeerError) as ended:
                await asyncio.wait_for(task, 5)
            assert ended.value.kind == "closed"
        return client.received, server.received

    assert asyncio.run(run()) == (200, 301)
    assert a.learned == [("server", b.peers[0])]
    assert len(b.received) == len(set(b.received))  # nothing twice


def test_a_run_ends_with_the_peers_fault_not_the_closed_socket() -> None:
    async def run() -> str:
        mine, theirs = stream_pair()
        server = NativeRun(_link(theirs, False), "client", MemoryHost(), anti_entropy_s=3600)
        task = asyncio.create_task(server.run())
        mine.write(b"\xff\xff\xff\xff")
        with pytest.raises(PeerError) as failed:
            await asyncio.wait_for(task, 5)
        return failed.value.kind

    assert asyncio.run(run()) == "oversize"
