"""Batch signatures: the vectors, the tree's shape, tampering refused, the cache that
cannot let a forgery pass, the plaintext's shapes, and the store writing batches."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felund.errors import AuthError, InvalidMessage
from felund.protocol import OP_APPEND, OP_CIRCLE_CREATE, OP_INBOX, OP_POST
from felund.store.database import Circle, Database
from felund.store.ops import NodeInfo, Ops
from felund.testing.store import handled
from felund.testing.vectors import trust_cases
from felund.trust import batch, signing
from felund.trust.identity import IdentityKey, b64
from felund.trust.signing import Verdict
from felund.v1.ids import new_msg_id, new_msg_ids
from felund.v1.wire import (
    MAX_DISPLAY_NAME_CHARS,
    MAX_TEXT_CHARS,
    Draft,
    compose_messages,
    open_message,
    parse_message,
    to_wire,
)
from tests.unit.test_signed_messages import (
    ALICE,
    ALICE_KEY,
    CIRCLE,
    DROP,
    SECRET,
    plaintext_of,
    with_plaintext,
)

(CASE,) = trust_cases()["batch"]


def drafts(count: int, author: str = ALICE, text: str = "line") -> list[Draft]:
    return [
        Draft(
            msg_id=f"{i:032x}",
            circle_id=CIRCLE,
            channel_id="general",
            author_node_id=author,
            created_ts=1_780_000_000 + i,
            display_name="alice",
            text=f"{text} {i}",
        )
        for i in range(count)
    ]


def signed_batch(count: int) -> list[tuple[Draft, signing.Signature]]:
    """``count`` messages signed together by ALICE_KEY, each with the signature it carries."""
    ds = drafts(count)
    sigs = [signing.signature_of(s) for s in signing.sign_many(ALICE_KEY, ds)]
    return [(d, s) for d, s in zip(ds, sigs, strict=True) if s is not None]


# --- the vectors and the tree ------------------------------------------------------------
def test_batch_vectors() -> None:
    key = IdentityKey.from_seed(bytes.fromhex(CASE["seed_hex"]))
    messages = CASE["messages"]
    datas = [signing.signing_bytes(**m["fields"]) for m in messages]
    assert [d.hex() for d in datas] == [m["signing_bytes_hex"] for m in messages]
    assert [batch.leaf_hash(i, d).hex() for i, d in enumerate(datas)] == [
        m["leaf_hash_hex"] for m in messages
    ]
    root, paths = batch.tree(datas)
    assert root.hex() == CASE["root_hex"]
    assert batch.batch_bytes(root).hex() == CASE["batch_bytes_hex"]
    assert [b64(p) for p in paths] == [m["path"] for m in messages]
    # Ed25519 is deterministic: the same key and batch give the vector's signature.
    assert signing.sign_many(key, [m["fields"] for m in messages]) == [
        {"pk": CASE["pk"], "sig": CASE["sig"], "leaf": m["leaf"], "path": m["path"]}
        for m in messages
    ]
    for m in messages:
        plain = {"pk": CASE["pk"], "sig": CASE["sig"], "leaf": m["leaf"], "path": m["path"]}
        got = signing.check(signing.signature_of(plain), pinned=None, **m["fields"])
        assert got is Verdict.VERIFIED


def test_every_leaf_of_every_batch_size_reaches_its_root() -> None:
    for n in range(2, batch.BATCH_LEAVES + 1):
        datas = [bytes([i]) for i in range(n)]
        root, paths = batch.tree(datas)
        for i, path in enumerate(paths):
            assert batch.path_fits(i, len(path) // batch.HASH_LEN)
            assert batch.root_of(batch.leaf_hash(i, datas[i]), i, path) == root


def test_a_shape_no_batch_has_reaches_no_root() -> None:
    leaf = batch.leaf_hash(3, b"x")
    # Leaf 3 has a left sibling at the two lowest levels: one hash cannot carry it up.
    for index, path in ((3, bytes(32)), (0, b""), (64, bytes(32)), (1, bytes(33))):
        assert not batch.path_fits(index, len(path) // batch.HASH_LEN) or len(path) % 32
        with pytest.raises(ValueError):
            batch.root_of(leaf, index, path)


def test_the_tree_is_as_its_docstring_says() -> None:
    leaves = [batch.leaf_hash(i, bytes([i])) for i in range(5)]

    def node(a: bytes, b: bytes) -> bytes:
        return hashlib.sha256(b"felund-node-v1" + a + b).digest()

    # Leaf 4 is promoted twice, then meets the root's left half.
    left = node(node(leaves[0], leaves[1]), node(leaves[2], leaves[3]))
    root, paths = batch.tree([bytes([i]) for i in range(5)])
    assert root == node(left, leaves[4])
    assert paths[4] == left and paths[0] == leaves[1] + node(leaves[2], leaves[3]) + leaves[4]
    assert leaves[0] == hashlib.sha256(b"felund-leaf-v1\0\0\0\0\0").digest()


def test_a_post_of_many_is_split_in_nearly_equal_batches() -> None:
    signed = signing.sign_many(ALICE_KEY, drafts(130))
    assert [s["leaf"] for s in signed] == [*range(43), *range(43), *range(44)]
    assert len({s["sig"] for s in signed}) == 3
    assert signing.sign_many(ALICE_KEY, drafts(1)) == [
        signing.sign_fields(ALICE_KEY, **drafts(1)[0])  # alone: the single form, as before
    ]


# --- tampering -----------------------------------------------------------------------------
def _refused(draft: Draft, sig: signing.Signature, kind: str = "signature") -> None:
    with pytest.raises(InvalidMessage) as caught:
        signing.check(sig, pinned=None, **draft)
    assert caught.value.kind == kind


def test_a_tampered_path_index_signature_or_text_is_refused() -> None:
    batch_of = signed_batch(5)
    for draft, sig in batch_of:
        assert signing.check(sig, pinned=None, **draft) is Verdict.VERIFIED
        for at in range(len(sig.path)):
            flipped = bytearray(sig.path)
            flipped[at] ^= 1
            _refused(draft, sig._replace(path=bytes(flipped)))
        for index in range(batch.BATCH_LEAVES):
            if index != sig.leaf and batch.path_fits(index, len(sig.path) // 32):
                _refused(draft, sig._replace(leaf=index))
        _refused(draft, sig._replace(sig=bytes(64)))
        _refused(draft, sig._replace(path=sig.path[32:] or bytes(32)))
    # Another message's leaf and path, or another batch's signature, reach no root signed.
    (d0, s0), (_, s1) = batch_of[:2]
    _refused(d0, s1)
    other = signed_batch(3)[0][1]
    _refused(d0, s0._replace(sig=other.sig))


def test_the_cache_lets_no_changed_message_pass_after_its_batch_verified() -> None:
    (draft, sig), *_ = signed_batch(64)
    assert signing.check(sig, pinned=None, **draft) is Verdict.VERIFIED  # the root is cached
    for change in ({"text": "changed"}, {"display_name": "eve"}, {"msg_id": "f" * 32}):
        _refused(Draft(**{**draft, **change}), sig)  # type: ignore[typeddict-item]
    # A derived id still belongs to its key alone, cached root or not.
    other = IdentityKey.from_seed(b"o" * 32)
    _refused(draft, sig._replace(pk=other.public), "key_mismatch")


@pytest.mark.parametrize(
    "change",
    [
        {"path": b64(bytes(7 * 32))},  # 7 hashes: no batch of 64 is that deep
        {"leaf": 64},
        {"leaf": -1},
        {"leaf": True},
        {"leaf": "1"},
        {"leaf": 1.0},
        {"leaf": None},
        {"path": ""},  # the batch form has at least one sibling
        {"path": b64(bytes(33))},
        {"path": "not base64 at all!" * 4},
        {"path": None},
        {"leaf": 63, "path": b64(bytes(5 * 32))},  # leaf 63 has six left siblings
        {"leaf": DROP},
        {"path": DROP},
    ],
)
def test_a_malformed_leaf_or_path_is_refused(change: dict[str, Any]) -> None:
    sig = signed_batch(2)[0][1]
    plain = {"pk": b64(sig.pk), "sig": b64(sig.sig), "leaf": 0, "path": b64(sig.path)}
    plain = {k: v for k, v in {**plain, **change}.items() if v is not DROP}
    with pytest.raises(InvalidMessage) as caught:
        signing.signature_of(plain)
    assert caught.value.kind == "signature"


# --- in a message -------------------------------------------------------------------------
def test_a_batch_opens_message_by_message() -> None:
    msgs = compose_messages(SECRET, drafts(5), encrypt=True, key=ALICE_KEY)
    for i, (msg, draft) in enumerate(zip(msgs, drafts(5), strict=True)):
        assert list(plaintext_of(msg)) == ["display_name", "text", "pk", "sig", "leaf", "path"]
        opened = open_message(SECRET, CIRCLE, parse_message(to_wire(msg)))
        assert opened.signed is not None and opened.signed.leaf == i
        assert signing.check(opened.signed, pinned=None, **draft) is Verdict.VERIFIED


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"path": DROP}, AuthError),  # leaf without path: not a shape we read
        ({"leaf": DROP}, AuthError),
        ({"pk": DROP, "sig": DROP}, AuthError),
        ({"extra": 1}, AuthError),
        ({"path": b64(bytes(7 * 32))}, InvalidMessage),
        ({"leaf": 64}, InvalidMessage),
    ],
)
def test_a_plaintext_of_another_shape_is_refused(
    change: dict[str, Any], error: type[Exception]
) -> None:
    msg = compose_messages(SECRET, drafts(3), encrypt=True, key=ALICE_KEY)[2]
    plain = {k: v for k, v in {**plaintext_of(msg), **change}.items() if v is not DROP}
    with pytest.raises(error):
        open_message(SECRET, CIRCLE, with_plaintext(msg, plain))


def test_the_largest_message_of_a_batch_still_parses() -> None:
    # As test_the_largest_message_signed_still_parses, at the deepest leaf of a full batch:
    # index 63 (two digits) and a path of six hashes.
    text = "\U0001f600" * (MAX_TEXT_CHARS // 3) + "\x01" * (MAX_TEXT_CHARS - MAX_TEXT_CHARS // 3)
    name = "\U0001f600" * MAX_DISPLAY_NAME_CHARS
    full = drafts(batch.BATCH_LEAVES)
    for draft in full:
        draft["text"], draft["display_name"] = text, name
    msg = compose_messages(SECRET, full, encrypt=True, key=ALICE_KEY)[-1]
    plain = plaintext_of(msg)
    assert plain["leaf"] == 63 and len(base64.b64decode(plain["path"])) == 6 * 32
    assert open_message(SECRET, CIRCLE, parse_message(to_wire(msg))).signed is not None


# --- the store ------------------------------------------------------------------------------
@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Ops]:
    """A signing node of a derived id holding the circle of SECRET."""
    key = IdentityKey.from_seed(ALICE_KEY.seed)
    db = Database(tmp_path / "writer.db")
    ops = Ops(db, NodeInfo(key.node_id, "alice", True, "127.0.0.1:9999", key=key))
    with db.transaction():
        db.add_circle(Circle(CIRCLE, SECRET, "", 0))
    yield ops
    db.close()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Ops]:
    """A fresh node holding the circle of SECRET."""
    db = Database(tmp_path / "reader.db")
    ops = Ops(db, NodeInfo("7" * 24, "bob", True, "127.0.0.1:9998"))
    handled(ops, OP_CIRCLE_CREATE, {})
    with db.transaction():
        db.add_circle(Circle(CIRCLE, SECRET, "", 0))
    yield ops
    db.close()


def test_the_store_signs_a_post_of_many_in_batches_each_verifying_alone(
    writer: Ops, reader: Ops
) -> None:
    posted: list[dict[str, Any]] = [
        {"msg_id": f"{i:032x}", "created_ts": 1_780_000_000, "text": f"m{i}"} for i in range(70)
    ]
    handled(writer, OP_POST, {"circle_id": CIRCLE, "msgs": posted})
    wires = writer.db.wire_of([m["msg_id"] for m in posted])
    signed = [open_message(SECRET, CIRCLE, parse_message(w)).signed for w in wires]
    assert all(s is not None and s.leaf is not None for s in signed)
    assert len({s.sig for s in signed if s is not None}) == 2  # 35 and 35 under one signature each
    # Each alone, last first, on a node that holds none of the others.
    for wire in reversed(wires):
        assert handled(reader, OP_APPEND, {"origin": "gossip", "msgs": [wire]}).reply[
            "results"
        ] == ["stored"]
    msgs = handled(reader, OP_INBOX, {"circle_id": CIRCLE, "limit": 100}).reply["msgs"]
    assert len(msgs) == 70 and all(m["verified"] for m in msgs)


def _batch_runs(writer: Ops, msg_ids: list[str]) -> int:
    """Runs of one signature in the order a joiner asks for them (time, then id)."""
    posted = [{"msg_id": m, "created_ts": 1_780_000_000, "text": "x"} for m in msg_ids]
    handled(writer, OP_POST, {"circle_id": CIRCLE, "msgs": posted})
    wires = sorted(writer.db.wire_of(msg_ids), key=lambda w: (w["created_ts"], w["msg_id"]))
    signed = [open_message(SECRET, CIRCLE, parse_message(w)).signed for w in wires]
    sigs = [s.sig for s in signed if s is not None]
    assert len(sigs) == len(msg_ids)
    return sum(1 for i, s in enumerate(sigs) if i == 0 or s != sigs[i - 1])


def test_ids_made_together_bring_each_signed_batch_to_a_joiner_as_one_run(writer: Ops) -> None:
    # What `felund send --stdin` posts: a joiner checks each batch in one climb.
    assert _batch_runs(writer, new_msg_ids(ALICE, 1_780_000_000, 256)) == 4
    # Ids made one by one scatter a batch among the others.
    assert _batch_runs(writer, [new_msg_id(ALICE, 1_780_000_000) for _ in range(256)]) > 100


def test_a_batch_message_changed_by_a_member_is_refused_by_the_store(reader: Ops) -> None:
    batch_msgs = compose_messages(SECRET, drafts(4), encrypt=True, key=ALICE_KEY)
    wires = [to_wire(m) for m in batch_msgs]
    assert handled(reader, OP_APPEND, {"origin": "gossip", "msgs": wires[:2]}).reply["results"] == [
        "stored",
        "stored",
    ]  # the batch's root is now verified and cached
    forged = with_plaintext(batch_msgs[2], {**plaintext_of(batch_msgs[2]), "text": "forged"})
    assert handled(reader, OP_APPEND, {"origin": "gossip", "msgs": [to_wire(forged)]}).reply[
        "results"
    ] == ["rejected:signature"]


def test_only_well_sized_keys_and_signatures_reach_the_decoding_cache() -> None:
    # A member can put a 60 kB "pk" in a plaintext: 4096 of those must not stay in memory.
    before = signing._pair.cache_info().currsize
    for i in range(3):
        with pytest.raises(InvalidMessage):
            signing.signature_of({"pk": "A" * 60_000 + str(i), "sig": b64(bytes(64))})
    assert signing._pair.cache_info().currsize == before
    signing.signature_of({"pk": b64(bytes(32)), "sig": b64(bytes(range(64)))})
    assert signing._pair.cache_info().currsize == before + 1
