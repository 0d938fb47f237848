"""Signed messages as our nodes write them, sealed by hand: a test's own, or a forger's."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.testing.vectors import wire_message
from felund.trust.identity import IdentityKey
from felund.trust.signing import sign_fields
from felund.v1 import crypto
from felund.v1.wire import parse_message


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

    Sealed here rather than by compose_message (``wire_message(key=...)``), so
    that a test can also sign other fields than it sends (``sign_as``: a
    forgery's mismatch); ``key=None`` seals the v1 plaintext (unsigned).
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
