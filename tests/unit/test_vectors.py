"""Every case of the shared felund v1 interop vectors, byte for byte."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from felund.errors import InviteError
from felund.testing import vector_cases
from felund.v1 import crypto, ids
from felund.v1.invite import Invite, decode_invite, encode_invite
from felund.v1.wire import compose_message, open_message, parse_message, to_wire

CASES = vector_cases()

COVERED = {
    "circle_id",
    "circle_hint",
    "invite_code",
    "invalid_invite_code",
    "handshake_token",
    "message_mac",
    "message_key",
    "message_enc",
    "session_key",
    "session_frame",
    "api_signing_key",
    "api_signature",
}


def cases(group: str) -> list[Any]:
    """Return the cases of a group as pytest params, with readable ids."""
    # .get: a group missing from the file fails test_every_group_is_covered instead.
    return [pytest.param(c, id=f"{group}-{i}") for i, c in enumerate(CASES.get(group, []))]


def test_every_group_is_covered():
    assert set(CASES) == COVERED
    assert all(CASES[group] for group in COVERED), "a vector group is empty"


@pytest.mark.parametrize("case", cases("circle_id"))
def test_circle_id(case):
    assert ids.circle_id(case["secret_hex"]) == case["circle_id"]


@pytest.mark.parametrize("case", cases("circle_hint"))
def test_circle_hint(case):
    assert ids.circle_hint(case["circle_id"]) == case["circle_hint"]


@pytest.mark.parametrize("case", cases("invite_code"))
def test_invite_encode(case):
    assert encode_invite(case["secret_hex"], case["peer"]) == case["code"]


@pytest.mark.parametrize("case", cases("invite_code"))
def test_invite_decode(case):
    expected = Invite(secret=case["secret_hex"], peer=case["peer"])
    assert decode_invite(case["code"]) == expected
    assert decode_invite(f"  {case['code']}\n") == expected


@pytest.mark.parametrize("code", cases("invalid_invite_code"))
def test_invalid_invite(code):
    with pytest.raises(InviteError):
        decode_invite(code)


@pytest.mark.parametrize("case", cases("handshake_token"))
def test_handshake_token(case):
    args = (case["secret_hex"], case["node_id"], case["circle_id"], case["nonce"])
    assert crypto.handshake_token(*args) == case["token"]
    assert crypto.verify_handshake_token(*args, case["token"])
    assert not crypto.verify_handshake_token(*args, case["token"][::-1])


@pytest.mark.parametrize("case", cases("message_mac"))
def test_message_mac(case):
    secret, fields = case["secret_hex"], case["message"]
    assert crypto.message_mac(secret, **fields) == case["mac"]
    assert crypto.verify_message_mac(secret, case["mac"], **fields)
    composed = compose_message(secret, **fields, encrypt=False)
    assert composed.mac == case["mac"]
    wire = {**fields, "mac": case["mac"]}
    opened = open_message(secret, fields["circle_id"], parse_message(wire))
    assert (opened.display_name, opened.text) == (fields["display_name"], fields["text"])


@pytest.mark.parametrize("case", cases("message_key"))
def test_message_key(case):
    assert crypto.message_key(case["secret_hex"]).hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("message_enc"))
def test_message_enc(case):
    secret, enc = case["secret_hex"], case["enc"]
    fields = dict(case["message"])
    display_name, text = fields.pop("display_name"), fields.pop("text")
    assert crypto.decrypt_message(secret, **fields, enc=enc) == (display_name, text, None)
    nonce = base64.b64decode(enc["nonce"])
    again = crypto.encrypt_message(
        secret, **fields, display_name=display_name, text=text, nonce=nonce
    )
    assert again == enc
    wire = {**fields, "display_name": "", "text": "", "mac": "", "schema_version": 2, "enc": enc}
    msg = parse_message(wire)
    assert to_wire(msg) == wire
    opened = open_message(secret, fields["circle_id"], msg)
    assert (opened.display_name, opened.text) == (display_name, text)


@pytest.mark.parametrize("case", cases("session_key"))
def test_session_key(case):
    key = crypto.session_key(case["secret_hex"], case["client_nonce"], case["server_nonce"])
    assert key.hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("session_frame"))
def test_session_frame(case):
    key = bytes.fromhex(case["key_hex"])
    assert crypto.open_session_frame(key, case["line"]) == case["frame"]
    assert crypto.open_session_frame(key, (case["line"] + "\n").encode()) == case["frame"]
    nonce = base64.b64decode(case["line"])[: crypto.NONCE_LEN]
    assert crypto.seal_session_frame(key, case["frame"], nonce=nonce) == case["line"]


@pytest.mark.parametrize("case", cases("api_signing_key"))
def test_api_signing_key(case):
    assert crypto.api_signing_key(case["secret_hex"]) == case["signing_key_hex"]


@pytest.mark.parametrize("case", cases("api_signature"))
def test_api_signature(case):
    key = crypto.api_signing_key(case["secret_hex"])
    request = (key, case["method"], case["path"], case["body"].encode("utf-8"))
    assert crypto.api_signature(*request, case["ts"], case["nonce"]) == case["signature"]
    assert crypto.verify_api_signature(
        *request, ts=case["ts"], nonce=case["nonce"], signature=case["signature"]
    )
    assert not crypto.verify_api_signature(
        *request, ts=case["ts"] + 1, nonce=case["nonce"], signature=case["signature"]
    )
