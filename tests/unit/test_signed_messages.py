"""Signed messages: composed and opened (the signature inside enc), judged and pinned by
the store on receipt, the identity key in identity.json, the schema's migration."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund import home
from felund.config import Config
from felund.errors import AuthError, ConfigError, InvalidMessage
from felund.protocol import CONTROL_CHANNEL, OP_APPEND, OP_CIRCLE_CREATE, OP_INBOX, OP_POST
from felund.store.database import SCHEMA_VERSION, Circle, Database
from felund.store.ops import NodeInfo, Ops
from felund.testing.store import handled
from felund.testing.vectors import wire_message
from felund.trust import signing
from felund.trust.identity import IdentityKey, is_derived_form, unb64
from felund.v1 import chatmodel, crypto, ids
from felund.v1.wire import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_TEXT_CHARS,
    WIRE_KEYS,
    compose_message,
    open_message,
    parse_message,
    to_wire,
)

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CIRCLE = ids.circle_id(SECRET)
ALICE_KEY = IdentityKey.from_seed((1043).to_bytes(4, "big") * 8)  # its id has the mark
BOB_KEY = IdentityKey.from_seed(b"b" * 32)
ALICE = ALICE_KEY.node_id  # derived: only ALICE_KEY signs for it
assert is_derived_form(ALICE)
OLDER = "0123456789abcdef01234567"  # an id made before keys: pinned at first sight
HEADER: dict[str, Any] = {
    "circle_id": CIRCLE,
    "channel_id": "general",
    "created_ts": 1764000000,
    "msg_id": "5f2b9c0e1d3a4b5c6d7e8f9012345678",
}


def compose(author: str, key: IdentityKey | None, text: str = "hi", name: str = "alice") -> Any:
    return compose_message(
        SECRET, **HEADER, author_node_id=author, display_name=name, text=text, encrypt=True, key=key
    )


DROP = object()  # a key taken out of a plaintext


def _ad(msg: Any) -> bytes:
    """The AES-GCM associated data of a message (crypto's)."""
    fields = (msg.msg_id, msg.circle_id, msg.channel_id, msg.author_node_id, msg.created_ts)
    return "|".join(map(str, fields)).encode()


def plaintext_of(msg: Any) -> dict[str, Any]:
    enc = msg.enc
    sealed = base64.b64decode(enc["ciphertext"])
    plain = AESGCM(crypto.message_key(SECRET)).decrypt(
        base64.b64decode(enc["nonce"]), sealed, _ad(msg)
    )
    out: dict[str, Any] = json.loads(plain)
    return out


def with_plaintext(msg: Any, plain: dict[str, Any]) -> Any:
    """``msg`` with its enc sealing ``plain`` instead (as a member holding the secret can)."""
    nonce = b"\x01" * 12
    sealed = AESGCM(crypto.message_key(SECRET)).encrypt(
        nonce, json.dumps(plain, separators=(",", ":")).encode(), _ad(msg)
    )
    enc = {
        **msg.enc,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return parse_message({**to_wire(msg), "enc": enc})


# --- composing and opening ------------------------------------------------------------
def test_a_signed_message_opens_with_its_signature_and_verifies() -> None:
    msg = compose(ALICE, ALICE_KEY)
    wire = to_wire(msg)
    assert tuple(wire) == WIRE_KEYS  # nothing outside enc changes
    assert list(plaintext_of(msg)) == ["display_name", "text", "pk", "sig"]
    opened = open_message(SECRET, CIRCLE, parse_message(wire))
    assert (opened.display_name, opened.text) == ("alice", "hi")
    assert opened.signed is not None and opened.signed[0] == ALICE_KEY.public
    fields = {**HEADER, "author_node_id": ALICE, "display_name": "alice", "text": "hi"}
    assert signing.check(opened.signed, pinned=None, **fields) is signing.Verdict.VERIFIED


def test_the_largest_message_signed_still_parses() -> None:
    # The most JSON a text within the limits makes: 12 bytes for a char outside the BMP
    # (4 of UTF-8), 6 for a control char (1 of UTF-8); a name all outside the BMP.
    text = "\U0001f600" * (MAX_TEXT_CHARS // 3) + "\x01" * (MAX_TEXT_CHARS - MAX_TEXT_CHARS // 3)
    name = "\U0001f600" * MAX_DISPLAY_NAME_CHARS
    msg = compose(ALICE, ALICE_KEY, text=text, name=name)
    assert open_message(SECRET, CIRCLE, parse_message(to_wire(msg))).signed is not None


def test_a_v1_plaintext_opens_as_unsigned() -> None:
    msg = compose(ALICE, None)
    assert list(plaintext_of(msg)) == ["display_name", "text"]
    opened = open_message(SECRET, CIRCLE, parse_message(to_wire(msg)))
    assert (opened.text, opened.signed) == ("hi", None)


def test_a_plain_schema_1_message_carries_no_signature() -> None:
    msg = compose_message(
        SECRET,
        **HEADER,
        author_node_id=ALICE,
        display_name="a",
        text="hi",
        encrypt=False,
        key=ALICE_KEY,
    )
    assert open_message(SECRET, CIRCLE, msg).signed is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"sig": DROP}, AuthError),  # pk without sig: not a shape we read
        ({"pk": DROP}, AuthError),
        ({"extra": 1}, AuthError),
        ({"pk": "AAAA"}, InvalidMessage),
        ({"sig": "not base64!"}, InvalidMessage),
        ({"pk": 1}, InvalidMessage),
        ({"pk": None, "sig": None}, InvalidMessage),
    ],
)
def test_a_malformed_signature_is_refused(change: dict[str, Any], error: type[Exception]) -> None:
    msg = compose(ALICE, ALICE_KEY)
    plain = plaintext_of(msg)
    plain = {k: v for k, v in {**plain, **change}.items() if v is not DROP}
    with pytest.raises(error):
        open_message(SECRET, CIRCLE, with_plaintext(msg, plain))


