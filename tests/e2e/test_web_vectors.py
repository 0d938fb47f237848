"""The browser library (felund/web/lib) against the shared v1 vectors and the Python node.

A real relay serves the modules, a real headless Chromium imports them
(``await import('/lib/wire.js')``) and computes with WebCrypto; Python
compares the results with the vectors and with felund's own code: message
composing/opening both ways, the same verdict on malformed messages and
invite codes, the same JSON, and the same derived circle state from the same
control events (felund/chatmodel.py), refused events included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.errors import AuthError, InvalidMessage, InviteError
from felund.testing import VECTORS, Relay
from felund.v1 import chatmodel, crypto, events
from felund.v1.chatmodel import ControlEvent, derive, event_text
from felund.v1.invite import decode_invite
from felund.v1.wire import WIRE_KEYS, compose_message, open_message, parse_message, to_wire
from tests.e2e.conftest import in_page
from tests.unit.test_vectors import CASES

pytestmark = pytest.mark.slow

MODULES = ("bytes", "pyjson", "crypto", "sha256", "ids", "invite", "wire", "chatmodel")
SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CIRCLE = "630dcd2966c4336691125448"


@pytest.fixture(scope="module")
def page(lib_page: Any) -> Any:
    """The modules' page of the tier (conftest), under the name these tests use."""
    return lib_page


def js(page: Any, body: str, arg: Any = None) -> Any:
    """Run ``body`` (an async function body with the modules in ``L`` and ``arg``) in the page."""
    return in_page(page, MODULES, body, arg)


def test_every_vector_group_is_checked_in_the_browser() -> None:
    # The groups below each have a test here; a new group must get one too.
    assert set(CASES) == BROWSER_GROUPS


BROWSER_GROUPS = {
    "circle_id",
    "circle_hint",
    "invite_code",
    "invalid_invite_code",
    "handshake_token",
    "message_mac",
    "message_key",
    "message_enc",
    "session_key",
    "session_frame",
    "api_signing_key",
    "api_signature",
}


def test_circle_id_and_hint(page) -> None:
    got = js(
        page,
        """
        const ids = [];
        for (const c of arg.ids) ids.push(await L.ids.circleId(c.secret_hex));
        const hints = [];
        for (const c of arg.hints) hints.push(await L.ids.circleHint(c.circle_id));
        return {ids, hints};
        """,
        {"ids": CASES["circle_id"], "hints": CASES["circle_hint"]},
    )
    assert got["ids"] == [c["circle_id"] for c in CASES["circle_id"]]
    assert got["hints"] == [c["circle_hint"] for c in CASES["circle_hint"]]


def test_fresh_ids_have_the_spec_shapes(page) -> None:
    got = js(
        page,
        """
        const node = await L.ids.newNodeId();
        return {secret: L.ids.newSecret(), node, msg: await L.ids.newMsgId(node, 1764000000),
                other: await L.ids.newMsgId(node, 1764000000)};
        """,
    )
    assert len(got["secret"]) == 64 and int(got["secret"], 16) >= 0
    assert len(got["node"]) == 24 and len(got["msg"]) == 32
    assert got["msg"] != got["other"]
    assert crypto.api_signing_key(got["secret"])  # a valid secret for Python too


def test_invite_codes(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          out.push({
            code: L.invite.encodeInvite(c.secret_hex, c.peer),
            decoded: L.invite.decodeInvite(c.code),
            padded: L.invite.decodeInvite('  ' + c.code + '\\n'),
          });
        }
        return out;
        """,
        CASES["invite_code"],
    )
    for case, result in zip(CASES["invite_code"], got, strict=True):
        expected = {
            "secret": case["secret_hex"],
            "peer": case["peer"],
            "circleId": "",
            "epoch": 0,
            "epochId": "",
        }
        assert result == {"code": case["code"], "decoded": expected, "padded": expected}


def _js_invite_verdicts(page, codes: list[str]) -> list[str]:
    verdicts: list[str] = js(
        page,
        """
        return arg.map((code) => {
          try {
            const inv = L.invite.decodeInvite(code);
            return ['ok', inv.secret, inv.peer, inv.circleId, inv.epoch, inv.epochId].join(' ');
          } catch (e) {
            if (!(e instanceof L.invite.InviteError)) return 'CRASH ' + e;
            return 'refused ' + e.message;
          }
        });
        """,
        codes,
    )
    return verdicts


def _py_invite_verdict(code: str) -> str:
    try:
        inv = decode_invite(code)
    except InviteError as exc:
        return f"refused {exc}"
    return f"ok {inv.secret} {inv.peer} {inv.circle_id} {inv.epoch} {inv.epoch_id}"


def test_invalid_invite_codes_are_refused_as_python_refuses_them(page) -> None:
    codes = list(CASES["invalid_invite_code"])
    assert all(v.startswith("refused ") for v in _js_invite_verdicts(page, codes))
    assert _js_invite_verdicts(page, codes) == [_py_invite_verdict(c) for c in codes]


def _b64(payload: str | bytes) -> str:

    raw = payload.encode() if isinstance(payload, str) else payload
    return "felund1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_invite_edge_cases_match_python(page) -> None:
    good = "ab" * 32
    payloads = [
        f'{{"v":1.0,"secret":"{good}","peer":""}}',  # a float is not version 1
        f'{{"v":true,"secret":"{good}","peer":""}}',
        f'{{"v":1,"secret":"{good.upper()}","peer":""}}',  # upper case: accepted, lowered
        f'{{"v":1,"secret":"{good[:-2]}","peer":""}}',
        f'{{"v":1,"secret":"{good}"}}',  # no peer: ""
        f'{{"v":1,"secret":"{good}","peer":"host:0"}}',
        f'{{"v":1,"secret":"{good}","peer":"host:65536"}}',
        f'{{"v":1,"secret":"{good}","peer":"[::1]:9999"}}',
        f'{{"v":1,"secret":"{good}","peer":"//relay.example"}}',
        f'{{"v":1,"secret":"{good}","peer":"https:///x"}}',
        f'{{"v":1,"secret":"{good}","peer":"https://a b"}}',
        f'{{"v":1,"secret":"{good}","peer":"https://r\\u0007"}}',
        f'{{"v":1,"secret":"{good}","peer":"https://b\\u00fccher.example"}}',
        f'{{"v":1,"secret":"{good}","peer":7}}',
        f'{{"v":1,"secret":"{good}","peer":"","extra":NaN}}',
        f'[1,"{good}"]',
        f'\ufeff{{"v":1,"secret":"{good}","peer":""}}',
        f'{{"v":1,"secret":"{good}","peer":"{"h" * 1100}:1"}}',
    ]
    codes = [_b64(p) for p in payloads]
    codes += [
        _b64(b"\xff\xfe{}"),  # not UTF-8
        "felund1.",
        "felund1.YQ",  # "a": bad JSON
        "felund1.Y",  # one char over a multiple of 4
        "felund1.YWJj==",
        "x" * 5000,
        "\u2003" + _b64(f'{{"v":1,"secret":"{good}","peer":""}}') + "\x1c",  # Python whitespace
    ]
    assert _js_invite_verdicts(page, codes) == [_py_invite_verdict(c) for c in codes]


def test_message_mac(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const f = c.message;
          const wire = await L.wire.composeMessage(c.secret_hex, {
            circleId: f.circle_id, channelId: f.channel_id, authorNodeId: f.author_node_id,
            displayName: f.display_name, text: f.text, createdTs: f.created_ts,
            msgId: f.msg_id, encrypt: false});
          const opened = await L.wire.openMessage(c.secret_hex, f.circle_id, {...f, mac: c.mac});
          out.push({mac: await L.wire.messageMac(c.secret_hex, f), wire, keys: Object.keys(wire),
                    text: opened.text, name: opened.displayName});
        }
        return out;
        """,
        CASES["message_mac"],
    )
    for case, result in zip(CASES["message_mac"], got, strict=True):
        fields = case["message"]
        assert result["mac"] == case["mac"]
        python = to_wire(compose_message(case["secret_hex"], **fields, encrypt=False))
        assert result["wire"] == python
        assert result["keys"] == list(WIRE_KEYS)
        assert (result["name"], result["text"]) == (fields["display_name"], fields["text"])


