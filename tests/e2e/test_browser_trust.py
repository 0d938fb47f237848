"""Who said it, in the browser (felund/web/lib/trust.js, wire.js, sync.js, chatmodel.js, the app).

A real relay serves the modules and a real headless Chromium computes with
WebCrypto Ed25519. Python holds it to felund.trust: the vectors of
tests/vectors/felund-trust-v1.json (ids, fingerprints, signed bytes,
signatures, batch roots and paths, owner secrets), the same verdict on signed,
unsigned and forged messages, and the role rules of the fold (SPEC-15 §3). Messages from Python
are composed here with their signature inside enc, as our nodes write them,
and posted through the relay; what the page signs is opened and checked by
felund.trust.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.errors import InvalidMessage
from felund.protocol import OP_INBOX
from felund.testing import (
    Relay,
    browser_missing,
    plaintext_of,
    signed_call,
    signed_wire_message,
    wait_for,
    wire_message,
)
from felund.testing.vectors import trust_cases
from felund.trust import identity, owner, signing, wrap
from felund.trust.identity import IdentityKey
from felund.v1 import chatmodel, crypto, events, ids
from felund.v1.chatmodel import event_text
from felund.v1.invite import decode_invite
from felund.v1.wire import WIRE_KEYS, Draft, compose_messages, parse_message, to_wire
from tests.e2e.conftest import in_page
from tests.e2e.test_web_app import _node as node_on_relay
from tests.e2e.test_web_app import _node_sees as node_sees

if browser_missing() is None:  # else the browser fixture skips (fails under CI=true)
    from playwright.sync_api import expect

pytestmark = pytest.mark.slow

CASES = trust_cases()
MODULES = ("bytes", "ids", "wire", "trust", "chatmodel")
SECRET = "3c" * 32
CIRCLE = ids.circle_id(SECRET)
NOW = 1_780_000_000
T = 20_000  # ms: the bound of every wait on a page


def marked(tag: str) -> IdentityKey:
    """A key of the tests whose node id has the derived mark, as a new node's has."""
    for i in itertools.count():
        key = IdentityKey.from_seed(hashlib.sha256(f"{tag}{i}".encode()).digest())
        if identity.is_derived_form(key.node_id):
            return key
    raise AssertionError("unreachable")


# Keys of the tests: derived ids (with the mark), and a node made before keys.
ANA, BOB, CAL = marked("ana"), marked("bob"), marked("cal")
OLD_ID = "0123456789abcdef01234567"  # no mark: an older id, pinned at first sight


@pytest.fixture(scope="module")
def page(lib_page: Any) -> Any:
    """The modules' page of the tier (conftest), under the name these tests use."""
    return lib_page


def js(page: Any, body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with the modules in ``L`` and ``arg``) in the page."""
    return in_page(page, MODULES, body, arg)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def signed_wire(key: IdentityKey | None, author: str, text: str, **kw: Any) -> dict[str, Any]:
    """A message of the test circle (or ``secret=``) as our node writes it, signed by ``key``."""
    kw.setdefault("name", "py")
    return signed_wire_message(kw.pop("secret", SECRET), key, author, text, **kw)


def py_verdict(wire: dict[str, Any], pinned: bytes | None = None, secret: str = SECRET) -> str:
    """felund.trust's verdict on a message: a Verdict's value, or the refusal's kind."""
    m = parse_message(wire)
    plain = plaintext_of(secret, wire)
    try:
        return signing.check(
            signing.signature_of(plain),
            pinned=pinned,
            msg_id=m.msg_id,
            circle_id=m.circle_id,
            channel_id=m.channel_id,
            author_node_id=m.author_node_id,
            created_ts=m.created_ts,
            display_name=plain["display_name"],
            text=plain["text"],
        ).value
    except InvalidMessage as e:
        return e.kind


# --- the vectors -----------------------------------------------------------------------------


def test_identity_vectors_from_seeds(page) -> None:
    # WebCrypto imports no raw Ed25519 private key: the seed goes in as PKCS#8.
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const key = await L.trust.keyFromSeed(L.bytes.hexToBytes(c.seed_hex));
          out.push({pk: L.bytes.b64encode(key.publicKey), nodeId: L.trust.nodeIdOf(key.publicKey),
                    fp: L.trust.fingerprint(key.publicKey),
                    extractable: key.privateKey.extractable});
        }
        return out;
        """,
        CASES["identity"],
    )
    assert got == [
        {
            "pk": c["public_key_b64"],
            "nodeId": c["node_id"],
            "fp": c["fingerprint"],
            "extractable": False,
        }
        for c in CASES["identity"]
    ]


def test_signing_vectors(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const f = c.fields;
          const fields = {msgId: f.msg_id, circleId: f.circle_id, channelId: f.channel_id,
                          authorNodeId: f.author_node_id, createdTs: f.created_ts,
                          displayName: f.display_name, text: f.text};
          const data = L.trust.signingBytes(fields);
          const key = await L.trust.keyFromSeed(L.bytes.hexToBytes(c.seed_hex));
          const pk = L.bytes.b64decode(c.pk), sig = L.bytes.b64decode(c.sig);
          out.push({
            hex: L.bytes.bytesToHex(data),
            signed: await L.trust.signFields(key, fields),
            verifies: await L.trust.verify(pk, sig, data),
            otherText: await L.trust.verify(
              pk, sig, L.trust.signingBytes({...fields, text: f.text + "."})),
            verdict: await L.trust.check({pk, sig}, null, fields),
          });
        }
        return out;
        """,
        CASES["signing"],
    )
    for case, result in zip(CASES["signing"], got, strict=True):
        assert result["hex"] == case["signing_bytes_hex"]
        # Ed25519 is deterministic: the page's signature is the vector's.
        assert result["signed"] == {"pk": case["pk"], "sig": case["sig"]}
        assert result["verifies"] is True
        assert result["otherText"] is False
        # Seeds 0 and 9d derive ids without the mark, which the vectors sign for:
        # derived from the key all the same, so verified.
        assert result["verdict"] == "verified"


