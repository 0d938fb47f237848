"""Write felund-epoch-v1.json: the X25519 keys, wraps and epoch key ids, computed by felund.trust.

Run when the epoch format was defined (2026-12-07) and frozen since: Python checks
it stays true (tests/unit/test_epoch_vectors.py), and so does Chromium's WebCrypto
(tests/e2e/test_browser_wrap.py), which shares no code with it. The ephemeral keys
and nonces are fixed here so that a wrap is reproducible; a node draws them fresh.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from felund.trust import identity, wrap

SEEDS = [bytes(range(32)), bytes([7] * 32), bytes.fromhex("9d" * 32)]
CIRCLE = "0123456789abcdef01234567"
EPOCH_IDS = ["ab" * 16, "0f1e2d3c4b5a69788796a5b4c3d2e1f0"]
# Points of small order (RFC 7748 §6, cr.yp.to/ecdh.html): every key agrees on zeros with them.
LOW_ORDER = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


def _x25519() -> list[dict[str, str]]:
    out = []
    for seed in SEEDS:
        key = identity.IdentityKey.from_seed(seed)
        out.append(
            {
                "seed_hex": seed.hex(),
                "node_id": key.node_id,
                "x_private_hex": key.x_private.hex(),
                "xpk": identity.b64(key.x_public),
            }
        )
    return out


def _wraps() -> list[dict[str, str]]:
    out = []
    for i, seed in enumerate(SEEDS):
        key = identity.IdentityKey.from_seed(seed)
        secret = bytes((i * 37 + j) % 256 for j in range(32))
        context = wrap.wrap_context(CIRCLE, EPOCH_IDS[i % 2], key.node_id)
        ephemeral, nonce = bytes([0x40 + i] * 32), bytes(range(i, i + 12))
        out.append(
            {
                "recipient_seed_hex": seed.hex(),
                "recipient_x_private_hex": key.x_private.hex(),
                "recipient_xpk": identity.b64(key.x_public),
                "secret_hex": secret.hex(),
                "context": context,
                "ephemeral_hex": ephemeral.hex(),
                "ephemeral_public_b64": identity.b64(identity.x25519_public_of(ephemeral)),
                "nonce_hex": nonce.hex(),
                "wrapped": wrap.wrap(secret, key.x_public, context, ephemeral, nonce=nonce),
            }
        )
    return out


def _flip(wrapped: str, at: int) -> str:
    raw = bytearray(base64.b64decode(wrapped))
    raw[at] ^= 0x01
    return identity.b64(bytes(raw))


def _tampered(wraps: list[dict[str, str]]) -> list[dict[str, str]]:
    """Wraps that must not open, each with the x_private and context tried and why."""
    good, other = wraps[0], wraps[1]
    _, epoch, node = good["context"].split("|")
    urlsafe = other["wrapped"].replace("+", "-").replace("/", "_")
    assert urlsafe != other["wrapped"]
    low = identity.b64(LOW_ORDER[0] + base64.b64decode(good["wrapped"])[32:])
    cases = [
        ("ciphertext bit flipped", _flip(good["wrapped"], 50), None, None),
        ("tag bit flipped", _flip(good["wrapped"], 91), None, None),
        ("nonce bit flipped", _flip(good["wrapped"], 33), None, None),
        ("ephemeral key bit flipped", _flip(good["wrapped"], 0), None, None),
        ("another recipient's key", good["wrapped"], other["recipient_x_private_hex"], None),
        ("another circle", good["wrapped"], None, wrap.wrap_context("f" * 24, epoch, node)),
        ("another epoch", good["wrapped"], None, wrap.wrap_context(CIRCLE, EPOCH_IDS[1], node)),
        ("another recipient", good["wrapped"], None, other["context"]),
        ("one byte short", identity.b64(base64.b64decode(good["wrapped"])[:-1]), None, None),
        ("one byte more", identity.b64(base64.b64decode(good["wrapped"]) + b"\0"), None, None),
        ("not base64", good["wrapped"][:-4] + "!!!=", None, None),
        ("url-safe base64", urlsafe, other["recipient_x_private_hex"], other["context"]),
        ("no padding", good["wrapped"].rstrip("="), None, None),
        ("low-order ephemeral key", low, None, None),
        ("empty", "", None, None),
    ]
    out = [
        {
            "why": why,
            "recipient_x_private_hex": x_private or good["recipient_x_private_hex"],
            "context": context or good["context"],
            "wrapped": wrapped,
        }
        for why, wrapped, x_private, context in cases
    ]
    for case in out:
        x_private = bytes.fromhex(case["recipient_x_private_hex"])
        assert wrap.unwrap(x_private, case["wrapped"], case["context"]) is None, case["why"]
    return out


def _key_ids() -> dict[str, list[object]]:
    valid: list[object] = [
        {"n": 0, "epoch_id": "", "key_id": "epoch-0"},
        {"n": 1, "epoch_id": EPOCH_IDS[0], "key_id": f"e1.{EPOCH_IDS[0]}"},
        {"n": 42, "epoch_id": EPOCH_IDS[1], "key_id": f"e42.{EPOCH_IDS[1]}"},
        {"n": wrap.MAX_EPOCH, "epoch_id": EPOCH_IDS[0], "key_id": f"e2147483648.{EPOCH_IDS[0]}"},
    ]
    for case in valid:
        assert isinstance(case, dict)
        assert wrap.epoch_key_id(case["n"], case["epoch_id"]) == case["key_id"]
    invalid: list[object] = [
        "",
        "epoch-1",
        "Epoch-0",
        "epoch-0 ",
        f"e0.{EPOCH_IDS[0]}",
        f"e01.{EPOCH_IDS[0]}",
        f"e+1.{EPOCH_IDS[0]}",
        f"e-1.{EPOCH_IDS[0]}",
        f"e2147483649.{EPOCH_IDS[0]}",
        f"e99999999999.{EPOCH_IDS[0]}",
        f"e1.{EPOCH_IDS[0].upper()}",
        f"e1.{EPOCH_IDS[0][:-1]}",
        f"e1.{EPOCH_IDS[0]}0",
        f"e1{EPOCH_IDS[0]}",
        f"e1..{EPOCH_IDS[0]}",
        f"E1.{EPOCH_IDS[0]}",
        f"e1.{EPOCH_IDS[0]}\n",
        f"e\u0661.{EPOCH_IDS[0]}",  # an Arabic-Indic one: a digit to int(), not to us
        "e1." + "g" * 32,
        "e" + "9" * 100,
    ]
    for key_id in invalid:
        assert wrap.parse_key_id(key_id) is None, key_id
    return {"valid": valid, "invalid": invalid}


def main() -> None:
    wraps = _wraps()
    out = {
        "x25519": _x25519(),
        "wrap": wraps,
        "tampered": _tampered(wraps),
        "low_order_xpk": [identity.b64(p) for p in LOW_ORDER],
        "key_id": _key_ids(),
    }
    path = Path(__file__).with_name("felund-epoch-v1.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
