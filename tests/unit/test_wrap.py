"""felund.trust.wrap: X25519 keys from the identity seed, wraps, and the enc key ids of epochs."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felund.testing.vectors import EPOCH_VECTORS, epoch_cases
from felund.trust import identity, wrap
from felund.trust.identity import IdentityKey
from felund.v1.wire import MAX_KEY_ID_CHARS

CASES = epoch_cases()
ANA = IdentityKey.from_seed(bytes(range(32)))
BOB = IdentityKey.from_seed(bytes([7] * 32))
SECRET = bytes(range(100, 132))
CONTEXT = wrap.wrap_context("0123456789abcdef01234567", "ab" * 16, ANA.node_id)


def _x(case: dict[str, str]) -> bytes:
    return bytes.fromhex(case["recipient_x_private_hex"])


# --- the vectors -------------------------------------------------------------------------------


def test_the_vectors_are_frozen() -> None:
    digest = hashlib.sha256(EPOCH_VECTORS.read_bytes()).hexdigest()
    row = f"| `{EPOCH_VECTORS.name}` |"
    readme = EPOCH_VECTORS.with_name("README.md").read_text(encoding="utf-8")
    (line,) = [x for x in readme.splitlines() if x.startswith(row)]
    assert line.endswith(f"| `{digest}` |")


@pytest.mark.parametrize("case", CASES["x25519"])
def test_x25519_keys_derive_from_the_identity_seed(case: dict[str, str]) -> None:
    key = IdentityKey.from_seed(bytes.fromhex(case["seed_hex"]))
    assert key.node_id == case["node_id"]
    assert key.x_private.hex() == case["x_private_hex"]
    assert identity.b64(key.x_public) == case["xpk"]
    assert wrap.xpk_of(case["xpk"]) == key.x_public


@pytest.mark.parametrize("case", CASES["wrap"])
def test_wrap_vectors(case: dict[str, str]) -> None:
    secret = bytes.fromhex(case["secret_hex"])
    xpk = base64.b64decode(case["recipient_xpk"])
    ephemeral, nonce = bytes.fromhex(case["ephemeral_hex"]), bytes.fromhex(case["nonce_hex"])
    assert identity.b64(identity.x25519_public_of(ephemeral)) == case["ephemeral_public_b64"]
    made = wrap.wrap(secret, xpk, case["context"], ephemeral, nonce=nonce)
    assert made == case["wrapped"]
    assert len(made) == wrap.WRAPPED_B64_LEN
    assert wrap.unwrap(_x(case), case["wrapped"], case["context"]) == secret


@pytest.mark.parametrize("case", CASES["tampered"], ids=lambda c: c["why"])
def test_tampered_wraps_do_not_open(case: dict[str, str]) -> None:
    assert wrap.unwrap(_x(case), case["wrapped"], case["context"]) is None


@pytest.mark.parametrize("xpk", CASES["low_order_xpk"])
def test_low_order_keys_are_refused(xpk: str) -> None:
    assert wrap.xpk_of(xpk) is None
    with pytest.raises(ValueError, match="not a usable X25519 public key"):
        wrap.wrap(SECRET, base64.b64decode(xpk), CONTEXT)


@pytest.mark.parametrize("case", CASES["key_id"]["valid"], ids=lambda c: c["key_id"][:12])
def test_valid_key_ids(case: dict[str, Any]) -> None:
    assert wrap.epoch_key_id(case["n"], case["epoch_id"]) == case["key_id"]
    assert wrap.parse_key_id(case["key_id"]) == (case["n"], case["epoch_id"])
    assert len(case["key_id"]) <= MAX_KEY_ID_CHARS  # the wire carries every one


@pytest.mark.parametrize("key_id", CASES["key_id"]["invalid"])
def test_invalid_key_ids(key_id: str) -> None:
    assert wrap.parse_key_id(key_id) is None


# --- beyond the vectors ------------------------------------------------------------------------


def test_a_fresh_wrap_opens_for_its_recipient_and_context_only() -> None:
    wrapped = wrap.wrap(SECRET, ANA.x_public, CONTEXT)
    assert wrapped != wrap.wrap(SECRET, ANA.x_public, CONTEXT)  # fresh ephemeral and nonce
    assert wrap.unwrap(ANA.x_private, wrapped, CONTEXT) == SECRET
    assert wrap.unwrap(BOB.x_private, wrapped, CONTEXT) is None
    other = wrap.wrap_context("0123456789abcdef01234567", "ab" * 16, BOB.node_id)
    assert wrap.unwrap(ANA.x_private, wrapped, other) is None


def test_the_x25519_key_is_not_the_signing_key() -> None:
    assert ANA.x_private != ANA.seed
    assert ANA.x_public != ANA.public
    assert "x_private" not in repr(ANA) and ANA.x_private.hex() not in repr(ANA)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)])
def test_wrap_takes_a_32_byte_secret(bad: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        wrap.wrap(bad, ANA.x_public, CONTEXT)


@pytest.mark.parametrize(
    "args",
    [(-1, "ab" * 16), (0, "ab" * 16), (1, ""), (2**31 + 1, "ab" * 16), (True, "ab" * 16)],
)
def test_epoch_key_id_refuses_what_does_not_parse_back(args: tuple[Any, str]) -> None:
    with pytest.raises(ValueError):
        wrap.epoch_key_id(*args)


@pytest.mark.parametrize("text", [None, 5, b"abc", "x" * 10_000, ["epoch-0"], "e1.", "\ud800"])
def test_parse_key_id_takes_any_value(text: object) -> None:
    assert wrap.parse_key_id(text) is None


@pytest.mark.parametrize("text", [None, 5, "", "A" * 44, "A" * 43 + "=", "x" * 10_000, "\ud800"])
def test_xpk_of_takes_any_value(text: object) -> None:
    assert wrap.xpk_of(text) is None


def test_the_context_is_utf8_and_a_lone_surrogate_opens_nothing() -> None:
    wrapped = wrap.wrap(SECRET, ANA.x_public, "é|x")
    assert wrap.unwrap(ANA.x_private, wrapped, "é|x") == SECRET
    assert wrap.unwrap(ANA.x_private, wrapped, "\ud800") is None


@given(st.text(max_size=64))
def test_parse_key_id_never_raises(text: str) -> None:
    parsed = wrap.parse_key_id(text)
    if parsed is not None:
        assert wrap.epoch_key_id(*parsed) == text


@given(st.integers(min_value=1, max_value=wrap.MAX_EPOCH), st.binary(min_size=16, max_size=16))
def test_every_epoch_has_a_key_id(n: int, raw: bytes) -> None:
    assert wrap.parse_key_id(wrap.epoch_key_id(n, raw.hex())) == (n, raw.hex())


@given(st.binary(max_size=128))
def test_unwrap_of_any_bytes_is_none(raw: bytes) -> None:
    assert wrap.unwrap(ANA.x_private, base64.b64encode(raw).decode(), CONTEXT) is None