def test_owner_vectors_and_proof(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const pk = L.bytes.b64decode(c.public_key_b64);
          const secret = L.trust.ownedSecret(pk, c.salt_hex);
          const other = L.bytes.b64decode(arg[(arg.indexOf(c) + 1) % arg.length].public_key_b64);
          out.push({secret, circleId: await L.ids.circleId(secret),
                    proves: L.trust.provesOwner(secret, pk, c.salt_hex),
                    otherKey: L.trust.provesOwner(secret, other, c.salt_hex),
                    otherSalt: L.trust.provesOwner(secret, pk, "00".repeat(32)),
                    badSalt: [L.trust.provesOwner(secret, pk, c.salt_hex.toUpperCase()),
                              L.trust.provesOwner(secret, pk, 5),
                              L.trust.provesOwner(secret, pk, "ab")]});
        }
        const fresh = L.trust.newOwnedSecret(L.bytes.b64decode(arg[0].public_key_b64));
        return {out, fresh};
        """,
        CASES["owner"],
    )
    for case, result in zip(CASES["owner"], got["out"], strict=True):
        pk = base64.b64decode(case["public_key_b64"])
        salt = case["salt_hex"]
        assert result == {
            "secret": case["secret_hex"],
            "circleId": case["circle_id"],
            "proves": True,
            "otherKey": False,
            "otherSalt": False,
            "badSalt": [
                owner.proves_owner(case["secret_hex"], pk, bad) for bad in (salt.upper(), 5, "ab")
            ],
        }
    assert got["out"][0]["badSalt"] == [False, False, False]
    # A secret made in the page proves its owner in Python.
    fresh = got["fresh"]
    pk = base64.b64decode(CASES["owner"][0]["public_key_b64"])
    assert owner.proves_owner(fresh["secret"], pk, fresh["salt"])


def test_a_generated_key_is_derived_non_extractable_and_verifies_in_python(page) -> None:
    got = js(
        page,
        """
        const key = await L.trust.generateKey();
        let exported = "no";
        try { await crypto.subtle.exportKey("pkcs8", key.privateKey); exported = "yes"; } catch {}
        const nodeId = L.trust.nodeIdOf(key.publicKey);
        const fields = {msgId: "ab".repeat(16), circleId: arg, channelId: "general",
                        authorNodeId: nodeId, createdTs: 1780000000, displayName: "zoë",
                        text: "hi 🐘"};
        return {nodeId, exported, extractable: key.privateKey.extractable,
                maySign: [L.trust.maySign(key, nodeId),
                          L.trust.maySign(key, "0123456789abcdef01234567"),
                          L.trust.maySign(key, "fe0000000000000000000000")],
                signed: await L.trust.signFields(key, fields)};
        """,
        CIRCLE,
    )
    assert got["nodeId"].startswith(identity.DERIVED_MARK) and len(got["nodeId"]) == 24
    assert got["exported"] == "no" and got["extractable"] is False
    assert got["maySign"] == [True, True, False]
    pair = signing.signature_of(got["signed"])
    assert pair is not None and identity.node_id_of(pair[0]) == got["nodeId"]
    verdict = signing.check(
        pair,
        pinned=None,
        msg_id="ab" * 16,
        circle_id=CIRCLE,
        channel_id="general",
        author_node_id=got["nodeId"],
        created_ts=1_780_000_000,
        display_name="zoë",
        text="hi 🐘",
    )
    assert verdict is signing.Verdict.VERIFIED


# --- messages: the page and felund.trust give the same verdict ------------------------------


def _verdict_cases() -> list[tuple[str, dict[str, Any], str | None]]:
    """(what, wire, pinned b64) cases covering every verdict and refusal."""
    return [
        ("derived, own key", signed_wire(ANA, ANA.node_id, "hi"), None),
        ("v1, unsigned", signed_wire(None, ANA.node_id, "hi"), None),
        ("derived id, another key", signed_wire(BOB, ANA.node_id, "as ana"), None),
        ("older id, first sight", signed_wire(BOB, OLD_ID, "old"), None),
        ("older id, its pinned key", signed_wire(BOB, OLD_ID, "old"), b64(BOB.public)),
        ("older id, another key", signed_wire(ANA, OLD_ID, "old"), b64(BOB.public)),
        ("signed other text", signed_wire(ANA, ANA.node_id, "hi", sign_as={"text": "ho"}), None),
        ("signed other date", signed_wire(ANA, ANA.node_id, "hi", sign_as={"created_ts": 5}), None),
        ("derived id, pinned other", signed_wire(ANA, ANA.node_id, "x"), b64(BOB.public)),
    ]


def test_the_page_decides_as_felund_trust(page) -> None:
    cases = _verdict_cases()
    got = js(
        page,
        """
        const out = [];
        for (const [what, wire, pinned] of arg.cases) {
          const m = await L.wire.openMessage(arg.secret, arg.circle, wire);
          try {
            const pin = pinned === null ? null : L.bytes.b64decode(pinned);
            out.push(await L.trust.check(m.signed, pin, m));
          } catch (e) {
            if (!(e instanceof L.wire.InvalidMessage)) throw e;
            out.push(e.kind);
          }
        }
        return out;
        """,
        {"cases": cases, "secret": SECRET, "circle": CIRCLE},
    )
    expected = [
        py_verdict(wire, None if pin is None else base64.b64decode(pin)) for _, wire, pin in cases
    ]
    assert got == expected
    assert expected == [
        "verified",
        "unsigned",
        "key_mismatch",
        "first_sight",
        "verified",
        "key_mismatch",
        "signature",
        "signature",
        "verified",
    ]


def test_malformed_signatures_are_refused_and_a_signed_page_message_opens_in_python(page) -> None:
    wire = signed_wire(ANA, ANA.node_id, "hi")
    plain = plaintext_of(SECRET, wire)

    def resealed(extra: dict[str, Any]) -> dict[str, Any]:
        body = {"display_name": plain["display_name"], "text": plain["text"], **extra}
        m = parse_message(wire)
        ad = f"{m.msg_id}|{m.circle_id}|{m.channel_id}|{m.author_node_id}|{m.created_ts}"
        nonce = random.randbytes(12)
        sealed = AESGCM(crypto.message_key(SECRET)).encrypt(
            nonce, json.dumps(body).encode(), ad.encode()
        )
        return wire | {"enc": wire["enc"] | {"nonce": b64(nonce), "ciphertext": b64(sealed)}}

    bad = [
        resealed({"pk": plain["pk"], "sig": plain["sig"][:-4]}),  # 61 bytes
        resealed({"pk": plain["pk"][:-1] + "=", "sig": 5}),
        resealed({"pk": plain["pk"], "sig": None}),
        resealed({"pk": None, "sig": None}),
        resealed({"pk": plain["pk"]}),  # three keys: not a plaintext of ours
        resealed({"pk": plain["pk"], "sig": plain["sig"], "x": 1}),
        resealed({"pk": "-" + plain["pk"][1:], "sig": plain["sig"]}),
    ]
    got = js(
        page,
        """
        const out = [];
        for (const wire of arg.bad) {
          try { await L.wire.openMessage(arg.secret, arg.circle, wire); out.push("opened"); }
          catch (e) { out.push(e.kind); }
        }
        const key = await L.trust.keyFromSeed(L.bytes.hexToBytes(arg.seed));
        const nodeId = L.trust.nodeIdOf(key.publicKey);
        const mine = await L.wire.composeMessage(arg.secret, {circleId: arg.circle,
          authorNodeId: nodeId,
          displayName: "Ana", text: "signed by the page", key});
        const plain = await L.wire.composeMessage(arg.secret, {circleId: arg.circle,
          authorNodeId: nodeId,
          displayName: "Ana", text: "mac only", key, encrypt: false});
        const opened = await L.wire.openMessage(arg.secret, arg.circle, mine);
        return {out, mine, plain, verdict: await L.trust.check(opened.signed, null, opened)};
        """,
        {"bad": bad, "secret": SECRET, "circle": CIRCLE, "seed": ANA.seed.hex()},
    )
    # A "-" keeps the length: a base64 error, a malformed signature.
    assert got["out"][:4] == ["signature"] * 4
    assert got["out"][4:6] == ["auth", "auth"]
    assert got["out"][6] == "signature"
    assert py_verdict(got["mine"]) == "verified" == got["verdict"]
    mine = plaintext_of(SECRET, got["mine"])
    assert list(mine) == ["display_name", "text", "pk", "sig"]
    assert mine["pk"] == b64(ANA.public)
    # Exactly the v1 keys travel; a plain (MAC) message cannot carry a signature.
    assert set(got["mine"]) == set(got["plain"]) and got["plain"]["enc"] is None


def test_batch_vectors_and_a_node_s_batch_in_the_page(page) -> None:
    """The batch form (felund/trust/batch.py) in Chromium: the vectors' signed bytes,
    leaves and root; a node's batch of 5 opens and verifies message by message; a changed
    text, path or index is refused though its batch's root is verified and cached; a path
    of 7 hashes is malformed; a leaf without a path is not a plaintext of ours."""
    (case,) = CASES["batch"]
    drafts = [
        Draft(
            msg_id=f"{i:032x}",
            circle_id=CIRCLE,
            channel_id="general",
            author_node_id=ANA.node_id,
            created_ts=NOW + i,
            display_name="ana",
            text=f"batch line {i}",
        )
        for i in range(5)
    ]
    wires = [to_wire(m) for m in compose_messages(SECRET, drafts, encrypt=True, key=ANA)]
    plain = plaintext_of(SECRET, wires[2])
    path = base64.b64decode(plain["path"])

    def resealed(body: dict[str, Any]) -> dict[str, Any]:
        m = parse_message(wires[2])
        ad = f"{m.msg_id}|{m.circle_id}|{m.channel_id}|{m.author_node_id}|{m.created_ts}"
        nonce = random.randbytes(12)
        sealed = AESGCM(crypto.message_key(SECRET)).encrypt(
            nonce, json.dumps(body).encode(), ad.encode()
        )
        enc = wires[2]["enc"] | {"nonce": b64(nonce), "ciphertext": b64(sealed)}
        return wires[2] | {"enc": enc}

    bad = {
        "text": resealed(plain | {"text": "changed"}),
        "path": resealed(plain | {"path": b64(bytes([path[0] ^ 1]) + path[1:])}),
        "leaf": resealed(plain | {"leaf": 0}),  # leaf 2's path of 3 fits index 0 too
        "seven": resealed(plain | {"path": b64(bytes(7 * 32))}),
        "no_path": resealed({k: v for k, v in plain.items() if k != "path"}),
    }
    got = js(
        page,
        """
        const verdict = async (wire) => {
          try {
            const m = await L.wire.openMessage(arg.secret, arg.circle, wire);
            return await L.trust.check(m.signed, null, m);
          } catch (e) {
            if (!(e instanceof L.wire.InvalidMessage)) throw e;
            return e.kind;
          }
        };
        const c = arg.case;
        const vectors = [];
        for (const m of c.messages) {
          const f = m.fields;
          const fields = {msgId: f.msg_id, circleId: f.circle_id, channelId: f.channel_id,
                          authorNodeId: f.author_node_id, createdTs: f.created_ts,
                          displayName: f.display_name, text: f.text};
          const data = L.trust.signingBytes(fields);
          const leaf = L.trust.leafHash(m.leaf, data);
          const signed = L.trust.signatureOf({pk: c.pk, sig: c.sig, leaf: m.leaf, path: m.path});
          vectors.push({
            hex: L.bytes.bytesToHex(data),
            leaf: L.bytes.bytesToHex(leaf),
            root: L.bytes.bytesToHex(L.trust.rootOf(leaf, m.leaf, signed.path)),
            verdict: await L.trust.check(signed, null, fields),
          });
        }
        const root = L.bytes.hexToBytes(c.root_hex);
        const node = [];
        for (const wire of arg.wires) node.push(await verdict(wire));
        const refused = {};
        for (const [what, wire] of Object.entries(arg.bad)) refused[what] = await verdict(wire);
        return {vectors, batchBytes: L.bytes.bytesToHex(L.trust.batchBytes(root)), node, refused};
        """,
        {"case": case, "wires": wires, "bad": bad, "secret": SECRET, "circle": CIRCLE},
    )
    assert got["vectors"] == [
        {
            "hex": m["signing_bytes_hex"],
            "leaf": m["leaf_hash_hex"],
            "root": case["root_hex"],
            "verdict": "verified",
        }
        for m in case["messages"]
    ]
    assert got["batchBytes"] == case["batch_bytes_hex"]
    assert got["node"] == ["verified"] * 5 == [py_verdict(w) for w in wires]
    assert got["refused"] == {
        "text": "signature",
        "path": "signature",
        "leaf": "signature",
        "seven": "signature",
        "no_path": "auth",
    }
    assert [py_verdict(bad[k]) for k in ("text", "path", "leaf", "seven")] == ["signature"] * 4


# --- the fold's roles (SPEC-15 §3) ------------------------------------------------------------

DAN = marked("dan")
V1 = "0e0e0e0e0e0e0e0e0e0e0e0e"  # a v1 client: it never signs
OTTO = "0f" * 12
SALT = "5a" * 32
OWNED = owner.owned_secret(ANA.public, SALT)  # ANA made this circle


def ev(
    n: int, author: str, signer: IdentityKey | None, ts: int, body: dict[str, Any]
) -> dict[str, Any]:
    """A control event as the page's store holds it (signer: the base64 key, or None)."""
    return {
        "msgId": f"{n:032x}",
        "authorNodeId": author,
        "createdTs": NOW + ts,
        "text": event_text(body),
        "signer": None if signer is None else b64(signer.public),
    }


