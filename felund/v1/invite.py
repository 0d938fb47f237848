"""Invite codes of the felund v1 wire format: ``felund1.`` + base64url(JSON)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from felund.errors import InviteError
from felund.trust.wrap import MAX_EPOCH
from felund.v1.ids import CIRCLE_ID_LEN, MSG_ID_LEN, SECRET_HEX_LEN, is_hex

INVITE_PREFIX = "felund1."
INVITE_VERSION = 1
# A real code is ~150 chars; the cap keeps a pasted blob from reaching the decoders.
MAX_INVITE_LEN = 4096
MAX_PEER_LEN = 1024

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_ANY_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}(%[A-Za-z0-9_.-]{1,32})?\]")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_URL_PREFIXES = ("http://", "https://", "//")
# A code of epoch n > 0 names its circle and epoch: its secret derives neither.
_EPOCH_KEYS = ("circle_id", "epoch", "epoch_id")


@dataclass(frozen=True, slots=True)
class Invite:
    """A decoded invite: the circle secret and an address to reach the circle; for a code
    of an epoch after a removal, the circle, the epoch and its id (else "", 0, "")."""

    secret: str
    peer: str
    circle_id: str = ""
    epoch: int = 0
    epoch_id: str = ""


def is_tcp_peer(peer: str) -> bool:
    """Whether ``peer`` is a valid ``host:port`` (port 1-65535)."""
    host, sep, port = peer.rpartition(":")
    if not sep or _HOST_RE.fullmatch(host) is None or _PORT_RE.fullmatch(port) is None:
        return False
    return 1 <= int(port) <= 65535


def _is_url_peer(peer: str) -> bool:
    lowered = peer.lower()
    for prefix in _URL_PREFIXES:
        if lowered.startswith(prefix):
            rest = peer[len(prefix) :]
            # The peer ends up in HTTP requests and logs: no spaces or control chars.
            return (
                bool(rest) and not rest.startswith("/") and rest.isprintable() and " " not in rest
            )
    return False


def _peer_problem(peer: str) -> str | None:
    if peer == "":
        return None
    if len(peer) > MAX_PEER_LEN:
        return "invite peer address is too long"
    if _is_url_peer(peer) or is_tcp_peer(peer):
        return None
    return "invite peer must be host:port (port 1-65535) or an http(s):// relay URL"


def _epoch_problem(data: dict[str, object]) -> str | None:
    """What is wrong with the epoch part of an invite (all of _EPOCH_KEYS, or none)."""
    present = [k for k in _EPOCH_KEYS if k in data]
    if not present:
        return None
    if len(present) != len(_EPOCH_KEYS):
        return "invite names an epoch but lacks its circle_id, epoch or epoch_id"
    epoch = data["epoch"]
    # bool is an int subclass: True must not pass for epoch 1.
    if type(epoch) is not int or not 1 <= epoch <= MAX_EPOCH:
        return f"invite epoch must be a whole number from 1 to {MAX_EPOCH}"
    if not is_hex(data["circle_id"], CIRCLE_ID_LEN):
        return f"invite circle_id must be {CIRCLE_ID_LEN} lowercase hex characters"
    if not is_hex(data["epoch_id"], MSG_ID_LEN):
        return f"invite epoch_id must be {MSG_ID_LEN} lowercase hex characters"
    return None


def encode_invite(
    secret_hex: str, peer: str, *, circle_id: str = "", epoch: int = 0, epoch_id: str = ""
) -> str:
    """Return the invite code for a secret and peer, and for epoch n > 0 its circle and
    epoch id (the v1 form without); ValueError if any is invalid."""
    if len(secret_hex) != SECRET_HEX_LEN or _ANY_HEX_RE.fullmatch(secret_hex) is None:
        raise ValueError("circle secret must be 64 hex characters")
    problem = _peer_problem(peer)
    if problem is not None:
        raise ValueError(problem)
    data: dict[str, object] = {"v": INVITE_VERSION, "secret": secret_hex.lower(), "peer": peer}
    if (circle_id, epoch, epoch_id) != ("", 0, ""):
        data |= {"circle_id": circle_id, "epoch": epoch, "epoch_id": epoch_id}
        problem = _epoch_problem(data)
        if problem is not None:
            raise ValueError(problem)
    payload = json.dumps(data, separators=(",", ":"))
    body = base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")
    return INVITE_PREFIX + body


def decode_invite(code: str) -> Invite:
    """Decode an invite code; raises InviteError with a human-readable reason."""
    if not isinstance(code, str):
        raise InviteError("invite code must be text")
    code = code.strip()
    if len(code) > MAX_INVITE_LEN:
        raise InviteError("invite code is too long")
    if not code.startswith(INVITE_PREFIX):
        raise InviteError("not a felund invite code (it must start with 'felund1.')")
    body = code[len(INVITE_PREFIX) :]
    if _B64URL_RE.fullmatch(body) is None:
        raise InviteError("invite code is damaged (bad base64)")
    body = body.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InviteError("invite code is damaged (bad base64)") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InviteError("invite code is damaged (bad JSON)") from None
    if not isinstance(data, dict):
        raise InviteError("invite code is damaged (not a JSON object)")
    version = data.get("v")
    # bool is an int subclass: True must not pass for version 1.
    if type(version) is not int or version != INVITE_VERSION:
        raise InviteError("unsupported invite version (only v=1 is understood)")
    secret = data.get("secret")
    if not isinstance(secret, str) or secret == "":
        raise InviteError("invite has no circle secret")
    if _ANY_HEX_RE.fullmatch(secret) is None:
        raise InviteError("invite secret is not hex")
    peer = data.get("peer", "")
    if not isinstance(peer, str):
        raise InviteError("invite peer must be text")
    problem = _peer_problem(peer)
    if problem is not None:
        raise InviteError(problem)
    # Checked after the peer so that each rejection reports its own cause; a
    # shorter secret would make a circle guessable, so it is never accepted.
    if len(secret) != SECRET_HEX_LEN:
        raise InviteError("invite secret must be 64 hex characters")
    problem = _epoch_problem(data)
    if problem is not None:
        raise InviteError(problem)
    if "epoch" not in data:
        return Invite(secret=secret.lower(), peer=peer)
    return Invite(secret.lower(), peer, data["circle_id"], data["epoch"], data["epoch_id"])
