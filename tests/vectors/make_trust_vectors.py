"""Write felund-trust-v1.json: the signing and owner vectors, computed by felund.trust.

Run when the format was defined (2026-12-07) and again when the batch form was
added (the "batch" group, the same day; the groups before it came out byte for
byte the same, Ed25519 being deterministic); the file is frozen since: Python
checks it stays true (tests/unit/test_trust.py), and so does Chromium's
WebCrypto (tests/e2e/test_browser_trust.py), which shares no code with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from felund.trust import batch, identity, owner, signing
from felund.v1 import ids

SEEDS = [bytes(range(32)), bytes([7] * 32), bytes.fromhex("9d" * 32)]
MESSAGES = [
    {"display_name": "ana", "text": "hello"},
    {"display_name": "", "text": ""},
    {"display_name": "Zoë 🐘", "text": 'naïve | pipes | and\nnewlines, 中文, \u2028, "quotes"'},
]


def main() -> None:
    out: dict[str, list[dict[str, object]]] = {"identity": [], "signing": [], "owner": []}
    for seed in SEEDS:
        key = identity.IdentityKey.from_seed(seed)
        out["identity"].append(
            {
                "seed_hex": seed.hex(),
                "public_key_b64": identity.b64(key.public),
                "node_id": key.node_id,
                "fingerprint": identity.fingerprint(key.public),
            }
        )
    for i, (seed, body) in enumerate(zip(SEEDS, MESSAGES, strict=True)):
        key = identity.IdentityKey.from_seed(seed)
        fields = {
            "msg_id": f"{i:032x}",
            "circle_id": "0123456789abcdef01234567",
            "channel_id": "__control" if i == 1 else "general",
            "author_node_id": key.node_id,
            "created_ts": 1_780_000_000 + i,
            **body,
        }
        signed = signing.sign_fields(key, **fields)
        out["signing"].append(
            {
                "seed_hex": seed.hex(),
                "fields": fields,
                "signing_bytes_hex": signing.signing_bytes(**fields).hex(),  # type: ignore[arg-type]
                **signed,
            }
        )
    for seed in SEEDS[:2]:
        key = identity.IdentityKey.from_seed(seed)
        salt = bytes(reversed(seed)).hex()
        secret = owner.owned_secret(key.public, salt)
        out["owner"].append(
            {
                "public_key_b64": identity.b64(key.public),
                "salt_hex": salt,
                "secret_hex": secret,
                "circle_id": ids.circle_id(secret),
            }
        )
    out["batch"] = [_batch(SEEDS[1], 5)]
    path = Path(__file__).with_name("felund-trust-v1.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _batch(seed: bytes, count: int) -> dict[str, object]:
    """A batch of ``count`` messages signed together: its root, signature and each
    message's fields, signed bytes, leaf and path (an odd count: promoted nodes)."""
    key = identity.IdentityKey.from_seed(seed)
    messages = [
        {
            "msg_id": f"b{i:031x}",
            "circle_id": "0123456789abcdef01234567",
            "channel_id": "general",
            "author_node_id": key.node_id,
            "created_ts": 1_780_000_100 + i,
            "display_name": "bo",
            "text": f"line {i} of a batch, é",
        }
        for i in range(count)
    ]
    signed = signing.sign_many(key, messages)
    datas = [signing.signing_bytes(**m) for m in messages]  # type: ignore[arg-type]
    root, _ = batch.tree(datas)
    return {
        "seed_hex": seed.hex(),
        "pk": signed[0]["pk"],
        "root_hex": root.hex(),
        "batch_bytes_hex": batch.batch_bytes(root).hex(),
        "sig": signed[0]["sig"],
        "messages": [
            {
                "fields": m,
                "signing_bytes_hex": data.hex(),
                "leaf": s["leaf"],
                "leaf_hash_hex": batch.leaf_hash(i, data).hex(),
                "path": s["path"],
            }
            for i, (m, data, s) in enumerate(zip(messages, datas, signed, strict=True))
        ],
    }


if __name__ == "__main__":
    main()
