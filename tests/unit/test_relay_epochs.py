"""Re-keyed circles at the relay, in-process: the succession proof, the registration's
``succeeds``, the SQLite store's realms (and its migration to them), relay-sync's keys."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from felund.epochs import ROOT, CircleKeys, circle_keys, root_only
from felund.errors import ApiError
from felund.relay.auth import key_id, succeeds_field, succession_proof, verify_succession
from felund.relay.circle import CircleSync
from felund.relay.protocol import MAX_NODE_KEYS, Registration, parse_registration
from felund.relay.server import sqlite
from felund.relay.server.sqlite import SCHEMA_VERSION, SqliteRelayStore
from felund.relay.server.store import Realm
from felund.v1 import crypto, ids
from tests.unit.test_relay_server_parts import new_circle

E1 = "1" * 32


def _keys(n: int) -> list[str]:
    return [crypto.api_signing_key(ids.new_secret()) for _ in range(n)]


def test_the_proof_is_an_hmac_under_the_old_key_of_the_new_keys_id() -> None:
    old, new, other = _keys(3)
    proof = succession_proof(old, key_id(new))
    assert len(proof) == 64 and verify_succession(old, new, proof)
    assert not verify_succession(other, new, proof)  # made without the old key
    assert not verify_succession(old, other, proof)  # for another successor
    assert succeeds_field(new, old) == {"key_id": key_id(old), "proof": proof}


def _registration(**extra: Any) -> dict[str, Any]:
    return {"node_id": "node-0001", "circle_hint": new_circle().hint, **extra}


def test_a_registration_s_succeeds_is_checked_for_shape() -> None:
    old, new = _keys(2)
    reg = parse_registration(_registration(succeeds=succeeds_field(new, old)))
    assert reg.succeeds == (key_id(old), succession_proof(old, key_id(new)))
    assert parse_registration(_registration()).succeeds is None
    for bad in (
        "x",
        {"key_id": key_id(old)},
        {"key_id": key_id(old), "proof": "00" * 32, "more": 1},
        {"key_id": key_id(old).upper(), "proof": "00" * 32},
        {"key_id": key_id(old), "proof": "zz" * 32},
        {"key_id": 5, "proof": "00" * 32},
    ):
        with pytest.raises(ApiError) as refused:
            parse_registration(_registration(succeeds=bad))
        assert refused.value.code == "INVALID_REQUEST"


def test_realms_of_a_lineage_share_its_first_room_and_end_as_they_are_succeeded(
    tmp_path: Path,
) -> None:
    store = SqliteRelayStore(tmp_path / "relay.db")
    hint = new_circle().hint
    k0, k1, k2 = (key_id(k) for k in _keys(3))
    try:
        assert store.realm(hint, k0) == Realm(k0, ended=False, rekeyed=False)
        assert store.realm(hint, None) == Realm("", ended=False, rekeyed=False)
        assert store.succeed(hint, k0, k1, 100) == "ok"
        assert store.succeed(hint, k1, k2, 200) == "ok"
        assert store.realm(hint, k0) == Realm(k0, ended=True, rekeyed=True)
        assert store.realm(hint, k1) == Realm(k0, ended=True, rekeyed=True)
        assert store.realm(hint, k2) == Realm(k0, ended=False, rekeyed=True)
        assert store.realm(hint, None).rekeyed
        assert store.succeed(hint, k1, k2, 300) == "ok"  # again (each registration says so)
        # Two successors of one realm (two moderators at once): both share its room.
        k2b = key_id(_keys(1)[0])
        assert store.succeed(hint, k1, k2b, 300) == "ok"
        assert store.realm(hint, k2b) == Realm(k0, ended=False, rekeyed=True)
        # A realm of another lineage cannot join this room.
        other0, other1 = (key_id(k) for k in _keys(2))
        assert store.succeed(hint, other0, other1, 300) == "ok"
        assert store.succeed(hint, k2, other1, 400) == "other_room"
        assert store.realm(hint, other1).room == other0
        assert store.realm(new_circle().hint, k2) == Realm(k2, ended=False, rekeyed=False)
    finally:
        store.close()


def test_a_key_is_found_by_its_id_among_those_registered(tmp_path: Path) -> None:
    store = SqliteRelayStore(tmp_path / "relay.db")
    circle = new_circle()
    try:
        reg = Registration("node-0001", circle.hint, (), {}, 30, circle.key)
        assert store.key_by_id(circle.hint, key_id(circle.key)) is None
        store.register(reg, circle.key, 100)
        assert store.key_by_id(circle.hint, key_id(circle.key)) == circle.key
        assert store.key_by_id(new_circle().hint, key_id(circle.key)) is None
    finally:
        store.close()


def test_ended_keys_do_not_count_against_a_node_s_keys(tmp_path: Path) -> None:
    store = SqliteRelayStore(tmp_path / "relay.db")
    hint = new_circle().hint
    keys = _keys(MAX_NODE_KEYS + 3)
    try:
        for i, key in enumerate(keys):
            reg = Registration("node-0001", hint, (), {}, 30, key)
            assert store.register(reg, key, 100 + i) is not None, i
            if i:
                store.succeed(hint, key_id(keys[i - 1]), key_id(key), 100 + i)
        unrelated = _keys(MAX_NODE_KEYS + 1)
        results = [
            store.register(Registration("node-0001", hint, (), {}, 30, k), k, 200)
            for k in unrelated
        ]
        # One current key of the lineage plus MAX_NODE_KEYS others: the last is refused.
        assert results[-2] is None and all(r is not None for r in results[:-2])
    finally:
        store.close()


def test_a_version_2_database_gains_realms_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    circle = new_circle()
    store = SqliteRelayStore(path)
    store.register(Registration("node-0001", circle.hint, (), {}, 30, circle.key), circle.key, 100)
    store.close()
    with sqlite3.connect(path) as conn:  # as version 2 left it
        conn.execute("DROP TABLE realms")
        conn.execute(
            "INSERT INTO messages VALUES (1, ?, 'msg-00000001', 'a', 5, 5, '{}')", (circle.hint,)
        )
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = SqliteRelayStore(path)
    try:
        assert store.page_since(circle.hint, 0, 10).messages == ["{}"]
        assert store.signing_keys(circle.hint, "node-0001", 8) == [circle.key]  # kept
        assert store.succeed(circle.hint, key_id(circle.key), E1, 200) == "ok"
        assert store.realm(circle.hint, key_id(circle.key)).ended
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()


# --- relay-sync's side ---------------------------------------------------------------


def test_relay_sync_signs_with_the_newest_epoch_and_proves_it_succeeds_the_one_before() -> None:
    root, s1, s2 = ids.new_secret(), ids.new_secret(), ids.new_secret()
    circle_id = ids.circle_id(root)
    answer = {
        "circles": [
            {
                "circle_id": circle_id,
                "name": "",
                "secret": s2,
                "epochs": [
                    {"id": "2" * 32, "n": 2, "secret": s2},
                    {"id": E1, "n": 1, "secret": s1},
                    {"id": ROOT, "n": 0, "secret": root},
                ],
            }
        ]
    }
    keys = circle_keys(answer)[circle_id]
    c = CircleSync.of(keys)
    assert c.hint == ids.circle_hint(circle_id)  # the root's circle id: one hint for all epochs
    assert c.key == crypto.api_signing_key(s2)
    succeeds = c.succeeds
    assert succeeds is not None
    assert succeeds["key_id"] == key_id(crypto.api_signing_key(s1))
    assert verify_succession(crypto.api_signing_key(s1), c.key, succeeds["proof"])

    plain = CircleSync.of(root_only(circle_id, root))
    assert plain.key == crypto.api_signing_key(root) and plain.succeeds is None
    # A store from before epochs answers only "secret": the root.
    old_store = circle_keys({"circles": [{"circle_id": circle_id, "name": "", "secret": root}]})
    assert old_store[circle_id] == CircleKeys(circle_id, ((ROOT, root),))


def test_a_circle_hint_takes_a_bounded_number_of_successions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended keys count for no node's bound: the realms of a circle_hint are bounded."""
    monkeypatch.setattr(sqlite, "MAX_REALMS", 4)
    store = SqliteRelayStore(tmp_path / "relay.db")
    hint = new_circle().hint
    realms = [key_id(k) for k in _keys(6)]
    try:
        outcomes = [store.succeed(hint, old, new, 100) for old, new in itertools.pairwise(realms)]
        assert outcomes == ["ok", "ok", "ok", "full", "full"]
        assert store.succeed(hint, realms[2], realms[3], 200) == "ok"  # one it holds: again
    finally:
        store.close()
