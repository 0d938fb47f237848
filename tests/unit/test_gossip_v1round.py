"""The v1 round: its state machine on a fake clock, and its driver over memory streams."""

from __future__ import annotations

import asyncio
import json

import pytest

from felund.errors import PeerError
from felund.gossip import v1_frames as v1proto
from felund.gossip.events import MsgsWanted, PeersReceived
from felund.gossip.handshake import Established
from felund.gossip.link import Link
from felund.gossip.sessions import run_v1
from felund.gossip.v1_round import V1Round
from felund.testing.memory import FakeClock, stream_pair
from tests.unit.gossip_host import CIRCLE, MemoryHost, messages

KEY = bytes(range(32))


def _round(host: MemoryHost, clock: FakeClock, key: bytes | None = KEY) -> V1Round:
    return V1Round(CIRCLE, key, host.index[CIRCLE], host.peers, clock())


def _serve(side: V1Round, host: MemoryHost, data: bytes, clock: FakeClock) -> None:
    side.receive_data(data, clock())
    while (event := side.next_event(clock())) is not None:
        if isinstance(event, PeersReceived):
            host.learned.extend(("peer", p) for p in event.peers)
        elif isinstance(event, MsgsWanted):
            side.send_msgs([host.held[i] for i in event.msg_ids])
        else:
            host.received.extend(m["msg_id"] for m in event.msgs)
            host.store(event.msgs)


@pytest.mark.parametrize("key", [KEY, None])
def test_one_round_swaps_what_each_side_lacks(key: bytes | None) -> None:
    a = MemoryHost(messages(30, "a" * 24))
    b = MemoryHost(messages(20, "b" * 24))
    a.peers = [{"node_id": "n1", "addr": "10.0.0.1:9999", "last_seen": 5}]
    clock = FakeClock()
    ours, theirs = _round(a, clock, key), _round(b, clock, key)
    for _ in range(6):
        out, back = ours.data_to_send(), theirs.data_to_send()
        if out:
            _serve(theirs, b, out, clock)
        if back:
            _serve(ours, a, back, clock)
    assert ours.done and theirs.done
    assert a.held.keys() == b.held.keys() and len(a.held) == 50
    assert b.learned == [("peer", a.peers[0])]


def test_every_line_fits_the_v1_limit_newest_first() -> None:
    held = messages(3000, "a" * 24)
    side = _round(MemoryHost(held), FakeClock(), key=None)
    lines = side.data_to_send().splitlines(keepends=True)
    have = json.loads(lines[1])
    assert have["t"] == "MSGS_HAVE"
    assert all(len(line) <= v1proto.MAX_LINE + 1 for line in lines)
    assert 0 < len(have["msg_ids"]) < len(held)  # the rest in later rounds
    assert have["msg_ids"][0] == held[-1]["msg_id"]  # newest first


def test_a_frame_out_of_order_ends_the_round() -> None:
    clock = FakeClock()
    side = _round(MemoryHost(), clock, key=None)
    line = v1proto.encode({"t": "MSGS_SEND", "circle_id": CIRCLE, "messages": []}, None)
    side.receive_data(line, clock())
    with pytest.raises(PeerError) as refused:
        side.next_event(clock())
    assert refused.value.kind == "unexpected"


def test_a_line_that_does_not_open_ends_the_round() -> None:
    clock = FakeClock()
    side = _round(MemoryHost(), clock)
    side.receive_data(b"bm90IHNlYWxlZA==\n", clock())
    with pytest.raises(PeerError) as refused:
        side.next_event(clock())
    assert refused.value.kind == "auth"


def test_each_frame_has_its_own_deadline() -> None:
    clock = FakeClock()
    side = _round(MemoryHost(), clock, key=None)
    clock.advance(v1proto.READ_TIMEOUT_S - 1)
    side.receive_data(v1proto.encode(v1proto.peers_frame(CIRCLE, []), None), clock())
    assert isinstance(side.next_event(clock()), PeersReceived)
    clock.advance(v1proto.READ_TIMEOUT_S - 1)
    side.expire(clock())  # the PEERS line moved it
    clock.advance(1)
    with pytest.raises(PeerError) as late:
        side.expire(clock())
    assert late.value.kind == "timeout"


def test_run_v1_over_memory_streams() -> None:
    a = MemoryHost(messages(30, "a" * 24))
    b = MemoryHost(messages(20, "b" * 24))

    def link(stream: object, is_client: bool) -> Link:
        agreed = Established(CIRCLE, "s", "peer", is_client=is_client, native=False, v1_key=KEY)
        return Link(stream, agreed)  # type: ignore[arg-type]

    async def run() -> list[int]:
        mine, theirs = stream_pair()
        rounds = [run_v1(link(mine, True), a), run_v1(link(theirs, False), b)]
        return list(await asyncio.wait_for(asyncio.gather(*rounds), 10))

    assert asyncio.run(run()) == [20, 30]
    assert a.held.keys() == b.held.keys()
    assert a.crossings[CIRCLE] and b.crossings[CIRCLE], "each sent: a message crossed"
