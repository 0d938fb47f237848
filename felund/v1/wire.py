"""The felund v1 chat message: strict parsing, composing and opening.

A member holds the circle secret, so a valid MAC proves nothing about the
shape of a message: every field is checked for type, size and form before a
message is accepted, and before any MAC or decryption is attempted.
"""

from __future__ import annotations

import hmac
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

import msgpack

from felund.errors import AuthError, InvalidMessage
from felund.protocol import CONTROL_CHANNEL, DEFAULT_CHANNEL
from felund.trust.batch import BATCH_LEAVES, MAX_PATH_B64_LEN
from felund.trust.channels import MAX_CHANNEL_KEY_ID_LEN
from felund.trust.identity import PUBLIC_KEY_B64_LEN, SIGNATURE_B64_LEN, IdentityKey
from felund.trust.signing import Signature, sign_many
from felund.v1.crypto import (
    ENC_ALG,
    ENC_KEY_ID,
    NONCE_LEN,
    TAG_LEN,
    decrypt_message,
    encrypt_message,
    message_mac,
)
from felund.v1.ids import CIRCLE_ID_LEN, is_hex

MAX_DISPLAY_NAME_CHARS = 64
MAX_TEXT_CHARS = 8000
MAX_TEXT_BYTES = 16000
MAX_CREATED_TS = 2**41  # exclusive; year ~71700, far beyond any clock skew
# "e<n>.<epoch id>/i<m>.<id>": a private channel's, under the largest epoch (felund.trust.channels)
MAX_KEY_ID_CHARS = MAX_CHANNEL_KEY_ID_LEN
# The plaintext is JSON with non-ASCII and control chars \u-escaped (6 bytes a
# char, 12 for one outside the BMP), so a text within the limits above can
# serialise to 4*chars + 2*bytes of JSON; the cap admits exactly that.
# The author's key and signature (felund.trust.signing) add a fixed length, and
# a batch's leaf index and path at most that of the longest path.
_MAX_PLAINTEXT = (
    (len('{"display_name":"","text":""}') + 12 * MAX_DISPLAY_NAME_CHARS)
    + 4 * MAX_TEXT_CHARS
    + 2 * MAX_TEXT_BYTES
    + (len(',"pk":"","sig":""') + PUBLIC_KEY_B64_LEN + SIGNATURE_B64_LEN)
    + (len(',"leaf":,"path":""') + len(str(BATCH_LEAVES - 1)) + MAX_PATH_B64_LEN)
)
MAX_CIPHERTEXT_CHARS = 4 * math.ceil((_MAX_PLAINTEXT + TAG_LEN) / 3)
_NONCE_B64_CHARS = 4 * math.ceil(NONCE_LEN / 3)

_ENC_KEYS = ("alg", "key_id", "nonce", "ciphertext")
_ENC_KEY_SET = frozenset(_ENC_KEYS)
_REQUIRED = ("msg_id", "circle_id", "author_node_id", "created_ts")

_MSG_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_]{1,32}")


class WireMessage(NamedTuple):
    """A v1 message exactly as it travels; text and display_name are "" when enc is set.

    A tuple: parse_message makes one per message a peer or a relay client sends, and
    a frozen dataclass cost a fifth of its time.
    """

    msg_id: str
    circle_id: str
    channel_id: str
    author_node_id: str
    display_name: str
    created_ts: int
    text: str
    mac: str
    schema_version: int
    enc: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Opened:
    """The authenticated content of a message, and the signature it carries if any."""

    display_name: str
    text: str
    signed: Signature | None = None  # not yet checked: signing.check


WIRE_KEYS = WireMessage._fields  # the spec's key order
_WIRE_KEY_SET = frozenset(WIRE_KEYS)


class _Ids(TypedDict):
    """The fields that the MAC and the AES-GCM associated data both cover."""

    msg_id: str
    circle_id: str
    channel_id: str
    author_node_id: str
    created_ts: int


class Draft(_Ids):
    """A message of this node to compose: every field a signature covers."""

    display_name: str
    text: str


