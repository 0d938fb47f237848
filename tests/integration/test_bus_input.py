"""Bad frames on the bus are counted and dropped; nothing crashes, service goes on."""

from __future__ import annotations

import struct

import msgpack
import pytest
import zmq

from felund.bus import envelope
from felund.bus.envelope import Header, Stamper
from felund.errors import FrameError
from felund.protocol import (
    BUS_MAX_MSG_SIZE,
    ENDPOINT_EVENTS_IN,
    ENDPOINT_STORE_CTL,
    MAX_BODY_SIZE,
    OP_STATS,
    TOPIC_HEARTBEAT,
)
from felund.testing import Node, metric_value, wait_for


def _endpoint(node: Node, name: str) -> str:
    return f"ipc://{node.home / 'run' / name}"


def _header(**changes: object) -> bytes:
    head = {"v": 1, "id": "x.1", "src": "test", "inc": "x", "seq": 1, "ts": 0.0, "corr": None}
    head.update(changes)
    return msgpack.packb(head)


def _payload(head: bytes, body: bytes, magic: bytes = b"FLND1") -> bytes:
    """Magic, 2-byte big-endian header length, header, body: the envelope's second part."""
    return magic + struct.pack(">H", len(head)) + head + body


_BODY = msgpack.packb({})

# b"t" stands for the topic; each test puts in one its receiver listens to.
BAD_FRAMES = {
    "garbage": [
        [b"t"],
        [b"t", b"not an envelope"],
        [b"t", _payload(b"\xc1", _BODY)],
        [b"t", _payload(_header(), _BODY, magic=b"XXXXX")],
    ],
    "version": [
        [b"t", _payload(_header(), _BODY, magic=b"FLND2")],
        [b"t", _payload(_header(v=2), _BODY)],
    ],
    "header": [
        [b"t", _payload(_header(seq="one"), _BODY)],
        [b"t", _payload(msgpack.packb([1, 2]), _BODY)],
    ],
    "oversize": [[b"t", _payload(_header(), b"\x00" * (MAX_BODY_SIZE + 1))]],
}
# Bigger than the transport cap: libzmq drops the connection before decode sees it.
HUGE_FRAME = [b"t", _payload(_header(), b"\x00" * (BUS_MAX_MSG_SIZE + 1))]


def _with_topic(parts: list[bytes], topic: bytes) -> list[bytes]:
    return [topic if p == b"t" else p for p in parts]


@pytest.mark.parametrize("topic", [OP_STATS.encode(), TOPIC_HEARTBEAT.encode()])
def test_bad_frames_are_refused_as_listed(topic: bytes) -> None:
    # Keeps BAD_FRAMES honest: each frame is refused by the decoder for its stated kind.
    for kind, frames in BAD_FRAMES.items():
        for parts in frames:
            with pytest.raises(FrameError) as info:
                envelope.decode(_with_topic(parts, topic))
            assert info.value.kind == kind, (kind, parts[-1][:24])
    assert sum(map(len, HUGE_FRAME)) > BUS_MAX_MSG_SIZE


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _call(ctx: zmq.Context[zmq.Socket[bytes]], node: Node, op: str, body: object) -> envelope.Frame:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(_endpoint(node, ENDPOINT_STORE_CTL))
    sock.send_multipart(envelope.encode(op, Stamper("test").next(), body))
    assert sock.poll(5000), f"no answer to {op}"
    frame = envelope.decode(sock.recv_multipart())
    sock.close()
    return frame


def test_bad_requests_to_the_store(node: Node, zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    held = _call(zctx, node, OP_STATS, {}).body["messages"]
    dealer = zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(_endpoint(node, ENDPOINT_STORE_CTL))
    for frames in BAD_FRAMES.values():
        for parts in frames:
            dealer.send_multipart(_with_topic(parts, OP_STATS.encode()))
    # Bigger than the transport cap: libzmq drops the connection, not the store.
    huge = zctx.socket(zmq.DEALER)
    huge.setsockopt(zmq.LINGER, 0)
    huge.connect(_endpoint(node, ENDPOINT_STORE_CTL))
    huge.send_multipart(_with_topic(HUGE_FRAME, OP_STATS.encode()))
    # Well-formed envelopes with bad contents get an error answer.
    unknown = _call(zctx, node, "store.drop_tables", {})
    assert unknown.topic == "store.drop_tables.err" and unknown.body["code"] == "unknown_op"
    not_a_map = _call(zctx, node, "store.inbox", ["circle"])
    assert not_a_map.topic.endswith(".err") and not_a_map.body["code"] == "bad_request"
    wrong_type = _call(zctx, node, "store.snapshot", {"since": "0"})
    assert wrong_type.body["code"] == "bad_request"
    # And the store still serves.
    ok = _call(zctx, node, OP_STATS, {})
    assert ok.topic == "store.stats.ok" and ok.body["messages"] == held

    def counted() -> bool:
        text = node.metrics()
        return all(
            (metric_value(text, "felund_bus_bad_frames_total", service="store", kind=kind) or 0)
            >= len(frames)
            for kind, frames in BAD_FRAMES.items()
        )

    wait_for(counted, what="bad frames to be counted by the store")
    assert node.status()["services"]["store"]["restarts"] == 0


def test_bad_events_to_subscribers(node: Node, zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    pub = zctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(_endpoint(node, ENDPOINT_EVENTS_IN))
    topic = TOPIC_HEARTBEAT.encode()
    good_but_odd = [
        envelope.encode(TOPIC_HEARTBEAT, Header(1, "h", "x", "i", 1, 0.0), "not a map"),
        envelope.encode(
            TOPIC_HEARTBEAT, Header(1, "h", "x", "i", 2, 0.0), {"service": "store", "pid": "nope"}
        ),
        envelope.encode(
            TOPIC_HEARTBEAT,
            Header(1, "h", "x", "i", 3, 0.0),
            {"service": "no-such-service", "pid": 1},
        ),
    ]

    def send_all() -> None:
        for frames in BAD_FRAMES.values():
            for parts in frames:
                pub.send_multipart(_with_topic(parts, topic))
        for parts in good_but_odd:
            pub.send_multipart(parts)

    def counted() -> bool:
        # PUB drops until its subscriptions arrive, so send again until seen.
        send_all()
        text = node.metrics()
        return all(
            (
                metric_value(text, "felund_bus_bad_frames_total", service="supervisor", kind=kind)
                or 0
            )
            >= 1
            for kind in BAD_FRAMES
        )

    wait_for(counted, interval=0.2, what="bad events to be counted by the supervisor")
    status = node.status()
    assert status["services"]["store"]["state"] == "running"
    assert status["services"]["store"]["restarts"] == 0