# --- the store's verdict ----------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Ops]:
    """A node (an older id of its own, signing) holding the circle of SECRET."""
    db = Database(tmp_path / "felund.db")
    me = IdentityKey.from_seed(b"m" * 32)
    ops = Ops(db, NodeInfo("9" * 24, "me", True, "127.0.0.1:9999", key=me))
    handled(ops, OP_CIRCLE_CREATE, {})  # a circle of its own, and its announce
    with db.transaction():
        db.add_circle(Circle(CIRCLE, SECRET, "", 0))
    yield ops
    db.close()


def append(ops: Ops, *wires: dict[str, Any]) -> list[str]:
    results: list[str] = handled(ops, OP_APPEND, {"origin": "gossip", "msgs": list(wires)}).reply[
        "results"
    ]
    return results


def inbox(ops: Ops) -> dict[str, bool]:
    msgs = handled(ops, OP_INBOX, {"circle_id": CIRCLE, "limit": 100}).reply["msgs"]
    return {m["text"]: m["verified"] for m in msgs}


def test_signed_is_verified_unsigned_is_stored_unverified(store: Ops) -> None:
    assert append(
        store,
        wire_message(SECRET, ALICE, "signed", key=ALICE_KEY),
        wire_message(SECRET, ALICE, "v1"),
    ) == ["stored", "stored"]
    assert inbox(store) == {"signed": True, "v1": False}


def test_another_members_key_for_a_derived_id_is_refused(store: Ops) -> None:
    forged = wire_message(SECRET, ALICE, "i am alice", key=BOB_KEY)
    assert append(store, forged) == ["rejected:key_mismatch"]
    assert inbox(store) == {}


def test_a_signature_over_other_fields_is_refused(store: Ops) -> None:
    msg = compose(ALICE, ALICE_KEY, text="original")
    plain = {**plaintext_of(msg), "text": "changed"}
    assert append(store, to_wire(with_plaintext(msg, plain))) == ["rejected:signature"]


def test_an_older_id_is_pinned_at_first_sight_then_held(store: Ops) -> None:
    first = wire_message(SECRET, OLDER, "first", key=ALICE_KEY)
    again = wire_message(SECRET, OLDER, "again", key=ALICE_KEY)
    assert append(store, first, again) == ["stored", "stored"]
    assert store.db.pinned(CIRCLE, OLDER) == ALICE_KEY.public
    assert append(store, wire_message(SECRET, OLDER, "other key", key=BOB_KEY)) == [
        "rejected:key_mismatch"
    ]
    assert inbox(store) == {"first": True, "again": True}


def test_nobody_pins_another_key_for_our_own_id(store: Ops) -> None:
    forged = wire_message(SECRET, store.node.node_id, "i am you", key=BOB_KEY)
    assert append(store, forged) == ["rejected:key_mismatch"]
    assert store.db.pinned(CIRCLE, store.node.node_id) is None


def test_a_message_held_is_not_judged_again(store: Ops) -> None:
    unsigned = wire_message(SECRET, ALICE, "as a v1 hop forwarded it")
    assert append(store, unsigned) == ["stored"]
    assert append(store, unsigned) == ["duplicate"]
    assert inbox(store) == {"as a v1 hop forwarded it": False}


