"""Epoch keys in the browser (felund/web/lib/wrap.js, invite.js, the app's KEY_ANNOUNCE).

A real relay serves the modules and a real headless Chromium computes with
WebCrypto X25519, HKDF and AES-GCM. Python holds it to felund.trust.wrap: the
vectors of tests/vectors/felund-epoch-v1.json (a page unwraps with its own key
only, so a vector's private key is imported for the test), wraps made fresh on
each side open on the other, and invite codes of an epoch decode alike.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from felund.testing import Relay, plaintext_of, wait_for
from felund.testing.vectors import epoch_cases
from felund.trust import wrap
from felund.trust.identity import IdentityKey
from felund.v1.invite import encode_invite
from tests.e2e.conftest import in_page
from tests.e2e.test_browser_trust import _pull
from tests.e2e.test_web_vectors import _b64, _js_invite_verdicts, _py_invite_verdict

pytestmark = pytest.mark.slow

CASES = epoch_cases()
MODULES = ("bytes", "wrap", "invite")
ANA = IdentityKey.from_seed(bytes(range(32)))
SECRET = bytes(range(50, 82))
CONTEXT = wrap.wrap_context("0123456789abcdef01234567", "cd" * 16, "fe" + "00" * 11)


@pytest.fixture(scope="module")
def page(lib_page: Any) -> Any:
    """The modules' page of the tier (conftest), under the name these tests use."""
    return lib_page


def js(page: Any, body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with the modules in ``L`` and ``arg``) in the page."""
    return in_page(page, MODULES, body, arg)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- the vectors -------------------------------------------------------------------------------


def test_x25519_keys_and_low_order_points(page) -> None:
    got = js(
        page,
        """
        const keys = [];
        for (const c of arg.keys) {
          const key = await L.wrap.xKeyFromPrivate(L.bytes.hexToBytes(c.x_private_hex));
          const xpk = await L.wrap.xpkOf(c.xpk);
          keys.push({pk: L.bytes.b64encode(key.publicKey), extractable: key.privateKey.extractable,
                     xpk: xpk && L.bytes.b64encode(xpk)});
        }
        const low = [];
        for (const x of arg.low) low.push(await L.wrap.xpkOf(x));
        return {keys, low, odd: [await L.wrap.xpkOf(5), await L.wrap.xpkOf("A".repeat(44))]};
        """,
        {"keys": CASES["x25519"], "low": CASES["low_order_xpk"]},
    )
    assert got["keys"] == [
        {"pk": c["xpk"], "extractable": False, "xpk": c["xpk"]} for c in CASES["x25519"]
    ]
    assert got["low"] == [None] * len(CASES["low_order_xpk"])
    assert got["odd"] == [None, None]


def test_wrap_vectors(page) -> None:
    got = js(
        page,
        """
        const out = [];
        const hex = L.bytes.hexToBytes;
        for (const c of arg) {
          const mine = await L.wrap.xKeyFromPrivate(hex(c.recipient_x_private_hex));
          const ephemeral = await L.wrap.xKeyFromPrivate(hex(c.ephemeral_hex));
          const opened = await L.wrap.unwrap(mine, c.wrapped, c.context);
          out.push({
            opened: opened && L.bytes.bytesToHex(opened),
            ephemeral: L.bytes.b64encode(ephemeral.publicKey),
            made: await L.wrap.wrap(hex(c.secret_hex), L.bytes.b64decode(c.recipient_xpk),
                                    c.context, {ephemeral, nonce: hex(c.nonce_hex)}),
          });
        }
        return out;
        """,
        CASES["wrap"],
    )
    assert got == [
        {"opened": c["secret_hex"], "ephemeral": c["ephemeral_public_b64"], "made": c["wrapped"]}
        for c in CASES["wrap"]
    ]


def test_tampered_wraps_do_not_open(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const mine = await L.wrap.xKeyFromPrivate(L.bytes.hexToBytes(c.recipient_x_private_hex));
          out.push(await L.wrap.unwrap(mine, c.wrapped, c.context));
        }
        return out;
        """,
        CASES["tampered"],
    )
    assert got == [None] * len(CASES["tampered"])


