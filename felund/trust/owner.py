"""The circle owner's proof: a secret that commits to its creator's key.

A v1 circle secret is 32 random bytes that every member holds, so nothing in
it says who made the circle. Ours is SHA-256 of ``felund-owner-v1``, the
creator's public key and 32 random bytes (the salt): still 32 bytes that look
random to a v1 client, but the creator can show the salt in a signed
``CIRCLE_OWNER`` event and every reader checks it against the secret it
already holds. No member can find another key and salt for the same secret,
and no date, order or first sight is involved: the owner is the same on
every node. A circle made by a v1 client, or before keys, has no owner.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from felund.v1.ids import is_hex, secret_bytes

OWNER_CONTEXT = b"felund-owner-v1"
SALT_HEX_LEN = 64


def owned_secret(public_key: bytes, salt_hex: str) -> str:
    """The circle secret (64 hex) that a key and salt commit to."""
    return hashlib.sha256(OWNER_CONTEXT + public_key + bytes.fromhex(salt_hex)).hexdigest()


def new_owned_secret(public_key: bytes) -> tuple[str, str]:
    """A fresh (secret, salt) for a circle that ``public_key`` creates."""
    salt = secrets.token_hex(SALT_HEX_LEN // 2)
    return owned_secret(public_key, salt), salt


def proves_owner(secret_hex: str, public_key: bytes, salt_hex: object) -> bool:
    """Whether ``salt_hex`` shows that ``public_key`` made the circle of ``secret_hex``."""
    if not is_hex(salt_hex, SALT_HEX_LEN):
        return False
    expected = owned_secret(public_key, salt_hex)  # type: ignore[arg-type]
    return hmac.compare_digest(bytes.fromhex(expected), secret_bytes(secret_hex))
