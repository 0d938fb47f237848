"""Parsing, composing and opening v1 messages; invite and id edge cases."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import unicodedata
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from felund.errors import AuthError, InvalidMessage, InviteError
from felund.v1 import crypto, ids
from felund.v1.invite import Invite, decode_invite, encode_invite
from felund.v1.wire import (
    MAX_KEY_ID_CHARS,
    MAX_TEXT_CHARS,
    WIRE_KEYS,
    WireMessage,
    check_shape,
    compose_message,
    open_message,
    parse_message,
    to_wire,
)

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CIRCLE = ids.circle_id(SECRET)
OTHER_SECRET = "ff" * 32
TS = 1764000000
HEADER: dict[str, Any] = {
    "circle_id": CIRCLE,
    "channel_id": "general",
    "author_node_id": "a3f8b2c4d5e6f7a8b9c0d1e2",
    "created_ts": TS,
    "msg_id": "5f2b9c0e1d3a4b5c6d7e8f9012345678",
}


def make(encrypt: bool, display_name: str = "alice", text: str = "hi", **kw: Any) -> WireMessage:
    return compose_message(
        SECRET, **{**HEADER, **kw}, display_name=display_name, text=text, encrypt=encrypt
    )


def plain_wire() -> dict[str, Any]:
    return to_wire(make(False))


def enc_wire() -> dict[str, Any]:
    return to_wire(make(True))


def raw_mac(secret: str, *parts: object) -> str:
    """The MAC as the reference client computes it: over whatever the fields hold."""
    data = "|".join(str(p) for p in parts).encode()
    return hmac.new(bytes.fromhex(secret), data, hashlib.sha256).hexdigest()


def expect(kind: str, obj: object, detail: str | None = None) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(obj)
    assert info.value.kind == kind
    if detail is not None:
        assert info.value.detail == detail


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True])
def test_round_trip(encrypt):
    msg = make(encrypt, display_name="Bøb 🚀", text="pipes | and\nnewlines")
    wire = json.loads(json.dumps(to_wire(msg)))
    assert list(wire) == list(WIRE_KEYS)
    parsed = parse_message(wire)
    assert parsed == msg
    opened = open_message(SECRET, CIRCLE, parsed)
    assert (opened.display_name, opened.text) == ("Bøb 🚀", "pipes | and\nnewlines")
    if encrypt:
        assert wire["schema_version"] == 2
        assert wire["text"] == wire["display_name"] == wire["mac"] == ""
        assert wire["enc"]["alg"] == "AES-256-GCM" and wire["enc"]["key_id"] == "epoch-0"
    else:
        assert wire["schema_version"] == 1 and wire["enc"] is None


def test_defaults_for_optional_fields():
    wire = plain_wire()
    for key in ("channel_id", "display_name", "schema_version", "enc"):
        del wire[key]
    wire["mac"] = crypto.message_mac(SECRET, **HEADER, display_name="", text="hi")
    msg = parse_message(wire)
    assert (msg.channel_id, msg.display_name, msg.schema_version, msg.enc) == (
        "general",
        "",
        1,
        None,
    )
    assert open_message(SECRET, CIRCLE, msg).text == "hi"


def test_enc_message_may_omit_text_and_mac():
    wire = enc_wire()
    del wire["text"], wire["mac"], wire["display_name"]
    assert open_message(SECRET, CIRCLE, parse_message(wire)).text == "hi"


def test_control_channel_and_limits_accepted():
    make(False, channel_id="__control", text='{"t":"CHANNEL_EVT"}')
    make(False, display_name="x" * 64, text="é" * MAX_TEXT_CHARS)  # 16000 UTF-8 bytes
    make(False, created_ts=0)
    make(False, created_ts=2**41 - 1)


def test_worst_case_escaped_plaintext_still_fits_the_ciphertext_cap():
    # \u-escaping makes control chars 6 JSON bytes and astral chars 12.
    text = "\x01" * 5334 + "😀" * 2666
    assert len(text) == MAX_TEXT_CHARS and len(text.encode()) <= 16000
    msg = make(True, display_name="😀" * 64, text=text)
    assert open_message(SECRET, CIRCLE, parse_message(to_wire(msg))).text == text


# --- rejections -------------------------------------------------------------------


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda w: w.__setitem__(key, value)


def _del(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda w: w.__delitem__(key)


def _enc(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda w: w["enc"].__setitem__(key, value)


PLAIN_REJECTIONS = [
    ("unknown_key", "extra", _set("extra", 1)),
    ("unknown_key", "?", _set("x" * 1000, 1)),
    ("unknown_key", "?", _set("bad key", 1)),
    ("missing_field", "msg_id", _del("msg_id")),
    ("missing_field", "circle_id", _del("circle_id")),
    ("missing_field", "author_node_id", _del("author_node_id")),
    ("missing_field", "created_ts", _del("created_ts")),
    ("missing_field", "text", _del("text")),
    ("missing_field", "mac", _del("mac")),
    ("missing_field", "mac", _set("mac", "")),
    ("type", "msg_id", _set("msg_id", 12345678)),
    ("format", "msg_id", _set("msg_id", "short")),
    ("format", "msg_id", _set("msg_id", "abcdefgh|ijk")),
    ("size", "msg_id", _set("msg_id", "a" * 65)),
    ("format", "circle_id", _set("circle_id", CIRCLE.upper())),
    ("format", "circle_id", _set("circle_id", CIRCLE[:-1])),
    ("size", "circle_id", _set("circle_id", CIRCLE + "0")),
    ("type", "circle_id", _set("circle_id", None)),
    ("format", "channel_id", _set("channel_id", "__secret")),
    ("format", "channel_id", _set("channel_id", "General")),
    ("format", "channel_id", _set("channel_id", "")),
    ("size", "channel_id", _set("channel_id", "c" * 33)),
    ("type", "channel_id", _set("channel_id", None)),
    ("format", "author_node_id", _set("author_node_id", "a|b")),
    ("format", "author_node_id", _set("author_node_id", "")),
    ("size", "author_node_id", _set("author_node_id", "n" * 129)),
    ("type", "created_ts", _set("created_ts", True)),
    ("type", "created_ts", _set("created_ts", 1.5)),
    ("type", "created_ts", _set("created_ts", None)),
    ("size", "created_ts", _set("created_ts", -1)),
    ("size", "created_ts", _set("created_ts", 2**41)),
    ("format", "display_name", _set("display_name", "ali\nce")),
    ("format", "display_name", _set("display_name", "ali\x00ce")),
    ("format", "display_name", _set("display_name", "\ud800")),
    ("size", "display_name", _set("display_name", "x" * 65)),
    ("type", "display_name", _set("display_name", None)),
    ("size", "text", _set("text", "x" * 10_000_000)),
    ("size", "text", _set("text", "x" * (MAX_TEXT_CHARS + 1))),
    ("size", "text", _set("text", "€" * MAX_TEXT_CHARS)),
    ("format", "text", _set("text", "lone \udc00 surrogate")),
    ("type", "text", _set("text", ["hi"])),
    ("format", "mac", _set("mac", "g" * 64)),
    ("format", "mac", _set("mac", "A" * 64)),
    ("size", "mac", _set("mac", "a" * 65)),
    ("type", "mac", _set("mac", None)),
    ("format", "schema_version", _set("schema_version", 3)),
    ("type", "schema_version", _set("schema_version", True)),
    ("type", "schema_version", _set("schema_version", "1")),
    ("type", "enc", _set("enc", "AES")),
    ("type", "enc", _set("enc", [])),
]

ENC_REJECTIONS = [
    ("enc", "enc keys", _enc("extra", "x")),
    ("enc", "enc keys", lambda w: w["enc"].pop("key_id")),
    ("enc", "enc.alg", _enc("alg", "AES-128-GCM")),
    ("enc", "enc.key_id", _enc("key_id", "")),
    ("enc", "enc.key_id", _enc("key_id", "k" * (MAX_KEY_ID_CHARS + 1))),
    ("enc", "enc.key_id", _enc("key_id", 0)),
    ("enc", "enc.nonce", _enc("nonce", base64.b64encode(b"12345678").decode())),
    ("enc", "enc.nonce", _enc("nonce", "!!!!!!!!!!!!!!!!")),
    ("enc", "enc.nonce", _enc("nonce", None)),
    ("enc", "enc.ciphertext", _enc("ciphertext", "AAAA")),
    ("enc", "enc.ciphertext", _enc("ciphertext", "A" * 200_000)),
    ("enc", "enc.ciphertext", _enc("ciphertext", "not base64 at all")),
    ("enc", "enc.ciphertext", _enc("ciphertext", "AAAAAAAAAAAAAAAAAAAAAAA")),
]


@pytest.mark.parametrize(("kind", "detail", "mutate"), PLAIN_REJECTIONS)
def test_plain_rejections(kind, detail, mutate):
    wire = plain_wire()
    mutate(wire)
    expect(kind, wire, detail)


def test_the_key_id_of_the_largest_epoch_travels():
    wire = enc_wire()
    wire["enc"]["key_id"] = "e2147483648." + "ab" * 16  # felund.trust.wrap.epoch_key_id
    enc = parse_message(wire).enc
    assert enc is not None and enc["key_id"] == wire["enc"]["key_id"]


@pytest.mark.parametrize(("kind", "detail", "mutate"), ENC_REJECTIONS)
def test_enc_rejections(kind, detail, mutate):
    wire = enc_wire()
    mutate(wire)
    expect(kind, wire, detail)


@pytest.mark.parametrize("obj", [None, [], "msg", 1, 1.5, True])
def test_not_an_object(obj):
    expect("not_object", obj)


SHAPE_CASES = [
    *((plain_wire, *case) for case in PLAIN_REJECTIONS),
    *((enc_wire, *case) for case in ENC_REJECTIONS),
    (plain_wire, "format", "msg_id", _set("msg_id", "\ud800" * 8)),
    (plain_wire, "format", "author_node_id", _set("author_node_id", "\udc00")),
    (enc_wire, "enc", "enc.key_id", _enc("key_id", "k\ud800")),
]


@pytest.mark.parametrize(("base", "kind", "detail", "mutate"), SHAPE_CASES)
def test_check_shape_refuses_only_what_parse_refuses_and_says_the_same(base, kind, detail, mutate):
    wire = base()
    mutate(wire)
    expect(kind, wire, detail)
    try:
        check_shape(wire)
    except InvalidMessage as exc:
        assert (exc.kind, exc.detail) == (kind, detail)
    else:
        msgpack.packb(wire)  # what it lets through can go on the bus to the store


@pytest.mark.parametrize("base", [plain_wire, enc_wire])
def test_check_shape_gives_what_the_index_needs(base):
    assert check_shape(base()) == (HEADER["msg_id"], CIRCLE, TS)


@pytest.mark.parametrize("obj", [None, [], "msg", 1, 1.5, True])
def test_check_shape_of_not_an_object(obj):
    with pytest.raises(InvalidMessage, match="not_object"):
        check_shape(obj)


def test_non_string_key():
    wire: dict[Any, Any] = plain_wire()
    wire[1] = "x"
    expect("type", wire, "key")


def test_string_created_ts_with_valid_mac_is_refused():
    # A member's client can MAC a string timestamp; the MAC verifies, the shape must not.
    wire = plain_wire()
    wire["created_ts"] = str(TS)
    fields = [wire[k] for k in WIRE_KEYS[:7]]
    wire["mac"] = raw_mac(SECRET, *fields)
    assert wire["mac"] == crypto.message_mac(SECRET, **HEADER, display_name="alice", text="hi")
    expect("type", wire, "created_ts")


def test_bool_created_ts_with_valid_mac_is_refused():
    wire = plain_wire()
    wire["created_ts"] = True
    wire["mac"] = raw_mac(SECRET, *[wire[k] for k in WIRE_KEYS[:7]])
    expect("type", wire, "created_ts")


def test_detail_never_carries_the_value():
    wire = plain_wire()
    wire["display_name"] = "secret\nvalue"
    with pytest.raises(InvalidMessage) as info:
        parse_message(wire)
    assert "secret" not in str(info.value)


# --- open_message ---------------------------------------------------------------


def test_wrong_circle():
    msg = compose_message(
        OTHER_SECRET,
        **{**HEADER, "circle_id": ids.circle_id(OTHER_SECRET)},
        display_name="m",
        text="x",
        encrypt=False,
    )
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, msg)


@pytest.mark.parametrize(
    "change",
    [
        {"mac": "0" * 64},
        {"text": "hj"},
        {"display_name": "mallory"},
        {"channel_id": "random"},
        {"created_ts": TS + 1},
        {"author_node_id": "someone-else"},
    ],
)
def test_tampered_plain_message(change):
    msg = parse_message({**plain_wire(), **change})
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, msg)


def test_mac_under_another_secret():
    msg = make(False)
    forged = msg._replace(
        mac=crypto.message_mac(OTHER_SECRET, **HEADER, display_name="alice", text="hi")
    )
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, forged)


def test_tampered_ciphertext():
    wire = enc_wire()
    raw = bytearray(base64.b64decode(wire["enc"]["ciphertext"]))
    raw[0] ^= 1
    wire["enc"]["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, parse_message(wire))


@pytest.mark.parametrize("change", [{"channel_id": "random"}, {"created_ts": TS + 1}])
def test_encrypted_header_is_bound_by_associated_data(change):
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, parse_message({**enc_wire(), **change}))


def test_encrypted_under_another_secret():
    enc = crypto.encrypt_message(OTHER_SECRET, **HEADER, display_name="a", text="b")
    with pytest.raises(AuthError):
        open_message(SECRET, CIRCLE, parse_message({**enc_wire(), "enc": enc}))


def _seal_plaintext(plaintext: bytes) -> dict[str, str]:
    nonce = b"\x03" * 12
    ad = "|".join(
        str(HEADER[k])
        for k in ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts")
    )
    sealed = AESGCM(crypto.message_key(SECRET)).encrypt(nonce, plaintext, ad.encode())
    b64 = base64.b64encode
    return {
        "alg": "AES-256-GCM",
        "key_id": "epoch-0",
        "nonce": b64(nonce).decode(),
        "ciphertext": b64(sealed).decode(),
    }


@pytest.mark.parametrize(
    "plaintext",
    [
        b"[1, 2]",
        b"not json",
        b'{"display_name": "a"}',
        b'{"display_name": 1, "text": "b"}',
        b"\xff",
    ],
)
def test_decrypted_plaintext_of_the_wrong_shape(plaintext):
    with pytest.raises(AuthError):
        open_message(
            SECRET, CIRCLE, parse_message({**enc_wire(), "enc": _seal_plaintext(plaintext)})
        )


@pytest.mark.parametrize(
    ("name", "text", "detail"),
    [("a\nb", "x", "display_name"), ("a" * 65, "x", "display_name"), ("a", "x" * 8001, "text")],
)
def test_decrypted_fields_follow_the_plain_rules(name, text, detail):
    enc = crypto.encrypt_message(SECRET, **HEADER, display_name=name, text=text)
    msg = parse_message({**enc_wire(), "enc": enc})
    with pytest.raises(InvalidMessage) as info:
        open_message(SECRET, CIRCLE, msg)
    assert info.value.detail == detail


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        {"display_name": "a\nb"},
        {"text": "x" * 8001},
        {"channel_id": "__x"},
        {"msg_id": "short"},
        {"created_ts": -5},
    ],
)
def test_compose_refuses_what_peers_would_refuse(encrypt, kw):
    with pytest.raises(InvalidMessage):
        make(encrypt, **kw)


# --- properties -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
def test_parse_never_raises_anything_else(obj):
    with contextlib.suppress(InvalidMessage):
        parse_message(obj)


@given(st.sampled_from((*WIRE_KEYS, "extra")), json_values, st.booleans())
def test_parse_of_a_mutated_message_never_raises_anything_else(key, value, encrypted):
    wire = enc_wire() if encrypted else plain_wire()
    wire[key] = value
    try:
        msg = parse_message(wire)
    except InvalidMessage:
        return
    with contextlib.suppress(AuthError, InvalidMessage):
        open_message(SECRET, CIRCLE, msg)


def _displayable(s: str) -> bool:
    return all(unicodedata.category(ch) not in ("Cc", "Cs") for ch in s)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=64).filter(_displayable),
    st.text(max_size=2000),
    st.booleans(),
    st.integers(0, 2**41 - 1),
)
def test_compose_parse_open_round_trip(name, text, encrypt, ts):
    msg = make(encrypt, display_name=name, text=text, created_ts=ts)
    parsed = parse_message(json.loads(json.dumps(to_wire(msg))))
    opened = open_message(SECRET, CIRCLE, parsed)
    assert (opened.display_name, opened.text) == (name, text)


# --- invites and ids --------------------------------------------------------------

_b64_payloads = json_values.map(
    lambda v: "felund1." + base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=")
)


@given(st.text() | st.text(alphabet="felund1.ABCxyz09-_=") | _b64_payloads)
def test_invite_decode_never_raises_anything_else(code):
    with contextlib.suppress(InviteError):
        decode_invite(code)


@pytest.mark.parametrize(
    "peer",
    [
        "",
        "[::1]:9999",
        "host.example:1",
        "10.0.0.1:65535",
        "//relay.example",
        "http://r.example/api",
    ],
)
def test_invite_peers_accepted(peer):
    assert decode_invite(encode_invite(SECRET, peer)) == Invite(SECRET, peer)


def _code(payload: object) -> str:
    return "felund1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"v": 1, "secret": SECRET, "peer": "host:0"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": "host:65536"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": ":9999"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": "::1:9999"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": "host:٩٩"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": "https://"}, "peer"),
        ({"v": 1, "secret": SECRET, "peer": "nohostport"}, "peer"),
        ({"v": 1, "secret": "00", "peer": "nohostport"}, "peer"),
        ({"v": 1, "secret": SECRET[:-2], "peer": ""}, "64 hex"),
        ({"v": 1, "secret": "zz", "peer": ""}, "not hex"),
        ({"v": 1, "secret": "", "peer": ""}, "no circle secret"),
        ({"v": True, "secret": SECRET, "peer": ""}, "version"),
        ({"v": 2, "secret": SECRET, "peer": ""}, "version"),
        ([1, SECRET], "not a JSON object"),
    ],
)
def test_invite_rejection_reasons(payload, reason):
    with pytest.raises(InviteError, match=reason):
        decode_invite(_code(payload))


def test_invite_edges():
    assert decode_invite(_code({"v": 1, "secret": SECRET.upper(), "peer": ""})).secret == SECRET
    with pytest.raises(InviteError, match="too long"):
        decode_invite("felund1." + "A" * 5000)
    with pytest.raises(InviteError, match="start with"):
        decode_invite("FELUND1." + encode_invite(SECRET, "")[8:])
    with pytest.raises(ValueError):
        encode_invite("00", "")
    with pytest.raises(ValueError):
        encode_invite(SECRET, "nohostport")


def test_ids():
    secret = ids.new_secret()
    assert ids.is_hex(secret, 64) and secret != ids.new_secret()
    assert ids.is_hex(ids.new_node_id(), 24)
    first, second = ids.new_msg_id("n", TS), ids.new_msg_id("n", TS)
    assert ids.is_hex(first, 32) and first != second
    assert not ids.is_hex("") and not ids.is_hex(None) and not ids.is_hex("ABCD")
    assert not ids.is_hex("abc", 4)
    for bad in ("00", SECRET.upper(), SECRET + "0", "g" * 64):
        with pytest.raises(ValueError):
            ids.secret_bytes(bad)


def test_ids_made_together_ascend_under_one_prefix():
    run = ids.new_msg_ids("n", TS, 500)
    assert run == sorted(run) and len(set(run)) == 500
    assert all(ids.is_hex(m, 32) for m in run)
    assert {m[:24] for m in run} == {run[0][:24]}
    assert int(run[-1][24:], 16) - int(run[0][24:], 16) == 499
    other = ids.new_msg_ids("n", TS, 500)
    assert other[0][:24] != run[0][:24]  # another run: another prefix
    assert len(ids.new_msg_ids("n", TS, 1 << 16)) == 1 << 16
    for bad in (0, (1 << 16) + 1):
        with pytest.raises(ValueError):
            ids.new_msg_ids("n", TS, bad)


def test_session_frame_garbage():
    key = bytes(32)
    line = crypto.seal_session_frame(key, {"t": "PING", "n": "é"})
    assert crypto.open_session_frame(key, line) == {"t": "PING", "n": "é"}
    for bad in ("", "!!!", base64.b64encode(b"x" * 40).decode(), b"\xff\xfe", line[:-4]):
        with pytest.raises(AuthError):
            crypto.open_session_frame(key, bad)
    with pytest.raises(AuthError):
        crypto.open_session_frame(bytes([1]) * 32, line)
    sealed_list = AESGCM(key).encrypt(b"\x00" * 12, b"[1]", None)
    not_object = base64.b64encode(b"\x00" * 12 + sealed_list).decode()
    with pytest.raises(AuthError):
        crypto.open_session_frame(key, not_object)


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
        st.text("AQUJD+/=é \n-_", max_size=12),
    )
)
def test_base64_fields_are_refused_exactly_as_b64decode_validate_refuses(value: str) -> None:
    """The fast decoding of enc fields and v1 frames takes what the reference takes."""
    try:
        want: bytes | None = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is one
        want = None
    try:
        got: bytes | None = crypto._b64decode(value)
    except AuthError:
        got = None
    assert got == want
