"""felund.trust: identity keys, the signed bytes, a reader's verdict, the owner's proof."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felund.errors import InvalidMessage
from felund.testing.vectors import trust_cases
from felund.trust import identity, owner, signing
from felund.trust.signing import Verdict
from felund.v1 import ids

CASES = trust_cases()
KEY = identity.IdentityKey.from_seed(bytes(range(32)))
OTHER = identity.IdentityKey.from_seed(bytes([7] * 32))
FIELDS: dict[str, Any] = {
    "msg_id": "ab" * 16,
    "circle_id": "0123456789abcdef01234567",
    "channel_id": "general",
    "author_node_id": KEY.node_id,
    "created_ts": 1_780_000_000,
    "display_name": "ana",
    "text": "hi",
}


def _signed(key: identity.IdentityKey, **fields: Any) -> signing.Signature | None:
    return signing.signature_of(signing.sign_fields(key, **{**FIELDS, **fields}))


@pytest.mark.parametrize("case", CASES["identity"])
def test_identity_vectors(case: dict[str, str]) -> None:
    key = identity.IdentityKey.from_seed(bytes.fromhex(case["seed_hex"]))
    assert identity.b64(key.public) == case["public_key_b64"]
    assert key.node_id == case["node_id"]
    assert identity.fingerprint(key.public) == case["fingerprint"]


@pytest.mark.parametrize("case", CASES["signing"])
def test_signing_vectors(case: dict[str, object]) -> None:
    fields = case["fields"]
    assert isinstance(fields, dict)
    data = signing.signing_bytes(**fields)
    assert data.hex() == case["signing_bytes_hex"]
    key = identity.IdentityKey.from_seed(bytes.fromhex(str(case["seed_hex"])))
    # Ed25519 is deterministic: the same key and bytes give the vector's signature.
    assert signing.sign_fields(key, **fields) == {"pk": case["pk"], "sig": case["sig"]}
    pair = signing.signature_of({"pk": case["pk"], "sig": case["sig"]})
    assert signing.check(pair, pinned=None, **fields) is Verdict.VERIFIED


def test_signing_bytes_are_length_prefixed_utf8() -> None:
    data = signing.signing_bytes(**{**FIELDS, "text": "é|x"})
    assert data.startswith(b"\x00\x00\x00\x0dfelund-sig-v1\x00\x00\x00\x20" + b"ab" * 16)
    assert data.endswith(b"\x00\x00\x00\x03ana\x00\x00\x00\x04\xc3\xa9|x")


def test_fields_cannot_slide_between_neighbours() -> None:
    # "ab" + "c" and "a" + "bc" are different messages, as a "|" join would not say.
    one = signing.signing_bytes(**{**FIELDS, "display_name": "ab", "text": "c"})
    two = signing.signing_bytes(**{**FIELDS, "display_name": "a", "text": "bc"})
    assert one != two


@pytest.mark.parametrize(
    "change",
    [
        {"text": "hI"},
        {"display_name": "eve"},
        {"channel_id": "ops"},
        {"created_ts": 1_780_000_001},
        {"msg_id": "cd" * 16},
        {"circle_id": "f" * 24},
    ],
)
def test_any_changed_field_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(InvalidMessage) as err:
        signing.check(_signed(KEY), pinned=None, **{**FIELDS, **change})
    assert err.value.kind == "signature"


def test_unsigned_is_unsigned() -> None:
    assert signing.check(None, pinned=None, **FIELDS) is Verdict.UNSIGNED
    assert signing.signature_of({"display_name": "a", "text": "b"}) is None


@pytest.mark.parametrize(
    "plain",
    [
        {"pk": "A" * 44},
        {"sig": "A" * 88},
        {"pk": "A" * 43, "sig": "A" * 88},
        {"pk": 5, "sig": "A" * 88},
        {"pk": "A" * 44, "sig": "*" * 88},
        {"pk": base64.b64encode(b"x" * 33).decode(), "sig": "A" * 88},
    ],
)
def test_malformed_signature_fields_are_refused(plain: dict[str, object]) -> None:
    with pytest.raises(InvalidMessage) as err:
        signing.signature_of(plain)
    assert err.value.kind == "signature"


def test_another_members_key_cannot_sign_for_a_derived_id() -> None:
    # B signs, with its own key, a message claiming A's id, to a reader that has
    # never seen A's key: the id alone says only A's key may sign for it.
    a = identity.IdentityKey.generate()
    assert identity.is_derived_form(a.node_id)
    fields = {**FIELDS, "author_node_id": a.node_id}
    with pytest.raises(InvalidMessage) as err:
        signing.check(_signed(OTHER, author_node_id=a.node_id), pinned=None, **fields)
    assert err.value.kind == "key_mismatch"
    good = _signed(a, author_node_id=a.node_id)
    assert signing.check(good, pinned=OTHER.public, **fields) is Verdict.VERIFIED


def test_an_older_id_with_the_mark_by_chance_cannot_sign() -> None:
    key = identity.IdentityKey.generate()
    assert key.may_sign(key.node_id)
    assert key.may_sign("0" * 24)
    assert not key.may_sign("fe" + "0" * 22)


def test_an_older_id_is_pinned_at_first_sight_then_held() -> None:
    legacy = "0" * 24  # an id from before keys: no key derives it
    fields = {**FIELDS, "author_node_id": legacy}
    first = _signed(KEY, author_node_id=legacy)
    assert signing.check(first, pinned=None, **fields) is Verdict.FIRST_SIGHT
    assert signing.check(first, pinned=KEY.public, **fields) is Verdict.VERIFIED
    with pytest.raises(InvalidMessage) as err:
        signing.check(_signed(OTHER, author_node_id=legacy), pinned=KEY.public, **fields)
    assert err.value.kind == "key_mismatch"


@given(st.text(max_size=40), st.text(max_size=200))
def test_sign_then_check_holds_for_any_text(name: str, text: str) -> None:
    try:
        name.encode(), text.encode()
    except UnicodeEncodeError:
        return  # no message carries a lone surrogate (wire.check_text refuses it)
    fields = {**FIELDS, "display_name": name, "text": text}
    signed = signing.signature_of(signing.sign_fields(KEY, **fields))
    assert signing.check(signed, pinned=None, **fields) is Verdict.VERIFIED


@pytest.mark.parametrize("case", CASES["owner"])
def test_owner_vectors(case: dict[str, str]) -> None:
    pk = base64.b64decode(case["public_key_b64"])
    assert owner.owned_secret(pk, case["salt_hex"]) == case["secret_hex"]
    assert ids.circle_id(case["secret_hex"]) == case["circle_id"]
    assert owner.proves_owner(case["secret_hex"], pk, case["salt_hex"])


def test_only_the_creator_proves_ownership() -> None:
    secret, salt = owner.new_owned_secret(KEY.public)
    assert owner.proves_owner(secret, KEY.public, salt)
    assert not owner.proves_owner(secret, OTHER.public, salt)
    assert not owner.proves_owner(secret, KEY.public, "0" * 64)
    assert not owner.proves_owner(secret, KEY.public, salt.upper())
    assert not owner.proves_owner(secret, KEY.public, 42)
    assert not owner.proves_owner(ids.new_secret(), KEY.public, salt)  # a v1 circle: no owner


def test_the_private_key_never_shows_in_its_repr() -> None:
    assert KEY.seed.hex() not in repr(KEY)
    assert base64.b64encode(KEY.seed).decode() not in repr(KEY)
