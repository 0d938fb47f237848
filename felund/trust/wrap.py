"""An epoch secret wrapped to one member's X25519 key, and the enc key ids of epochs (sans-IO).

A wrap is std base64 of ``eph_pub(32) || nonce(12) || AES-256-GCM(secret) + tag``:
an ephemeral X25519 key agrees with the recipient's, HKDF-SHA256 turns that into
the AES key (salt: both public keys; info: ``felund-wrap-v1|`` + context), and
the context is also the AES-GCM associated data, so a wrap opens only for the
circle, epoch and member it was made for. The browser computes the same bytes
(``felund/web/lib/wrap.js``), held by ``tests/vectors/felund-epoch-v1.json``.
"""

from __future__ import annotations

import functools
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from felund.trust.identity import b64, unb64, x25519_public_of
from felund.v1.crypto import ENC_KEY_ID, NONCE_LEN, TAG_LEN, fresh_nonce, hkdf
from felund.v1.ids import MSG_ID_LEN

XPK_LEN = 32
SECRET_LEN = 32
WRAPPED_LEN = XPK_LEN + NONCE_LEN + SECRET_LEN + TAG_LEN  # 92 bytes
WRAPPED_B64_LEN = 4 * -(-WRAPPED_LEN // 3)  # 124 characters
WRAP_INFO = b"felund-wrap-v1|"
MAX_EPOCH = 2**31
ROOT_KEY_ID = ENC_KEY_ID  # epoch 0: the invite's secret, as v1 seals
# "e" + the largest epoch + "." + an epoch id (the msg_id of its EPOCH_EVT).
MAX_KEY_ID_LEN = 1 + len(str(MAX_EPOCH)) + 1 + MSG_ID_LEN
_KEY_ID_RE = re.compile(r"e([1-9][0-9]{0,9})\.([0-9a-f]{32})")


def wrap_context(circle_id: str, epoch_id: str, node_id: str) -> str:
    """What a wrap is bound to: the circle, the epoch (its EPOCH_EVT's id) and the recipient."""
    return f"{circle_id}|{epoch_id}|{node_id}"


@functools.cache
def _probe() -> X25519PrivateKey:
    # Made at first use: making any X25519 key loads cryptography's OpenSSL backend
    # (RSA, EC and all), which gossip, importing this module for the key ids, never needs.
    return X25519PrivateKey.from_private_bytes(bytes([1] * 32))


@functools.lru_cache(maxsize=1024)  # asked of every member's key at each re-key: few keys
def _usable(xpk: bytes) -> bool:
    # A low-order point agrees on all zeros with every key: cryptography refuses it.
    try:
        _probe().exchange(X25519PublicKey.from_public_bytes(xpk))
    except ValueError:
        return False
    return True


def xpk_of(text: object) -> bytes | None:
    """The X25519 public key of a KEY_ANNOUNCE's ``xpk`` (std base64 of 32 bytes);
    None if it is not one or is a low-order point no secret can be wrapped to."""
    raw = unb64(text, XPK_LEN)
    return raw if raw is not None and _usable(raw) else None


def _key(shared: bytes, eph_pub: bytes, recipient_xpk: bytes, context: bytes) -> AESGCM:
    return AESGCM(hkdf(shared, eph_pub + recipient_xpk, WRAP_INFO + context))


def wrap(
    secret: bytes,
    recipient_xpk: bytes,
    context: str,
    ephemeral: bytes | None = None,
    *,
    nonce: bytes | None = None,
) -> str:
    """``secret`` (32 bytes) wrapped to ``recipient_xpk`` for ``context`` (wrap_context);
    ``ephemeral`` (a raw X25519 private key) and ``nonce`` are fresh unless given (vectors).
    ValueError if the secret is not 32 bytes or the key is not usable (see xpk_of)."""
    if len(secret) != SECRET_LEN:
        raise ValueError("an epoch secret is 32 bytes")
    if len(recipient_xpk) != XPK_LEN or not _usable(recipient_xpk):
        raise ValueError("not a usable X25519 public key")
    if ephemeral is None:
        eph = X25519PrivateKey.generate()
    else:
        eph = X25519PrivateKey.from_private_bytes(ephemeral)
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_xpk))
    ad = context.encode("utf-8")
    iv = fresh_nonce(nonce)
    return b64(eph_pub + iv + _key(shared, eph_pub, recipient_xpk, ad).encrypt(iv, secret, ad))


def unwrap(x_private: bytes, wrapped: object, context: str) -> bytes | None:
    """The 32-byte secret a wrap holds for our key and ``context``; None for anything
    that does not open (another key, context or length, tampered, not base64)."""
    raw = unb64(wrapped, WRAPPED_LEN)
    if raw is None:
        return None
    eph_pub, iv, sealed = raw[:XPK_LEN], raw[XPK_LEN:][:NONCE_LEN], raw[XPK_LEN + NONCE_LEN :]
    try:
        ad = context.encode("utf-8")
        own = X25519PrivateKey.from_private_bytes(x_private)
        shared = own.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return _key(shared, eph_pub, x25519_public_of(x_private), ad).decrypt(iv, sealed, ad)
    except (InvalidTag, ValueError):  # ValueError: a low-order eph_pub, or a context not UTF-8
        return None


def epoch_key_id(n: int, epoch_id: str) -> str:
    """The enc.key_id of epoch ``n``: ``e<n>.<epoch_id>``, or ``epoch-0`` for the root
    (n 0, epoch_id ""); ValueError for anything parse_key_id would not give back."""
    if type(n) is not int:
        raise ValueError("an epoch is an int")
    if n == 0 and epoch_id == "":
        return ROOT_KEY_ID
    key_id = f"e{n}.{epoch_id}"
    if parse_key_id(key_id) != (n, epoch_id):
        raise ValueError("an epoch is 1..2^31 and its id 32 lowercase hex")
    return key_id


def parse_key_id(key_id: object) -> tuple[int, str] | None:
    """The (n, epoch_id) an enc.key_id names: (0, "") for ``epoch-0``; None if it is not one."""
    if key_id == ROOT_KEY_ID:
        return 0, ""
    if not isinstance(key_id, str) or len(key_id) > MAX_KEY_ID_LEN:
        return None
    match = _KEY_ID_RE.fullmatch(key_id)
    if match is None or int(match[1]) > MAX_EPOCH:
        return None
    return int(match[1]), match[2]
