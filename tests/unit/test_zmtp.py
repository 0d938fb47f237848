"""The commands' ZMTP codec (felund.bus.zmtp): what a ROUTER sends is read whole, however
it is cut, and a peer off the protocol is refused before its bytes are buffered.

The bytes of a ROUTER's greeting and READY are libzmq's own (4.3, captured from a node's
supervisor.ctl); talking to a real ROUTER is tests/integration/test_rpc_client.py's.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felund.bus import zmtp
from felund.errors import FrameError

LIBZMQ_GREETING = b"\xff" + bytes(7) + b"\x01\x7f\x03\x01NULL" + bytes(16) + b"\x00" + bytes(31)
LIBZMQ_READY = b"\x04)\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER\x08Identity\x00\x00\x00\x00"
ROUTER = frozenset({b"ROUTER"})
LIMIT = 64 * 1024


def reader(limit: int = LIMIT) -> zmtp.Reader:
    return zmtp.Reader(limit, ROUTER)


def frame(flags: int, body: bytes) -> bytes:
    if len(body) > 255:
        return bytes((flags | 0x02,)) + struct.pack(">Q", len(body)) + body
    return bytes((flags, len(body))) + body


def test_our_greeting_and_ready_are_rfc_23_s() -> None:
    assert len(zmtp.GREETING) == zmtp.GREETING_SIZE == 64
    assert zmtp.GREETING[:10] == b"\xff" + bytes(8) + b"\x7f"
    assert zmtp.GREETING[10:12] == b"\x03\x00"  # 3.0: the peer sends no PING
    assert zmtp.GREETING[12:32] == b"NULL" + bytes(16)
    assert zmtp.ready("DEALER") == b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"


@given(
    parts=st.lists(st.binary(max_size=600), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=97), max_size=40),
)
def test_a_reply_is_read_whole_however_it_is_cut(parts: list[bytes], cuts: list[int]) -> None:
    stream = LIBZMQ_GREETING + LIBZMQ_READY + zmtp.message(parts) + zmtp.message([b"next"])
    r, got, at = reader(), [], 0
    for n in [*cuts, len(stream)]:
        got += r.feed(stream[at : at + n])
        at += n
    assert r.ready
    assert got == [parts, [b"next"]]


def test_a_message_s_frames_say_more_and_long() -> None:
    assert zmtp.message([b"a", b"b" * 300]) == frame(0x01, b"a") + frame(0, b"b" * 300)


def test_an_http_server_on_the_endpoint_is_refused_at_its_first_byte() -> None:
    with pytest.raises(FrameError, match="not a ZeroMQ peer"):
        reader().feed(b"H")


@pytest.mark.parametrize(
    ("greeting", "says"),
    [
        (b"\xff" + bytes(8) + b"\x01" + bytes(54), "not a ZeroMQ peer"),
        (LIBZMQ_GREETING[:10] + b"\x02\x00" + LIBZMQ_GREETING[12:], "version 2.0"),
        (LIBZMQ_GREETING[:12] + b"CURVE" + bytes(15) + LIBZMQ_GREETING[32:], "NULL"),
    ],
)
def test_a_greeting_off_ours_is_refused(greeting: bytes, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        reader().feed(greeting)


def test_a_peer_that_is_no_router_is_refused() -> None:
    ready = zmtp.ready("PUB")
    with pytest.raises(FrameError, match="peer is a PUB"):
        reader().feed(LIBZMQ_GREETING + ready)


@pytest.mark.parametrize(
    ("after_greeting", "says"),
    [
        (frame(0, b"early"), "before READY"),
        (LIBZMQ_READY + LIBZMQ_READY, "second READY"),
        (LIBZMQ_READY + frame(0x08, b"x"), "flags 0x8"),
        (frame(0x04, b"\x05ERROR\x03bye"), "refused the connection"),
        (frame(0x05, b"\x05READY"), "a command marked MORE"),
        (b"\x06" + struct.pack(">Q", zmtp.MAX_COMMAND_SIZE + 1), "command too large"),
        (b"\x04\x1b\x05READY\x0bSocket-Type\x00\x00\x00\x07ROUTER", "truncated metadata"),
    ],
)
def test_a_peer_off_the_protocol_is_refused(after_greeting: bytes, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        reader().feed(LIBZMQ_GREETING + after_greeting)


def test_a_message_over_the_limit_is_refused_on_its_declared_size() -> None:
    """Only the frame's 9-byte head has come: nothing of the claimed 8 EiB is waited for."""
    r = reader()
    r.feed(LIBZMQ_GREETING + LIBZMQ_READY)
    with pytest.raises(FrameError, match="message over"):
        r.feed(b"\x02" + struct.pack(">Q", 2**63))
    r = reader()
    r.feed(LIBZMQ_GREETING + LIBZMQ_READY + frame(0x01, b"x" * (LIMIT // 2)))
    with pytest.raises(FrameError, match="message over"):  # the parts add up
        r.feed(frame(0, b"y" * (LIMIT // 2 + 1))[:9])


def test_a_message_of_too_many_parts_is_refused() -> None:
    r = reader()
    r.feed(LIBZMQ_GREETING + LIBZMQ_READY)
    with pytest.raises(FrameError, match="parts"):
        r.feed(frame(0x01, b"") * (zmtp.MAX_PARTS + 1))


def test_commands_a_router_may_send_later_are_passed_over() -> None:
    r = reader()
    ping = frame(0x04, b"\x04PING\x00\x00")
    assert r.feed(LIBZMQ_GREETING + LIBZMQ_READY + ping + zmtp.message([b"a"])) == [[b"a"]]
