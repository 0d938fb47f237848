"""v1 test data: the interop vectors carried in tests/vectors, and messages as a node sends them."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.testing.processes import REPO
from felund.trust.identity import IdentityKey
from felund.trust.signing import sign_fields
from felund.v1 import crypto, ids
from felund.v1.wire import compose_message, parse_message, to_wire

VECTORS = REPO / "tests" / "vectors" / "felund-v1.json"  # copied from shared/, see its README
TRUST_VECTORS = REPO / "tests" / "vectors" / "felund-trust-v1.json"  # ours, see its README


def vector_cases() -> dict[str, list[Any]]:
    """The cases of the v1 interop vectors (the repository's copy, tests/vectors), by group."""
    text = VECTORS.read_text(encoding="utf-8")
    cases: dict[str, list[Any]] = json.loads(text)["cases"]
    return cases


def trust_cases() -> dict[str, list[Any]]:
    """The signing, identity and owner vectors of felund.trust, by group."""
    cases: dict[str, list[Any]] = json.loads(TRUST_VECTORS.read_text(encoding="utf-8"))
    return cases


def wire_message(
    secret: str,
    author: str,
    text: str,
    *,
    name: str = "tester",
    channel: str = "general",
    ts: int | None = None,
    encrypt: bool = True,
    key: IdentityKey | None = None,
) -> dict[str, Any]:
    """A message of the circle of ``secret`` as our node sends it (every v1 key), dated now;
    signed by ``key`` if given (whoever's it is: a forger's too), else as v1 writes it."""
    ts = int(time.time()) if ts is None else ts
    msg = compose_message(
        secret,
        circle_id=ids.circle_id(secret),
        channel_id=channel,
        author_node_id=author,
        display_name=name,
        text=text,
        created_ts=ts,
        msg_id=ids.new_msg_id(author, ts),
        encrypt=encrypt,
        key=key,
    )
    return to_wire(msg)


def _ad(wire: dict[str, Any]) -> bytes:
    keys = ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts")
    return "|".join(str(wire[k]) for k in keys).encode()


def signed_wire_message(
    secret: str,
    key: IdentityKey | None,
    author: str,
    text: str,
    *,
    name: str = "tester",
    channel: str = "general",
    ts: int | None = None,
    sign_as: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message as our node writes it (encrypted, its author's signature inside enc).

    Sealed here rather than by compose_message, so that a test can sign other
    fields than it sends (``sign_as``: a forgery) or sign for another author
    than the key's; ``key=None`` seals the v1 plaintext (unsigned).
    """
    wire = wire_message(secret, author, text, name=name, channel=channel, ts=ts)
    plain: dict[str, str] = {"display_name": name, "text": text}
    if key is not None:
        ids_ = {k: wire[k] for k in ("msg_id", "circle_id", "channel_id", "created_ts")}
        fields = {**ids_, "author_node_id": author, "display_name": name, "text": text}
        plain |= sign_fields(key, **(fields | (sign_as or {})))
    nonce = os.urandom(12)
    body = json.dumps(plain, separators=(",", ":")).encode()
    sealed = AESGCM(crypto.message_key(secret)).encrypt(nonce, body, _ad(wire))
    wire["enc"] = {
        "alg": crypto.ENC_ALG,
        "key_id": crypto.ENC_KEY_ID,
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
    }
    return wire


def plaintext_of(secret: str, wire: dict[str, Any]) -> dict[str, Any]:
    """What a message's enc holds, as sealed ({display_name, text} and, signed, pk and sig)."""
    enc = parse_message(wire).enc
    if enc is None:
        raise ValueError("a message without enc has no plaintext")
    cipher = AESGCM(crypto.message_key(secret))
    body = cipher.decrypt(
        base64.b64decode(enc["nonce"]), base64.b64decode(enc["ciphertext"]), _ad(wire)
    )
    plain: dict[str, Any] = json.loads(body)
    return plain
