"""The relay server's parts in-process, no socket: signatures against the shared vectors,
the SQLite store's paging, retention and migration with a fake clock, rate limits."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from felund.relay.auth import Signed, SlidingWindow, key_id, verifying_key
from felund.relay.protocol import RETENTION_S, IncomingMessage, MessageBatch, Registration
from felund.relay.server.limits import TokenBuckets
from felund.relay.server.sqlite import SqliteRelayStore
from felund.testing import vector_cases
from felund.v1 import crypto, ids

VECTORS = vector_cases()


@dataclass(frozen=True)
class Circle:
    secret: str
    id: str
    hint: str
    key: str


def new_circle() -> Circle:
    secret = ids.new_secret()
    circle_id = ids.circle_id(secret)
    return Circle(secret, circle_id, ids.circle_hint(circle_id), crypto.api_signing_key(secret))


def test_signature_check_matches_the_spec_vectors() -> None:
    for case in VECTORS["api_signature"]:
        key = crypto.api_signing_key(case["secret_hex"])
        signed = Signed(case["ts"], case["nonce"], case["signature"])
        body = case["body"].encode()
        other = crypto.api_signing_key(ids.new_secret())
        assert verifying_key(signed, [other, key], case["method"], case["path"], body) == key
        assert verifying_key(signed, [key], case["method"], case["path"], body + b" ") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _batch(circle: Circle, count: int, serial: Iterator[int]) -> MessageBatch:
    msgs = []
    for _ in range(count):
        n = next(serial)
        msgs.append(
            IncomingMessage(f"msg-{n:08d}", "author-node", json.dumps({"msg_id": f"msg-{n:08d}"}))
        )
    return MessageBatch(circle.hint, tuple(msgs))


@pytest.mark.parametrize("seed", range(4))
def test_store_paging_never_skips_in_random_bursts(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    store = SqliteRelayStore(tmp_path / "relay.db", clock=clock)
    circle = new_circle()
    serial = itertools.count()
    sent: set[str] = set()
    readers = {back: (0, set[str]()) for back in (0, 1)}
    try:
        for _ in range(300):
            action = rng.random()
            if action < 0.5:
                batch = _batch(circle, rng.randint(1, 50), serial)
                store.append(batch)
                sent.update(m.msg_id for m in batch.messages)
            elif action < 0.8:
                back = rng.choice((0, 1))
                since, seen = readers[back]
                page = store.page_since(circle.hint, since, 200)
                assert len(page.messages) <= 200
                seen.update(json.loads(p)["msg_id"] for p in page.messages)
                readers[back] = (max(0, page.server_time - back), seen)
            else:
                clock.now += rng.choice((0.2, 0.5, 1.0, 3.0, -2.0))  # the wall clock may go back
        for back, (start, seen) in readers.items():
            since = start
            for _ in range(200):
                page = store.page_since(circle.hint, since, 200)
                seen.update(json.loads(p)["msg_id"] for p in page.messages)
                since = max(0, page.server_time - back)
                if seen >= sent:
                    break
            assert seen == sent, f"back={back}: missed {len(sent - seen)}"
    finally:
        store.close()


def test_store_retention_and_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteRelayStore(tmp_path / "relay.db", clock=clock)
    circle = new_circle()
    try:
        store.append(_batch(circle, 3, itertools.count()))
        now = int(clock.now)
        reg = Registration("node-0001", circle.hint, (), {}, 30, circle.key)
        assert store.register(reg, circle.key, now) == now + 30
        realm = key_id(circle.key)
        assert store.use_nonce("ab" * 16, now + 300)
        assert not store.use_nonce("ab" * 16, now + 300)
        assert [p.node_id for p in store.peers(circle.hint, realm, "", 10, now + 29)] == [
            "node-0001"
        ]
        assert store.peers(circle.hint, key_id("00" * 32), "", 10, now) == []  # another key's
        assert store.peers(circle.hint, realm, "", 10, now + 30) == []  # expired by ttl_s
        assert store.signing_keys(circle.hint, "node-0001", 8) == [circle.key]
        assert store.signing_keys(circle.hint, "node-0002", 8) == [circle.key]  # the hint's

        assert store.purge_messages(now - RETENTION_S, 100) == 0
        later = now + RETENTION_S + 1
        assert store.purge_messages(later - RETENTION_S, 2) == 2  # in chunks
        assert store.purge_messages(later - RETENTION_S, 2) == 1
        assert store.page_since(circle.hint, 0, 200).messages == []
        purged = store.purge_expired(later, RETENTION_S)
        assert (purged.presence, purged.nonces, purged.keys) == (1, 1, 1)
        assert store.signing_keys(circle.hint, "node-0001", 8) == []
    finally:
        store.close()


_SCHEMA_1 = """
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, circle_hint TEXT NOT NULL,
    msg_id TEXT NOT NULL, author TEXT NOT NULL, stored_at INTEGER NOT NULL,
    stored_wall INTEGER NOT NULL, payload TEXT NOT NULL, UNIQUE (circle_hint, msg_id));
CREATE TABLE presence (circle_hint TEXT NOT NULL, node_id TEXT NOT NULL, endpoints TEXT NOT NULL,
    capabilities TEXT NOT NULL, observed_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (circle_hint, node_id)) WITHOUT ROWID;
CREATE TABLE circle_keys (circle_hint TEXT NOT NULL PRIMARY KEY, signing_key TEXT NOT NULL,
    pinned_at INTEGER NOT NULL, last_used INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def test_a_version_1_database_keeps_its_messages_and_forgets_its_pins(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    circle = new_circle()
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_1)
        conn.execute(
            "INSERT INTO messages VALUES (1, ?, 'msg-00000001', 'a', 5, 5, '{}')", (circle.hint,)
        )
        conn.execute("INSERT INTO circle_keys VALUES (?, ?, 1, 1)", (circle.hint, "ab" * 32))
    conn.close()
    store = SqliteRelayStore(path)
    try:
        assert store.page_since(circle.hint, 0, 10).messages == ["{}"]
        assert store.signing_keys(circle.hint, "node-0001", 8) == []  # a squatter's pin, maybe
        reg = Registration("node-0001", circle.hint, (), {}, 30, circle.key)
        assert store.register(reg, circle.key, 100) == 130
    finally:
        store.close()


def test_token_buckets_and_sliding_window_with_a_fake_clock() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3.0, max_keys=2)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("a", 0.5) == 0.0
    assert buckets.take("b", 0.5) == 0.0 and buckets.take("c", 0.5) == 0.0
    assert len(buckets) == 2  # bounded: the least recently used key went
    assert buckets.prune(100.0) == 2 and len(buckets) == 0

    window = SlidingWindow(limit=20, window_s=10.0)
    assert all(window.take("node", t * 0.1) == 0.0 for t in range(20))
    assert window.take("node", 2.0) == pytest.approx(8.0)  # the first of the 20 leaves at 10 s
    assert window.take("other", 2.0) == 0.0
    assert window.take("node", 10.05) == 0.0
    assert window.prune(30.0) == 2
