"""Signed messages for tests: a forger's (signed over other fields than it sends), and
what a message's ``enc`` holds, read as sealed."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.protocol import CONTROL_CHANNEL
from felund.testing.vectors import wire_message
from felund.trust.identity import IdentityKey
from felund.trust.signing import sign_fields
from felund.v1 import crypto, ids
from felund.v1.chatmodel import event_text
from felund.v1.wire import compose_message, parse_message, to_wire

_IDS = ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts")


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
    """A message as our node writes it, signed by ``key`` (None: unsigned, as v1 writes it).

    ``sign_as`` overrides fields of what is signed, not of what is sent: a
    forgery whose signature does not cover the message it comes with.
    """
    wire = wire_message(secret, author, text, name=name, channel=channel, ts=ts, key=key)
    if key is None or not sign_as:
        return wire
    ids = {k: wire[k] for k in _IDS}
    signature = sign_fields(key, **(ids | {"display_name": name, "text": text} | sign_as))
    wire["enc"] = crypto.encrypt_message(
        secret, **ids, display_name=name, text=text, signature=signature
    )
    return wire


def control_wire(
    secret: str,
    circle_id: str,
    author: str,
    event: dict[str, Any],
    key: IdentityKey | None,
    *,
    name: str = "tester",
) -> dict[str, Any]:
    """A control event of ``author`` on the wire, dated now: signed with ``key`` (our
    nodes', pages'), or None: unsigned (a v1 client's, a forger's in its name)."""
    now = int(time.time())
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id=CONTROL_CHANNEL,
        author_node_id=author,
        display_name=name,
        text=event_text(event),
        created_ts=now,
        msg_id=ids.new_msg_id(author, now),
        encrypt=True,
        key=key,
    )
    return to_wire(msg)


def plaintext_of(secret: str, wire: dict[str, Any]) -> dict[str, Any]:
    """What a message's enc holds, as sealed ({display_name, text} and, signed, pk and sig)."""
    enc = parse_message(wire).enc
    if enc is None:
        raise ValueError("a message without enc has no plaintext")
    ad = "|".join(str(wire[k]) for k in _IDS).encode()
    cipher = AESGCM(crypto.message_key(secret))
    body = cipher.decrypt(base64.b64decode(enc["nonce"]), base64.b64decode(enc["ciphertext"]), ad)
    plain: dict[str, Any] = json.loads(body)
    return plain
