"""The anchor exchange we serve to v1 peers: its state machine on a fake clock, hostile input,
paging under the v1 line limit, and its driver (``run_v1``) over memory streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from typing import Any

import pytest

from felund.errors import PeerError
from felund.gossip import v1_frames as v1proto
from felund.gossip.handshake import Established
from felund.gossip.link import Link
from felund.gossip.native_session import BoundedSet
from felund.gossip.sessions import run_v1
from felund.gossip.v1_anchor import (
    ENVELOPE_KEYS,
    MAX_ENVELOPES,
    WAIT_S,
    AnchorCursors,
    AnchorPulled,
    AnchorPushed,
    AnchorServer,
    envelope,
)
from felund.gossip.v1_round import V1Round
from felund.testing.memory import FakeClock, stream_pair
from felund.v1 import ids
from felund.v1.wire import compose_message, to_wire
from tests.unit.gossip_host import CIRCLE, MemoryHost

KEY = bytes(range(32))
SECRET = "ab" * 32
AUTHOR = "a" * 24


def wires(
    count: int, text_len: int = 20, start: int = 1_700_000_000, char: str = "x"
) -> list[dict[str, Any]]:
    """``count`` encrypted messages of CIRCLE, as peers get them."""
    return [
        to_wire(
            compose_message(
                SECRET,
                circle_id=CIRCLE,
                channel_id="general",
                author_node_id=AUTHOR,
                display_name="a",
                text=f"{i:05d} " + char * text_len,
                created_ts=start + i,
                msg_id=ids.new_msg_id(AUTHOR, start + i),
                encrypt=True,
            )
        )
        for i in range(count)
    ]


def rows(msgs: list[dict[str, Any]], at: int = 1_700_000_000) -> list[dict[str, Any]]:
    """Store rows of ``msgs``, all stored in one second (a burst)."""
    return [{"seq": i, "at": at, "wire": m} for i, m in enumerate(msgs, 1)]


def server(key: bytes | None = KEY, clock: FakeClock | None = None) -> AnchorServer:
    return AnchorServer(CIRCLE, key, v1proto.LineBuffer(), (clock or FakeClock())())


def frames(data: bytes, key: bytes | None = KEY) -> list[dict[str, Any]]:
    out = []
    for line in data.splitlines(keepends=True):
        assert len(line) <= v1proto.MAX_LINE, len(line)
        out.append(v1proto.decode(line, key))
    return out


def line(frame: dict[str, Any], key: bytes | None = KEY) -> bytes:
    return v1proto.encode(frame, key)


def test_push_ack_pull_answer() -> None:
    clock = FakeClock()
    side = server(clock=clock)
    pushed = [envelope(w) for w in wires(3)]
    side.receive_data(line({"t": "ANCHOR_PUSH", "circle_id": CIRCLE, "envelopes": pushed}), 0)
    assert side.next_event(clock()) == AnchorPushed(pushed)
    assert side.next_event(clock()) is None  # nothing more until the caller acks
    side.ack(3, clock())
    assert frames(side.data_to_send()) == [{"t": "ANCHOR_PUSH_ACK", "stored": 3}]
    side.receive_data(line({"t": "ANCHOR_PULL", "circle_id": CIRCLE, "since": 5}), 0)
    assert side.next_event(clock()) == AnchorPulled(5)
    held = wires(4)
    assert side.answer(rows(held, at=77), 5) == (77, 4)
    [answer] = frames(side.data_to_send())
    assert answer["t"] == "ANCHOR_MSGS" and answer["server_time"] == 77
    assert answer["envelopes"] == [{k: w[k] for k in ENVELOPE_KEYS} for w in held]
    assert side.done


def test_a_peer_that_does_not_anchor_ends_the_exchange_quietly() -> None:
    clock = FakeClock()
    closed = server(clock=clock)
    closed.receive_data(b"", clock())  # a v1 initiator closes after MSGS_SEND
    assert closed.done and closed.next_event(clock()) is None
    silent = server(clock=clock)
    clock.advance(WAIT_S - 0.1)
    silent.expire(clock())
    assert not silent.done
    clock.advance(0.1)
    silent.expire(clock())
    assert silent.done
    # The pull is waited for as long, from the ack.
    slow = server(clock=clock)
    slow.receive_data(line({"t": "ANCHOR_PUSH", "envelopes": []}), clock())
    assert isinstance(slow.next_event(clock()), AnchorPushed)
    clock.advance(WAIT_S * 10)  # the store took its time: the peer's wait starts at the ack
    slow.ack(0, clock())
    slow.expire(clock())
    assert not slow.done
    clock.advance(WAIT_S)
    slow.expire(clock())
    assert slow.done and not slow.data_to_send().count(b"ANCHOR_MSGS")


def _refused(*sent: bytes, key: bytes | None = KEY) -> str:
    side = server(key)
    with pytest.raises(PeerError) as refused:
        for data in sent:
            side.receive_data(data, 0)
            while (event := side.next_event(0)) is not None:
                if isinstance(event, AnchorPushed):
                    side.ack(len(event.envelopes), 0)
    return refused.value.kind


def test_hostile_frames_end_the_exchange_each_with_its_kind() -> None:
    assert _refused(line({"t": "ANCHOR_PULL", "since": 0})) == "unexpected"  # a pull alone
    assert _refused(line({"t": "MSGS_REQ", "msg_ids": []})) == "unexpected"
    push = line({"t": "ANCHOR_PUSH", "envelopes": []})
    assert _refused(push, push) == "unexpected"  # a second push where the pull belongs
    assert _refused(line({"t": "ANCHOR_PUSH", "envelopes": {}})) == "frame"
    many = line({"t": "ANCHOR_PUSH", "envelopes": [0] * (MAX_ENVELOPES + 1)}, None)
    assert _refused(many, key=None) == "frame"
    for since in ("5", None, -1, 2**62, True, [1]):
        assert _refused(push, line({"t": "ANCHOR_PULL", "since": since})) == "frame", since
    assert _refused(b"x" * (v1proto.MAX_READ_LINE + 10)) == "too_long"  # refused unbuffered
    assert _refused(b"not sealed\n") == "auth"
    assert _refused(b"[1]\n", key=None) == "garbage"
    assert _refused(line({"t": "ERROR", "err": "no"})) == "refused"


@pytest.mark.parametrize("key", [KEY, None], ids=["sealed", "plain"])
def test_500_long_messages_of_one_second_page_out_in_lines_that_fit(key: bytes | None) -> None:
    """Every answer fits a v1 line; pulls with the server_time each answer gave go on where
    the last stopped, within the second, so the peer gets everything exactly once."""
    held = rows(wires(500, text_len=1000))
    cursors, peer, since = AnchorCursors(), "p" * 24, 0
    got: list[str] = []
    pulls = 0
    while pulls < 500:
        pulls += 1
        after = cursors.after(CIRCLE, peer, since)
        page = [r for r in held if r["at"] >= since and r["seq"] > after][:200]
        side = server(key)
        position = side.answer(page, since)
        [answer] = frames(side.data_to_send(), key)
        if position is not None:
            cursors.moved(CIRCLE, peer, position)
        got += [e["msg_id"] for e in answer["envelopes"]]
        since = answer["server_time"]
        if not page:
            break
    assert got == [r["wire"]["msg_id"] for r in held]  # in order, none twice, none skipped
    assert pulls > 20  # a page is a line's worth, not 200


def test_a_peer_without_a_position_gets_its_second_again_not_less() -> None:
    held = rows(wires(60, text_len=1000))
    first = server()
    position = first.answer(held, 0)
    assert position is not None
    sent = len(frames(first.data_to_send())[0]["envelopes"])
    assert 0 < sent < 60
    forgetful = AnchorCursors(limit=1)
    forgetful.moved(CIRCLE, "p1", position)
    forgetful.moved(CIRCLE, "p2", position)  # p1 is forgotten: the bound holds
    assert forgetful.after(CIRCLE, "p1", position[0]) == 0  # from its second's start
    assert forgetful.after(CIRCLE, "p2", position[0]) == position[1]
    assert forgetful.after(CIRCLE, "p2", position[0] + 1) == 0  # another since: a new start


def test_an_envelope_too_large_for_any_line_is_passed_over() -> None:
    big, small = wires(1, text_len=7000, char="é"), wires(2, start=1_800_000_000)
    side = server()
    assert side.answer(rows([small[0], *big, small[1]]), 0) == (1_700_000_000, 1)
    assert [e["msg_id"] for e in frames(side.data_to_send())[0]["envelopes"]] == [
        small[0]["msg_id"]
    ]  # the big one waits for the next pull, which starts with it
    again = server()
    assert again.answer(rows([*big, small[1]]), 0) == (1_700_000_000, 2)
    assert again.skipped == 1
    assert [e["msg_id"] for e in frames(again.data_to_send())[0]["envelopes"]] == [
        small[1]["msg_id"]
    ]


def test_messages_without_enc_are_not_sent_but_passed() -> None:
    plain = {**wires(1)[0], "enc": None}
    side = server()
    assert side.answer(rows([plain]), 9) == (1_700_000_000, 1)
    assert frames(side.data_to_send())[0] == {
        "t": "ANCHOR_MSGS",
        "envelopes": [],
        "server_time": 1_700_000_000,
    }
    empty = server()
    assert empty.answer([], 9) is None
    assert frames(empty.data_to_send())[0]["server_time"] == 9  # the peer's cursor stays


class RefusingHost(MemoryHost):
    """A store that refuses what is not a message, one by one, as the real one does."""

    async def receive(
        self,
        circle_id: str,
        raw_msgs: list[Any],
        came: BoundedSet | None = None,
        awaited: Collection[str] = (),
        control_only: bool = False,
    ) -> int:
        good = [m for m in raw_msgs if isinstance(m, dict) and "enc" in m]
        stored = await super().receive(circle_id, good, came, awaited, control_only)
        if len(good) < len(raw_msgs):
            raise PeerError("bad_message", f"{len(raw_msgs) - len(good)} garbage")
        return stored


def _link(stream: object, is_client: bool) -> Link:
    agreed = Established(CIRCLE, "s", "peer", is_client=is_client, native=False, v1_key=KEY)
    return Link(stream, agreed)  # type: ignore[arg-type]


def test_run_v1_serves_the_exchange_and_refused_envelopes_do_not_stop_it() -> None:
    """A v1 initiator's round, then its push (two good envelopes among garbage) and pull:
    the good ones are stored, the pull is answered, and the refusal is raised at the end."""
    ours = RefusingHost(wires(5))
    pushed = wires(2, start=1_750_000_000)
    good = [envelope(w) for w in pushed]

    async def initiator(stream: Any) -> list[dict[str, Any]]:
        round_ = V1Round(CIRCLE, KEY, MemoryHost().index[CIRCLE], [], 0)
        lines = v1proto.LineBuffer()
        got: list[dict[str, Any]] = []
        stream.write(round_.data_to_send())
        stream.write(line({"t": "MSGS_REQ", "circle_id": CIRCLE, "msg_ids": []}))
        stream.write(line({"t": "MSGS_SEND", "circle_id": CIRCLE, "messages": []}))
        push = {"t": "ANCHOR_PUSH", "envelopes": [good[0], "junk", {"x": 1}, good[1]]}
        stream.write(line(push))
        stream.write(line({"t": "ANCHOR_PULL", "since": 0}))
        while not got or got[-1]["t"] != "ANCHOR_MSGS":
            data = await stream.read(65536)
            assert data
            lines.feed(data)
            while (raw := lines.next_line()) is not None:
                got.append(v1proto.decode(raw, KEY))
        return got

    async def run() -> tuple[list[dict[str, Any]], BaseException | int]:
        mine, theirs = stream_pair()
        served = asyncio.create_task(run_v1(_link(theirs, False), ours, anchor=AnchorCursors()))
        got = await asyncio.wait_for(initiator(mine), 10)
        outcome = await asyncio.wait_for(asyncio.gather(served, return_exceptions=True), 10)
        return got, outcome[0]

    got, outcome = asyncio.run(run())
    assert isinstance(outcome, PeerError) and outcome.kind == "bad_message"
    assert [f["t"] for f in got][-2:] == ["ANCHOR_PUSH_ACK", "ANCHOR_MSGS"]
    assert got[-2]["stored"] == 4
    # Everything held, the pushed pair too, comes back in the order stored.
    sent = [e["msg_id"] for e in got[-1]["envelopes"]]
    assert sent == list(ours.held) and len(sent) == 7
    assert {w["msg_id"] for w in pushed} <= set(ours.held)


def test_run_v1_as_initiator_or_not_an_anchor_ends_after_the_round() -> None:
    """Our side that dialled never waits for an exchange, nor does a node not serving one."""
    a, b = MemoryHost(wires(3)), MemoryHost(wires(2, start=1_800_000_000))

    async def run() -> list[int]:
        mine, theirs = stream_pair()
        rounds = [
            run_v1(_link(mine, True), a, anchor=AnchorCursors()),
            run_v1(_link(theirs, False), b),
        ]
        return list(await asyncio.wait_for(asyncio.gather(*rounds), 10))

    assert asyncio.run(run()) == [2, 3]


def test_the_announce_text_is_v1s() -> None:
    from felund.v1 import chatmodel, events

    text = chatmodel.event_text(events.dated(events.anchor_announce("n" * 24), 1_700_000_123))
    assert text == (
        '{"announced_at":1700000123,"capabilities":{"can_anchor":true,"is_mobile":false,'
        '"public_reachable":false},"node_id":"' + "n" * 24 + '","t":"ANCHOR_ANNOUNCE"}'
    )
    assert json.loads(text)["announced_at"] == 1_700_000_123