def test_key_ids(page) -> None:
    got = js(
        page,
        """
        const refused = (f) => {
          try { f(); return false; } catch (e) { return e instanceof TypeError; }
        };
        const id = "ab".repeat(16);
        return {
          made: arg.valid.map((c) => L.wrap.epochKeyId(c.n, c.epoch_id)),
          parsed: arg.valid.map((c) => L.wrap.parseKeyId(c.key_id)),
          invalid: arg.invalid.map((k) => L.wrap.parseKeyId(k)),
          odd: [null, 5, ["epoch-0"], "x".repeat(10000), "\\ud800"].map(L.wrap.parseKeyId),
          refused: [[-1, id], [0, id], [1, ""], [2 ** 31 + 1, id], [1.5, id], [true, id]]
            .map(([n, e]) => refused(() => L.wrap.epochKeyId(n, e))),
          longest: L.wrap.MAX_KEY_ID_LEN,
        };
        """,
        CASES["key_id"],
    )
    valid = CASES["key_id"]["valid"]
    assert got["made"] == [c["key_id"] for c in valid]
    assert got["parsed"] == [{"n": c["n"], "epochId": c["epoch_id"]} for c in valid]
    assert got["invalid"] == [None] * len(CASES["key_id"]["invalid"])
    assert got["odd"] == [None] * 5
    assert got["refused"] == [True] * 6
    assert got["longest"] == wrap.MAX_KEY_ID_LEN


# --- fresh wraps, each side opening the other's ------------------------------------------------


def test_fresh_wraps_open_on_the_other_side(page) -> None:
    # The page's key is drawn by WebCrypto and never leaves it: Python wraps to its public half.
    drawn = js(
        page,
        """
        window.xkey = await L.wrap.generateXKey();
        return {xpk: L.bytes.b64encode(window.xkey.publicKey),
                extractable: window.xkey.privateKey.extractable};
        """,
    )
    assert drawn["extractable"] is False
    xpk = wrap.xpk_of(drawn["xpk"])
    assert xpk is not None
    to_page = wrap.wrap(SECRET, xpk, CONTEXT)
    got = js(
        page,
        """
        const open = async (w, c) => {
          const s = await L.wrap.unwrap(window.xkey, w, c);
          return s && L.bytes.bytesToHex(s);
        };
        const fresh = await L.wrap.wrap(L.bytes.hexToBytes(arg.secret),
                                        L.bytes.b64decode(arg.ana), arg.context);
        let noKey = null;
        try { await L.wrap.wrap(L.bytes.hexToBytes(arg.secret), new Uint8Array(32), arg.context); }
        catch (e) { noKey = e.message; }
        return {
          opened: await open(arg.wrapped, arg.context),
          otherContext: await open(arg.wrapped, arg.context + "x"),
          surrogate: await open(arg.wrapped, "\\ud800"),
          fresh,
          again: fresh === await L.wrap.wrap(L.bytes.hexToBytes(arg.secret),
                                             L.bytes.b64decode(arg.ana), arg.context),
          noKey,
        };
        """,
        {"wrapped": to_page, "context": CONTEXT, "secret": SECRET.hex(), "ana": b64(ANA.x_public)},
    )
    assert got["opened"] == SECRET.hex()
    assert got["otherContext"] is None and got["surrogate"] is None
    assert wrap.unwrap(ANA.x_private, got["fresh"], CONTEXT) == SECRET
    assert wrap.unwrap(ANA.x_private, got["fresh"], CONTEXT + "x") is None
    assert got["again"] is False  # a fresh ephemeral key and nonce each time
    assert got["noKey"] == "not a usable X25519 public key"


# --- invite codes of an epoch ------------------------------------------------------------------


def test_epoch_invite_codes_as_python_writes_and_reads_them(page) -> None:
    epoch: dict[str, Any] = {
        "circle_id": "0123456789abcdef01234567",
        "epoch": 3,
        "epoch_id": "ab" * 16,
    }
    secret = "5e" * 32
    made = js(
        page,
        """
        return [L.invite.encodeInvite(arg.secret, "127.0.0.1:9999",
                                      {circleId: arg.e.circle_id, epoch: arg.e.epoch,
                                       epochId: arg.e.epoch_id}),
                L.invite.encodeInvite(arg.secret, "")];
        """,
        {"secret": secret, "e": epoch},
    )
    assert made == [encode_invite(secret, "127.0.0.1:9999", **epoch), encode_invite(secret, "")]
    base = {"v": 1, "secret": secret, "peer": "", **epoch}
    changes: list[dict[str, Any]] = [
        {},
        {"epoch": None},  # None: left out
        {"circle_id": None},
        {"epoch_id": None},
        {"circle_id": None, "epoch": None, "epoch_id": None},
        {"epoch": 0},
        {"epoch": 2**31},
        {"epoch": 2**31 + 1},
        {"epoch": 10**30},
        {"epoch": True},
        {"epoch": 1.0},
        {"epoch": "1"},
        {"circle_id": epoch["circle_id"].upper()},
        {"circle_id": 7},
        {"epoch_id": "ab" * 15},
        {"epoch_id": ""},
        {"peer": "host:0", "epoch": 0},  # the peer's problem is told first
    ]
    payloads = [
        json.dumps({k: v for k, v in {**base, **c}.items() if v is not None}) for c in changes
    ]
    payloads.append(json.dumps(base).replace('"epoch": 3', '"epoch": 3.0'))
    codes = [_b64(p) for p in payloads]
    verdicts = _js_invite_verdicts(page, codes)
    assert verdicts == [_py_invite_verdict(c) for c in codes]
    assert verdicts[0] == f"ok {secret}  {epoch['circle_id']} 3 {epoch['epoch_id']}"
    assert verdicts[4] == f"ok {secret}   0 "  # a v1 code: no circle_id, epoch 0, no epoch_id
    assert sum(v.startswith("refused ") for v in verdicts) == len(verdicts) - 3