def _role_events() -> list[dict[str, Any]]:
    ana, bob, cal, dan = ANA.node_id, BOB.node_id, CAL.node_id, DAN.node_id
    chan = {"t": "CHANNEL_EVT"}
    return [
        ev(1, ana, ANA, 0, {"salt": SALT, "t": "CIRCLE_OWNER"}),
        ev(2, bob, BOB, 0, {"salt": SALT, "t": "CIRCLE_OWNER"}),  # not bob's circle
        ev(3, V1, None, 0, {"salt": SALT, "t": "CIRCLE_OWNER"}),  # unsigned: no role
        ev(
            4,
            ana,
            ANA,
            1,
            {"op": "grant", "role": "moderator", "t": "ROLE_EVT", "target_node_id": bob},
        ),
        ev(
            5,
            bob,
            BOB,
            1,
            {"op": "grant", "role": "moderator", "t": "ROLE_EVT", "target_node_id": dan},
        ),
        ev(
            6,
            V1,
            None,
            1,
            {"op": "grant", "role": "moderator", "t": "ROLE_EVT", "target_node_id": V1},
        ),
        ev(
            7, ana, ANA, 1, {"op": "grant", "role": "admin", "t": "ROLE_EVT", "target_node_id": dan}
        ),
        ev(8, cal, CAL, 2, chan | {"op": "create", "channel_id": "vip", "access_mode": "invite"}),
        ev(9, dan, DAN, 3, chan | {"op": "request", "channel_id": "vip"}),
        ev(10, V1, None, 3, chan | {"op": "request", "channel_id": "vip"}),
        ev(11, cal, CAL, 3, chan | {"op": "join", "channel_id": "vip"}),
        ev(12, cal, CAL, 3, chan | {"op": "approve", "channel_id": "vip", "target_node_id": V1}),
        # Only vip's creator, the owner or a moderator approves: not dan, nor dan once a member.
        ev(13, dan, DAN, 4, chan | {"op": "approve", "channel_id": "vip", "target_node_id": dan}),
        ev(26, dan, DAN, 5, chan | {"op": "approve", "channel_id": "vip", "target_node_id": OTTO}),
        ev(14, bob, BOB, 4, chan | {"op": "approve", "channel_id": "vip", "target_node_id": dan}),
        ev(15, V1, None, 4, chan | {"op": "approve", "channel_id": "vip", "target_node_id": V1}),
        ev(16, dan, DAN, 5, {"t": "CIRCLE_NAME_EVT", "name": "dan's"}),
        ev(17, bob, BOB, 5, {"t": "CIRCLE_NAME_EVT", "name": "bob's"}),
        ev(18, V1, None, 6, {"t": "CIRCLE_NAME_EVT", "name": "v1's"}),
        # A forgery in ana's name without her key: she signs, so it is ignored.
        ev(19, ana, None, 6, chan | {"op": "rename", "display_name": "not ana"}),
        ev(20, ana, ANA, 6, chan | {"op": "rename", "display_name": "Ana"}),
        ev(21, V1, None, 6, chan | {"op": "rename", "display_name": "Vee"}),
        # Two creates of one channel: the signed one wins whatever the hashes.
        ev(22, V1, None, 7, chan | {"op": "create", "channel_id": "ops", "access_mode": "invite"}),
        ev(23, dan, DAN, 7, chan | {"op": "create", "channel_id": "ops", "access_mode": "invite"}),
        ev(24, dan, DAN, 8, chan | {"op": "approve", "channel_id": "ops", "target_node_id": V1}),
        ev(25, ana, ANA, 8, {"t": "KEY_ANNOUNCE", "node_id": ana, "pk": b64(ANA.public)}),
    ]


def _demoted() -> list[dict[str, Any]]:
    """The owner demotes bob (later): his approvals and rename count for nothing then."""
    revoke = {"op": "revoke", "role": "moderator", "t": "ROLE_EVT", "target_node_id": BOB.node_id}
    return [*_role_events(), ev(30, ANA.node_id, ANA, 9, revoke)]


UNOWNED = "7e" * 32  # a v1 client's secret: the same events, and no owner


DERIVE = """
const sorted = (m) => Object.fromEntries([...m.entries()].sort((x, y) => (x[0] < y[0] ? -1 : 1)));
const view = (s) => ({summary: s.summary(), rejected: sorted(s.rejected),
                      refused: sorted(s.refused),
                      roles: arg.who.map((n) => s.roleOf(n))});
const out = [];
for (const [events, secret] of arg.cases) {
  const state = view(L.chatmodel.derive(events, arg.circle, arg.now, secret));
  // Any order of arrival derives the same state.
  let same = true;
  for (let i = 0; i < 12; i++) {
    const shuffled = [...events];
    for (let j = shuffled.length - 1; j > 0; j--) {
      const k = Math.floor(Math.random() * (j + 1));
      [shuffled[j], shuffled[k]] = [shuffled[k], shuffled[j]];
    }
    const again = view(L.chatmodel.derive(shuffled, arg.circle, arg.now, secret));
    same = same && JSON.stringify(again) === JSON.stringify(state);
  }
  out.push({...state, same});
}
return out;
"""


def _derive_in_page(
    page: Any, cases: list[tuple[list[dict[str, Any]], str]]
) -> list[dict[str, Any]]:
    who = [ANA.node_id, BOB.node_id, CAL.node_id, DAN.node_id, V1]
    got: list[dict[str, Any]] = js(
        page, DERIVE, {"cases": cases, "circle": "", "now": NOW + 60, "who": who}
    )
    for result in got:
        assert result.pop("same"), "an order of arrival changed the state"
    return got


def test_roles_owner_moderators_and_who_may_approve_or_rename(page) -> None:
    owned, demoted, unowned = _derive_in_page(
        page, [(_role_events(), OWNED), (_demoted(), OWNED), (_role_events(), UNOWNED)]
    )
    ana, bob, cal, dan = ANA.node_id, BOB.node_id, CAL.node_id, DAN.node_id
    s = owned["summary"]
    assert s["owner"] == ana and s["moderators"] == [bob]
    assert owned["roles"] == ["owner", "moderator", "member", "member", "member"]
    refused = owned["refused"]
    assert {refused[f"{n:032x}"] for n in (2,)} == {"bad_proof"}
    for n, why in (
        (3, "unsigned"),
        (5, "not_allowed"),
        (6, "unsigned"),
        (7, "bad_role"),
        (13, "not_allowed"),
        (26, "not_allowed"),
        (15, "unsigned"),
        (16, "not_allowed"),
        (18, "unsigned"),
        (19, "unsigned_from_signer"),
    ):
        assert refused[f"{n:032x}"] == why, n
    # vip: cal made it and let V1 in; bob (a moderator) let dan in; no one else's counted.
    vip = s["channels"]["vip"]
    assert vip["creator"] == cal and sorted(vip["members"]) == sorted([cal, dan, V1])
    assert vip["requests"] == []
    assert s["name"] == "bob's"
    assert s["names"] == {ana: "Ana", V1: "Vee"}
    # The signed create of ops beat the unsigned one; its creator approves.
    ops = s["channels"]["ops"]
    assert ops["creator"] == dan and sorted(ops["members"]) == sorted([dan, V1])
    assert refused[f"{22:032x}"] == "exists"

    # Demoted, bob's approval and rename count for nothing: the role state is the final one.
    d = demoted["summary"]
    assert d["moderators"] == [] and demoted["roles"][1] == "member"
    assert sorted(d["channels"]["vip"]["members"]) == sorted([cal, V1])
    assert d["name"] == ""
    assert demoted["refused"][f"{14:032x}"] == "not_allowed"

    # No owner's proof (a v1 circle): names as before, approvals still need a signed creator.
    u = unowned["summary"]
    assert u["owner"] == "" and u["moderators"] == []
    assert unowned["refused"][f"{1:032x}"] == "bad_proof"
    assert unowned["refused"][f"{4:032x}"] == "not_allowed"
    assert u["name"] == "v1's"
    assert sorted(u["channels"]["vip"]["members"]) == sorted([cal, V1])
    assert u["channels"]["vip"]["requests"] == [dan]


