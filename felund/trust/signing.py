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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from felund.errors import InvalidMessage
from felund.trust.identity import (
    PUBLIC_KEY_LEN,
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


class Verdict(enum.Enum):
    """What a reader concludes of a well-formed message's author."""

    UNSIGNED = "unsigned"  # no signature: a v1 writer, or a hop that dropped it
    VERIFIED = "verified"  # signed by the key its author id derives from, or pinned
    FIRST_SIGHT = "first_sight"  # signed by a key now to be pinned for an older id


def _part(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


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
    fields = (msg_id, circle_id, channel_id, author_node_id, str(created_ts), display_name, text)
    return _part(SIG_CONTEXT) + b"".join(_part(f) for f in fields)


def sign_fields(key: IdentityKey, **fields: str | int) -> dict[str, str]:
    """The ``pk`` and ``sig`` entries to add to a message's plaintext."""
    data = signing_bytes(**fields)  # type: ignore[arg-type]
    return {"pk": b64(key.public), "sig": b64(key.sign(data))}


def signature_of(plain: Mapping[str, object]) -> tuple[bytes, bytes] | None:
    """The (key, signature) a plaintext carries: None if unsigned; InvalidMessage if malformed."""
    pk_text, sig_text = plain.get("pk"), plain.get("sig")
    if pk_text is None and sig_text is None:
        return None
    pk, sig = unb64(pk_text, PUBLIC_KEY_LEN), unb64(sig_text, SIGNATURE_LEN)
    if pk is None or sig is None:
        raise InvalidMessage("signature", "pk and sig must be a 32- and a 64-byte base64 pair")
    return pk, sig


def check(
    signed: tuple[bytes, bytes] | None,
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
    key it carries, which the caller then pins.
    """
    if signed is None:
        return Verdict.UNSIGNED
    pk, sig = signed
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
    if not verify(pk, sig, data):
        raise InvalidMessage("signature", "signature does not verify")
    return Verdict.VERIFIED if derived or pinned is not None else Verdict.FIRST_SIGHT