def test_message_key(page) -> None:
    got = js(
        page,
        "const out = []; for (const c of arg) out.push(L.bytes.bytesToHex("
        "await L.crypto.messageKey(c.secret_hex))); return out;",
        CASES["message_key"],
    )
    assert got == [c["key_hex"] for c in CASES["message_key"]]


def test_message_enc(page) -> None:
    got = js(
        page,
        """
        const out = [];
        for (const c of arg) {
          const f = c.message;
          const wire = {msg_id: f.msg_id, circle_id: f.circle_id, channel_id: f.channel_id,
            author_node_id: f.author_node_id, display_name: '', created_ts: f.created_ts,
            text: '', mac: '', schema_version: 2, enc: c.enc};
          const opened = await L.wire.openMessage(c.secret_hex, f.circle_id, wire);
          const again = await L.wire.encryptFields(c.secret_hex, f, f.display_name, f.text,
            L.bytes.b64decode(c.enc.nonce));
          out.push({name: opened.displayName, text: opened.text, again, wire: opened.wire});
        }
        return out;
        """,
        CASES["message_enc"],
    )
    for case, result in zip(CASES["message_enc"], got, strict=True):
        fields = case["message"]
        assert (result["name"], result["text"]) == (fields["display_name"], fields["text"])
        assert result["again"] == case["enc"]  # byte for byte, with the vector's nonce
        assert parse_message(result["wire"]).enc == case["enc"]


def test_api_signing_key_and_signature(page) -> None:
    got = js(
        page,
        """
        const keys = [];
        for (const c of arg.keys) keys.push(await L.crypto.apiSigningKey(c.secret_hex));
        const sigs = [];
        for (const c of arg.sigs) {
          const key = await L.crypto.apiSigningKey(c.secret_hex);
          sigs.push(await L.crypto.apiSignature(key, c.method, c.path, c.body, c.ts, c.nonce));
        }
        return {keys, sigs};
        """,
        {"keys": CASES["api_signing_key"], "sigs": CASES["api_signature"]},
    )
    assert got["keys"] == [c["signing_key_hex"] for c in CASES["api_signing_key"]]
    assert got["sigs"] == [c["signature"] for c in CASES["api_signature"]]


def test_session_key_token_and_frame_primitives(page) -> None:
    # The browser speaks no TCP gossip, but these vectors pin its HKDF with a
    # salt, HMAC and AES-GCM without associated data too.
    got = js(
        page,
        """
        const B = L.bytes;
        const keys = [];
        for (const c of arg.keys) {
          const salt = B.hexToBytes(c.client_nonce + c.server_nonce);
          keys.push(B.bytesToHex(await L.crypto.hkdf(B.hexToBytes(c.secret_hex), salt,
            'felund-session-v1', 32)));
        }
        const tokens = [];
        for (const c of arg.tokens) {
          tokens.push(await L.crypto.hmacHex(B.hexToBytes(c.secret_hex),
            `${c.node_id}|${c.circle_id}|${c.nonce}`));
        }
        const frames = [];
        for (const c of arg.frames) {
          const raw = B.b64decode(c.line);
          const plain = await L.crypto.aesGcmDecrypt(B.hexToBytes(c.key_hex), raw.slice(0, 12),
            raw.slice(12), null);
          const again = await L.crypto.aesGcmEncrypt(B.hexToBytes(c.key_hex), raw.slice(0, 12),
            plain, null);
          frames.push({frame: JSON.parse(B.utf8Decode(plain)),
                       line: B.b64encode(new Uint8Array([...raw.slice(0, 12), ...again]))});
        }
        return {keys, tokens, frames};
        """,
        {
            "keys": CASES["session_key"],
            "tokens": CASES["handshake_token"],
            "frames": CASES["session_frame"],
        },
    )
    assert got["keys"] == [c["key_hex"] for c in CASES["session_key"]]
    assert got["tokens"] == [c["token"] for c in CASES["handshake_token"]]
    assert got["frames"] == [
        {"frame": c["frame"], "line": c["line"]} for c in CASES["session_frame"]
    ]


