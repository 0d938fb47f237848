"""The secrets and enc key ids of private channels (sans-IO).

A private channel's messages are sealed under a message secret of its own,
bound to the circle's epoch (its secret is the HKDF salt), so a member
removed from the circle reads nothing new in it either:

- a **key** channel's secret derives from the key its members typed:
  HKDF-SHA256(ikm = the key, salt = the circle epoch's secret, info =
  ``felund-chan-key-v1|<circle_id>|<channel_id>``); key id ``<epoch key id>/k``.
- an **invite** channel has a random secret per channel epoch (a
  CHANNEL_KEY_EVT wraps it to each member); its message secret is
  HKDF-SHA256(ikm = that secret, salt = the circle epoch's secret, info =
  ``felund-chan-inv-v1|<circle_id>|<channel_id>``); key id
  ``<epoch key id>/i<m>.<CHANNEL_KEY_EVT id>``.

Either is then used as any circle secret is (``felund.v1.crypto.message_key``).
"""

from __future__ import annotations

import re

from felund.trust.wrap import MAX_EPOCH, MAX_KEY_ID_LEN, parse_key_id
from felund.v1.crypto import hkdf
from felund.v1.ids import MSG_ID_LEN

KEY_PART = "k"
# "<epoch key id>/i<m>.<id>" of the largest ones: what the wire must carry.
MAX_CHANNEL_KEY_ID_LEN = MAX_KEY_ID_LEN + 2 + len(str(MAX_EPOCH)) + 1 + MSG_ID_LEN
_PART_RE = re.compile(r"k|i([1-9][0-9]{0,9})\.([0-9a-f]{32})")


def key_channel_secret(typed_key: str, epoch_secret: str, circle_id: str, channel_id: str) -> str:
    """The message secret (hex) of a key channel under one circle epoch's secret (hex)."""
    info = f"felund-chan-key-v1|{circle_id}|{channel_id}".encode()
    return hkdf(typed_key.encode("utf-8"), bytes.fromhex(epoch_secret), info).hex()


def invite_channel_secret(
    channel_secret: str, epoch_secret: str, circle_id: str, channel_id: str
) -> str:
    """The message secret (hex) of an invite channel's epoch secret (hex) under one circle
    epoch's secret (hex)."""
    info = f"felund-chan-inv-v1|{circle_id}|{channel_id}".encode()
    return hkdf(bytes.fromhex(channel_secret), bytes.fromhex(epoch_secret), info).hex()


def invite_part(n: int, event_id: str) -> str:
    """The channel part of an invite channel's key id: ``i<m>.<CHANNEL_KEY_EVT id>``."""
    return f"i{n}.{event_id}"


def channel_key_id(epoch_key_id: str, part: str) -> str:
    """The enc.key_id of a private channel's messages: ``<circle epoch key id>/<part>``."""
    return f"{epoch_key_id}/{part}"


def parse_channel_key_id(key_id: object) -> tuple[str, str] | None:
    """(circle epoch key id, channel part) of a private channel's key id; None if it is
    not one (a circle epoch's own key id is not)."""
    if not isinstance(key_id, str) or len(key_id) > MAX_CHANNEL_KEY_ID_LEN:
        return None
    epoch, slash, part = key_id.partition("/")
    if not slash or parse_key_id(epoch) is None:
        return None
    match = _PART_RE.fullmatch(part)
    if match is None or (match[1] is not None and int(match[1]) > MAX_EPOCH):
        return None
    return epoch, part


def epoch_of_key_id(key_id: str) -> str:
    """The circle epoch key id a key id is under (itself for a circle epoch's)."""
    return key_id.partition("/")[0]


def channel_wrap_context(circle_id: str, channel_id: str, event_id: str, node_id: str) -> str:
    """What a channel epoch's wrap is bound to: the circle, channel, CHANNEL_KEY_EVT, member."""
    return f"{circle_id}|{channel_id}|{event_id}|{node_id}"
