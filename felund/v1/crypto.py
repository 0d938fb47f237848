"""HMAC, HKDF and AES-256-GCM of the felund v1 wire format.

Every function here reproduces the existing implementation byte for byte; see
the spec and the vectors. Failures to verify or decrypt raise AuthError and
never say which step failed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from felund.errors import AuthError, InvalidMessage
from felund.trust.signing import (
    BATCH_KEYS,
    MALFORMED_SIGNATURE,
    SIG_KEYS,
    Signature,
    signature_of,
)
from felund.v1.ids import is_hex, secret_bytes

ENC_ALG = "AES-256-GCM"
ENC_KEY_ID = "epoch-0"
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
SESSION_NONCE_HEX_LEN = 32

# What a message's plaintext may hold: v1's two keys, or those and the author's
# signature, alone or of a batch.
_PLAINTEXT_SHAPES = (
    frozenset({"display_name", "text"}),
    frozenset({"display_name", "text", *SIG_KEYS}),
    frozenset({"display_name", "text", *SIG_KEYS, *BATCH_KEYS}),
)
_MSG_INFO = b"felund-msg-v1"
_SESSION_INFO = b"felund-session-v1"
_API_INFO = b"api-v1"


def _hmac_hex(key: bytes, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def _hex_equal(expected: str, given: object) -> bool:
    # compare_digest refuses non-ASCII str, so anything but hex is a plain mismatch.
    if not is_hex(given, len(expected)):
        return False
    assert isinstance(given, str)
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    """HKDF-SHA256 of 32 bytes: every key felund derives (messages, sessions, wraps)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info).derive(ikm)


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise AuthError("bad base64")
    try:
        # Refuses what b64decode(validate=True) refuses (a test holds this), in one
        # pass in C rather than two regular expressions and a copy.
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise AuthError("bad base64") from None