def test_a_tampered_enc_or_mac_does_not_open(page) -> None:
    case = CASES["message_enc"][0]
    f = case["message"]
    wire = {**{k: f[k] for k in ("msg_id", "circle_id", "channel_id", "author_node_id")}}
    wire |= {"created_ts": f["created_ts"], "enc": case["enc"], "schema_version": 2}
    got = js(
        page,
        """
        const tries = [
          {...arg.wire, created_ts: arg.wire.created_ts + 1},  // associated data
          {...arg.wire, channel_id: 'random'},
          {...arg.wire, enc: {...arg.wire.enc, nonce: 'AQEBAQEBAQEBAQEC'}},
          {...arg.mac, text: arg.mac.text + '!'},
          {...arg.mac, mac: arg.mac.mac.replace(/^./, (c) => c === '0' ? '1' : '0')},
        ];
        const out = [];
        for (const w of tries) {
          try { await L.wire.openMessage(arg.secret, w.circle_id, w); out.push('opened'); }
          catch (e) { out.push(e instanceof L.wire.InvalidMessage ? e.kind : 'CRASH ' + e); }
        }
        try { await L.wire.openMessage(arg.secret, '000000000000000000000000', arg.wire); }
        catch (e) { out.push(e.kind); }
        return out;
        """,
        {
            "secret": case["secret_hex"],
            "wire": wire,
            "mac": {**CASES["message_mac"][0]["message"], "mac": CASES["message_mac"][0]["mac"]},
        },
    )
    assert got == ["auth"] * 5 + ["other_circle"]


BROWSER_COMPOSED = [
    ("general", "alice", "hello"),
    ("random", "Bøb 🚀", "pipes | inside | text and ünïcödé"),
    ("general", "", ""),
    ("__control", "", '{"channel_id":"ops","op":"create","t":"CHANNEL_EVT"}'),
    ("ops", "a" * 64, "x" * 8000),
    ("ops", "zoë", "€" * 5333),  # 15999 UTF-8 bytes
    ("general", "tab\tname?", "line\nbreak \u2028 \x00 nul"),
]


def test_browser_composed_messages_open_in_python(page) -> None:
    wires = js(
        page,
        """
        const out = [];
        for (const encrypt of [true, false]) {
          for (const [channelId, displayName, text] of arg.cases) {
            try {
              out.push(await L.wire.composeMessage(arg.secret, {circleId: arg.circle, channelId,
                authorNodeId: 'a3f8b2c4d5e6f7a8b9c0d1e2', displayName, text, encrypt}));
            } catch (e) { out.push({refused: e.kind}); }
          }
        }
        return out;
        """,
        {"secret": SECRET, "circle": CIRCLE, "cases": BROWSER_COMPOSED},
    )
    expected = BROWSER_COMPOSED * 2
    assert len(wires) == len(expected)
    for wire, (channel, name, text) in zip(wires, expected, strict=True):
        if "\t" in name:  # a control char in a name: refused on both sides
            assert wire == {"refused": "format"}
            with pytest.raises(InvalidMessage):
                compose_message(
                    SECRET,
                    circle_id=CIRCLE,
                    channel_id=channel,
                    author_node_id="a3f8b2c4d5e6f7a8b9c0d1e2",
                    display_name=name,
                    text=text,
                    created_ts=1,
                    msg_id="m" * 32,
                    encrypt=True,
                )
            continue
        assert list(wire) == list(WIRE_KEYS)
        msg = parse_message(json.loads(json.dumps(wire)))
        assert to_wire(msg) == wire
        opened = open_message(SECRET, CIRCLE, msg)
        assert (msg.channel_id, opened.display_name, opened.text) == (channel, name, text)


def test_python_composed_messages_open_in_the_browser(page) -> None:
    wires = []
    for encrypt in (True, False):
        for i, (channel, name, text) in enumerate(BROWSER_COMPOSED):
            if "\t" in name:
                continue
            msg = compose_message(
                SECRET,
                circle_id=CIRCLE,
                channel_id=channel,
                author_node_id="node-b.7",
                display_name=name,
                text=text,
                created_ts=1764000000 + i,
                msg_id=f"{i:032x}",
                encrypt=encrypt,
            )
            wires.append(json.dumps(to_wire(msg)))
    got = js(
        page,
        """
        const out = [];
        for (const text of arg.wires) {
          const m = await L.wire.openMessage(arg.secret, arg.circle, L.pyjson.loads(text));
          out.push([m.channelId, m.displayName, m.text, m.createdTs, m.wire]);
        }
        return out;
        """,
        {"secret": SECRET, "circle": CIRCLE, "wires": wires},
    )
    for text, (channel, name, body, created, wire) in zip(wires, got, strict=True):
        original = json.loads(text)
        assert (channel, name, body, created) == (
            original["channel_id"],
            open_message(SECRET, CIRCLE, parse_message(original)).display_name,
            open_message(SECRET, CIRCLE, parse_message(original)).text,
            original["created_ts"],
        )
        assert wire == original


def _py_verdict(text: str) -> str:
    try:
        obj = json.loads(text)
        open_message(SECRET, CIRCLE, parse_message(obj))
    except InvalidMessage as exc:
        return f"{exc.kind}:{exc.detail}"
    except AuthError as exc:
        return "other_circle:circle_id" if "another circle" in str(exc) else "auth"
    except (ValueError, RecursionError):
        return "not_json"
    return "ok"


