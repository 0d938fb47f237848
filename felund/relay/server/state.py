"""What every relay handler shares: the operator's config, the serving state, answers,
the client's address and the signature policy.

- Signing keys, and why nobody can squat a circle: every member derives
  the same signing key from the circle secret (HMAC(secret, "api-v1")),
  but the relay knows only the circle_hint, a hash of a hash of that
  secret, so it cannot tell the members' key from one an outsider made
  up. Pinning the first key registered for a circle_hint let an outsider
  who learned the hint register first and lock the members out. So the
  relay never chooses: a registration is verified with the signing_key it
  carries (which proves its sender holds that key, nothing more), and
  each key registered for a circle_hint is a circle of its own, a
  *realm*: peers (and, under ``require_signatures``, messages, signals
  and the feed, see ``Relay.room``) are only ever shown to requests
  signed with the same key. An outsider's key reaches only the
  outsider's own realm; the members' key is the members' whoever came
  first. The keys are kept per (circle_hint, node_id), at most
  ``MAX_NODE_KEYS`` a node, and forgotten after the retention unused.
- Signature policy (``authenticate``): a request that carries a signature
  is verified, within ±300 s and with a nonce never used before (the
  ledger is the store's), against the keys its node (``X-Felund-Node``,
  or the feed's ``node_id``) registered for the circle_hint, else the
  circle_hint's most recently used keys (at most ``MAX_KEYS_TRIED``); the
  key that verifies names the request's realm. A call that must be signed
  and is not gets SIGNATURE_REQUIRED. A signed call for a circle_hint
  with no key registered cannot be verified: refused where a signature is
  required, else handled as the unsigned call it could have been.
- Successions (a circle re-keyed when a member was removed): every member
  derives the new epoch's signing key from its secret, a new realm. A
  registration that ``succeeds`` an old realm proves it holds the old key
  too (an HMAC under it of the new key's id); then the new realm shares the
  old one's room (its lineage's: messages, signals, feed) and the old realm
  has *ended*: its key still reads (a lagging member catches up) but no
  longer posts messages or signals (EPOCH_ENDED), and an unsigned post to a
  room of a re-keyed circle_hint is refused too (EPOCH_KEY_REQUIRED), with
  ``require_signatures`` or not. The relay cannot tell a moderator from any
  other holder of the old key: a removed member may make a successor realm
  of its own, which ends nobody else's and whose posts every member's store
  refuses. Without ``require_signatures`` a key that is no realm of the
  lineage (an outsider's) still posts to the circle_hint's one room, as any
  unsigned post could before; its messages are refused by the stores.
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

from felund.errors import ApiError
from felund.relay.auth import (
    HEADER_NODE,
    MAX_KEYS_TRIED,
    Signed,
    SlidingWindow,
    TokenBuckets,
    check_fresh,
    key_id,
    signed_request,
    verifying_key,
)
from felund.relay.protocol import (
    EPOCH_ENDED,
    EPOCH_KEY_REQUIRED,
    INVALID_SIGNATURE,
    MAX_BODY_BYTES,
    NONCE_REPLAY,
    RETENTION_S,
    SEND_BUDGET_BYTES,
    SIGNAL_RATE,
    SIGNAL_WINDOW_S,
    SIGNATURE_REQUIRED,
    WS_BACKLOG_BYTES,
    WS_PING_S,
    WS_QUEUE_BYTES,
    header_node_id,
    http_status,
)
from felund.relay.server import metrics as m
from felund.relay.server.connections import Arrivals
from felund.relay.server.hub import Hub
from felund.relay.server.ice import IceServer
from felund.relay.server.store import AsyncStore, Realm

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
    ws_queue_bytes: int = WS_QUEUE_BYTES
    ws_backlog_bytes: int = WS_BACKLOG_BYTES
    send_budget_bytes: int = SEND_BUDGET_BYTES
    send_timeout_s: float = 20.0  # a feed client that takes nothing for this long is dropped
    header_timeout_s: float = 15.0  # to send a request's headers (and idle keep-alive)
    body_timeout_s: float = 30.0  # to send a request's whole body
    max_connections: int = 4096  # open HTTP and WebSocket connections
    retention_s: int = RETENTION_S
    purge_interval_s: float = 60.0
    stats_interval_s: float = 15.0
    serve_web: bool = True  # the browser client (felund/web/) at /
    ice_servers: tuple[IceServer, ...] = ()  # GET /v1/ice; none: no outside address


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
    arrivals: Arrivals = field(default_factory=Arrivals)  # connections yet to send a request
    ws_clients: Counter[str] = field(default_factory=Counter)

    async def room(self, circle_hint: str, key: str | None) -> tuple[str, Realm]:
        """Where a circle's messages, signals and feed are kept for a call signed with
        ``key`` (None: unsigned), and where its realm stands: the circle_hint, or under
        ``require_signatures``, where every such call is signed, its realm's lineage (the
        hint and the first key of the lineage), so that a key of one's own reaches nobody
        else's and a re-keyed circle's realms share one room."""
        realm = await self.store.read(
            self.store.store.realm, circle_hint, None if key is None else key_id(key)
        )
        if not self.config.require_signatures or key is None:
            return circle_hint, realm
        return f"{circle_hint}:{realm.room}", realm  # ":" is never in a circle_hint

    def __post_init__(self) -> None:
        self.hub = Hub(self.config.ws_queue_bytes, self.config.send_budget_bytes)
        budget = self.hub.budget
        m.SEND_QUEUED_BYTES.set_function(lambda: budget.used)
        self.buckets = TokenBuckets(self.config.rate_per_s, self.config.rate_burst)
        self.signal_window = SlidingWindow(SIGNAL_RATE, SIGNAL_WINDOW_S)


RELAY = web.AppKey("relay", Relay)


def may_post(realm: Realm, key: str | None) -> None:
    """Refuse a post (message or signal) of an ended realm, or an unsigned one to a room
    of a re-keyed circle (see "Successions")."""
    if realm.ended:
        raise ApiError(
            EPOCH_ENDED,
            "this key's epoch has ended: the circle has a new key since a member was removed",
        )
    if key is None and realm.rekeyed:
        raise ApiError(
            EPOCH_KEY_REQUIRED,
            "this circle has a new key since a member was removed: posts must be signed with it",
        )


def json_body(data: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Mapping[str, Any], status: int = 200) -> web.Response:
    """A compact JSON answer."""
    return web.Response(
        body=json_body(data), status=status, content_type=JSON_TYPE, charset="utf-8"
    )


def error_response(exc: ApiError) -> web.Response:
    """``{"ok":false,"code","message"}``, with Retry-After when the error has one."""
    response = json_response(exc.body(), http_status(exc.code))
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


async def spend_nonce(request: web.Request, relay: Relay, signed: Signed) -> None:
    """Record a verified request's nonce (NONCE_REPLAY if it was used already)."""
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
    node_id: str = "",
) -> str | None:
    """Apply the signature policy to a request of one circle; the key that verified it."""
    request["circle_hint"] = circle_hint
    try:
        signed = signed_request(request.headers if headers is None else headers)
        if signed is None:
            if required:
                raise ApiError(SIGNATURE_REQUIRED, "this call must be signed (X-Felund-Signature)")
            m.AUTH.labels("unsigned", "accepted").inc()
            return None
        check_fresh(signed, time.time())
        node = node_id or header_node_id(request.headers.get(HEADER_NODE))
        keys = await relay.store.read(
            relay.store.store.signing_keys, circle_hint, node, MAX_KEYS_TRIED
        )
        if not keys:
            if required:
                raise ApiError(
                    INVALID_SIGNATURE,
                    "no signing key is registered for this circle_hint: POST /v1/register first",
                )
            m.AUTH.labels("signed", "unverifiable").inc()
            return None
        key = verifying_key(signed, keys, request.method, path, body)
        if key is None:
            raise ApiError(
                INVALID_SIGNATURE, "the signature does not verify under the circle's key"
            )
        await spend_nonce(request, relay, signed)
    except ApiError as exc:
        if exc.code != NONCE_REPLAY:
            m.AUTH.labels(
                "signed" if exc.code != SIGNATURE_REQUIRED else "unsigned", "refused"
            ).inc()
        raise
    return key
