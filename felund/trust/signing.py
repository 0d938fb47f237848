"""Per-author message signatures: the signed bytes, and what a reader concludes.

A signature travels inside a message's ``enc`` plaintext, beside the two keys
a v1 reader takes from it: ``{"display_name", "text", "pk", "sig"}``. So it
goes wherever ``enc`` goes unchanged (our nodes, the relay, a v1 node that
forwards the message as it came), and v1 peers still get exactly the v1 wire
keys. A hop that re-encrypts (a v1 anchor push) drops it: the message then
reads as unsigned, never as forged.

The signed bytes are the message's fields, each as a 4-byte big-endian length
and its UTF-8, after the context ``felund-sig-v1``: no escaping, no JSON, so
Python and the browser cannot disagree on them.

Messages written together are signed in batches (``felund.trust.batch``): each
then also carries ``"leaf"`` (its index in the batch) and ``"path"`` (std base64
of the sibling hashes up to the root), and ``"sig"`` is the signature on the
batch's root. A message alone keeps the single form.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from felund.errors import InvalidMessage
from felund.trust import batch
from felund.trust.identity import (
    PUBLIC_KEY_B64_LEN,
    PUBLIC_KEY_LEN,
    SIGNATURE_B64_LEN,
    SIGNATURE_LEN,
    IdentityKey,
    b64,
    is_derived_form,
    node_id_of,
    unb64,
    verify,
)

SIG_CONTEXT = b"felund-sig-v1"
SIG_KEYS = ("pk", "sig")
BATCH_KEYS = ("leaf", "path")  # besides SIG_KEYS, in a message signed in a batch
MALFORMED_SIGNATURE = "pk and sig must be a 32- and a 64-byte base64 pair"
_MALFORMED_PATH = (
    f"leaf and path must be an index below {batch.BATCH_LEAVES} and 1 to {batch.MAX_PATH} "
    "base64 hashes that fit it"
)


class Verdict(enum.Enum):
    """What a reader concludes of a well-formed message's author."""

    UNSIGNED = "unsigned"  # no signature: a v1 writer, or a hop that dropped it
    VERIFIED = "verified"  # signed by the key its author id derives from, or pinned
    FIRST_SIGHT = "first_sight"  # signed by a key now to be pinned for an older id


class Signature(NamedTuple):
    """A signature as a plaintext carries it; ``leaf`` is None in the single form."""

    pk: bytes
    sig: bytes
    leaf: int | None = None  # the batch form: this message's index in its batch
    path: bytes = b""  # and the sibling hashes from its leaf to the root


_U32 = struct.Struct(">I").pack  # every length: 4 bytes, big-endian


def signing_bytes(
    *,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    created_ts: int,
    display_name: str,
    text: str,
) -> bytes:
    """The bytes an author signs: the context and seven fields, each length-prefixed."""
    # Once per message received: one list and one join, not a call per field.
    out = [_U32(len(SIG_CONTEXT)), SIG_CONTEXT]
    fields = (msg_id, circle_id, channel_id, author_node_id, str(created_ts), display_name, text)
    for field in fields:
        raw = field.encode("utf-8")
        out += (_U32(len(raw)), raw)
    return b"".join(out)


def sign_fields(key: IdentityKey, **fields: str | int) -> dict[str, str]:
    """The ``pk`` and ``sig`` entries to add to a message's plaintext."""
    data = signing_bytes(**fields)  # type: ignore[arg-type]
    return {"pk": b64(key.public), "sig": b64(key.sign(data))}