def _compact_json(obj: Mapping[str, Any]) -> bytes:
    # ensure_ascii (the json default) is what the vectors show: non-ASCII is \u-escaped.
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def fresh_nonce(nonce: bytes | None) -> bytes:
    """A random AES-GCM nonce, or the given one (vectors) once its length is checked."""
    if nonce is None:
        return os.urandom(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise ValueError("AES-GCM nonce must be 12 bytes")
    return nonce


# --- message MAC and encryption ---------------------------------------------


def message_mac(
    secret_hex: str,
    *,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    display_name: str,
    created_ts: int,
    text: str,
) -> str:
    """Return the hex HMAC-SHA256 of a plain (schema_version 1) message."""
    fields = (msg_id, circle_id, channel_id, author_node_id, display_name, str(created_ts), text)
    return _hmac_hex(secret_bytes(secret_hex), "|".join(fields))


def verify_message_mac(
    secret_hex: str,
    mac: object,
    *,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    display_name: str,
    created_ts: int,
    text: str,
) -> bool:
    """Whether mac is the message MAC of these fields (constant-time compare)."""
    expected = message_mac(
        secret_hex,
        msg_id=msg_id,
        circle_id=circle_id,
        channel_id=channel_id,
        author_node_id=author_node_id,
        display_name=display_name,
        created_ts=created_ts,
        text=text,
    )
    return _hex_equal(expected, mac)


def message_key(secret_hex: str) -> bytes:
    """Return the AES-256-GCM key of schema_version 2 messages."""
    return hkdf(secret_bytes(secret_hex), None, _MSG_INFO)


@functools.lru_cache(maxsize=256)
def _message_cipher(secret_hex: str) -> AESGCM:
    # One HKDF per circle, not per message: the store seals thousands a second.
    return AESGCM(message_key(secret_hex))


def _message_ad(
    msg_id: str, circle_id: str, channel_id: str, author_node_id: str, created_ts: int
) -> bytes:
    return f"{msg_id}|{circle_id}|{channel_id}|{author_node_id}|{created_ts}".encode()


def encrypt_message(
    secret_hex: str,
    *,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    created_ts: int,
    display_name: str,
    text: str,
    nonce: bytes | None = None,
    signature: Mapping[str, str | int] | None = None,
    key_id: str = ENC_KEY_ID,
) -> dict[str, str]:
    """Return the ``enc`` object carrying display_name and text of a message (and its
    author's signature, ``signing.sign_many``, when signed), sealed under ``secret_hex``:
    the epoch ``key_id`` names (v1's "epoch-0": the circle's root secret)."""
    iv = fresh_nonce(nonce)
    plaintext = _compact_json({"display_name": display_name, "text": text, **(signature or {})})
    ad = _message_ad(msg_id, circle_id, channel_id, author_node_id, created_ts)
    sealed = _message_cipher(secret_hex).encrypt(iv, plaintext, ad)
    return {
        "alg": ENC_ALG,
        "key_id": key_id,
        "nonce": base64.b64encode(iv).decode("ascii"),
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
    }


def _plaintext_json(plaintext: bytes) -> Any:
    # orjson reads a plaintext in a quarter of json's time (a store opens every message);
    # what it refuses (a lone surrogate escape, NaN, deep nesting, bad UTF-8) goes to json,
    # so a plaintext reads as json reads it, as the relay's bodies do
    # (relay.protocol.parse_json_object), but for integers past 64 bits, which orjson makes
    # floats: no plaintext key takes a number but "leaf", refused either way.
    try:
        return orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        return json.loads(plaintext.decode("utf-8"))


def decrypt_message(
    secret_hex: str,
    *,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    created_ts: int,
    enc: Mapping[str, Any],
) -> tuple[str, str, Signature | None]:
    """Return (display_name, text, the signature or None if unsigned) from an ``enc`` object.

    AuthError if it does not open or its plaintext has another shape than v1's two
    keys, or those and ``pk`` and ``sig``, or those and ``leaf`` and ``path``;
    InvalidMessage("signature") if these are not a key, a signature and a path.
    """
    if enc.get("alg") != ENC_ALG:
        raise AuthError("unsupported message encryption")
    iv = _b64decode(enc.get("nonce"))
    sealed = _b64decode(enc.get("ciphertext"))
    if len(iv) != NONCE_LEN or len(sealed) < TAG_LEN:
        raise AuthError("message does not decrypt")
    ad = _message_ad(msg_id, circle_id, channel_id, author_node_id, created_ts)
    try:
        plaintext = _message_cipher(secret_hex).decrypt(iv, sealed, ad)
    except InvalidTag:
        raise AuthError("message does not decrypt") from None
    try:
        obj = _plaintext_json(plaintext)
    except (ValueError, RecursionError):
        raise AuthError("message plaintext is not JSON") from None
    if not isinstance(obj, dict) or obj.keys() not in _PLAINTEXT_SHAPES:
        raise AuthError("message plaintext has the wrong shape")
    display_name, text = obj["display_name"], obj["text"]
    if not isinstance(display_name, str) or not isinstance(text, str):
        raise AuthError("message plaintext has the wrong shape")
    if len(obj) == 2:
        return display_name, text, None
    signed = signature_of(obj)
    if signed is None:  # all null: a signature claimed and not given
        raise InvalidMessage("signature", MALFORMED_SIGNATURE)
    return display_name, text, signed


# --- TCP gossip session -------------------------------------------------------


def handshake_token(secret_hex: str, node_id: str, circle_id: str, nonce_hex: str) -> str:
    """Return the HELLO_AUTH token: hex HMAC of ``node_id|circle_id|server_nonce``."""
    return _hmac_hex(secret_bytes(secret_hex), f"{node_id}|{circle_id}|{nonce_hex}")


def verify_handshake_token(
    secret_hex: str, node_id: str, circle_id: str, nonce_hex: str, token: object
) -> bool:
    """Whether token is the HELLO_AUTH token of node_id for this challenge."""
    return _hex_equal(handshake_token(secret_hex, node_id, circle_id, nonce_hex), token)


def session_key(secret_hex: str, client_nonce_hex: str, server_nonce_hex: str) -> bytes:
    """Return the session key; ValueError unless both nonces are 32 lowercase hex."""
    if not is_hex(client_nonce_hex, SESSION_NONCE_HEX_LEN) or not is_hex(
        server_nonce_hex, SESSION_NONCE_HEX_LEN
    ):
        raise ValueError("session nonces must be 32 lowercase hex characters")
    salt = bytes.fromhex(client_nonce_hex) + bytes.fromhex(server_nonce_hex)
    return hkdf(secret_bytes(secret_hex), salt, _SESSION_INFO)


_NATIVE_INFO = b"felund-native-v2"


def native_session_key(secret_hex: str, client_nonce_hex: str, server_nonce_hex: str) -> bytes:
    """The native protocol's session key: as v1's, under its own HKDF info."""
    salt = bytes.fromhex(client_nonce_hex) + bytes.fromhex(server_nonce_hex)
    return hkdf(secret_bytes(secret_hex), salt, _NATIVE_INFO)


def native_server_proof(secret_hex: str, node_id: str, circle_id: str, client_nonce: str) -> str:
    """The native server's proof that it holds the secret too (v1 only proves the client)."""
    return _hmac_hex(secret_bytes(secret_hex), f"native|{node_id}|{circle_id}|{client_nonce}")


def verify_native_server_proof(
    secret_hex: str, node_id: str, circle_id: str, client_nonce: str, proof: object
) -> bool:
    """Whether ``proof`` is the native server proof for this client nonce."""
    return _hex_equal(native_server_proof(secret_hex, node_id, circle_id, client_nonce), proof)


def seal_session_frame(key: bytes, frame: Mapping[str, Any], nonce: bytes | None = None) -> str:
    """Return one encrypted session line (without the newline) carrying frame."""
    if len(key) != KEY_LEN:
        raise ValueError("session key must be 32 bytes")
    iv = fresh_nonce(nonce)
    sealed = AESGCM(key).encrypt(iv, _compact_json(frame), None)
    return base64.b64encode(iv + sealed).decode("ascii")


def open_session_frame(key: bytes, line: str | bytes) -> dict[str, Any]:
    """Return the frame of one encrypted session line; AuthError if it does not open."""
    if len(key) != KEY_LEN:
        raise ValueError("session key must be 32 bytes")
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise AuthError("bad base64") from None
    raw = _b64decode(line.strip())
    if len(raw) < NONCE_LEN + TAG_LEN:
        raise AuthError("session frame does not decrypt")
    try:
        plaintext = AESGCM(key).decrypt(raw[:NONCE_LEN], raw[NONCE_LEN:], None)
    except InvalidTag:
        raise AuthError("session frame does not decrypt") from None
    try:
        frame = json.loads(plaintext.decode("utf-8"))
    except (ValueError, RecursionError):
        raise AuthError("session frame is not JSON") from None
    if not isinstance(frame, dict):
        raise AuthError("session frame is not a JSON object")
    return frame


# --- relay HTTP API -----------------------------------------------------------


def api_signing_key(secret_hex: str) -> str:
    """Return the relay signing key (hex) every member derives from the secret."""
    return _hmac_hex(secret_bytes(secret_hex), _API_INFO)


# The positional order mirrors the signed string, as callers and the spec write it.
def api_signature(  # noqa: PLR0917
    signing_key_hex: str, method: str, path: str, body: bytes, ts: int, nonce: str
) -> str:
    """Return X-Felund-Signature: hex HMAC of ``METHOD path sha256(body) ts nonce``."""
    if not is_hex(signing_key_hex, 64):
        raise ValueError("signing key must be 64 lowercase hex characters")
    payload = f"{method}{path}{hashlib.sha256(body).hexdigest()}{ts}{nonce}"
    return _hmac_hex(bytes.fromhex(signing_key_hex), payload)


def verify_api_signature(
    signing_key_hex: str,
    method: str,
    path: str,
    body: bytes,
    *,
    ts: int,
    nonce: str,
    signature: object,
) -> bool:
    """Whether signature signs this request under signing_key_hex."""
    return _hex_equal(api_signature(signing_key_hex, method, path, body, ts, nonce), signature)