def test_the_writers_refuse_what_the_role_does_not_allow_saying_who_can(page) -> None:
    got = js(
        page,
        """
        const C = L.chatmodel;
        const s = C.derive(arg.events, "", arg.now, arg.secret);
        const names = new Map([[arg.ana, "ana"], [arg.cal, "cal"]]);
        const trial = (event, author) => {
          const why = C.writerProblem(s, event, author);
          return why === "not_allowed" ? C.whoCan(s, event, names) : why;
        };
        const approve = (who) => C.channelEvent("approve", "", "vip", who, {target: arg.v1});
        const role = {op: "grant", role: "moderator", t: "ROLE_EVT", target_node_id: arg.dan};
        return [
          trial(approve(arg.dan), arg.dan),
          trial(approve(arg.cal), arg.cal),
          trial(approve(arg.bob), arg.bob),
          trial(approve(arg.ana), arg.ana),
          trial(C.circleNameEvent("", "x"), arg.dan),
          trial(C.circleNameEvent("", "x"), arg.bob),
          trial(role, arg.bob),
          trial(role, arg.ana),
        ];
        """,
        {
            "events": _role_events(),
            "now": NOW + 60,
            "secret": OWNED,
            **{
                k: key.node_id
                for k, key in (("ana", ANA), ("bob", BOB), ("cal", CAL), ("dan", DAN))
            },
            "v1": V1,
        },
    )
    assert got == [
        "only #vip's owner (cal), the circle's owner or a moderator can approve into #vip",
        None,
        None,
        None,
        "only the circle's owner (ana) or a moderator can rename this circle",
        None,
        "only the circle's owner (ana) can name moderators",
        None,
    ]


def _random_signed_sequences(count: int) -> list[tuple[list[dict[str, Any]], str]]:
    """Mixes of signed and unsigned events, owner proofs good and bad, role events."""
    rng = random.Random(15)
    keys: list[tuple[str, IdentityKey | None]] = [(k.node_id, k) for k in (ANA, BOB, CAL, DAN)] + [
        (V1, None),
        (OTTO, None),
    ]
    people = [n for n, _ in keys]
    out = []
    for _ in range(count):
        events = []
        for i in range(rng.randint(5, 50)):
            author, key = rng.choice(keys)
            signer = key if rng.random() > 0.15 else None  # now and then a forgery in its name
            kind = rng.random()
            body: dict[str, Any]
            if kind < 0.1:
                body = {"salt": rng.choice([SALT, "00" * 32, "x"]), "t": "CIRCLE_OWNER"}
            elif kind < 0.25:
                body = {
                    "op": rng.choice(["grant", "revoke", "grant"]),
                    "role": "moderator",
                    "t": "ROLE_EVT",
                    "target_node_id": rng.choice(people),
                }
            elif kind < 0.35:
                body = {"t": "CIRCLE_NAME_EVT", "name": rng.choice(["One", "Two", "Three"])}
            else:
                op = rng.choice(["create", "join", "request", "approve", "approve", "rename"])
                body = {"t": "CHANNEL_EVT", "op": op}
                if op != "rename":
                    body["channel_id"] = rng.choice(["vip", "ops"])
                if op == "create":
                    body["access_mode"] = rng.choice(["public", "invite", "invite"])
                if op == "approve":
                    body["target_node_id"] = rng.choice(people)
                if op == "rename":
                    body["display_name"] = rng.choice(["A", "B"])
            events.append(ev(1000 + i, author, signer, rng.randint(0, 4), body))
        rng.shuffle(events)
        out.append((events, rng.choice([OWNED, UNOWNED])))
    return out


def test_any_order_of_signed_and_unsigned_events_derives_one_state(page) -> None:
    got = _derive_in_page(page, _random_signed_sequences(30))
    reasons = set().union(*(r["rejected"] for r in got))
    assert {"unsigned", "not_allowed", "bad_proof", "unsigned_from_signer", "exists"} <= reasons
    assert any(r["summary"]["moderators"] for r in got)


# --- epochs (issue 16): the same chain, removals and X25519 keys in the page --------------------

WRAP = "w" * 124  # as long as a wrap; the fold does not open it


def xpk_of(key: IdentityKey) -> str:
    """A stand-in for the X25519 key a node announces (the fold only checks its length)."""
    return b64(hashlib.sha256(key.public).digest())


def announce(n: int, key: IdentityKey, ts: int, pk: bytes | None = None) -> dict[str, Any]:
    body = {
        "t": "KEY_ANNOUNCE",
        "node_id": key.node_id,
        "pk": b64(pk or key.public),
        "xpk": xpk_of(key),
    }
    return ev(n, key.node_id, key, ts, body)


def epoch(n: int, key: IdentityKey, ts: int, e: int, parent: int, *, removed: list[str]) -> Any:
    """Epoch ``e`` after event ``parent`` (0: the root), signed by ``key``."""
    wraps = dict.fromkeys([ANA.node_id, BOB.node_id, DAN.node_id], WRAP)
    body = events.epoch_event(e, f"{parent:032x}" if parent else "", removed, wraps)
    return ev(n, key.node_id, key, ts, body)


def _epoch_events() -> list[dict[str, Any]]:
    """The role events (ana owns, bob moderates), then a contest at epoch 1 (ana's id is the
    smaller), a chain on its winner, refusals of each kind, and announces of X25519 keys."""
    ana, cal, dan = ANA.node_id, CAL.node_id, DAN.node_id
    long_wraps = {f"{i:024x}": "w" * 120 for i in range(40)}  # beyond MAX_EVENT_TEXT
    return [
        *_role_events(),
        epoch(41, BOB, 10, 1, 0, removed=[cal]),
        epoch(40, ANA, 11, 1, 0, removed=[dan]),
        epoch(42, ANA, 12, 2, 40, removed=[cal, dan]),
        epoch(43, CAL, 12, 1, 0, removed=[dan]),  # not allowed
        epoch(44, BOB, 13, 3, 42, removed=[ana, cal, dan]),  # the owner
        ev(45, V1, None, 13, events.epoch_event(1, "", [dan], {})),  # unsigned
        epoch(46, ANA, 13, 3, 40, removed=[cal, dan]),  # its parent is epoch 1
        epoch(47, ANA, 13, 3, 42, removed=[dan]),  # cal back in
        ev(48, ana, ANA, 13, {**events.epoch_event(1, "", [], {}), "epoch": True}),
        ev(49, ana, ANA, 14, events.epoch_event(3, f"{42:032x}", [cal, dan, OTTO], long_wraps)),
        announce(50, ANA, 14),
        announce(51, BOB, 14, pk=CAL.public),  # not the key that signed it
        ev(
            52,
            V1,
            None,
            14,
            {"t": "KEY_ANNOUNCE", "node_id": V1, "pk": b64(ANA.public), "xpk": xpk_of(ANA)},
        ),
        ev(
            53,
            dan,
            DAN,
            14,
            {"t": "KEY_ANNOUNCE", "node_id": dan, "pk": b64(DAN.public), "xpk": "AAAA"},
        ),
        announce(54, DAN, 15),
        ev(55, ana, ANA, 15, events.epoch_link_event(f"{42:032x}", "ab" * 32)),
    ]


def chan_key(n: int, key: IdentityKey, ts: int, channel: str, *, e: int, parent: int) -> Any:
    """Channel epoch ``e`` of ``channel`` after event ``parent`` (0: none), signed by ``key``."""
    wraps = dict.fromkeys([CAL.node_id, DAN.node_id], WRAP)
    body = events.channel_key_event(channel, e, f"{parent:032x}" if parent else "", wraps)
    return ev(n, key.node_id, key, ts, body)


def _private_channel_events() -> list[dict[str, Any]]:
    """The role events (ana owns, bob moderates; cal made the invite channel vip), private
    creates, and CHANNEL_KEY_EVT chains: a contest (cal's id the smaller), a chain on its
    winner, and refusals of each kind (issue 16, private channels)."""
    cal = CAL.node_id
    chan = {"t": "CHANNEL_EVT"}
    made = events.channel_event("create", "", "sec", cal, access="invite")
    keyed = events.channel_event("create", "", "den", cal, access="key", key="k")
    long_wraps = {f"{i:024x}": "w" * 120 for i in range(40)}  # beyond MAX_EVENT_TEXT
    return [
        *_role_events(),
        ev(60, cal, CAL, 20, events.made_private(made)),
        ev(61, cal, CAL, 20, events.made_private(keyed)),
        ev(62, cal, CAL, 20, {**chan, "op": "create", "channel_id": "pub", "private": True}),
        # a public channel is never private
        chan_key(71, BOB, 21, "sec", e=1, parent=0),  # a moderator's, losing to cal's
        chan_key(70, CAL, 21, "sec", e=1, parent=0),
        chan_key(72, CAL, 22, "sec", e=2, parent=70),
        chan_key(73, DAN, 22, "sec", e=2, parent=70),  # dan: no moderator (bob cannot make one)
        chan_key(74, CAL, 22, "sec", e=3, parent=99),  # no parent
        chan_key(75, CAL, 22, "sec", e=3, parent=70),  # its parent is epoch 1
        ev(76, V1, None, 22, events.channel_key_event("sec", 1, "", {})),  # unsigned
        chan_key(77, CAL, 22, "den", e=1, parent=0),  # a key channel: not by invitation
        chan_key(78, CAL, 22, "nope", e=1, parent=0),  # no such channel
        chan_key(
            79, CAL, 22, "vip", e=1, parent=0
        ),  # vip is an invite channel, not private: counts
        ev(80, cal, CAL, 23, events.channel_key_event("sec", 3, f"{72:032x}", long_wraps)),
        ev(81, cal, CAL, 23, {**events.channel_key_event("sec", 1, "", {}), "wraps": []}),
        ev(82, cal, CAL, 23, {**events.channel_key_event("sec", 1, "", {}), "channel_id": 7}),
    ]


