"""Who said it, in the browser (felund/web/lib/trust.js, wire.js, sync.js, chatmodel.js, the app).

A real relay serves the modules and a real headless Chromium computes with
WebCrypto Ed25519. Python holds it to felund.trust: the vectors of
tests/vectors/felund-trust-v1.json (ids, fingerprints, signed bytes,
signatures, owner secrets), the same verdict on signed, unsigned and forged
messages, and the role rules of the fold (SPEC-15 §3). Messages from Python
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
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.errors import InvalidMessage
from felund.testing import Relay, signed_call, wait_for, wire_message
from felund.testing.vectors import trust_cases
from felund.trust import identity, owner, signing
from felund.trust.identity import IdentityKey
from felund.v1 import chatmodel, crypto, ids
from felund.v1.chatmodel import event_text
from felund.v1.invite import encode_invite
from felund.v1.wire import parse_message

pytestmark = pytest.mark.slow

CASES = trust_cases()
MODULES = ("bytes", "ids", "wire", "trust", "chatmodel")
PRELUDE = "const L = {};\n" + "".join(
    f"L.{name} = await import('/lib/{name}.js');\n" for name in MODULES
)
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
def page(browser, web_relay: Relay) -> Iterator[Any]:
    """A page of the relay's origin that is not the app: the modules alone."""
    context = browser.new_context()
    context.set_default_timeout(T)
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{web_relay.url}/v1/health")
    yield pg
    context.close()
    assert not errors, errors


def js(page: Any, body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with the modules in ``L`` and ``arg``) in the page."""
    return page.evaluate(f"async (arg) => {{\n{PRELUDE}{body}\n}}", arg)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def signed_wire(
    key: IdentityKey | None,
    author: str,
    text: str,
    *,
    secret: str = SECRET,
    name: str = "py",
    channel: str = "general",
    ts: int | None = None,
    sign_as: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message as our node writes it: encrypted, its author's signature inside enc.

    ``sign_as`` overrides fields of what is signed (a forgery's mismatch);
    ``key=None`` writes the v1 plaintext (unsigned).
    """
    wire = wire_message(secret, author, text, name=name, channel=channel, ts=ts)
    fields = {
        "msg_id": wire["msg_id"],
        "circle_id": wire["circle_id"],
        "channel_id": wire["channel_id"],
        "author_node_id": author,
        "created_ts": wire["created_ts"],
        "display_name": name,
        "text": text,
    }
    plain: dict[str, str] = {"display_name": name, "text": text}
    if key is not None:
        plain |= signing.sign_fields(key, **(fields | (sign_as or {})))
    ad = "|".join(str(fields[k]) for k in ("msg_id", "circle_id", "channel_id"))
    ad += f"|{author}|{wire['created_ts']}"
    nonce = random.randbytes(12)
    sealed = AESGCM(crypto.message_key(secret)).encrypt(
        nonce, json.dumps(plain, separators=(",", ":")).encode(), ad.encode()
    )
    wire["enc"] = {
        "alg": "AES-256-GCM",
        "key_id": "epoch-0",
        "nonce": b64(nonce),
        "ciphertext": b64(sealed),
    }
    return wire


def open_signed(secret: str, wire: dict[str, Any]) -> dict[str, Any]:
    """The plaintext of a message's enc, as Python decrypts it (with pk and sig when signed)."""
    m = parse_message(wire)
    assert m.enc is not None
    ad = f"{m.msg_id}|{m.circle_id}|{m.channel_id}|{m.author_node_id}|{m.created_ts}".encode()
    plain = AESGCM(crypto.message_key(secret)).decrypt(
        base64.b64decode(m.enc["nonce"]), base64.b64decode(m.enc["ciphertext"]), ad
    )
    result: dict[str, Any] = json.loads(plain)
    return result


def py_verdict(wire: dict[str, Any], pinned: bytes | None = None, secret: str = SECRET) -> str:
    """felund.trust's verdict on a message: a Verdict's value, or the refusal's kind."""
    m = parse_message(wire)
    plain = open_signed(secret, wire)
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
                    fp: L.trust.fingerprint(key.publicKey), extractable: key.privateKey.extractable});
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
            otherText: await L.trust.verify(pk, sig, L.trust.signingBytes({...fields, text: f.text + "."})),
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
                              L.trust.provesOwner(secret, pk, 5), L.trust.provesOwner(secret, pk, "ab")]});
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
                        authorNodeId: nodeId, createdTs: 1780000000, displayName: "zoë", text: "hi 🐘"};
        return {nodeId, exported, extractable: key.privateKey.extractable,
                maySign: [L.trust.maySign(key, nodeId), L.trust.maySign(key, "0123456789abcdef01234567"),
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
            out.push(await L.trust.check(m.signed, pinned === null ? null : L.bytes.b64decode(pinned), m));
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
        py_verdict(wire, None if pin is None else base64.b64decode(pin))
        for _, wire, pin in cases
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
    plain = open_signed(SECRET, wire)

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
        const mine = await L.wire.composeMessage(arg.secret, {circleId: arg.circle, authorNodeId: nodeId,
          displayName: "Ana", text: "signed by the page", key});
        const plain = await L.wire.composeMessage(arg.secret, {circleId: arg.circle, authorNodeId: nodeId,
          displayName: "Ana", text: "mac only", key, encrypt: false});
        const opened = await L.wire.openMessage(arg.secret, arg.circle, mine);
        return {out, mine, plain, verdict: await L.trust.check(opened.signed, null, opened)};
        """,
        {"bad": bad, "secret": SECRET, "circle": CIRCLE, "seed": ANA.seed.hex()},
    )
    # A "-" keeps the length: a base64 error, a malformed signature.
    assert got["out"][:3] == ["signature"] * 3
    assert got["out"][3:5] == ["auth", "auth"]
    assert got["out"][5] == "signature"
    assert py_verdict(got["mine"]) == "verified" == got["verdict"]
    mine = open_signed(SECRET, got["mine"])
    assert list(mine) == ["display_name", "text", "pk", "sig"]
    assert mine["pk"] == b64(ANA.public)
    # Exactly the v1 keys travel; a plain (MAC) message cannot carry a signature.
    assert set(got["mine"]) == set(got["plain"]) and got["plain"]["enc"] is None
