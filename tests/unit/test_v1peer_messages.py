"""Self-tests of the independent v1 peer (tests/v1peer.py), without our node or a socket.

They prove the reference peer right on its own: it reproduces the shared
vectors with its own functions and judges messages as the spec does (the
TCP sessions between two peers are tests/integration/test_v1peer.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.v1peer import (
    WIRE_KEYS,
    V1Peer,
    check_message,
    circle_hint_for,
    circle_id_for,
    decrypt_message,
    encrypt_message,
    handshake_token,
    message_key,
    message_mac,
    open_frame,
    seal_frame,
    secret_bytes,
    session_key,
)

# The repository's copy of the shared vectors (tests/vectors/README.md says whence); read
# directly, as this module's peer takes nothing from felund.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "felund-v1.json"
CASES: dict[str, list[Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
OTHER_SECRET = "ff" * 32


def cases(group: str) -> list[Any]:
    return [pytest.param(c, id=f"{group}-{i}") for i, c in enumerate(CASES[group])]


@pytest.mark.parametrize("case", cases("circle_id"))
def test_vector_circle_id(case):
    assert circle_id_for(case["secret_hex"]) == case["circle_id"]
    assert V1Peer(case["secret_hex"]).circle_id == case["circle_id"]


@pytest.mark.parametrize("case", cases("circle_hint"))
def test_vector_circle_hint(case):
    assert circle_hint_for(case["circle_id"]) == case["circle_hint"]


def _wire_from(case_msg: dict[str, Any], **fields: Any) -> dict[str, Any]:
    msg = {"mac": "", "schema_version": 1, "enc": None, **case_msg, **fields}
    assert set(msg) == set(WIRE_KEYS)
    return msg


@pytest.mark.parametrize("case", cases("message_mac"))
def test_vector_message_mac(case):
    secret = secret_bytes(case["secret_hex"])
    assert message_mac(secret, case["message"]) == case["mac"]
    wire = _wire_from(case["message"], mac=case["mac"])
    checked = check_message(secret, case["message"]["circle_id"], wire)
    assert checked.reason is None
    assert checked.text == case["message"]["text"]


@pytest.mark.parametrize("case", cases("message_key"))
def test_vector_message_key(case):
    assert message_key(secret_bytes(case["secret_hex"])).hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("message_enc"))
def test_vector_message_enc(case):
    secret = secret_bytes(case["secret_hex"])
    msg = case["message"]
    wire = _wire_from(msg, display_name="", text="", schema_version=2, enc=case["enc"])
    assert decrypt_message(secret, wire) == (msg["display_name"], msg["text"])
    nonce = base64.b64decode(case["enc"]["nonce"])
    assert encrypt_message(secret, msg, msg["display_name"], msg["text"], nonce) == case["enc"]
    checked = check_message(secret, msg["circle_id"], wire)
    assert checked.reason is None
    assert (checked.display_name, checked.text) == (msg["display_name"], msg["text"])


@pytest.mark.parametrize("case", cases("handshake_token"))
def test_vector_handshake_token(case):
    token = handshake_token(
        secret_bytes(case["secret_hex"]), case["node_id"], case["circle_id"], case["nonce"]
    )
    assert token == case["token"]


@pytest.mark.parametrize("case", cases("session_key"))
def test_vector_session_key(case):
    key = session_key(secret_bytes(case["secret_hex"]), case["client_nonce"], case["server_nonce"])
    assert key.hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("session_frame"))
def test_vector_session_frame(case):
    key = bytes.fromhex(case["key_hex"])
    assert open_frame(key, case["line"]) == case["frame"]
    nonce = base64.b64decode(case["line"])[:12]
    assert seal_frame(key, case["frame"], nonce).decode() == case["line"]


MAC_CASE = CASES["message_mac"][0]
ENC_CASE = CASES["message_enc"][0]
CIRCLE = circle_id_for(SECRET)


def mac_msg(**fields: Any) -> dict[str, Any]:
    """A schema-1 message of the vector, fields changed, MAC recomputed."""
    msg = _wire_from(MAC_CASE["message"], **fields)
    msg["mac"] = message_mac(secret_bytes(SECRET), msg)
    return msg


def _enc_msg(**fields: Any) -> dict[str, Any]:
    return (
        _wire_from(
            ENC_CASE["message"], display_name="", text="", schema_version=2, enc=ENC_CASE["enc"]
        )
        | fields
    )


def other_circle_msg() -> dict[str, Any]:
    msg = _wire_from(MAC_CASE["message"], circle_id=circle_id_for(OTHER_SECRET))
    msg["mac"] = message_mac(secret_bytes(OTHER_SECRET), msg)
    return msg


def _tampered_enc() -> dict[str, Any]:
    raw = bytearray(base64.b64decode(ENC_CASE["enc"]["ciphertext"]))
    raw[0] ^= 1
    return _enc_msg(enc=ENC_CASE["enc"] | {"ciphertext": base64.b64encode(raw).decode()})


def _enc_with_valid_mac_but_bad_enc() -> dict[str, Any]:
    good = mac_msg()
    return _tampered_enc() | {
        "display_name": good["display_name"],
        "text": good["text"],
        "mac": good["mac"],
    }


def _without(key: str) -> dict[str, Any]:
    msg = mac_msg()
    del msg[key]
    return msg


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # The poisoning case of the spec: the MAC covers str(created_ts), so a
        # string timestamp carries a valid MAC and must still be refused.
        pytest.param(lambda: mac_msg(created_ts="1764000000"), "bad_created_ts", id="ts-str"),
        pytest.param(lambda: mac_msg(created_ts=True), "bad_created_ts", id="ts-bool"),
        pytest.param(lambda: mac_msg(created_ts=1.5), "bad_created_ts", id="ts-float"),
        pytest.param(lambda: mac_msg() | {"extra": 1}, "unknown_key", id="unknown-key"),
        pytest.param(lambda: _without("mac"), "missing_key", id="no-mac"),
        pytest.param(lambda: _without("enc"), "missing_key", id="no-enc"),
        pytest.param(lambda: mac_msg(msg_id="A" * 32), "bad_msg_id", id="msg-id-upper"),
        pytest.param(lambda: mac_msg(msg_id="ab"), "bad_msg_id", id="msg-id-short"),
        pytest.param(lambda: mac_msg(channel_id="__x"), "bad_channel_id", id="reserved"),
        pytest.param(lambda: mac_msg(channel_id="A"), "bad_channel_id", id="upper-channel"),
        pytest.param(lambda: mac_msg(author_node_id=""), "bad_author_node_id", id="author"),
        pytest.param(lambda: mac_msg(text=None), "bad_text", id="text-null"),
        pytest.param(lambda: mac_msg(schema_version=3), "bad_schema_version", id="schema"),
        pytest.param(lambda: mac_msg(enc="x"), "bad_enc", id="enc-str"),
        pytest.param(lambda: mac_msg() | {"mac": "0" * 64}, "bad_mac", id="bad-mac"),
        pytest.param(lambda: mac_msg() | {"text": "edited"}, "bad_mac", id="edited"),
        pytest.param(other_circle_msg, "wrong_circle", id="other-circle"),
        pytest.param(_tampered_enc, "enc_failed", id="enc-tampered"),
        pytest.param(lambda: _enc_msg(channel_id="random"), "enc_failed", id="enc-ad"),
        # With enc present there is no fallback to a valid mac.
        pytest.param(_enc_with_valid_mac_but_bad_enc, "enc_failed", id="enc-no-fallback"),
        pytest.param(lambda: [1], "not_object", id="list"),
    ],
)
def test_message_dropped(make, reason):
    peer = V1Peer(SECRET)
    assert check_message(peer.secret, CIRCLE, make()).reason == reason
    assert not peer.receive(make())
    assert peer.dropped == {reason: 1}
    assert peer.messages() == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(mac_msg, id="mac"),
        pytest.param(_enc_msg, id="enc"),
        pytest.param(lambda: _without("channel_id"), id="channel-default"),
        pytest.param(lambda: mac_msg(channel_id="__control", text="{}"), id="control"),
    ],
)
def test_message_accepted(make):
    peer = V1Peer(SECRET)
    assert peer.receive(make())
    assert not peer.receive(make())
    assert peer.duplicates == 1
    assert not peer.dropped
    [stored] = peer.messages()
    assert tuple(stored) == WIRE_KEYS


@pytest.mark.parametrize("encrypt", [False, True])
def test_post_makes_a_valid_message(encrypt):
    peer = V1Peer(SECRET, encrypt_messages=encrypt)
    msg = peer.post("hi | there", channel_id="random", display_name="Bøb")
    assert tuple(msg) == WIRE_KEYS
    assert isinstance(msg["created_ts"], int)
    assert len(msg["msg_id"]) == 32
    assert msg["schema_version"] == (2 if encrypt else 1)
    assert (msg["enc"] is not None) == encrypt
    if encrypt:
        assert msg["text"] == msg["display_name"] == msg["mac"] == ""
    other = V1Peer(SECRET)
    assert other.receive(msg)
    assert other.plaintext(msg["msg_id"]) == ("Bøb", "hi | there")
    assert other.texts() == {"hi | there"}