# --- the app's KEY_ANNOUNCE --------------------------------------------------------------------

# A browser identity and circle as the app made them before epochs: an Ed25519 key and
# no X25519 key, and its KEY_ANNOUNCE (without xpk) waiting in the outbox.
BEFORE_EPOCHS = """
async ({db, secret, relay}) => {
  const {openStore} = await import('/lib/store.js');
  const trust = await import('/lib/trust.js');
  const ids = await import('/lib/ids.js');
  const wire = await import('/lib/wire.js');
  const {eventText} = await import('/lib/chatmodel.js');
  const {b64encode} = await import('/lib/bytes.js');
  const store = await openStore(db);
  const key = await trust.generateKey();
  const nodeId = trust.nodeIdOf(key.publicKey);
  await store.putIdentity({nodeId, displayName: "Old", key});
  const circleId = await ids.circleId(secret);
  await store.putCircle({circleId, secret, name: "before", relayUrl: relay});
  const pk = b64encode(key.publicKey);
  const text = eventText({node_id: nodeId, pk, t: "KEY_ANNOUNCE"});
  const w = await wire.composeMessage(secret, {circleId, channelId: "__control",
    authorNodeId: nodeId, displayName: "Old", text, key});
  await store.addOutgoing(circleId, {circleId, msgId: w.msg_id, channelId: "__control",
    authorNodeId: nodeId, displayName: "Old", createdTs: w.created_ts, text, verified: true,
    signer: pk, wire: w});
  store.close();
  return nodeId;
}
"""


def test_a_browser_from_before_epochs_announces_its_x25519_key_once(
    open_peer, web_relay: Relay
) -> None:
    secret = "6a" * 32
    peer = open_peer()
    peer.page.goto(f"{web_relay.url}/v1/health")
    me = peer.page.evaluate(
        BEFORE_EPOCHS, {"db": "felund-pre-epoch", "secret": secret, "relay": web_relay.url}
    )
    peer.page.goto(f"{web_relay.url}/?db=felund-pre-epoch")
    peer.wait_chat()

    def announces() -> list[dict[str, Any]]:
        out = []
        for w in _pull(web_relay, secret):
            text = plaintext_of(secret, w)["text"]
            if w["author_node_id"] == me and '"t":"KEY_ANNOUNCE"' in text:
                out.append(json.loads(text))
        return out

    both = wait_for(lambda: len(got := announces()) == 2 and got, timeout=20, what="announces")
    assert [set(a) for a in both] == [{"node_id", "pk", "t"}, {"node_id", "pk", "t", "xpk"}]
    xpk = wrap.xpk_of(both[1]["xpk"])
    assert xpk is not None
    kept = peer.page.evaluate(
        """async () => {
          const {openStore} = await import('/lib/store.js');
          const store = await openStore('felund-pre-epoch');
          const {xKey} = await store.getIdentity();
          return {extractable: xKey.privateKey.extractable,
                  algorithm: xKey.privateKey.algorithm.name, publicKey: Array.from(xKey.publicKey)};
        }"""
    )
    assert kept == {"extractable": False, "algorithm": "X25519", "publicKey": list(xpk)}
    # Once: after a reload, what the page writes reaches the relay, and no third announce.
    peer.page.reload()
    peer.wait_chat()
    peer.say("after the reload")
    wait_for(
        lambda: any(
            plaintext_of(secret, w)["text"] == "after the reload" for w in _pull(web_relay, secret)
        ),
        timeout=20,
        what="the message after the reload at the relay",
    )
    assert len(announces()) == 2
    peer.no_errors()