def _random_epoch_sequences(count: int) -> list[tuple[list[dict[str, Any]], str]]:
    """Role events (mostly) and random trees of epochs (signed or not, by anyone, valid or
    not), with announces of X25519 keys: every rule of the epoch fold is met in some case."""
    rng = random.Random(16)
    keys: list[tuple[str, IdentityKey | None]] = [(k.node_id, k) for k in (ANA, BOB, CAL, DAN)]
    keys += [(V1, None)]
    targets = [ANA.node_id, BOB.node_id, CAL.node_id, DAN.node_id, V1, OTTO]
    out = []
    for _ in range(count):
        evs = list(_role_events()) if rng.random() < 0.8 else []
        made: list[tuple[int, int, list[str]]] = [(0, 0, [])]  # event number, epoch, removed
        for n in rng.sample(range(3000, 13_000), rng.randint(3, 25)):  # unique msg_ids
            author, key = rng.choice(keys[:2] * 4 + keys)  # mostly the owner and bob
            signer = key if rng.random() > 0.1 else None
            ts = rng.randint(10, 14)
            if rng.random() < 0.25:
                kind = rng.choice(["own", "own", "other", "bad", "none"])
                pk = (key or ANA).public if kind != "other" else CAL.public
                body: dict[str, Any] = {"t": "KEY_ANNOUNCE", "node_id": author, "pk": b64(pk)}
                if kind != "none":
                    body["xpk"] = xpk_of(rng.choice([ANA, BOB])) if kind != "bad" else "x" * 44
                evs.append(ev(n, author, signer, ts, body))
                continue
            parent, parent_epoch, before = rng.choice(made)
            e = parent_epoch + (1 if rng.random() < 0.85 else 2)
            removed = set(rng.sample(targets, rng.randint(0, 2)))
            if rng.random() < 0.85:
                removed |= set(before)
            parent_id = f"{parent:032x}" if parent else ("" if e == 1 else f"{n + 20_000:032x}")
            body = events.epoch_event(e, parent_id, sorted(removed), {author: WRAP})
            if rng.random() < 0.05:
                body[rng.choice(["epoch", "removed", "wraps", "parent"])] = rng.choice(
                    [0, "x", [OTTO, OTTO], {"x": 1}, 2**31 + 1]
                )
            evs.append(ev(n, author, signer, ts, body))
            made.append((n, e, sorted(removed)))
        if rng.random() < 0.3:  # bob demoted: what was built on his epochs stays
            evs.append(ev(2999, ANA.node_id, ANA, 15, events.role_event(BOB.node_id, "member")))
        rng.shuffle(evs)
        out.append((evs, rng.choice([OWNED, OWNED, OWNED, UNOWNED])))
    return out


def _py_derive(evs: list[dict[str, Any]], secret: str) -> chatmodel.CircleState:
    """What the Python fold makes of events as the page's store holds them."""
    return chatmodel.derive(
        [
            chatmodel.ControlEvent(
                e["msgId"],
                e["authorNodeId"],
                e["createdTs"],
                e["text"],
                signer=None if e["signer"] is None else base64.b64decode(e["signer"]),
            )
            for e in evs
        ],
        "",
        NOW + 60,
        secret=secret,
    )


def test_the_page_folds_as_the_python_node(page) -> None:
    cases = [(_role_events(), OWNED), (_demoted(), OWNED), (_role_events(), UNOWNED)]
    revoke_bob = events.role_event(BOB.node_id, "member")
    demoted_bob = [*_epoch_events(), ev(60, ANA.node_id, ANA, 16, revoke_bob)]
    # The owner removes bob (still a moderator); bob forks epoch 1 with a smaller id.
    removed_bob = [
        *_epoch_events(),
        epoch(61, ANA, 16, 4, 49, removed=sorted([BOB.node_id, CAL.node_id, DAN.node_id, OTTO])),
        epoch(39, BOB, 16, 1, 0, removed=[]),
    ]
    cases += [(_epoch_events(), OWNED), (_epoch_events(), UNOWNED), (demoted_bob, OWNED)]
    cases += [(removed_bob, OWNED)]
    cases += [(_private_channel_events(), OWNED), (_private_channel_events(), UNOWNED)]
    cases += _random_signed_sequences(30) + _random_epoch_sequences(60)
    got = _derive_in_page(page, cases)
    for (evs, secret), result in zip(cases, got, strict=True):
        state = _py_derive(evs, secret)
        assert result["summary"] == state.summary()
        assert result["rejected"] == dict(sorted(state.rejected.items()))
        assert result["refused"] == dict(sorted(state.refused.items()))


def test_the_page_keeps_private_channels_and_their_key_chains_as_the_python_node(page) -> None:
    """The private flag per channel, each invite channel's CHANNEL_KEY_EVT chain (the winner
    rule of circle epochs) and its refusals, in the page as in felund.v1.chatmodel."""
    (got,) = _derive_in_page(page, [(_private_channel_events(), OWNED)])
    channels = got["summary"]["channels"]
    assert {c: channels[c]["private"] for c in ("sec", "den", "vip", "pub")} == {
        "sec": True,
        "den": True,
        "vip": False,
        "pub": False,
    }
    assert channels["sec"]["keys"] == [f"{n:032x}" for n in (70, 72, 80)]
    assert channels["vip"]["keys"] == [f"{79:032x}"]
    refused = got["refused"]
    for n, why in (
        (73, "not_allowed"),
        (74, "no_parent"),
        (75, "parent_mismatch"),
        (76, "unsigned"),
        (77, "not_invite"),
        (78, "no_channel"),
        (81, "bad_wraps"),
        (82, "bad_channel"),
    ):
        assert refused[f"{n:032x}"] == why, n
    assert {f"{n:032x}" for n in (60, 61, 62, 70, 71, 72, 79, 80)}.isdisjoint(refused)


def test_the_page_judges_epochs_and_removals_as_the_python_node(page) -> None:
    """The epoch chain, its refusals, the X25519 keys, and what a writer refuses for a removal,
    in the page as in felund.v1.chatmodel (the parity of the whole summary is tested above)."""
    ana, bob, cal, dan = ANA.node_id, BOB.node_id, CAL.node_id, DAN.node_id
    (got,) = _derive_in_page(page, [(_epoch_events(), OWNED)])
    s = got["summary"]
    assert [e["epoch_id"] for e in s["epochs"]] == [f"{n:032x}" for n in (40, 42, 49)]
    assert s["removed"] == sorted([cal, dan, OTTO]) and s["uncovered"] == []
    assert s["epoch_events"] == [f"{n:032x}" for n in (40, 41, 42, 49)]
    assert s["xkeys"] == {ana: xpk_of(ANA), dan: xpk_of(DAN)}
    refused = got["refused"]
    for n, why in (
        (43, "not_allowed"),
        (44, "removes_owner"),
        (45, "unsigned"),
        (46, "parent_mismatch"),
        (47, "removed_shrinks"),
        (48, "bad_epoch"),
        (51, "not_signer"),
        (52, "unsigned"),
        (53, "bad_key"),
    ):
        assert refused[f"{n:032x}"] == why, n
    assert f"{55:032x}" not in refused  # EPOCH_LINK: known, derives nothing
    assert {f"{n:032x}" for n in (40, 41, 42, 49, 50, 54)}.isdisjoint(refused)

    # Without the last epoch, bob's removal of cal (epoch 1 lost) is uncovered.
    before = [e for e in _epoch_events() if e["msgId"] not in (f"{42:032x}", f"{49:032x}")]
    trials = [(who, writer) for who in (ana, bob, cal, dan, OTTO) for writer in (ana, bob, cal)]
    got = js(
        page,
        """
        const C = L.chatmodel;
        const s = C.derive(arg.events, "", arg.now, arg.secret);
        const names = new Map([[arg.ana, "ana"]]);
        return {
          next: C.nextRemoved(s), cannot: C.cannotFollow(s, arg.people),
          trials: arg.trials.map(([who, writer]) => {
            const event = C.epochEvent(2, s.epochs[0].epochId, C.nextRemoved(s, who), {});
            const why = C.writerProblem(s, event, writer);
            return why === "not_allowed" ? C.whoCan(s, event, names) : why;
          }),
        };
        """,
        {
            "events": before,
            "now": NOW + 60,
            "secret": OWNED,
            "ana": ana,
            "people": [ana, bob, cal, dan, V1, V1],
            "trials": trials,
        },
    )
    state = _py_derive(before, OWNED)
    assert state.uncovered == {cal} and got["next"] == chatmodel.next_removed(state)
    assert (
        got["cannot"]
        == chatmodel.cannot_follow(state, [ana, bob, cal, dan, V1])
        == sorted([bob, cal, V1])
    )
    want: list[str | None] = []
    for who, writer in trials:
        event = events.epoch_event(
            2, state.epochs[0].epoch_id, chatmodel.next_removed(state, who), {}
        )
        problem = chatmodel.writer_problem(state, event, writer)
        want.append(
            chatmodel.who_can(state, event, {ana: "ana"}) if problem == "not_allowed" else problem
        )
    assert got["trials"] == want
    # Nothing is "already removed" here: each event also covers cal's uncovered removal.
    assert set(want) == {
        None,
        "only the circle's owner (ana) or a moderator can remove a member",
        "removes_owner",
        "removes_self",
    }