def _malformed() -> list[str]:
    def mac_msg(**over: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "msg_id": "5f2b9c0e1d3a4b5c6d7e8f9012345678",
            "circle_id": CIRCLE,
            "channel_id": "general",
            "author_node_id": "a3f8b2c4d5e6f7a8b9c0d1e2",
            "display_name": "alice",
            "created_ts": 1764000000,
            "text": "hey",
        }
        wire = to_wire(compose_message(SECRET, **fields, encrypt=False))
        wire.update(over)
        if "mac" not in over:
            # MAC the changed fields, so that only the field checks can refuse them.
            signed = {k: wire.get(k, fields[k]) for k in fields}
            if all(isinstance(v, str | int) for v in signed.values()):
                as_text: dict[str, Any] = {k: str(v) for k, v in signed.items()}
                wire["mac"] = crypto.message_mac(SECRET, **as_text)
        return wire

    enc = to_wire(
        compose_message(
            SECRET,
            circle_id=CIRCLE,
            channel_id="general",
            author_node_id="b7",
            display_name="bob",
            text="secret text",
            created_ts=1764000001,
            msg_id="0000000000000000000000000000000a",
            encrypt=True,
        )
    )
    texts = [json.dumps(mac_msg()), json.dumps(enc)]
    overrides: list[dict[str, Any]] = [
        {"created_ts": "1764000000"},
        {"created_ts": True},
        {"created_ts": -1},
        {"created_ts": 2**41},
        {"created_ts": 2**41 - 1},
        {"created_ts": 2**70},
        {"msg_id": "short"},
        {"msg_id": "x" * 65},
        {"msg_id": "bad id with spaces"},
        {"channel_id": "__secret"},
        {"channel_id": "General"},
        {"channel_id": "c" * 33},
        {"channel_id": 7},
        {"display_name": "n" * 65},
        {"display_name": "🚀" * 64},
        {"display_name": "line\nbreak"},
        {"text": "t" * 8001},
        {"text": "🚀" * 4000},  # 4000 chars, 16000 bytes: fits
        {"text": "€" * 5334},  # 16002 bytes
        {"extra": 1},
        {"mac": ""},
        {"mac": "A" * 64},
        {"mac": 5},
        {"schema_version": 3},
        {"schema_version": "1"},
        {"circle_id": CIRCLE.upper()},
        {"circle_id": "000000000000000000000000"},
        {"author_node_id": ""},
        {"author_node_id": "n" * 129},
        {"enc": []},
        {"enc": "x"},
    ]
    for over in overrides:
        texts.append(json.dumps(mac_msg(**over)))
    base = json.dumps(mac_msg())
    texts += [
        base.replace('"created_ts": 1764000000', '"created_ts": 1764000000.0'),
        base.replace('"created_ts": 1764000000', '"created_ts": 1.764e9'),
        base.replace('"created_ts": 1764000000', '"created_ts": NaN'),
        base.replace('"schema_version": 1', '"schema_version": 1.0'),
        base.replace('"display_name": "alice"', '"display_name": "\\ud800"'),
        base.replace('"text": "hey"', '"text": "\\udc00x"'),
        "[]",
        '"a string"',
        "{}",
        json.dumps({k: v for k, v in mac_msg().items() if k != "text"}),
        json.dumps({k: v for k, v in mac_msg().items() if k != "msg_id"}),
        json.dumps({k: v for k, v in mac_msg().items() if k not in ("channel_id", "mac")}),
    ]
    for change in [
        {"alg": "AES-128-GCM"},
        {"key_id": ""},
        {"key_id": "k" * 44},  # the longest an epoch's key id is (felund.trust.wrap)
        {"key_id": "k" * 45},
        {"key_id": "epoch\u00070"},
        {"key_id": "epoch-9"},  # any key id opens: the key is the circle's
        {"nonce": "AQEBAQEBAQEB"},
        {"nonce": "AQEBAQEBAQEBAQE="},
        {"nonce": "AQEB AQEBAQEBAQE"},
        {"ciphertext": "AAAA"},
        {"ciphertext": enc["enc"]["ciphertext"][:-4] + "AAAA"},
        {"ciphertext": enc["enc"]["ciphertext"] + "="},
        {"extra": "x"},
    ]:
        texts.append(json.dumps({**enc, "enc": {**enc["enc"], **change}}))
    texts.append(json.dumps({k: v for k, v in enc.items() if k != "mac"}))
    texts.append(json.dumps({**enc, "text": "visible", "display_name": "eve"}))
    texts.append(json.dumps({**enc, "enc": {k: v for k, v in enc["enc"].items() if k != "alg"}}))
    # Plaintexts that decrypt but have the wrong shape.
    for plain in [b'{"text":"x"}', b'{"display_name":1,"text":"x"}', b"[1]", b"\xff", b"NaN"]:
        sealed = AESGCM(crypto.message_key(SECRET)).encrypt(
            b"\x01" * 12,
            plain,
            f"{enc['msg_id']}|{CIRCLE}|general|b7|{enc['created_ts']}".encode(),
        )

        texts.append(
            json.dumps(
                {
                    **enc,
                    "enc": {
                        **enc["enc"],
                        "nonce": base64.b64encode(b"\x01" * 12).decode(),
                        "ciphertext": base64.b64encode(sealed).decode(),
                    },
                }
            )
        )
    return texts


def test_malformed_messages_get_the_python_verdict(page) -> None:
    texts = _malformed()
    got = js(
        page,
        """
        const out = [];
        for (const text of arg.texts) {
          let obj;
          try { obj = L.pyjson.loads(text); } catch (e) { out.push('not_json'); continue; }
          try { await L.wire.openMessage(arg.secret, arg.circle, obj); out.push('ok'); }
          catch (e) {
            out.push(e instanceof L.wire.InvalidMessage
              ? (e.kind === 'auth' ? 'auth' : e.kind + ':' + e.detail) : 'CRASH ' + e);
          }
        }
        return out;
        """,
        {"secret": SECRET, "circle": CIRCLE, "texts": texts},
    )
    expected = [_py_verdict(t) for t in texts]
    assert got == expected
    assert expected.count("ok") >= 4 and len(set(expected)) > 20  # the cases test something


