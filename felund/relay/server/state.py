"""What every relay handler shares: the operator's config, the serving state, answers,
the client's address and the signature policy.

- Signature policy (``authenticate``): a request that carries a signature
  is verified against the key pinned for its circle_hint at the circle's
  first registration, within ±300 s, with a nonce never used before (the
  ledger is the store's). A call that must be signed and is not gets
  SIGNATURE_REQUIRED. A signed call for a circle with no pinned key yet
  cannot be verified: refused where a signature is required, else handled
  as the unsigned call it could have been.
- Client address: the TCP peer, or, when the peer is a proxy on this
  machine (a loopback address), its ``X-Real-IP`` (else the last
  ``X-Forwarded-For`` hop). Rate limits and ``observed_host`` use it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from felund.relay.auth import (
    Signed,
    SlidingWindow,
    TokenBuckets,
    check_fresh,
    check_signature,
    signed_request,
)
from felund.relay.protocol import (
    INVALID_SIGNATURE,
    MAX_BODY_BYTES,
    NONCE_REPLAY,
    RETENTION_S,
    SIGNAL_RATE,
    SIGNAL_WINDOW_S,
    SIGNATURE_REQUIRED,
    WS_PING_S,
    ApiError,
)
from felund.relay.server import metrics as m
from felund.relay.server.hub import Hub
from felund.relay.server.store import AsyncStore

JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """What the operator sets (``services.relay_server`` maps its arguments here)."""

    require_signatures: bool = False
    rate_per_s: float = 50.0  # requests per client address; 0 turns the limit off
    rate_burst: float = 200.0
    max_body_bytes: int = MAX_BODY_BYTES
    ws_ping_s: float = WS_PING_S
    ws_per_client: int = 32
    ws_total: int = 10_000
    ws_queue_bytes: int = 2 * 1024 * 1024  # bytes one feed connection may fall behind
    ws_backlog_bytes: int = 1024 * 1024  # at most this much backlog for a new feed connection
    send_budget_bytes: int = 128 * 1024 * 1024  # bytes queued for every feed connection together
    send_timeout_s: float = 20.0  # a feed client that takes nothing for this long is dropped
    header_timeout_s: float = 15.0  # to send a request's headers (and idle keep-alive)
    body_timeout_s: float = 30.0  # to send a request's whole body
    max_connections: int = 4096  # open HTTP and WebSocket connections
    retention_s: int = RETENTION_S
    purge_interval_s: float = 60.0
    stats_interval_s: float = 15.0
    serve_web: bool = True  # the browser client (felund/web/) at /


@dataclass
class Relay:
    """The state of one serving relay."""

    config: RelayConfig
    store: AsyncStore
    log: structlog.stdlib.BoundLogger
    hub: Hub = field(init=False)
    buckets: TokenBuckets = field(init=False)
    signal_window: SlidingWindow = field(init=False)
    sockets: dict[web.WebSocketResponse, web.Request] = field(default_factory=dict)
    ws_clients: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.hub = Hub(self.config.ws_queue_bytes, self.config.send_budget_bytes)
        budget = self.hub.budget
        m.SEND_QUEUED_BYTES.set_function(lambda: budget.used)
        self.buckets = TokenBuckets(self.config.rate_per_s, self.config.rate_burst)
        self.signal_window = SlidingWindow(SIGNAL_RATE, SIGNAL_WINDOW_S)


RELAY = web.AppKey("relay", Relay)


def json_response(data: Mapping[str, Any], status: int = 200) -> web.Response:
    """A compact JSON answer."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=JSON_TYPE, charset="utf-8")


def error_response(exc: ApiError) -> web.Response:
    """``{"ok":false,"code","message"}``, with Retry-After when the error has one."""
    response = json_response(exc.body(), exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@functools.lru_cache(maxsize=1024)
def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def client_address(request: web.Request) -> str:
    """The client's address; behind a proxy on this machine, the one it reports."""
    peer = request.remote or ""
    if _is_loopback(peer):
        real = request.headers.get("X-Real-IP", "").strip()
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        for candidate in (real, forwarded):
            if candidate:
                with contextlib.suppress(ValueError):
                    return str(ipaddress.ip_address(candidate))
    return peer


async def verify_signed(
    request: web.Request,
    relay: Relay,
    signed: Signed,
    *,
    key: str,
    path: str,
    body: bytes,
) -> None:
    """Check ``signed`` under ``key``, then spend its nonce (NONCE_REPLAY if it was spent)."""
    check_signature(signed, key, request.method, path, body)
    if not await relay.store.write(
        relay.store.store.use_nonce, signed.nonce, signed.nonce_expiry(time.time())
    ):
        m.AUTH.labels("signed", "replay").inc()
        raise ApiError(NONCE_REPLAY, "this nonce was used already")
    request["signed"] = True
    m.AUTH.labels("signed", "ok").inc()


async def authenticate(
    request: web.Request,
    relay: Relay,
    circle_hint: str,
    path: str,
    body: bytes,
    *,
    required: bool,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Apply the signature policy to a request of one circle; whether it was verified."""
    request["circle_hint"] = circle_hint
    try:
        signed = signed_request(request.headers if headers is None else headers)
        if signed is None:
            if required:
                raise ApiError(SIGNATURE_REQUIRED, "this call must be signed (X-Felund-Signature)")
            m.AUTH.labels("unsigned", "accepted").inc()
            return False
        check_fresh(signed, time.time())
        key = await relay.store.read(relay.store.store.pinned_key, circle_hint)
        if key is None:
            if required:
                raise ApiError(
                    INVALID_SIGNATURE,
                    "no signing key is pinned for this circle_hint: POST /v1/register first",
                )
            m.AUTH.labels("signed", "unverifiable").inc()
            return False
        await verify_signed(request, relay, signed, key=key, path=path, body=body)
    except ApiError as exc:
        if exc.code != NONCE_REPLAY:
            m.AUTH.labels(
                "signed" if exc.code != SIGNATURE_REQUIRED else "unsigned", "refused"
            ).inc()
        raise
    return True