def test_the_page_keeps_what_a_demotion_takes_as_the_python_node(page) -> None:
    """keptByOwner (lib/chatmodel.js) writes what felund.v1.events.kept_by_owner writes: for
    bob demoted in the role events, and each moderator of random mixes demoted in turn."""
    pairs = [(_role_events(), _demoted())]
    for evs, secret in _random_signed_sequences(30):
        if secret != OWNED:
            continue
        for target in _py_derive(evs, secret).moderators:
            revoke = events.role_event(target, "member")
            pairs.append((evs, [*evs, ev(2000, ANA.node_id, ANA, 9, revoke)]))
    got = js(
        page,
        """
        const C = L.chatmodel;
        return arg.pairs.map(([before, after]) => C.keptByOwner(
          C.derive(before, "", arg.now, arg.secret), C.derive(after, "", arg.now, arg.secret),
          "", arg.owner));
        """,
        {"pairs": pairs, "now": NOW + 60, "secret": OWNED, "owner": ANA.node_id},
    )
    want = [
        events.kept_by_owner(_py_derive(b, OWNED), _py_derive(a, OWNED), "", ANA.node_id)
        for b, a in pairs
    ]
    assert got == want
    # Bob let dan into vip and named the circle: both are kept by the owner.
    assert want[0] == [
        events.channel_event("approve", "", "vip", ANA.node_id, target=DAN.node_id),
        events.circle_name_event("", "bob's"),
    ]
    assert len(pairs) > 3 and any(w for w in want[1:])


# --- a page syncing a circle through a real relay ---------------------------------------------

SYNC = """
async (o) => {
  const {openStore} = await import('/lib/store.js');
  const {CircleSync} = await import('/lib/sync.js');
  const trust = await import('/lib/trust.js');
  const ids = await import('/lib/ids.js');
  const store = await openStore(o.db);
  let identity = await store.getIdentity();
  if (!identity) {
    const key = await trust.generateKey();
    identity = {nodeId: o.nodeId || trust.nodeIdOf(key.publicKey), displayName: o.name, key};
    await store.putIdentity(identity);
  }
  const circleId = await ids.circleId(o.secret);
  await store.putCircle({circleId, secret: o.secret, name: 'c', relayUrl: o.relay});
  window.got = [];
  window.sync = new CircleSync(store, {
    circle: {circleId, secret: o.secret, relayUrl: o.relay}, identity,
    onMessages: (msgs) => window.got.push(...msgs.map((m) => ({text: m.text, verified: m.verified,
                                                               signer: m.signer}))),
    pollMs: 300, feedPollMs: 300, useFeed: false,
  });
  await window.sync.start();
  window.store = store;
  return {nodeId: identity.nodeId, extractable: identity.key.privateKey.extractable};
}
"""


def _post(relay: Relay, secret: str, wires: list[dict[str, Any]]) -> None:
    body = {"circle_hint": ids.circle_hint(ids.circle_id(secret)), "messages": wires}
    assert signed_call(relay, secret, "POST", "/messages", body)["stored"] == len(wires)


def _pull(relay: Relay, secret: str) -> list[dict[str, Any]]:
    hint = ids.circle_hint(ids.circle_id(secret))
    got: list[dict[str, Any]] = signed_call(
        relay, secret, "GET", f"/messages?circle_hint={hint}&cursor=0&limit=500"
    )["messages"]
    return got


def _sync_page(new_page: Any, relay: Relay, secret: str, db: str, **extra: Any) -> tuple[Any, str]:
    pg = new_page(f"{relay.url}/v1/health")
    info = pg.evaluate(SYNC, {"db": db, "secret": secret, "relay": relay.url, "name": db} | extra)
    assert info["extractable"] is False
    return pg, info["nodeId"]


def _wait_got(pg: Any, n: int) -> list[dict[str, Any]]:
    pg.wait_for_function(f"window.got.length >= {n}", timeout=T)
    got: list[dict[str, Any]] = pg.evaluate("window.got")
    return got


def test_the_page_verifies_refuses_and_pins_what_it_receives(new_page, web_relay: Relay) -> None:
    secret = "4d" * 32
    pg, me = _sync_page(new_page, web_relay, secret, "trust-sync")
    assert me.startswith(identity.DERIVED_MARK)  # a new browser identity: a derived id
    forged = [
        signed_wire(BOB, ANA.node_id, "bob as ana", secret=secret),  # another key, derived id
        signed_wire(ANA, ANA.node_id, "ana", secret=secret, sign_as={"text": "other"}),
        signed_wire(ANA, OLD_ID, "ana's key for the old id", secret=secret),  # pinned: BOB
        signed_wire(ANA, me, "as the page", secret=secret),  # the page's own id
    ]
    # The refusals first: a test that something did not show waits on what did.
    _post(web_relay, secret, [signed_wire(BOB, OLD_ID, "old id, first sight", secret=secret)])
    assert _wait_got(pg, 1)[0]["verified"] is True
    _post(web_relay, secret, forged)
    _post(
        web_relay,
        secret,
        [
            signed_wire(ANA, ANA.node_id, "signed by ana", secret=secret),
            signed_wire(None, V1, "from a v1 client", secret=secret),
            wire_message(secret, V1, "a v1 MAC message", encrypt=False),
            signed_wire(BOB, OLD_ID, "old id, pinned key", secret=secret),
        ],
    )
    got = _wait_got(pg, 5)
    assert [(m["text"], m["verified"]) for m in got] == [
        ("old id, first sight", True),
        ("signed by ana", True),
        ("from a v1 client", False),
        ("a v1 MAC message", False),
        ("old id, pinned key", True),
    ]
    assert got[1]["signer"] == b64(ANA.public) and got[2]["signer"] is None
    counts = pg.evaluate("Object.fromEntries(window.sync.rejected)")
    assert counts == {"key_mismatch": 3, "signature": 1}

    # The pin is kept: a reload (a new sync on the same store) still refuses another key.
    pg.evaluate("window.sync.stop()")
    stored = pg.evaluate(
        "async (cid) => (await window.store.messages(cid)).map((m) => [m.text, m.verified])",
        ids.circle_id(secret),
    )
    assert ["from a v1 client", False] in stored and ["signed by ana", True] in stored
    assert not any(text == "bob as ana" for text, _ in stored)
    pg.evaluate(SYNC, {"db": "trust-sync", "secret": secret, "relay": web_relay.url, "name": "x"})
    _post(
        web_relay,
        secret,
        [
            signed_wire(CAL, OLD_ID, "a third key for the old id", secret=secret),
            signed_wire(ANA, ANA.node_id, "after the reload", secret=secret),
        ],
    )
    got = _wait_got(pg, 1)
    assert [m["text"] for m in got] == ["after the reload"]
    assert pg.evaluate("Object.fromEntries(window.sync.rejected)") == {"key_mismatch": 1}


def test_what_the_page_writes_is_signed_and_verifies_in_python(new_page, web_relay: Relay) -> None:
    secret = "4e" * 32
    pg, me = _sync_page(new_page, web_relay, secret, "trust-send")
    sent = pg.evaluate(
        "async () => { const m = await window.sync.send('general', 'hi from the page');"
        " return {verified: m.verified, signer: m.signer}; }"
    )
    wires = wait_for(lambda: _pull(web_relay, secret), timeout=20, what="the page's message")
    (wire,) = wires
    plain = plaintext_of(secret, wire)
    assert sent == {"verified": True, "signer": plain["pk"]}
    assert identity.node_id_of(base64.b64decode(plain["pk"])) == me
    assert py_verdict(wire, secret=secret) == "verified"
    # A v1 reader takes display_name and text; the wire keeps exactly the v1 keys.
    assert set(wire) == set(WIRE_KEYS)


def test_an_older_browser_id_keeps_its_id_and_signs_to_be_pinned(
    new_page, web_relay: Relay
) -> None:
    secret = "4f" * 32
    pg, me = _sync_page(new_page, web_relay, secret, "trust-old", nodeId="a1" * 12)
    assert me == "a1" * 12
    pg.evaluate("window.sync.send('general', 'an older id, signed')")
    (wire,) = wait_for(lambda: _pull(web_relay, secret), timeout=20, what="the page's message")
    assert wire["author_node_id"] == me
    assert py_verdict(wire, secret=secret) == "first_sight"  # a reader pins its key
    pk = base64.b64decode(plaintext_of(secret, wire)["pk"])
    assert py_verdict(wire, pinned=pk, secret=secret) == "verified"


# --- the app: owned circles, roles in /who, the unverified mark, refusals saying who can ------


def _control(relay: Relay, secret: str) -> list[dict[str, Any]]:
    """The circle's control events at the relay, opened, with the key that signed each."""
    out = []
    for wire in _pull(relay, secret):
        if wire["channel_id"] != "__control":
            continue
        plain = plaintext_of(secret, wire)
        assert py_verdict(wire, secret=secret) in ("verified", "first_sight")  # ours all sign
        out.append(
            {
                "msgId": wire["msg_id"],
                "authorNodeId": wire["author_node_id"],
                "createdTs": wire["created_ts"],
                "text": plain["text"],
                "signer": plain["pk"],
                "body": json.loads(plain["text"]),
            }
        )
    return out


