"""The bus envelope: round trips, and every way a frame is refused."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from felund.bus import envelope
from felund.bus.envelope import Frame, Header, Stamper
from felund.errors import FrameError
from felund.protocol import (
    ENVELOPE_MAGIC,
    ENVELOPE_VERSION,
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    MAX_TOPIC_SIZE,
    TOPIC_MSG_STORED,
)

GOOD_BODY = msgpack.packb({"ok": True})


def good_head(**changes: Any) -> dict[str, Any]:
    head: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": "0123456789abcdef.1",
        "src": "store",
        "inc": "0123456789abcdef",
        "seq": 1,
        "ts": 1764000000.25,
        "corr": None,
    }
    head.update(changes)
    return head


def payload(
    head: bytes, body: bytes, magic: bytes = ENVELOPE_MAGIC, head_len: int | None = None
) -> bytes:
    """The second part, built by hand: magic, 2-byte big-endian header length, header, body."""
    length = len(head) if head_len is None else head_len
    return magic + struct.pack(">H", length) + head + body


def parts_with(
    head: Any = None, body: Any = None, topic: bytes = b"chat.msg.stored"
) -> list[bytes]:
    head_b = msgpack.packb(good_head() if head is None else head)
    body_b = GOOD_BODY if body is None else msgpack.packb(body)
    return [topic, payload(head_b, body_b)]


def refused(parts: list[bytes]) -> str:
    with pytest.raises(FrameError) as info:
        envelope.decode(parts)
    return info.value.kind


# --- round trip -----------------------------------------------------------------------


def test_stamper_numbers_frames_of_one_process() -> None:
    stamper = Stamper("store")
    first, second, third = stamper.next(), stamper.next("req-1"), stamper.next()
    assert [h.seq for h in (first, second, third)] == [1, 2, 3]
    assert {h.inc for h in (first, second, third)} == {stamper.inc}
    assert [h.id for h in (first, second, third)] == [f"{stamper.inc}.{n}" for n in (1, 2, 3)]
    assert {h.src for h in (first, second, third)} == {"store"}
    assert {h.v for h in (first, second, third)} == {ENVELOPE_VERSION}
    assert (first.corr, second.corr) == (None, "req-1")


def test_every_stamper_has_a_new_incarnation() -> None:
    incs = {Stamper("store").inc for _ in range(20)}
    assert len(incs) == 20
    again = Stamper("store")
    assert again.next().seq == 1


def test_encode_decode_round_trip() -> None:
    stamper = Stamper("cli")
    body = {
        "msgs": [{"store_seq": 1, "text": "hé ✓", "blob": b"\x00\xff"}],
        "n": -3,
        "f": 0.5,
        "none": None,
        "flag": True,
    }
    for header in (stamper.next(), stamper.next(corr="abc.7")):
        frame = envelope.decode(envelope.encode(TOPIC_MSG_STORED, header, body))
        assert frame == Frame(topic=TOPIC_MSG_STORED, header=header, body=body)


def test_encoded_frame_has_two_parts_with_the_magic_and_header_length() -> None:
    parts = envelope.encode("t", Stamper("x").next(), None)
    assert len(parts) == 2
    assert parts[0] == b"t"
    data = parts[1]
    assert data.startswith(ENVELOPE_MAGIC)
    (head_len,) = struct.unpack_from(">H", data, len(ENVELOPE_MAGIC))
    start = len(ENVELOPE_MAGIC) + 2
    head = msgpack.unpackb(data[start : start + head_len])
    assert head["src"] == "x"
    assert data[start + head_len :] == msgpack.packb(None)
    assert envelope.decode(parts).body is None


def test_hand_built_payload_decodes() -> None:
    frame = envelope.decode(parts_with())
    assert frame.topic == "chat.msg.stored"
    assert frame.header == Header(**good_head())
    assert frame.body == {"ok": True}


def test_limits_are_inclusive() -> None:
    body = b"x" * (MAX_BODY_SIZE - 5)  # bin32: 5 bytes of overhead
    assert len(msgpack.packb(body)) == MAX_BODY_SIZE
    topic = "t" * MAX_TOPIC_SIZE
    frame = envelope.decode(envelope.encode(topic, Stamper("x").next(), body))
    assert frame.topic == topic
    assert frame.body == body


def test_header_of_exactly_the_limit_is_accepted() -> None:
    head = good_head(src="")
    pad = MAX_HEADER_SIZE - len(msgpack.packb(head))
    head["src"] = "s" * (pad - 2)  # str8 -> str16 costs two more bytes
    head_b = msgpack.packb(head)
    assert len(head_b) == MAX_HEADER_SIZE
    frame = envelope.decode([b"t", payload(head_b, GOOD_BODY)])
    assert frame.header.src == head["src"]


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 3, 4])
def test_wrong_part_count_is_garbage(count: int) -> None:
    good = parts_with()
    parts = [*good, b"extra", b"extra"][:count]
    assert refused(parts) == "garbage"


def test_old_four_part_form_is_garbage() -> None:
    head_b = msgpack.packb(good_head())
    assert refused([b"t", ENVELOPE_MAGIC, head_b, GOOD_BODY]) == "garbage"


@pytest.mark.parametrize("magic", [b"", b"XXXXX", b"flnd1", b"FLN", b"\x00FLND1"])
def test_bad_magic_is_garbage(magic: bytes) -> None:
    parts = [b"t", payload(msgpack.packb(good_head()), GOOD_BODY, magic=magic)]
    assert refused(parts) == "garbage"


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # no object at all
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # array of two holding one
        b"\xa5ab",  # truncated string
        b"\xa2\xff\xfe",  # a string that is not UTF-8
        b"\x81\x01\x02",  # a map with an int key
    ],
)
@pytest.mark.parametrize("where", ["header", "body"])
def test_non_msgpack_header_or_body_is_garbage(bad: bytes, where: str) -> None:
    head_b = msgpack.packb(good_head())
    data = payload(bad, GOOD_BODY) if where == "header" else payload(head_b, bad)
    assert refused([b"t", data]) == "garbage"


@pytest.mark.parametrize("where", ["header", "body"])
def test_trailing_bytes_are_garbage(where: str) -> None:
    head_b = msgpack.packb(good_head())
    if where == "header":
        data = payload(head_b + b"\x00", GOOD_BODY)  # the length covers the extra byte
    else:
        data = payload(head_b, GOOD_BODY + b"\x00")
    assert refused([b"t", data]) == "garbage"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        ENVELOPE_MAGIC,
        ENVELOPE_MAGIC + b"\x00",  # half a length
    ],
)
def test_payload_shorter_than_magic_and_length_is_garbage(data: bytes) -> None:
    assert refused([b"t", data]) == "garbage"


@pytest.mark.parametrize("body", [GOOD_BODY, b""])
@pytest.mark.parametrize("extra", [1, 2, 100])
def test_header_length_past_the_end_is_garbage(body: bytes, extra: int) -> None:
    head_b = msgpack.packb(good_head())
    data = payload(head_b, body, head_len=len(head_b) + len(body) + extra)
    assert refused([b"t", data]) == "garbage"


def test_empty_body_is_garbage() -> None:
    head_b = msgpack.packb(good_head())
    assert refused([b"t", payload(head_b, b"")]) == "garbage"


def test_header_length_swallowing_the_body_is_garbage() -> None:
    head_b = msgpack.packb(good_head())
    data = payload(head_b, GOOD_BODY, head_len=len(head_b) + len(GOOD_BODY))
    assert refused([b"t", data]) == "garbage"


def test_header_length_too_short_is_garbage() -> None:
    head_b = msgpack.packb(good_head())
    data = payload(head_b, GOOD_BODY, head_len=len(head_b) - 1)
    assert refused([b"t", data]) == "garbage"


def test_topic_that_is_not_utf8_is_garbage() -> None:
    assert refused(parts_with(topic=b"chat.\xff")) == "garbage"


@pytest.mark.parametrize("magic", [b"FLND2", b"FLND0", b"FLND9", b"FLNDx"])
def test_other_envelope_versions(magic: bytes) -> None:
    parts = [b"t", payload(msgpack.packb(good_head()), GOOD_BODY, magic=magic)]
    assert refused(parts) == "version"


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_header_versions(version: Any) -> None:
    assert refused(parts_with(good_head(v=version))) == "version"


def test_header_without_version_is_refused() -> None:
    head = good_head()
    del head["v"]
    assert refused(parts_with(head)) in ("version", "header")


def test_oversize_body() -> None:
    data = payload(msgpack.packb(good_head()), b"\xc0" * (MAX_BODY_SIZE + 1))
    assert refused([b"t", data]) == "oversize"


def test_oversize_topic() -> None:
    assert refused(parts_with(topic=b"t" * (MAX_TOPIC_SIZE + 1))) == "oversize"


def test_oversize_header() -> None:
    head = good_head(src="s" * MAX_HEADER_SIZE)
    assert refused(parts_with(head)) == "oversize"


@pytest.mark.parametrize("head_len", [MAX_HEADER_SIZE + 1, 0xFFFF])
def test_oversize_header_length_is_refused_before_reading(head_len: int) -> None:
    # The declared size alone is enough: nothing past it is looked at.
    data = payload(msgpack.packb(good_head()), GOOD_BODY, head_len=head_len)
    assert refused([b"t", data]) == "oversize"


@pytest.mark.parametrize("field", ["id", "src", "inc", "seq", "ts"])
def test_missing_header_field(field: str) -> None:
    head = good_head()
    del head[field]
    assert refused(parts_with(head)) == "header"


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": "1"},
        {"seq": 1.0},
        {"seq": True},
        {"seq": None},
        {"id": 5},
        {"id": None},
        {"src": b"store"},
        {"inc": ["a"]},
        {"ts": "now"},
        {"ts": None},
        {"corr": 7},
        {"corr": b"abc"},
    ],
)
def test_header_field_of_the_wrong_type(changes: dict[str, Any]) -> None:
    assert refused(parts_with(good_head(**changes))) == "header"


@pytest.mark.parametrize("changes", [{"ts": True}, {"ts": False}])
def test_header_timestamp_that_is_a_bool(changes: dict[str, Any]) -> None:
    assert refused(parts_with(good_head(**changes))) == "header"


@pytest.mark.parametrize("version", [True, 1.0])
def test_header_version_that_only_equals_one(version: Any) -> None:
    # v must be the integer 1; msgpack's true and 1.0 merely compare equal to it.
    assert refused(parts_with(good_head(v=version))) in ("version", "header")


@pytest.mark.parametrize("head", [[1, 2, 3], "header", 1, None])
def test_header_that_is_not_a_map(head: Any) -> None:
    assert refused([b"t", payload(msgpack.packb(head), GOOD_BODY)]) == "header"


@pytest.mark.parametrize(
    "body",
    [{1: "a"}, {"ok": {2.5: "b"}}, [{"x": 1}, {None: 1}], {True: 1}],
)
def test_maps_with_non_string_keys_are_refused(body: Any) -> None:
    assert refused(parts_with(body=body)) == "garbage"


def test_header_map_with_non_string_key_is_refused() -> None:
    head = good_head()
    head[9] = "x"  # type: ignore[index]
    assert refused(parts_with(head)) == "garbage"


# --- arbitrary input ----------------------------------------------------------------------

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=8)), inner, max_size=4),
    ),
    max_leaves=10,
)
_header_keys = st.sampled_from(["v", "id", "src", "inc", "seq", "ts", "corr", "x"])
_heads = st.one_of(
    st.builds(lambda changes: good_head(**changes), st.dictionaries(_header_keys, _values)),
    st.dictionaries(_header_keys, _values),
    _values,
)
_magics = st.sampled_from([ENVELOPE_MAGIC, b"FLND2", b"FLND", b"junk", b""])
# The declared header length: the true one, a near miss, or anything at all.
_head_lens = st.one_of(st.none(), st.integers(0, 2**16 - 1), st.integers(0, 80))
_payloads = st.one_of(
    st.builds(
        payload,
        st.one_of(_heads.map(msgpack.packb), st.binary(max_size=64)),
        st.one_of(_values.map(msgpack.packb), st.binary(max_size=64)),
        _magics,
        _head_lens,
    ),
    # The magic, then anything: a random length and whatever follows.
    st.binary(max_size=80).map(lambda rest: ENVELOPE_MAGIC + rest),
    st.binary(max_size=80),
)
_packed_parts = st.tuples(st.binary(max_size=140), _payloads).map(list)
_any_parts = st.one_of(st.lists(st.binary(max_size=40), max_size=6), _packed_parts)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_any_parts)
def test_decode_raises_nothing_but_frame_error(parts: list[bytes]) -> None:
    try:
        frame = envelope.decode(parts)
    except FrameError as exc:
        assert exc.kind in ("garbage", "version", "oversize", "header")
        return
    assert isinstance(frame.topic, str)
    assert isinstance(frame.header, Header)
    assert type(frame.header.seq) is int
    assert isinstance(frame.header.id, str)