def sign_many(
    key: IdentityKey, messages: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, str | int]]:
    """The entries to add to each message's plaintext, signed in batches of at most
    BATCH_LEAVES of nearly equal size (a message alone: sign_fields)."""
    if len(messages) == 1:
        return [sign_fields(key, **messages[0])]
    out: list[Mapping[str, str | int]] = []
    parts = math.ceil(len(messages) / batch.BATCH_LEAVES)
    for p in range(parts):
        chunk = messages[len(messages) * p // parts : len(messages) * (p + 1) // parts]
        root, paths = batch.tree([signing_bytes(**m) for m in chunk])
        pk, sig = b64(key.public), b64(key.sign(batch.batch_bytes(root)))
        out += [
            {"pk": pk, "sig": sig, "leaf": i, "path": b64(path)} for i, path in enumerate(paths)
        ]
    return out


# A path's std base64 length, for each count of hashes a path may hold.
_PATH_HASHES = {len(b64(bytes(n * batch.HASH_LEN))): n for n in range(1, batch.MAX_PATH + 1)}


def _path_of(text: object) -> bytes | None:
    hashes = _PATH_HASHES.get(len(text)) if isinstance(text, str) else None
    return None if hashes is None else unb64(text, hashes * batch.HASH_LEN)


@functools.lru_cache(maxsize=4096)
def _pair(pk_text: str, sig_text: str) -> tuple[bytes, bytes] | None:
    # The messages of a batch carry the same two strings: decoded once.
    pk, sig = unb64(pk_text, PUBLIC_KEY_LEN), unb64(sig_text, SIGNATURE_LEN)
    return None if pk is None or sig is None else (pk, sig)


def signature_of(plain: Mapping[str, object]) -> Signature | None:
    """The signature a plaintext carries: None if unsigned; InvalidMessage if malformed."""
    pk_text, sig_text = plain.get("pk"), plain.get("sig")
    leaf, path_text = plain.get("leaf"), plain.get("path")
    if pk_text is None and sig_text is None and leaf is None and path_text is None:
        return None
    # Only strings of the exact lengths reach the cache: it holds small keys alone.
    sized = (
        isinstance(pk_text, str)
        and isinstance(sig_text, str)
        and (len(pk_text), len(sig_text)) == (PUBLIC_KEY_B64_LEN, SIGNATURE_B64_LEN)
    )
    pair = _pair(pk_text, sig_text) if sized else None
    if pair is None:
        raise InvalidMessage("signature", MALFORMED_SIGNATURE)
    pk, sig = pair
    if "leaf" not in plain and "path" not in plain:
        return Signature(pk, sig)
    path = _path_of(path_text)
    # type(): a bool is an int and must not pass.
    if (
        path is None
        or type(leaf) is not int
        or not batch.path_fits(leaf, len(path) // batch.HASH_LEN)
    ):
        raise InvalidMessage("signature", _MALFORMED_PATH)
    return Signature(pk, sig, leaf, path)


@functools.lru_cache(maxsize=4096)
def _root_signed(pk: bytes, sig: bytes, root: bytes) -> bool:
    # A batch's other messages reach the same root: one verify serves them all.
    # Bounded; a miss costs one verify, as without the cache.
    return verify(pk, sig, batch.batch_bytes(root))


def check(
    signed: Signature | None,
    *,
    pinned: bytes | None,
    msg_id: str,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    created_ts: int,
    display_name: str,
    text: str,
) -> Verdict:
    """Decide on a message's signature; InvalidMessage("signature"|"key_mismatch") to refuse it.

    An id of the derived form is signed for only by the key it derives from.
    An older id (made before keys) is signed for by the key this reader has
    pinned for it in this circle, ``pinned``, or, at first sight (None), by the
    key it carries, which the caller then pins. A message of a batch is signed
    if its leaf and path reach a root that its key signed.
    """
    if signed is None:
        return Verdict.UNSIGNED
    pk, sig, leaf, path = signed
    derived = node_id_of(pk) == author_node_id
    if not derived and (is_derived_form(author_node_id) or pinned not in (None, pk)):
        raise InvalidMessage("key_mismatch", "signed by another key than its author's")
    data = signing_bytes(
        msg_id=msg_id,
        circle_id=circle_id,
        channel_id=channel_id,
        author_node_id=author_node_id,
        created_ts=created_ts,
        display_name=display_name,
        text=text,
    )
    if leaf is None:
        ok = verify(pk, sig, data)
    else:
        ok = _root_signed(pk, sig, batch.root_of(batch.leaf_hash(leaf, data), leaf, path))
    if not ok:
        raise InvalidMessage("signature", "signature does not verify")
    return Verdict.VERIFIED if derived or pinned is not None else Verdict.FIRST_SIGHT