def test_an_owned_circle_roles_in_who_the_mark_and_refusals(open_peer, web_relay: Relay) -> None:
    ann, bob = open_peer(), open_peer()
    ann.create("Ann", "club")
    code = ann.invite_code()
    secret = decode_invite(code).secret
    bob.join("Bob", code)
    ann.say("hello, I made this")
    bob.sees("hello, I made this")
    ann_id = ann.line("hello, I made this").locator(".name").get_attribute("title") or ""
    bob.say("hi Ann")
    bob_id = bob.line("hi Ann").locator(".name").get_attribute("title") or ""
    assert ann_id.startswith("fe") and bob_id.startswith("fe")

    # The circle's secret commits to Ann's key: her signed CIRCLE_OWNER proves it to anyone.
    events = wait_for(
        lambda: (
            (e := _control(web_relay, secret))
            and sum(x["body"]["t"] == "KEY_ANNOUNCE" for x in e) == 2
            and e
        ),
        timeout=20,
        what="both keys announced",
    )
    (proof,) = [e for e in events if e["body"]["t"] == "CIRCLE_OWNER"]
    assert proof["authorNodeId"] == ann_id
    assert owner.proves_owner(secret, base64.b64decode(proof["signer"]), proof["body"]["salt"])
    announced = {e["authorNodeId"]: e["body"] for e in events if e["body"]["t"] == "KEY_ANNOUNCE"}
    assert announced[bob_id] == {
        "node_id": bob_id,
        "pk": announced[bob_id]["pk"],
        "t": "KEY_ANNOUNCE",
        "xpk": announced[bob_id]["xpk"],
    }
    assert wrap.xpk_of(announced[bob_id]["xpk"]) is not None  # the page's X25519 key

    # An invite channel made by Cal (signed, from Python), a v1 client's message (unsigned).
    cid = ids.circle_id(secret)
    chan = {"t": "CHANNEL_EVT", "circle_id": cid}
    _post(
        web_relay,
        secret,
        [
            signed_wire(
                CAL,
                CAL.node_id,
                event_text(chan | {"op": "rename", "display_name": "Cal", "node_id": CAL.node_id}),
                secret=secret,
                channel="__control",
                name="Cal",
            ),
            signed_wire(
                CAL,
                CAL.node_id,
                event_text(
                    chan
                    | {
                        "op": "create",
                        "channel_id": "vip",
                        "access_mode": "invite",
                        "actor_node_id": CAL.node_id,
                    }
                ),
                secret=secret,
                channel="__control",
                name="Cal",
            ),
            signed_wire(None, V1, "a v1 client here", secret=secret, name="Vee"),
        ],
    )
    bob.sees("a v1 client here")
    expect(bob.line("a v1 client here").locator(".unverified-mark")).to_have_text("?")
    expect(bob.line("hello, I made this").locator(".unverified-mark")).to_have_count(0)
    expect(bob.line("hi Ann").locator(".unverified-mark")).to_have_count(0)  # our own: verified

    notices = bob.page.locator("#messages .notice-text")
    errors = bob.page.locator("#messages .notice-error .notice-text")
    bob.type("/who")
    expect(notices.filter(has_text=f"Ann  {ann_id[:8]}  owner  last seen ")).to_have_count(
        1, timeout=T
    )
    expect(notices.filter(has_text=f"Bob  {bob_id[:8]}  member  last seen ")).to_have_count(1)
    expect(
        notices.filter(has_text=re.compile(rf"^\?Vee  {V1[:8]}  member  last seen "))
    ).to_have_count(1)
    expect(notices.filter(has_text="? = unverified: not signed by its author's key")).to_have_count(
        1
    )

    # Bob's role allows neither: refused before anything is written, saying who can.
    before = len(_pull(web_relay, secret))
    bob.type("/circle name hijacked")
    expect(errors.last).to_have_text(
        "only the circle's owner (Ann) or a moderator can rename this circle", timeout=T
    )
    bob.type("/channel approve vip Bob")
    expect(errors.last).to_have_text(
        "only #vip's owner (Cal), the circle's owner or a moderator can approve into #vip",
        timeout=T,
    )
    # Ann (the owner) may do both.
    ann.type("/circle name our club")
    expect(ann.page.locator("#hdr-circle")).to_have_text("our club", timeout=T)
    ann.type("/channel approve vip Bob")
    expect(ann.page.locator("#messages .notice-text").last).to_contain_text(
        "approved Bob in #vip", timeout=T
    )
    expect(bob.page.locator("#hdr-circle")).to_have_text("our club", timeout=T)
    expect(bob.channel_button("vip")).to_have_count(1, timeout=T)  # Bob is in
    mine = [e for e in _control(web_relay, secret) if e["authorNodeId"] == bob_id]
    assert len(_pull(web_relay, secret)) == before + 2  # Ann's two; nothing of Bob's
    assert {e["body"]["t"] for e in mine} == {"KEY_ANNOUNCE"}
    ann.no_errors()
    bob.no_errors()


# --- a browser and a real node ----------------------------------------------------------------


def test_a_browser_with_a_real_node_verified_unverified_and_forged(
    open_peer, make_node, web_relay: Relay
) -> None:
    node = node_on_relay(make_node, "nodey", web_relay)
    invite = node.json("invite")
    node.circle_id = invite["circle_id"]
    secret = decode_invite(invite["code"]).secret
    node.start()
    node_id = node.status()["node_id"]
    assert node_id.startswith(identity.DERIVED_MARK)
    node.cli("send", "--circle-id", node.circle_id, "from the node")

    web = open_peer()
    said: list[str] = []
    web.page.on("console", lambda m: said.append(m.text))
    web.join("Wendy", invite["code"])
    web.sees("from the node")
    expect(web.line("from the node").locator(".unverified-mark")).to_have_count(0)

    # Through the relay: a forgery in the node's name (Bob's key) and a v1 client's message.
    _post(
        web_relay,
        secret,
        [
            signed_wire(BOB, node_id, "forged as the node", secret=secret, name="nodey"),
            signed_wire(None, V1, "an unsigned v1 message", secret=secret, name="Vee"),
        ],
    )
    web.sees("an unsigned v1 message")  # posted after the forgery: that one was judged
    expect(web.line("an unsigned v1 message").locator(".unverified-mark")).to_have_text("?")
    expect(web.line("forged as the node")).to_have_count(0)
    assert any("does not verify (key_mismatch" in line for line in said), said

    # What the browser writes verifies on the node.
    web.say("from the browser")
    node_sees(node, "from the browser", "Wendy")

    def node_inbox() -> list[dict[str, Any]]:
        # The store's answer: the verdict it keeps with each message (verified).
        body = {"circle_id": node.circle_id, "channel_id": "", "limit": 1000}
        msgs: list[dict[str, Any]] = node.call(OP_INBOX, body)["msgs"]
        return msgs

    inbox = {m["text"]: m for m in node_inbox()}
    assert inbox["from the browser"]["verified"] is True
    assert inbox["from the node"]["verified"] is True
    wait_for(
        lambda: "an unsigned v1 message" in {m["text"] for m in node_inbox()},
        timeout=30,
        what="the v1 message on the node",
    )
    inbox = {m["text"]: m for m in node_inbox()}
    assert inbox["an unsigned v1 message"]["verified"] is False
    assert "forged as the node" not in inbox
    web.no_errors()


# The app's database as the version before keys made it (store.js VERSION 1), with an identity.
V1_DATABASE = """
async ({nodeId, name}) => {
  await new Promise((resolve, reject) => {
    const request = indexedDB.open("felund-old", 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("kv");
      db.createObjectStore("circles", {keyPath: "circleId"});
      const messages = db.createObjectStore("messages", {keyPath: ["circleId", "msgId"]});
      messages.createIndex("byTime", ["circleId", "createdTs", "msgId"]);
      db.createObjectStore("outbox", {keyPath: "msgId"}).createIndex("byCircle", "circleId");
      db.createObjectStore("cursors", {keyPath: "circleId"});
    };
    request.onsuccess = () => {
      const tx = request.result.transaction(["kv"], "readwrite");
      tx.objectStore("kv").put({nodeId, displayName: name}, "identity");
      tx.oncomplete = () => { request.result.close(); resolve(); };
      tx.onerror = () => reject(tx.error);
    };
    request.onerror = () => reject(request.error);
  });
}
"""


@pytest.mark.parametrize(
    ("old_id", "signs"),
    [("a1" * 12, True), (identity.DERIVED_MARK + "00" * 11, False)],
    ids=["older-id-signs", "marked-older-id-cannot"],
)
def test_an_older_browser_identity_keeps_its_id(
    open_peer, web_relay: Relay, old_id: str, signs: bool
) -> None:
    """An identity made before keys: upgraded in place, same node id, a key from now on.
    An older id that happens to carry the derived mark cannot sign for it: unsigned."""
    peer = open_peer()
    peer.page.goto(f"{web_relay.url}/v1/health")
    peer.page.evaluate(V1_DATABASE, {"nodeId": old_id, "name": "Olga"})
    peer.page.goto(f"{web_relay.url}/?db=felund-old")
    peer.create("Olga", "old friends")
    peer.say("still me")
    assert peer.line("still me").locator(".name").get_attribute("title") == old_id
    expect(peer.line("still me").locator(".unverified-mark")).to_have_count(0 if signs else 1)
    secret = decode_invite(peer.invite_code()).secret

    def posted() -> list[dict[str, Any]]:
        wires = _pull(web_relay, secret)
        return wires if any(plaintext_of(secret, w)["text"] == "still me" for w in wires) else []

    wires = wait_for(posted, timeout=20, what="the page's message at the relay")
    assert {w["author_node_id"] for w in wires} == {old_id}
    verdicts = {plaintext_of(secret, w)["text"]: py_verdict(w, secret=secret) for w in wires}
    # A reader pins an older id's key at first sight.
    assert verdicts["still me"] == ("first_sight" if signs else "unsigned")
    texts = [json.loads(t) for t in verdicts if t.startswith("{")]
    kinds = {t["t"] for t in texts}
    if signs:
        (proof,) = [t for t in texts if t["t"] == "CIRCLE_OWNER"]
        pk = base64.b64decode(next(plaintext_of(secret, w)["pk"] for w in wires))
        assert owner.proves_owner(secret, pk, proof["salt"])
        assert kinds == {"CIRCLE_OWNER", "KEY_ANNOUNCE", "CIRCLE_NAME_EVT"}
    else:
        assert kinds == {"CIRCLE_NAME_EVT"}  # no key to announce, no owner's proof
    peer.no_errors()