def _str(value: object, field: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise InvalidMessage("type", field)
    if len(value) > max_len:
        raise InvalidMessage("size", field)
    return value


def _matching(value: object, field: str, pattern: re.Pattern[str], max_len: int) -> str:
    s = _str(value, field, max_len)
    if pattern.fullmatch(s) is None:
        raise InvalidMessage("format", field)
    return s


def check_channel_id(value: object) -> str:
    """Return value if it is a valid channel id, else raise InvalidMessage."""
    channel = _matching(value, "channel_id", _CHANNEL_RE, 32)
    if channel.startswith("__") and channel != CONTROL_CHANNEL:
        raise InvalidMessage("format", "channel_id")
    return channel


def check_display_name(value: object) -> str:
    """Return value if it is a valid display name, else raise InvalidMessage."""
    name = _str(value, "display_name", MAX_DISPLAY_NAME_CHARS)
    # In ASCII only the Cc characters are not printable: most names need no
    # look-up per character (the store checks every message's name twice).
    if name.isascii() and name.isprintable():
        return name
    # Cs too: a lone surrogate cannot be UTF-8 encoded, so no MAC could cover it.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise InvalidMessage("format", "display_name")
    return name


def check_text(value: object) -> str:
    """Return value if it is a valid message text, else raise InvalidMessage."""
    text = _str(value, "text", MAX_TEXT_CHARS)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessage("format", "text") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidMessage("size", "text")
    return text


def _check_created_ts(value: object) -> int:
    # type() rather than isinstance: bool is an int subclass and must not pass.
    if type(value) is not int:
        raise InvalidMessage("type", "created_ts")
    if not 0 <= value < MAX_CREATED_TS:
        raise InvalidMessage("size", "created_ts")
    return value


def _check_header(
    msg_id: object, circle_id: object, channel_id: object, author: object, created_ts: object
) -> tuple[str, str, str, str, int]:
    """(msg_id, circle_id, channel_id, author_node_id, created_ts), each checked."""
    mid = _matching(msg_id, "msg_id", _MSG_ID_RE, 64)
    cid = _str(circle_id, "circle_id", CIRCLE_ID_LEN)
    if not is_hex(cid, CIRCLE_ID_LEN):
        raise InvalidMessage("format", "circle_id")
    return (
        mid,
        cid,
        check_channel_id(channel_id),
        _matching(author, "author_node_id", _NODE_ID_RE, 128),
        _check_created_ts(created_ts),
    )


def _b64_len(value: object, field: str, max_len: int) -> int:
    if not isinstance(value, str) or len(value) > max_len or _B64_RE.fullmatch(value) is None:
        raise InvalidMessage("enc", field)
    if len(value) % 4:
        raise InvalidMessage("enc", field)
    # The length follows from the text (the regex admits only the alphabet and
    # final padding); decoding here would be done again when decrypting.
    return len(value) // 4 * 3 - value.count("=", -2)


def _check_enc(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidMessage("type", "enc")
    if value.keys() != _ENC_KEY_SET:
        raise InvalidMessage("enc", "enc keys")
    if value["alg"] != ENC_ALG:
        raise InvalidMessage("enc", "enc.alg")
    key_id = value["key_id"]
    if not isinstance(key_id, str) or not 1 <= len(key_id) <= MAX_KEY_ID_CHARS:
        raise InvalidMessage("enc", "enc.key_id")
    if not key_id.isprintable():
        raise InvalidMessage("enc", "enc.key_id")
    if _b64_len(value["nonce"], "enc.nonce", _NONCE_B64_CHARS) != NONCE_LEN:
        raise InvalidMessage("enc", "enc.nonce")
    if _b64_len(value["ciphertext"], "enc.ciphertext", MAX_CIPHERTEXT_CHARS) < TAG_LEN:
        raise InvalidMessage("enc", "enc.ciphertext")
    return {k: value[k] for k in _ENC_KEYS}


def _check_keys(obj: dict[Any, Any]) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise InvalidMessage("type", "key")
        if key not in WIRE_KEYS:
            # The key is sender-chosen: name it only when it is short and plain.
            name = key if _SAFE_KEY_RE.fullmatch(key) else "?"
            raise InvalidMessage("unknown_key", name)


def parse_message(obj: object) -> WireMessage:
    """Validate a decoded JSON message and return it; raises InvalidMessage."""
    if not isinstance(obj, dict):
        raise InvalidMessage("not_object", "message")
    if not _WIRE_KEY_SET.issuperset(obj):  # one set operation for the common case
        _check_keys(obj)
    for field in _REQUIRED:
        if field not in obj:
            raise InvalidMessage("missing_field", field)
    msg_id, circle_id, channel_id, author, created_ts = _check_header(
        obj["msg_id"],
        obj["circle_id"],
        obj.get("channel_id", DEFAULT_CHANNEL),
        obj["author_node_id"],
        obj["created_ts"],
    )
    enc = _check_enc(obj.get("enc"))
    if enc is None and "text" not in obj:
        raise InvalidMessage("missing_field", "text")
    display_name = check_display_name(obj.get("display_name", ""))
    text = check_text(obj.get("text", ""))
    mac = _str(obj.get("mac", ""), "mac", 64)
    if mac and not is_hex(mac, 64):
        raise InvalidMessage("format", "mac")
    if enc is None and not mac:
        raise InvalidMessage("missing_field", "mac")
    schema_version = obj.get("schema_version", 1)
    if type(schema_version) is not int:
        raise InvalidMessage("type", "schema_version")
    if schema_version not in (1, 2):
        raise InvalidMessage("format", "schema_version")
    return WireMessage(
        msg_id,
        circle_id,
        channel_id,
        author,
        display_name,
        created_ts,
        text,
        mac,
        schema_version,
        enc,
    )


# The limits parse_message applies to each string field, for check_shape.
_STR_LIMITS = (
    ("msg_id", 64),
    ("circle_id", CIRCLE_ID_LEN),
    ("channel_id", 32),
    ("author_node_id", 128),
    ("display_name", MAX_DISPLAY_NAME_CHARS),
    ("text", MAX_TEXT_CHARS),
    ("mac", 64),
)
_ENC_LIMITS = (
    ("alg", len(ENC_ALG)),
    ("key_id", MAX_KEY_ID_CHARS),
    ("nonce", _NONCE_B64_CHARS),
    ("ciphertext", MAX_CIPHERTEXT_CHARS),
)


def _encodable(value: str) -> bool:
    # isascii() is O(1) in CPython; only non-ASCII text pays for the encode.
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        return False
    return True


def check_shape(obj: object) -> tuple[str, str, int]:
    """The (msg_id, circle_id, created_ts) of a map shaped like a v1 message; else InvalidMessage.

    A cheap first look for a process that passes peers' messages on to the
    store as they came (gossip): only the v1 keys, the required ones present,
    every value of its type and within parse_message's size, every string
    encodable (so the map can go on the bus), a msg_id of the id form and a
    created_ts in range. It authenticates nothing and leaves the finer rules
    (forms of ids, base64, display names) to parse_message and open_message,
    which the store runs on every message before storing it. A map refused
    here would be refused there too, with the same kind when it has one fault.
    """
    if not isinstance(obj, dict):
        raise InvalidMessage("not_object", "message")
    if not _WIRE_KEY_SET.issuperset(obj):
        _check_keys(obj)
    for field in _REQUIRED:
        if field not in obj:
            raise InvalidMessage("missing_field", field)
    for field, limit in _STR_LIMITS:
        value = obj.get(field, "")
        if not isinstance(value, str):
            raise InvalidMessage("type", field)
        if len(value) > limit:
            raise InvalidMessage("size", field)
        if not _encodable(value):
            raise InvalidMessage("format", field)
    msg_id = obj["msg_id"]
    if _MSG_ID_RE.fullmatch(msg_id) is None:
        raise InvalidMessage("format", "msg_id")
    created_ts = _check_created_ts(obj["created_ts"])
    schema_version = obj.get("schema_version", 1)
    if type(schema_version) is not int:
        raise InvalidMessage("type", "schema_version")
    if schema_version not in (1, 2):
        raise InvalidMessage("format", "schema_version")
    enc = obj.get("enc")
    if enc is not None:
        if not isinstance(enc, dict):
            raise InvalidMessage("type", "enc")
        if len(enc) != len(_ENC_KEYS) or any(k not in enc for k in _ENC_KEYS):
            raise InvalidMessage("enc", "enc keys")
        for key, limit in _ENC_LIMITS:
            value = enc[key]
            if not isinstance(value, str) or len(value) > limit or not _encodable(value):
                raise InvalidMessage("enc", f"enc.{key}")
    return msg_id, obj["circle_id"], created_ts


def to_wire(msg: WireMessage) -> dict[str, Any]:
    """Return the JSON object of a message, with exactly the v1 keys in spec order."""
    # Spelled out rather than a loop over WIRE_KEYS: the store makes one per
    # message it stores, and this is three times faster.
    return {
        "msg_id": msg.msg_id,
        "circle_id": msg.circle_id,
        "channel_id": msg.channel_id,
        "author_node_id": msg.author_node_id,
        "display_name": msg.display_name,
        "created_ts": msg.created_ts,
        "text": msg.text,
        "mac": msg.mac,
        "schema_version": msg.schema_version,
        "enc": None if msg.enc is None else dict(msg.enc),
    }


def pack_wire(wire: dict[str, Any]) -> bytes:
    """A wire message as msgpack: the form the store keeps and native MSGS frames carry."""
    return msgpack.packb(wire)


def check_draft(draft: Draft) -> _Ids:
    """The ids of a message to compose, checked; InvalidMessage if a peer would refuse it."""
    msg_id, circle_id, channel_id, author, created_ts = _check_header(
        draft["msg_id"],
        draft["circle_id"],
        draft["channel_id"],
        draft["author_node_id"],
        draft["created_ts"],
    )
    check_display_name(draft["display_name"])
    check_text(draft["text"])
    return _Ids(
        msg_id=msg_id,
        circle_id=circle_id,
        channel_id=channel_id,
        author_node_id=author,
        created_ts=created_ts,
    )


def compose_messages(
    secret_hex: str,
    drafts: Sequence[Draft],
    *,
    encrypt: bool,
    key: IdentityKey | None = None,
    key_id: str = ENC_KEY_ID,
) -> list[WireMessage]:
    """Build and authenticate messages of this node, signed by ``key`` if given and they
    are encrypted (the signature travels in ``enc``, sealed under the epoch ``key_id``
    names): together, in batches of at most BATCH_LEAVES under one signature
    (signing.sign_many); InvalidMessage if a peer would refuse one."""
    # Every input is checked here and the rest is made below, so the result
    # passes parse_message (a property test holds this) without re-parsing,
    # which would halve the store's throughput.
    checked = [check_draft(d) for d in drafts]
    if not encrypt:
        return [
            WireMessage(
                **ids,
                display_name=d["display_name"],
                text=d["text"],
                mac=message_mac(secret_hex, **ids, display_name=d["display_name"], text=d["text"]),
                schema_version=1,
                enc=None,
            )
            for ids, d in zip(checked, drafts, strict=True)
        ]
    signatures = [None] * len(drafts) if key is None else sign_many(key, drafts)
    return [
        # The plaintext lives only in enc; a v1 peer reads it from there.
        WireMessage(
            **ids,
            display_name="",
            text="",
            mac="",
            schema_version=2,
            enc=encrypt_message(
                secret_hex,
                **ids,
                display_name=d["display_name"],
                text=d["text"],
                signature=signature,
                key_id=key_id,
            ),
        )
        for ids, d, signature in zip(checked, drafts, signatures, strict=True)
    ]


def compose_message(
    secret_hex: str,
    *,
    circle_id: str,
    channel_id: str,
    author_node_id: str,
    display_name: str,
    text: str,
    created_ts: int,
    msg_id: str,
    encrypt: bool,
    key: IdentityKey | None = None,
) -> WireMessage:
    """One message of this node: compose_messages of one (signed alone)."""
    draft = Draft(
        msg_id=msg_id,
        circle_id=circle_id,
        channel_id=channel_id,
        author_node_id=author_node_id,
        created_ts=created_ts,
        display_name=display_name,
        text=text,
    )
    return compose_messages(secret_hex, [draft], encrypt=encrypt, key=key)[0]


def open_message(secret_hex: str, circle_id: str, msg: WireMessage) -> Opened:
    """Authenticate a parsed message of circle_id and return its content; raises AuthError
    (or InvalidMessage("signature") for a malformed signature; see signing.check)."""
    if msg.circle_id != circle_id:
        raise AuthError("message belongs to another circle")
    ids = _Ids(
        msg_id=msg.msg_id,
        circle_id=msg.circle_id,
        channel_id=msg.channel_id,
        author_node_id=msg.author_node_id,
        created_ts=msg.created_ts,
    )
    if msg.enc is not None:
        display_name, text, signed = decrypt_message(secret_hex, **ids, enc=msg.enc)
        return Opened(check_display_name(display_name), check_text(text), signed)
    expected = message_mac(secret_hex, **ids, display_name=msg.display_name, text=msg.text)
    # Bytes, not str: compare_digest refuses non-ASCII str, and mac may be anything here.
    if not hmac.compare_digest(expected.encode(), msg.mac.encode("utf-8", "replace")):
        raise AuthError("message MAC does not verify")
    return Opened(msg.display_name, msg.text)
