"""Identifiers of the felund v1 wire format: secrets, circles, nodes, messages."""

from __future__ import annotations

import os  # os.urandom, as secrets uses: a command spares importing secrets and random
import re
from typing import TYPE_CHECKING

from felund import lazy

if TYPE_CHECKING:
    import hashlib
else:  # a command that reads makes no id: OpenSSL's start (~3 ms) at the first hash
    hashlib = lazy.module("hashlib")

SECRET_HEX_LEN = 64
CIRCLE_ID_LEN = 24
CIRCLE_HINT_LEN = 16
NODE_ID_LEN = 24
WEB_NODE_ID_LEN = 32  # the other implementation's browser (addendum §5)
MSG_ID_LEN = 32

# The spec writes all hex in lowercase; accepting upper case here would let two
# spellings of one secret or id coexist in stores and MAC inputs.
_HEX_RE = re.compile(r"[0-9a-f]+")


def is_hex(s: object, length: int | None = None) -> bool:
    """Whether s is a non-empty lowercase hex string, of exactly length chars if given."""
    if not isinstance(s, str) or not s:
        return False
    if length is not None and len(s) != length:
        return False
    return _HEX_RE.fullmatch(s) is not None


def is_node_id(s: object) -> bool:
    """Whether s is a well-formed node id: 24 lowercase hex, or 32 (a v1 browser's)."""
    return isinstance(s, str) and len(s) in (NODE_ID_LEN, WEB_NODE_ID_LEN) and is_hex(s)


def secret_bytes(secret_hex: str) -> bytes:
    """Decode a circle secret; raises ValueError unless it is 64 lowercase hex chars."""
    if not is_hex(secret_hex, SECRET_HEX_LEN):
        raise ValueError("circle secret must be 64 lowercase hex characters")
    return bytes.fromhex(secret_hex)


def new_secret() -> str:
    """Return a fresh circle secret: 32 random bytes as 64 lowercase hex chars."""
    return os.urandom(SECRET_HEX_LEN // 2).hex()


def circle_id(secret_hex: str) -> str:
    """Return the circle id: the first 24 hex chars of SHA-256 of the secret bytes."""
    return hashlib.sha256(secret_bytes(secret_hex)).hexdigest()[:CIRCLE_ID_LEN]


def circle_hint(circle_id: str) -> str:
    """Return the relay hint: the first 16 hex chars of SHA-256 of the circle id text."""
    return hashlib.sha256(circle_id.encode("utf-8")).hexdigest()[:CIRCLE_HINT_LEN]


def new_node_id() -> str:
    """Return a fresh node id: the first 24 hex chars of SHA-256 of 32 random bytes."""
    return hashlib.sha256(os.urandom(32)).hexdigest()[:NODE_ID_LEN]


_ID_RUN = 1 << 16  # ids made at once at most
_ID_RUN_SPACE = 1 << 32  # the 8 hex after a run's shared prefix


def new_msg_id(node_id: str, created_ts: int) -> str:
    """Return a fresh message id: 32 hex of SHA-256 of ``node_id|created_ts|16 random hex``."""
    seed = f"{node_id}|{created_ts}|{os.urandom(8).hex()}"
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:MSG_ID_LEN]


def new_msg_ids(node_id: str, created_ts: int, n: int) -> list[str]:
    """Return ``n`` fresh message ids, ascending, that share a random prefix of 24 hex.

    Messages posted together are signed together (``felund.trust.batch``), and a
    joiner asks for a backlog by time then id: with ids in the order posted, a
    signed batch reaches it as one run, and its check climbs each batch once.
    """
    if not 0 < n <= _ID_RUN:
        raise ValueError(f"1 to {_ID_RUN} ids at once")
    head = new_msg_id(node_id, created_ts)[: MSG_ID_LEN - 8]
    start = int.from_bytes(os.urandom(4), "big") % (_ID_RUN_SPACE - n + 1)
    return [f"{head}{start + i:08x}" for i in range(n)]