def _channel_event(
    secret: str, key: IdentityKey, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A CHANNEL_EVT of ``key``'s node in the circle of ``secret``, signed, as a node writes it."""
    chan = {"t": "CHANNEL_EVT", "circle_id": ids.circle_id(secret), "actor_node_id": key.node_id}
    text = event_text(chan | body)
    return signed_wire(key, key.node_id, text, secret=secret, channel="__control", name=name)


def test_a_moderator_in_the_browser_approves_until_the_node_demotes_it(
    open_peer, make_node, web_relay: Relay
) -> None:
    """The node owns its circle and makes the browser a moderator: its approval counts on
    the node; a plain member's does not, anywhere; demoted, the browser is refused with the
    sentence that says who can, and whom it let in stays (the owner approves them again)."""
    node = node_on_relay(make_node, "nodey", web_relay)
    invite = node.json("invite")
    circle = node.circle_id = invite["circle_id"]
    secret = decode_invite(invite["code"]).secret
    node.start()
    node.cli("channel", "create", "vip", "--access", "invite", "--circle-id", circle)

    web = open_peer()
    web.join("Wendy", invite["code"])
    web.say("hello from Wendy")
    node_sees(node, "hello from Wendy", "Wendy")
    notices = web.page.locator("#messages .notice-text")
    errors = web.page.locator("#messages .notice-error .notice-text")

    wendy = web.line("hello from Wendy").locator(".name").get_attribute("title") or ""

    # Cal asks; Dan (a plain member) approves Wendy by hand, signed: nothing, on any side.
    _post(
        web_relay,
        secret,
        [
            _channel_event(
                secret, DAN, "Dan", {"op": "approve", "channel_id": "vip", "target_node_id": wendy}
            ),
            _channel_event(secret, CAL, "Cal", {"op": "request", "channel_id": "vip"}),
            signed_wire(CAL, CAL.node_id, "Cal was here", secret=secret, name="Cal"),
        ],
    )
    web.sees("Cal was here")  # after the two events: the page has folded them
    expect(web.channel_button("vip")).to_have_count(0)  # Dan's approval let nobody in
    web.type("/channel approve vip Cal")
    expect(errors.last).to_have_text(
        "only #vip's owner (nodey), the circle's owner or a moderator can approve into #vip",
        timeout=T,
    )

    # The owner's node names the browser a moderator: its approvals now count everywhere.
    node.cli("role", "moderator", "Wendy", "--circle-id", circle)
    web.lists("/who", re.compile(r"^Wendy  fe[0-9a-f]{6}  moderator  "))
    web.type("/channel approve vip Wendy")
    expect(web.channel_button("vip")).to_have_count(1, timeout=T)
    web.type("/channel approve vip Cal")
    expect(notices.last).to_contain_text("approved Cal in #vip", timeout=T)
    web.lists("/channels", "#vip  invite private, 3 members")

    def vip_on_node() -> set[str]:
        listed = {c["channel_id"]: c for c in node.json("channels", "--circle-id", circle)}
        return set(listed["vip"]["members"])

    wait_for(lambda: CAL.node_id in vip_on_node(), timeout=30, what="Cal in #vip on the node")
    assert DAN.node_id not in vip_on_node()

    # Demoted: refused again, and whom the browser let in stays (the owner approves again).
    node.cli("role", "member", "Wendy", "--circle-id", circle)
    web.lists("/who", re.compile(r"^Wendy  fe[0-9a-f]{6}  member  "))
    web.type("/channel approve vip Dan")
    expect(errors.last).to_have_text(
        "only #vip's owner (nodey), the circle's owner or a moderator can approve into #vip",
        timeout=T,
    )
    web.lists("/channels", "#vip  invite private, 3 members")
    assert {CAL.node_id, wendy} <= vip_on_node()
    web.no_errors()


def test_the_owner_in_the_browser_names_and_demotes_a_node_moderator(
    open_peer, make_node, web_relay: Relay
) -> None:
    """The page owns its circle and makes a real node a moderator, then a member again (/role):
    the node's members list follows; whom the node let into a channel stays, on the node and
    in the page, and so does the circle name it set (the page, as owner, writes them again).
    /role from a member's page is refused with the sentence saying who can, and a person
    named by nobody's name is an error: neither writes anything."""
    web = open_peer()
    web.create("Ann", "club")
    code = web.invite_code()
    secret = decode_invite(code).secret
    circle = ids.circle_id(secret)
    web.say("Ann here")
    ann = web.line("Ann here").locator(".name").get_attribute("title") or ""
    node = node_on_relay(make_node, "nodey", web_relay)
    node.circle_id = node.cli("join", "--code", code).stdout.strip()
    assert node.circle_id == circle
    node.start()
    node_id = node.status()["node_id"]
    node.cli("send", "--circle-id", circle, "nodey here")
    web.sees("nodey here")
    # Cal made an invite channel #vip; Dan asks to join it (signed, from Python).
    _post(
        web_relay,
        secret,
        [
            _channel_event(
                secret, CAL, "Cal", {"op": "create", "channel_id": "vip", "access_mode": "invite"}
            ),
            _channel_event(secret, DAN, "Dan", {"op": "request", "channel_id": "vip"}),
            signed_wire(DAN, DAN.node_id, "Dan asks for #vip", secret=secret, name="Dan"),
        ],
    )
    web.sees("Dan asks for #vip")
    notices = web.page.locator("#messages .notice-text")
    errors = web.page.locator("#messages .notice-error .notice-text")

    def roles_on_node() -> dict[str, str]:
        return {p["node_id"]: p["role"] for p in node.json("members", "--circle-id", circle)}

    def vip_on_node() -> set[str]:
        listed = {c["channel_id"]: c for c in node.json("channels", "--circle-id", circle)}
        return set(listed["vip"]["members"]) if "vip" in listed else set()

    def written_by_the_page(*kinds: str) -> list[dict[str, Any]]:
        return [
            e["body"]
            for e in _control(web_relay, secret)
            if e["authorNodeId"] == ann and e["body"]["t"] in kinds
        ]

    web.page.keyboard.press("F1")
    expect(web.page.locator("#dlg-help")).to_contain_text("/role moderator|member PERSON")
    web.page.keyboard.press("Escape")

    web.type("/role moderator nodey")
    expect(notices.last).to_have_text("nodey is now a moderator", timeout=T)
    wait_for(
        lambda: roles_on_node().get(node_id) == "moderator", timeout=30, what="nodey a moderator"
    )
    granted = [events.role_event(node_id, "moderator")]
    assert written_by_the_page("ROLE_EVT") == granted

    # A name that is nobody's: an error, nothing written.
    web.type("/role member nobody-here")
    expect(errors.last).to_have_text(
        'no one in this circle is "nobody-here" (by node id, its start, or name)', timeout=T
    )

    # A member's page: refused before anything is written, saying who can.
    bob = open_peer()
    bob.join("Bob", code)
    bob.sees("nodey here")
    bob.type("/role member nodey")
    expect(bob.page.locator("#messages .notice-error .notice-text").last).to_have_text(
        "only the circle's owner (Ann) can name moderators", timeout=T
    )
    web.say("after the refusals")  # what the page wrote before is at the relay by now
    bob.say("Bob tried")
    web.sees("Bob tried")
    # Neither the refused nor the unresolved /role wrote anything, on either page.
    roles = [(e["authorNodeId"], e["body"]) for e in _control(web_relay, secret)]
    assert [(a, b) for a, b in roles if b["t"] == "ROLE_EVT"] == [(ann, granted[0])]

    # The node, a moderator, lets Dan into #vip and names the circle.
    node.cli("channel", "approve", "vip", "--node", DAN.node_id, "--circle-id", circle)
    node.cli("circle", "name", "nodey's club", "--circle-id", circle)
    expect(web.page.locator("#hdr-circle")).to_have_text("nodey's club", timeout=T)
    dan = re.compile(rf"^Dan  {DAN.node_id[:8]}  member  ")
    web.lists("/who vip", dan)
    assert DAN.node_id in vip_on_node()
    listed = notices.filter(has_text=dan).count()

    # Demoted: Dan stays in #vip and the name stays: the page approves and names again.
    web.type("/role member nodey")
    expect(notices.last).to_have_text("nodey is now a member", timeout=T)
    web.type("/who vip")
    expect(notices.filter(has_text=dan)).to_have_count(listed + 1, timeout=T)
    expect(web.page.locator("#hdr-circle")).to_have_text("nodey's club")
    assert written_by_the_page("ROLE_EVT") == [*granted, events.role_event(node_id, "member")]
    approves = [e for e in written_by_the_page("CHANNEL_EVT") if e["op"] == "approve"]
    assert [(e["channel_id"], e["target_node_id"]) for e in approves] == [("vip", DAN.node_id)]
    assert written_by_the_page("CIRCLE_NAME_EVT")[-1]["name"] == "nodey's club"
    wait_for(
        lambda: (
            roles_on_node().get(node_id) == "member"
            and DAN.node_id in vip_on_node()
            and [c["name"] for c in node.json("circles") if c["circle_id"] == circle]
            == ["nodey's club"]
        ),
        timeout=30,
        what="nodey a member on the node, Dan still in #vip, the name kept",
    )
    web.no_errors()
    bob.no_errors()