def test_json_reads_and_writes_as_python_does(page) -> None:
    texts = [
        "1",
        "1.0",
        "-0",
        "1e3",
        "NaN",
        "-Infinity",
        "01",
        "1.",
        "[1,]",
        '{"a":1,}',
        '{"a":1,"a":2}',
        '"\\u00e9\\ud83d\\ude80"',
        '"tab\there"',
        '"\\x41"',
        " [true, false, null] ",
        "\ufeff[]",
        "9007199254740993",
        '{"__proto__": {"x": 1}}',
        "[" * 50 + "]" * 50,
        "[" * 1500 + "]" * 1500,
        "",
        "[1] [2]",
    ]

    def typed(v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return ["int", str(v)]
        if isinstance(v, float):
            return ["float"]
        if isinstance(v, list):
            return [typed(x) for x in v]
        if isinstance(v, dict):
            return {k: typed(x) for k, x in v.items()}
        return v

    def py(text: str) -> Any:
        try:
            return typed(json.loads(text))
        except (ValueError, RecursionError):
            return "refused"

    got = js(
        page,
        """
        const typed = (v) => {
          if (v === null || typeof v === 'boolean') return v;
          if (typeof v === 'number' || typeof v === 'bigint') return ['int', String(v)];
          if (v instanceof L.pyjson.PyFloat) return ['float'];
          if (Array.isArray(v)) return v.map(typed);
          if (typeof v === 'object') {
            const o = {};
            for (const k of Object.keys(v)) {
              Object.defineProperty(o, k, {value: typed(v[k]), enumerable: true});
            }
            return o;
          }
          return v;
        };
        return arg.map((t) => {
          // Through JSON text: a "__proto__" key would not survive Playwright's transfer.
          try { return JSON.stringify(typed(L.pyjson.loads(t))); } catch { return '"refused"'; }
        });
        """,
        texts,
    )
    assert [json.loads(g) for g in got] == [py(t) for t in texts]
    objects: list[Any] = [
        {"b": 1, "a": [1, "x"], "é": "ü", "Z": {"y": None, "x": True}},
        {"t": "CHANNEL_EVT", "display_name": 'q"uote\\ \n\x01\x7f 🚀 \u2028'},
        {"\U0001f680": 1, "\uffff": 2, "a": 3},
    ]
    dumped = js(
        page,
        "return arg.map((o) => [L.chatmodel.eventText(o), L.pyjson.dumps(o)]);",
        objects,
    )
    assert dumped == [[event_text(o), json.dumps(o, separators=(",", ":"))] for o in objects]


# --- the same circle state from the same control events ----------------------------------
NODES = ["1a" * 12, "2b" * 12, "3c" * 16, "4d" * 12]  # node ids: 24 hex, 32 as a v1 browser's
NOW = 1764000100  # the readers' clock: events dated after NOW + MAX_SKEW_S are held


def _crafted() -> list[list[dict[str, Any]]]:
    kh = hashlib.sha256(b"k").hexdigest()
    t = 1764000000

    def ev(i: int, author: str, ts: int, body: Any) -> dict[str, Any]:
        text = body if isinstance(body, str) else event_text(body)
        return {"msgId": f"{i:032x}", "authorNodeId": author, "createdTs": ts, "text": text}

    a, b, c, _ = NODES
    return [
        # A join written in the same second as its create, sorting before it.
        [
            ev(2, a, t, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "ops"}),
            ev(1, b, t, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "ops"}),
        ],
        # The invite flow, the approval sorting before the request and the create.
        [
            ev(
                9,
                a,
                t,
                {"t": "CHANNEL_EVT", "op": "create", "channel_id": "inv", "access_mode": "invite"},
            ),
            ev(3, b, t, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "inv"}),
            ev(
                2,
                a,
                t,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "inv", "target_node_id": b},
            ),
            ev(1, b, t, {"t": "CHANNEL_EVT", "op": "request", "channel_id": "inv"}),
            ev(4, c, t + 1, {"t": "CHANNEL_EVT", "op": "request", "channel_id": "inv"}),
            ev(5, c, t + 1, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "inv"}),
            ev(
                6,
                c,
                t + 2,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "inv", "target_node_id": c},
            ),
        ],
        # Key channels, names, leave, refusals of every kind.
        [
            ev(
                1,
                a,
                t,
                {
                    "t": "CHANNEL_EVT",
                    "op": "create",
                    "channel_id": "k",
                    "access_mode": "key",
                    "key_hash": kh,
                },
            ),
            ev(2, b, t + 1, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "k", "key_hash": kh}),
            ev(
                3,
                c,
                t + 1,
                {"t": "CHANNEL_EVT", "op": "join", "channel_id": "k", "key_hash": "0" * 64},
            ),
            ev(4, c, t + 1, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "k"}),
            ev(5, a, t + 2, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "k"}),
            ev(
                6,
                a,
                t + 2,
                {
                    "t": "CHANNEL_EVT",
                    "op": "create",
                    "channel_id": "kk",
                    "access_mode": "key",
                    "key_hash": "XY",
                },
            ),
            ev(
                7,
                a,
                t + 2,
                {"t": "CHANNEL_EVT", "op": "create", "channel_id": "m", "access_mode": "secret"},
            ),
            ev(8, a, t + 2, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "__x"}),
            ev(9, a, t + 2, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "Caps"}),
            ev(10, a, t + 3, {"t": "CHANNEL_EVT", "op": "leave", "channel_id": "general"}),
            ev(11, b, t + 3, {"t": "CHANNEL_EVT", "op": "leave", "channel_id": "k"}),
            ev(12, a, t + 3, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "Alice 🚀"}),
            ev(13, b, t + 3, {"t": "CHANNEL_EVT", "op": "rename", "display_name": ""}),
            ev(14, b, t + 3, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "tab\there"}),
            ev(15, b, t + 3, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "x" * 65}),
            ev(16, c, t + 3, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "🚀" * 64}),
            ev(17, a, t + 4, {"t": "CIRCLE_NAME_EVT", "circle_id": CIRCLE, "name": "Friends"}),
            ev(18, a, t + 4, {"t": "CIRCLE_NAME_EVT", "circle_id": "0" * 24, "name": "Other"}),
            ev(19, a, t + 4, {"t": "CIRCLE_NAME_EVT", "name": "nbsp\u00a0name"}),
            ev(
                20,
                a,
                t + 4,
                {"t": "CHANNEL_EVT", "op": "join", "channel_id": "k", "actor_node_id": b},
            ),
            ev(
                21, a, t + 4, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "k", "node_id": None}
            ),
            ev(22, a, t + 4, {"t": "CHANNEL_EVT", "op": "explode", "channel_id": "k"}),
            ev(23, a, t + 4, {"t": "WHAT"}),
            ev(24, a, t + 4, {"t": "ANCHOR_ANNOUNCE", "caps": [1, 2]}),
            ev(25, a, t + 4, {"t": "CALL_EVT", "op": "create"}),
            ev(26, a, t + 4, "not json"),
            ev(27, a, t + 4, "[1, 2]"),
            ev(28, a, t + 4, '{"t":"CIRCLE_NAME_EVT","name":"nan","x":NaN}'),
            ev(29, a, t + 4, '{"t":"CIRCLE_NAME_EVT","name":"float","circle_id":1.0}'),
            ev(
                30,
                a,
                t + 4,
                '{"t":"CIRCLE_NAME_EVT","name":"deep","x":' + "[" * 50 + "]" * 50 + "}",
            ),
            ev(
                31,
                a,
                t + 4,
                '{"t":"CIRCLE_NAME_EVT","name":"deeper","x":' + "[" * 1500 + "]" * 1500 + "}",
            ),
            ev(32, a, t + 4, '{"t":"CIRCLE_NAME_EVT","name":"' + "l" * 4100 + '"}'),
            ev(
                33,
                a,
                t + 5,
                '{"t":"CHANNEL_EVT","op":"approve","channel_id":"k","target_node_id":"bad id"}',
            ),
            ev(
                34,
                b,
                t + 5,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "k", "target_node_id": c},
            ),
            ev(35, a, t + 5, {"t": "CHANNEL_EVT", "op": "request", "channel_id": "k"}),
            ev(36, a, t + 5, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "nochan"}),
            ev(
                37,
                a,
                t + 5,
                '{"t":"CHANNEL_EVT","op":"rename","display_name":"a","__proto__":{"x":1}}',
            ),
        ],
        # Dates: held far ahead, due within the skew, contests by hash, waiting across time.
        [
            ev(1, a, t, {"t": "CIRCLE_NAME_EVT", "name": "ours"}),
            ev(2, b, 2**41 - 2, {"t": "CIRCLE_NAME_EVT", "name": "pwned"}),
            ev(3, b, 2**41 - 1, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "evil"}),
            ev(4, c, NOW + 300, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "fast"}),
            ev(5, c, NOW + 301, {"t": "CHANNEL_EVT", "op": "rename", "display_name": "faster"}),
            ev(6, c, NOW + 900, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "later"}),
            ev(7, b, t - 500, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "ops"}),
            ev(
                8,
                a,
                t,
                {
                    "t": "CHANNEL_EVT",
                    "op": "create",
                    "channel_id": "ops",
                    "access_mode": "key",
                    "key_hash": kh,
                },
            ),
            ev(9, c, 1, {"t": "CHANNEL_EVT", "op": "create", "channel_id": "ops"}),
            ev(
                10,
                c,
                2,
                {"t": "CHANNEL_EVT", "op": "create", "channel_id": "ops", "access_mode": "invite"},
            ),
            ev(
                11,
                b,
                t - 9,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "vip", "target_node_id": c},
            ),
            ev(12, c, t - 8, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "vip"}),
            ev(
                13,
                a,
                t + 1,
                {"t": "CHANNEL_EVT", "op": "create", "channel_id": "vip", "access_mode": "invite"},
            ),
            ev(
                14,
                a,
                t + 2,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "vip", "target_node_id": b},
            ),
            ev(
                15,
                a,
                t + 2,
                {"t": "CHANNEL_EVT", "op": "approve", "channel_id": "vip", "target_node_id": "bob"},
            ),
            ev(
                16,
                a,
                t + 2,
                {
                    "t": "CHANNEL_EVT",
                    "op": "approve",
                    "channel_id": "vip",
                    "target_node_id": b.upper(),
                },
            ),
            ev(
                17,
                a,
                t + 2,
                {
                    "t": "CHANNEL_EVT",
                    "op": "create",
                    "channel_id": "tui",
                    "access_mode": "key",
                    "key_hash": "",
                },
            ),
            ev(
                18,
                b,
                t + 3,
                {"t": "CHANNEL_EVT", "op": "join", "channel_id": "tui", "key_hash": kh},
            ),
            ev(19, b, t + 3, {"t": "CHANNEL_EVT", "op": "join", "channel_id": "ops", "node_id": b}),
            ev(
                20, c, t + 3, {"t": "CHANNEL_EVT", "op": "leave", "channel_id": "ops", "node_id": b}
            ),
            ev(
                21,
                c,
                t + 3,
                {"t": "CHANNEL_EVT", "op": "rename", "node_id": b, "display_name": "x"},
            ),
            ev(
                22,
                a,
                t + 3,
                {
                    "t": "CHANNEL_EVT",
                    "op": "create",
                    "channel_id": "kk",
                    "access_mode": "key",
                    "key_hash": 5,
                },
            ),
            ev(
                23,
                a,
                t + 3,
                {"t": "CHANNEL_EVT", "op": "join", "channel_id": "ops", "key_hash": "0" * 64},
            ),
        ]
        # Same-second ties: the last by hash wins, not by msg_id.
        + [
            ev(100 + i, NODES[i % 4], t, {"t": "CIRCLE_NAME_EVT", "name": f"tie {i}"})
            for i in range(12)
        ],
    ]


