"""A node's Ed25519 identity key, the node id it derives and its fingerprint."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import TYPE_CHECKING

from felund import lazy
from felund.v1.ids import NODE_ID_LEN

if TYPE_CHECKING:
    import hashlib

    from cryptography import exceptions as crypto_errors
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
    from cryptography.hazmat.primitives.kdf import hkdf
else:  # a command reads its node id, it signs nothing: cryptography at the first key use
    hashlib = lazy.module("hashlib")  # and hashes nothing
    crypto_errors = lazy.module("cryptography.exceptions")
    hashes = lazy.module("cryptography.hazmat.primitives.hashes")
    ed25519 = lazy.module("cryptography.hazmat.primitives.asymmetric.ed25519")
    x25519 = lazy.module("cryptography.hazmat.primitives.asymmetric.x25519")
    hkdf = lazy.module("cryptography.hazmat.primitives.kdf.hkdf")

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
PUBLIC_KEY_B64_LEN = 44  # std base64 of 32 bytes, with its one "="
SIGNATURE_B64_LEN = 88  # std base64 of 64 bytes, with its two "="
# A derived id begins with this: a reader then knows, from the id alone, that only
# the key it derives from may sign for it; any other id is older than keys, and
# its key is pinned at first sight. A key is drawn until its id has the mark:
# 256 draws on average, about 15 ms (an older id has it by chance, 1 in 256:
# such a node cannot sign and writes unsigned, see may_sign).
DERIVED_MARK = "fe"
X25519_INFO = b"felund-x25519-v1"
SEED_LEN = 32


def is_derived_form(node_id: str) -> bool:
    """Whether an id is of the derived form: only the key it derives from signs for it."""
    return node_id.startswith(DERIVED_MARK)


@functools.lru_cache(maxsize=4096)  # asked for every signed message received: few authors
def node_id_of(public_key: bytes) -> str:
    """The node id a key derives: the first 24 hex of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:NODE_ID_LEN]


def fingerprint(public_key: bytes) -> str:
    """A key as people compare it: 32 hex of SHA-256 in groups of four."""
    digest = hashlib.sha256(b"felund-fingerprint-v1" + public_key).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def b64(raw: bytes) -> str:
    """Standard base64 with padding, as every key and signature travels."""
    return base64.b64encode(raw).decode("ascii")


def unb64(text: object, length: int) -> bytes | None:
    """The bytes of a std base64 string of exactly ``length`` bytes; None if it is not one."""
    if not isinstance(text, str) or len(text) != 4 * -(-length // 3):
        return None
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length else None


def x25519_private_of(seed: bytes) -> bytes:
    """The X25519 private key (raw 32 bytes) an Ed25519 seed derives: HKDF-SHA256 under its
    own info, so the two keys share nothing usable and identity.json keeps one seed."""
    derive = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=X25519_INFO)
    return derive.derive(seed)


def x25519_public_of(x_private: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a raw private key."""
    return x25519.X25519PrivateKey.from_private_bytes(x_private).public_key().public_bytes_raw()


@functools.lru_cache(maxsize=4096)
def _public(public_key: bytes) -> ed25519.Ed25519PublicKey:
    # Loading a key costs about a tenth of a verify: a backlog has few authors.
    return ed25519.Ed25519PublicKey.from_public_bytes(public_key)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by ``public_key``."""
    try:
        _public(public_key).verify(signature, data)
    except (crypto_errors.InvalidSignature, ValueError):
        return False
    return True


class IdentityKey:
    """A node's private signing key (never logged, never sent) and its public half.

    Made from its seed alone: the key itself is loaded at its first use, so that a
    process that only reads its node id (a command) never loads cryptography.
    """

    __slots__ = ("_private", "_public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise ValueError(f"an Ed25519 seed is {SEED_LEN} bytes")
        self.seed = seed  # the 32 secret bytes identity.json keeps
        self._private: ed25519.Ed25519PrivateKey | None = None
        self._public: bytes | None = None

    @classmethod
    def generate(cls) -> IdentityKey:
        """A fresh random key whose node id has the derived mark."""
        while True:
            key = cls(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())
            if is_derived_form(key.node_id):
                return key

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """The key of a 32-byte seed (as identity.json keeps it); ValueError if malformed."""
        return cls(seed)

    @property
    def private(self) -> ed25519.Ed25519PrivateKey:
        """The signing key."""
        if self._private is None:
            self._private = ed25519.Ed25519PrivateKey.from_private_bytes(self.seed)
        return self._private

    @property
    def public(self) -> bytes:
        """The raw 32-byte public key."""
        if self._public is None:
            self._public = self.private.public_key().public_bytes_raw()
        return self._public

    @property
    def node_id(self) -> str:
        """The node id this key derives (a node made before keys keeps its older id)."""
        return node_id_of(self.public)

    @property
    def x_private(self) -> bytes:
        """This node's X25519 private key (raw 32 bytes), derived from the seed: never sent."""
        return x25519_private_of(self.seed)

    @property
    def x_public(self) -> bytes:
        """This node's X25519 public key (raw 32 bytes), announced as ``xpk`` (KEY_ANNOUNCE)."""
        return x25519_public_of(self.x_private)

    def may_sign(self, node_id: str) -> bool:
        """Whether a node of ``node_id`` can sign with this key (an older id without the mark)."""
        return node_id == self.node_id or not is_derived_form(node_id)

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``."""
        return self.private.sign(data)

    def __repr__(self) -> str:
        return f"IdentityKey(public={b64(self.public)})"
