"""Invite codes of the felund v1 wire format: ``felund1.`` + base64url(JSON)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from felund.errors import InviteError
from felund.v1.ids import SECRET_HEX_LEN

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


@dataclass(frozen=True, slots=True)
class Invite:
    """A decoded invite: the circle secret and an address to reach the circle."""

    secret: str
    peer: str


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


def encode_invite(secret_hex: str, peer: str) -> str:
    """Return the invite code for a secret and peer; ValueError if either is invalid."""
    if len(secret_hex) != SECRET_HEX_LEN or _ANY_HEX_RE.fullmatch(secret_hex) is None:
        raise ValueError("circle secret must be 64 hex characters")
    problem = _peer_problem(peer)
    if problem is not None:
        raise ValueError(problem)
    payload = json.dumps(
        {"v": INVITE_VERSION, "secret": secret_hex.lower(), "peer": peer}, separators=(",", ":")
    )
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
    return Invite(secret=secret.lower(), peer=peer)