def test_our_messages_are_signed_verified_and_announce_our_key(store: Ops) -> None:
    handled(
        store,
        OP_POST,
        {"circle_id": CIRCLE, "msgs": [{"msg_id": "m" * 32, "created_ts": 1, "text": "mine"}]},
    )
    assert inbox(store) == {"mine": True}
    (wire,) = store.db.wire_of(["m" * 32])
    assert open_message(SECRET, CIRCLE, parse_message(wire)).signed is not None
    circle = next(c for c in store.db.circles() if c.circle_id != CIRCLE)
    (event,) = [  # after the owner's proof (CIRCLE_OWNER, felund.trust.owner)
        e
        for e in store.db.control_events(circle.circle_id, CONTROL_CHANNEL)
        if json.loads(e[3])["t"] == "KEY_ANNOUNCE"
    ]
    key = IdentityKey.from_seed(b"m" * 32)
    assert json.loads(event[3]) == {
        "node_id": "9" * 24,
        "pk": base64.b64encode(key.public).decode(),
        "t": "KEY_ANNOUNCE",
        "xpk": base64.b64encode(key.x_public).decode(),
    }
    assert event[4] == key.public
    with store.db.transaction():
        assert [r["circle_id"] for r in store.announce_keys()] == [CIRCLE]  # held, unannounced
        assert store.announce_keys() == []  # once per circle


def test_an_announce_without_xpk_is_made_once_more(store: Ops) -> None:
    def announces() -> list[dict[str, Any]]:
        return [
            json.loads(e[3])
            for e in store.db.control_events(CIRCLE, CONTROL_CHANNEL)
            if json.loads(e[3])["t"] == "KEY_ANNOUNCE"
        ]

    with store.db.transaction():
        store.db.set_setting(f"key_announced:{CIRCLE}", "1")  # as a node before epochs left it
        # Once more in CIRCLE, and not in the circle it made (announced with xpk), then no more.
        assert [r["circle_id"] for r in store.announce_keys()] == [CIRCLE]
        assert store.announce_keys() == []
    assert [set(a) for a in announces()] == [{"node_id", "pk", "t", "xpk"}]
    assert store.db.setting(f"key_announced:{CIRCLE}") == "2"
    rows = store.db.control_events(CIRCLE, CONTROL_CHANNEL)
    state = chatmodel.derive([chatmodel.ControlEvent(*row) for row in rows], CIRCLE)
    assert (state.refused, state.rejected) == ({}, {})  # the fold takes it as before


# --- identity.json -------------------------------------------------------------------
def layout(tmp_path: Path) -> home.Layout:
    lay = home.layout(tmp_path, Config())
    home.prepare(lay)
    return lay


def test_a_new_node_derives_its_id_from_its_key(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    ident = home.load_identity(lay)
    assert is_derived_form(ident.node_id) and ident.node_id == ident.key.node_id and ident.signs
    assert home.load_identity(lay).key.public == ident.key.public
    data = json.loads(lay.identity_file.read_text())
    assert unb64(data["ed25519_seed"], 32) == ident.key.seed
    assert lay.identity_file.stat().st_mode & 0o777 == 0o600


def test_an_identity_from_before_keys_gets_a_key_and_keeps_its_id(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    lay.identity_file.write_text(json.dumps({"node_id": OLDER}) + "\n")
    ident = home.load_identity(lay)
    assert ident.node_id == OLDER and ident.signs
    assert home.load_identity(lay).key.public == ident.key.public
    assert home.load_node_id(lay) == OLDER


def test_processes_starting_at_once_all_load_the_one_key_written(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    lay.identity_file.write_text(json.dumps({"node_id": OLDER}) + "\n")
    with ThreadPoolExecutor(8) as pool:  # as a node's children load it at their start
        keys = list(pool.map(lambda _: home.load_identity(lay).key.public, range(8)))
    assert set(keys) == {home.load_identity(lay).key.public}


def test_an_older_id_with_the_mark_by_chance_writes_unsigned(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    lay.identity_file.write_text(json.dumps({"node_id": "fe" + "0" * 22}) + "\n")
    assert not home.load_identity(lay).signs


def test_a_bad_seed_is_a_config_error(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    lay.identity_file.write_text(json.dumps({"node_id": OLDER, "ed25519_seed": "AAAA"}))
    with pytest.raises(ConfigError, match="ed25519_seed"):
        home.load_identity(lay)


# --- the schema ---------------------------------------------------------------------
def test_a_database_of_schema_1_gains_the_columns_and_its_rows_are_unverified(
    tmp_path: Path,
) -> None:
    path = tmp_path / "felund.db"
    ops = Ops(Database(path), NodeInfo(OLDER, "me", True, "", key=ALICE_KEY))
    handled(ops, OP_CIRCLE_CREATE, {})
    ops.db.close()
    raw = sqlite3.connect(path)  # as schema 1 left it: no columns, no keys table
    raw.execute("ALTER TABLE messages DROP COLUMN verified")
    raw.execute("ALTER TABLE messages DROP COLUMN signer")
    raw.execute("DROP TABLE keys")
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    for _ in range(2):  # twice: the migration is idempotent
        db = Database(path)
        rows = list(db.circle_rows(db.circles()[0].circle_id, None))
        assert [r["verified"] for r in rows] == [False, False]  # the owner's proof, the key
        assert db.pinned(CIRCLE, OLDER) is None
        db.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
