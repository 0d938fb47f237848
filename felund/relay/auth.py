"""Request authentication and rate limits of the relay (sans-IO: the clock is an argument).

- ``signed_request`` reads the ``X-Felund-*`` headers of a request: none of
  them means an unsigned request; some but not all is a bad signature.
- ``check_fresh`` and ``verifying_key`` apply the spec's policy: a
  timestamp within ±300 s, an HMAC under a signing key registered for the
  circle (see "Signing keys" in ``felund.relay.server.state``). The nonce
  ledger (one use per nonce) lives in the store, so that it survives a
  restart and is shared by every instance in front of one database.
- ``SlidingWindow`` (signalling posts per node) keeps a bounded number of
  keys (the budgets per client are ``felund.relay.server.limits``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from felund.errors import ApiError
from felund.relay.protocol import (
    EXPIRED_TIMESTAMP,
    INVALID_SIGNATURE,
    TIMESTAMP_WINDOW_S,
    invalid,
)
from felund.v1.crypto import verify_api_signature

HEADER_NODE = "X-Felund-Node"
HEADER_TS = "X-Felund-Ts"
HEADER_NONCE = "X-Felund-Nonce"
HEADER_SIGNATURE = "X-Felund-Signature"

# Signing keys tried on one request: those its node registered (one, unless a
# client changed its secret), else the circle_hint's most recently used ones.
MAX_KEYS_TRIED = 8

_NONCE_RE = re.compile(r"[0-9a-fA-F]{16,64}")
_TS_RE = re.compile(r"[0-9]{1,12}")
_SIG_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Signed:
    """The signature headers of one request."""

    ts: int
    nonce: str
    signature: str

    def nonce_expiry(self, now: float) -> int:
        """Until when the nonce must be remembered: as long as its timestamp passes."""
        return max(self.ts + TIMESTAMP_WINDOW_S, int(now)) + 1


def signed_request(headers: Mapping[str, str]) -> Signed | None:
    """The request's signature headers, None if it carries none of them.

    ``headers`` must look names up case-insensitively (aiohttp's do).
    """
    ts = headers.get(HEADER_TS)
    nonce = headers.get(HEADER_NONCE)
    signature = headers.get(HEADER_SIGNATURE)
    if ts is None and nonce is None and signature is None:
        return None
    if ts is None or nonce is None or signature is None:
        raise ApiError(
            INVALID_SIGNATURE,
            f"a signed request carries {HEADER_TS}, {HEADER_NONCE} and {HEADER_SIGNATURE}",
        )
    if _TS_RE.fullmatch(ts) is None:
        raise ApiError(EXPIRED_TIMESTAMP, f"{HEADER_TS} must be Unix seconds")
    if _NONCE_RE.fullmatch(nonce) is None:
        raise invalid(f"{HEADER_NONCE} must be 16 to 64 hex characters (32 by the spec)")
    if _SIG_RE.fullmatch(signature) is None:
        raise ApiError(INVALID_SIGNATURE, f"{HEADER_SIGNATURE} must be 64 hex characters")
    return Signed(int(ts), nonce, signature.lower())


def check_fresh(signed: Signed, now: float) -> None:
    """EXPIRED_TIMESTAMP unless the request was signed within ±300 s of ``now``."""
    if abs(now - signed.ts) > TIMESTAMP_WINDOW_S:
        raise ApiError(
            EXPIRED_TIMESTAMP,
            f"{HEADER_TS} is more than {TIMESTAMP_WINDOW_S} s away from the server's clock "
            f"({int(now)})",
        )


def verifying_key(
    signed: Signed, keys: list[str], method: str, path: str, body: bytes
) -> str | None:
    """The first of ``keys`` (at most ``MAX_KEYS_TRIED``) under which ``signed`` signs this
    request, or None."""
    for key in keys[:MAX_KEYS_TRIED]:
        if verify_api_signature(
            key, method, path, body, ts=signed.ts, nonce=signed.nonce, signature=signed.signature
        ):
            return key
    return None


def key_id(signing_key: str) -> str:
    """A name for a signing key that does not reveal it: 32 hex of its SHA-256."""
    return hashlib.sha256(bytes.fromhex(signing_key)).hexdigest()[:32]


def succession_proof(old_key: str, new_key_id: str) -> str:
    """The proof that a registration's key succeeds ``old_key`` (a circle re-keyed): hex
    HMAC-SHA256 under the old signing key's bytes of "felund-succession-v1|" + new key id."""
    message = f"felund-succession-v1|{new_key_id}".encode()
    return hmac.new(bytes.fromhex(old_key), message, hashlib.sha256).hexdigest()


def succeeds_field(new_key: str, old_key: str) -> dict[str, str]:
    """A registration's ``succeeds``: the old realm's key id and the proof."""
    return {"key_id": key_id(old_key), "proof": succession_proof(old_key, key_id(new_key))}


def verify_succession(old_key: str, new_key: str, proof: str) -> bool:
    """Whether ``proof`` shows the holder of ``old_key`` made ``new_key`` its successor."""
    return hmac.compare_digest(succession_proof(old_key, key_id(new_key)), proof)


@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The rate-limit key of a client address: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def retry_after(seconds: float) -> int:
    """A Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Count one event: 0.0 if allowed, else the seconds until it would be."""
        events = self._events.pop(key, None) or deque()
        while events and events[0] <= now - self.window_s:
            events.popleft()
        wait = 0.0
        if len(events) >= self.limit:
            wait = events[0] + self.window_s - now
        else:
            events.append(now)
        self._events[key] = events
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)
        return wait

    def prune(self, now: float) -> int:
        """Forget keys with no event in the window; how many went."""
        idle = [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.window_s]
        for key in idle:
            del self._events[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._events)
