"""Invite codes of an epoch after a removal: the circle, the epoch and its id beside the secret."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from felund.errors import InviteError
from felund.v1.invite import Invite, decode_invite, encode_invite

SECRET = "5e" * 32
CIRCLE = "0123456789abcdef01234567"
EPOCH_ID = "ab" * 16
EPOCH: dict[str, Any] = {"circle_id": CIRCLE, "epoch": 3, "epoch_id": EPOCH_ID}


def _code(payload: object) -> str:
    return "felund1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _payload(code: str) -> Any:
    body = code.removeprefix("felund1.")
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_an_epoch_code_carries_its_circle_and_epoch() -> None:
    code = encode_invite(SECRET, "127.0.0.1:9999", **EPOCH)
    assert list(_payload(code)) == ["v", "secret", "peer", "circle_id", "epoch", "epoch_id"]
    assert decode_invite(code) == Invite(SECRET, "127.0.0.1:9999", CIRCLE, 3, EPOCH_ID)


def test_without_an_epoch_the_code_is_v1_byte_for_byte() -> None:
    code = encode_invite(SECRET, "")
    assert _payload(code) == {"v": 1, "secret": SECRET, "peer": ""}
    invite = decode_invite(code)
    assert (invite.circle_id, invite.epoch, invite.epoch_id) == ("", 0, "")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"epoch": None}, "lacks its circle_id, epoch or epoch_id"),  # None: left out
        ({"circle_id": None}, "lacks"),
        ({"epoch_id": None}, "lacks"),
        ({"epoch": 0}, "epoch must be a whole number from 1 to 2147483648"),
        ({"epoch": -1}, "epoch must be"),
        ({"epoch": 2**31 + 1}, "epoch must be"),
        ({"epoch": 10**400}, "epoch must be"),
        ({"epoch": True}, "epoch must be"),
        ({"epoch": 1.0}, "epoch must be"),
        ({"epoch": "1"}, "epoch must be"),
        ({"circle_id": CIRCLE.upper()}, "circle_id must be 24 lowercase hex characters"),
        ({"circle_id": CIRCLE[:-1]}, "circle_id must be"),
        ({"circle_id": 5}, "circle_id must be"),
        ({"epoch_id": EPOCH_ID + "0"}, "epoch_id must be 32 lowercase hex characters"),
        ({"epoch_id": "zz" * 16}, "epoch_id must be"),
        ({"epoch_id": ""}, "epoch_id must be"),
    ],
)
def test_a_bad_epoch_part_is_refused_with_its_reason(change: dict[str, Any], reason: str) -> None:
    payload = {"v": 1, "secret": SECRET, "peer": "", **EPOCH}
    payload = {k: v for k, v in {**payload, **change}.items() if v is not None}
    with pytest.raises(InviteError, match=reason):
        decode_invite(_code(payload))


def test_only_an_epoch_key_alone_is_refused_too() -> None:
    with pytest.raises(InviteError, match="lacks"):
        decode_invite(_code({"v": 1, "secret": SECRET, "peer": "", "circle_id": CIRCLE}))


@pytest.mark.parametrize(
    "epoch", [{"epoch": 1}, {**EPOCH, "epoch": 0}, {**EPOCH, "epoch_id": "AB" * 16}]
)
def test_encode_refuses_a_bad_epoch(epoch: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invite"):
        encode_invite(SECRET, "", **epoch)