def _random_sequences(count: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(8)
    kh = hashlib.sha256(b"pw").hexdigest()
    channels = ["alpha", "beta", "gamma", "general"]
    sequences = []
    for _ in range(count):
        events = []
        for i in range(rng.randint(5, 60)):
            author = rng.choice(NODES)
            op = rng.choice(["create", "join", "join", "request", "approve", "leave", "rename"])
            body: dict[str, Any] = {"t": "CHANNEL_EVT", "op": op}
            if op != "rename":
                body["channel_id"] = rng.choice(channels)
            if op == "create":
                body["access_mode"] = rng.choice(["public", "key", "invite"])
                if body["access_mode"] == "key":
                    body["key_hash"] = kh
            if op == "join" and rng.random() < 0.5:
                body["key_hash"] = rng.choice([kh, "0" * 64])
            if op == "approve":
                body["target_node_id"] = rng.choice(NODES)
            if op == "rename":
                body["display_name"] = rng.choice(["A", "Bé", "", "c" * 70, "🚀"])
            if rng.random() < 0.05:
                body["actor_node_id"] = rng.choice(NODES)
            if rng.random() < 0.1:
                body = {"t": "CIRCLE_NAME_EVT", "name": rng.choice(["One", "Two", ""])}
            events.append(
                {
                    "msgId": "".join(rng.choices(string.hexdigits.lower(), k=32)) + str(i),
                    "authorNodeId": author,
                    # Mostly a few seconds (ties), now and then ahead: due, just held, far.
                    "createdTs": 1764000000 + rng.randint(0, 4)
                    if rng.random() > 0.05
                    else NOW + rng.choice([300, 301, 2**40]),
                    "text": event_text(body),
                }
            )
        rng.shuffle(events)
        sequences.append(events)
    return sequences


def _py_state(events: list[dict[str, Any]]) -> dict[str, Any]:
    state = derive(
        [ControlEvent(e["msgId"], e["authorNodeId"], e["createdTs"], e["text"]) for e in events],
        CIRCLE,
        NOW,
    )
    return {
        "summary": state.summary(),
        "rejected": dict(sorted(state.rejected.items())),
        "refused": dict(sorted(state.refused.items())),
        "due_at": state.due_at,
    }


def test_chatmodel_derives_the_python_state(page) -> None:
    sequences = _crafted() + _random_sequences(40)
    got = js(
        page,
        """
        const out = [];
        for (const events of arg.sequences) {
          const state = L.chatmodel.derive(events, arg.circle, arg.now);
          // A different arrival order derives the same state.
          const again = L.chatmodel.derive([...events].reverse(), arg.circle, arg.now);
          const sorted = (m) =>
            Object.fromEntries([...m.entries()].sort((x, y) => (x[0] < y[0] ? -1 : 1)));
          out.push({summary: state.summary(), rejected: sorted(state.rejected),
                    refused: sorted(state.refused), due_at: state.dueAt,
                    same: JSON.stringify(again.summary()) === JSON.stringify(state.summary())});
        }
        return out;
        """,
        {"sequences": sequences, "circle": CIRCLE, "now": NOW},
    )
    assert len(got) == len(sequences)
    for seq, result in zip(sequences, got, strict=True):
        assert result.pop("same")
        assert result == _py_state(seq)
    rejected = set().union(*(r["rejected"] for r in got))
    # The sequences reach the refusals they mean to test.
    assert {"no_channel", "not_approved", "wrong_key", "actor_mismatch", "not_json"} <= rejected
    assert {"too_long", "bad_name", "other_circle", "exists", "bad_target"} <= rejected
    assert {"future", "bad_key_hash", "unsigned"} <= rejected  # approvals need a signature


def test_can_post_follows_membership(page) -> None:
    seq = _crafted()[1]
    got = js(
        page,
        """
        const s = L.chatmodel.derive(arg.events, arg.circle, arg.now);
        return arg.nodes.map((n) =>
          [s.canPost('inv', n), s.canPost('general', n), s.canPost('none', n)]);
        """,
        {"events": seq, "circle": CIRCLE, "nodes": NODES, "now": NOW},
    )
    state = derive(
        [ControlEvent(e["msgId"], e["authorNodeId"], e["createdTs"], e["text"]) for e in seq],
        CIRCLE,
        NOW,
    )
    assert got == [[state.can_post("inv", n), True, False] for n in NODES]
    # The creator posts; the unsigned approval of node 1 lets nobody in (SPEC-15 §3).
    assert got[0][0] and not got[1][0] and not got[3][0]


def test_sync_sha256_is_sha256(page) -> None:
    texts = ["", "abc", "a" * 55, "a" * 56, "a" * 64, "é🚀" * 300, "x" * 10_000, "\u2028|\x00"]
    got = js(page, "return arg.map((t) => L.sha256.sha256HexOf(t));", texts)
    assert got == [hashlib.sha256(t.encode()).hexdigest() for t in texts]


def test_key_hash_and_event_hash_as_python(page) -> None:
    cases = json.loads((VECTORS.parent / "felund-v1-addendum.json").read_text())["cases"]
    got = js(
        page,
        """
        return {
          keys: arg.keys.map((c) => L.chatmodel.keyHash(c.circle_id, c.channel_id, c.key)),
          hashes: arg.events.map((e) => L.chatmodel.eventHash(e)),
        };
        """,
        {"keys": cases["channel_key_hash"], "events": _crafted()[3]},
    )
    assert got["keys"] == [c["key_hash"] for c in cases["channel_key_hash"]]
    assert got["hashes"] == [
        chatmodel.event_hash(ControlEvent(e["msgId"], e["authorNodeId"], e["createdTs"], e["text"]))
        for e in _crafted()[3]
    ]


BUILT: list[tuple[str, str, dict[str, str]]] = [
    ("create", "lobby", {}),
    ("create", "#secret", {"access": "key", "key": "hunter2"}),
    ("create", "vip", {"access": "invite"}),
    ("create", "vault", {"access": "key"}),
    ("create", "vault", {"access": "secret"}),
    ("create", "Bad!", {}),
    ("join", "secret", {"key": "hunter2"}),
    ("join", "__control", {}),
    ("join", "lobby", {}),
    ("request", "vip", {}),
    ("leave", "lobby", {}),
    ("approve", "vip", {"target": "2b" * 12}),
    ("approve", "vip", {}),
    ("rename", "lobby", {}),
    ("explode", "lobby", {}),
]


def _py_built(op: str, channel: str, what: dict[str, str]) -> Any:
    try:
        return events.channel_event(op, CIRCLE, channel, NODES[0], **what)
    except ValueError as exc:
        return {"refused": str(exc)}


def test_the_builder_writes_the_events_python_writes(page) -> None:
    got = js(
        page,
        """
        const C = L.chatmodel;
        const out = arg.cases.map(([op, channel, what]) => {
          try { return C.channelEvent(op, arg.circle, channel, arg.me, what); }
          catch (e) { return {refused: e.message}; }
        });
        return {built: out, rename: C.renameEvent(arg.circle, arg.me, 'Bø'),
                name: C.circleNameEvent(arg.circle, 'friends'),
                dated: [C.dated(C.renameEvent(arg.circle, arg.me, 'x'), 7),
                        C.dated(C.circleNameEvent(arg.circle, 'x'), 7)],
                texts: out.filter((e) => !e.refused)
                  .map((e) => C.eventText(C.dated(e, 1764000000)))};
        """,
        {"cases": BUILT, "circle": CIRCLE, "me": NODES[0]},
    )
    expected = [_py_built(*c) for c in BUILT]
    assert got["built"] == expected
    assert sum("refused" in e for e in expected) == 7
    assert got["rename"] == events.rename_event(CIRCLE, NODES[0], "Bø")
    assert got["name"] == events.circle_name_event(CIRCLE, "friends")
    assert got["dated"] == [
        events.dated(events.rename_event(CIRCLE, NODES[0], "x"), 7),
        events.dated(events.circle_name_event(CIRCLE, "x"), 7),
    ]
    assert got["texts"] == [
        event_text(events.dated(e, 1764000000)) for e in expected if "refused" not in e
    ]


PEOPLE = [
    ["1a" * 12, "ann"],
    ["2b" * 12, "bob"],
    ["2b" + "9" * 22, "bobby"],
    ["3c" * 16, "1a"],
    ["b7", "old"],
    ["4d" * 12, ""],
]
NAMED = ["ann", " bob ", "bobby", "2b", "2b2b", "1a", "3c3c", "b7", "4d", "carol", "Ann", "",
         "\u2003ann\x1c", "f" * 24, "e" * 32, "F" * 24, "totally-bogus-node", '"bob"']  # fmt: skip


def _py_person(who: str) -> str:
    try:
        return "ok " + events.resolve_person([(n, name) for n, name in PEOPLE], who)
    except ValueError as exc:
        return f"no {exc}"


def test_people_are_named_as_python_names_them(page) -> None:
    got = js(
        page,
        """
        return arg.named.map((who) => {
          try { return 'ok ' + L.chatmodel.resolvePerson(arg.people, who); }
          catch (e) { return 'no ' + e.message; }
        });
        """,
        {"people": PEOPLE, "named": NAMED},
    )
    expected = [_py_person(w) for w in NAMED]
    assert got == expected
    assert sum(e.startswith("ok ") for e in expected) == 10


def test_the_writers_refuse_alike(page) -> None:
    seq = _crafted()[3]
    state = derive(
        [ControlEvent(e["msgId"], e["authorNodeId"], e["createdTs"], e["text"]) for e in seq],
        CIRCLE,
        NOW,
    )
    me = NODES[3]
    trials = [
        events.channel_event("create", CIRCLE, "ops", me),
        events.channel_event("create", CIRCLE, "new", me),
        events.channel_event("join", CIRCLE, "ops", me),
        events.channel_event("join", CIRCLE, "ops", me, key="k"),
        events.channel_event("join", CIRCLE, "tui", me),
        events.channel_event("join", CIRCLE, "nochan", me),
        events.rename_event(CIRCLE, me, "d"),
    ]
    got = js(
        page,
        """
        const s = L.chatmodel.derive(arg.events, arg.circle, arg.now);
        return arg.trials.map((e) => L.chatmodel.writerProblem(s, e));
        """,
        {"events": seq, "circle": CIRCLE, "now": NOW, "trials": trials},
    )
    expected = [chatmodel.writer_problem(state, e) for e in trials]
    assert got == expected
    assert expected == ["exists", None, "needs_key", None, None, None, None]


def test_the_browser_store_keeps_arrival_order_within_a_second(page) -> None:
    """Issue 13: 200 lines of one second (`send --stdin`) showed with 98 inversions in the
    browser: its store read them back in (createdTs, msgId) order. Now (createdTs, arrival),
    as the node's panes: created_ts, then arrival, msg_id only breaking ties."""
    rng = random.Random(3)
    msg_ids = [f"{rng.getrandbits(128):032x}" for _ in range(200)]
    got = js(
        page,
        """
        const {openStore, deleteStore} = await import('/lib/store.js');
        await deleteStore('t-order');
        const store = await openStore('t-order');
        const msg = (msgId, i, ts) => ({msgId, channelId: 'general', displayName: 'a',
          authorNodeId: 'a'.repeat(24), createdTs: ts, text: `line ${i}`,
          wire: {msg_id: msgId, created_ts: ts}});
        const fresh = [];
        // As pulls bring them: batches of several sizes, in the order the relay holds them.
        for (let i = 0; i < 150; i += 50) {
          const batch = arg.ids.slice(i, i + 50).map((id, j) => msg(id, i + j, 1764000000));
          fresh.push(...(await store.putMessages('c', batch)).map((m) => m.text));
        }
        for (let i = 150; i < 200; i++) {
          await store.addOutgoing('c', msg(arg.ids[i], i, 1764000000));
        }
        await store.putMessages('c', [msg('0'.repeat(32), 'early', 1763999999)]);
        const read = (await store.messages('c')).map((m) => m.text);
        const outbox = (await store.outbox('c')).map((w) => w.msg_id);
        store.close();
        await deleteStore('t-order');
        return {fresh, read, outbox};
        """,
        {"ids": msg_ids},
    )
    lines = [f"line {i}" for i in range(200)]
    assert got["fresh"] == lines[:150]
    assert got["read"] == ["line early", *lines]
    assert got["outbox"] == msg_ids[150:]


def test_modules_load_under_the_apps_content_security_policy(browser, web_relay: Relay) -> None:
    context = browser.new_context()
    try:
        violations: list[str] = []
        pg = context.new_page()
        pg.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        response = pg.goto(f"{web_relay.url}/")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        names = pg.evaluate(
            "async (mods) => { const out = []; for (const m of mods) {"
            " out.push(Object.keys(await import(`/lib/${m}.js`)).length); } return out; }",
            [*MODULES, "store", "relay", "sync"],
        )
        assert all(n > 0 for n in names)
        assert not violations, violations
    finally:
        context.close()
