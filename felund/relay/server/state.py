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
- Client address: the TCP peer, or, when the peer is a proxy the operator
  trusts (``trusted_proxies``, none by default: a header anyone can send
  names nobody), its ``X-Real-IP``, else the last ``X-Forwarded-For`` hop
  that is not a trusted proxy itself. Budgets and ``observed_host`` use it.
- Budgets (``felund.relay.server.limits``): a verified signed request pays
  from its signing key's budget (``spend_nonce``), any other from its
  address's (the middleware in ``app``); messages are paid by the same payer
  (``pay``).
"""

from __future__ import annotations

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
    check_fresh,
    client_key,
    key_id,
    retry_after,
    signed_request,
    verifying_key,
)
from felund.relay.protocol import (
    EPOCH_ENDED,
    EPOCH_KEY_REQUIRED,
    INVALID_SIGNATURE,
    MAX_BODY_BYTES,
    NONCE_REPLAY,
    RATE_LIMITED,
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
from felund.relay.server.asyncstore import AsyncStore
from felund.relay.server.connections import Arrivals
from felund.relay.server.hub import Hub
from felund.relay.server.ice import IceServer
from felund.relay.server.limits import (
    ADDRESS_BUDGET,
    KEY_BUDGET,
    UNVERIFIED_RATE,
    WEB_FILES_RATE,
    Budget,
    Limits,
    Payer,
    Rate,
    Unit,
)
from felund.relay.server.recent import Recent
from felund.relay.server.store import Realm

JSON_TYPE = "application/json"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """What the operator sets (``services.relay_server`` maps its arguments here)."""

    require_signatures: bool = False
    per_key: Budget = KEY_BUDGET  # a verified signed request's signing key pays
    per_address: Budget = ADDRESS_BUDGET  # any other request's client address pays
    unverified: Rate = UNVERIFIED_RATE  # signatures that do not verify, per address
    web_files: Rate = WEB_FILES_RATE  # requests for the web app's files, per address
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Real-IP / X-Forwarded-For is believed
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
    limits: Limits = field(init=False)
    signal_window: SlidingWindow = field(init=False)
    sockets: dict[web.WebSocketResponse, web.Request] = field(default_factory=dict)
    arrivals: Arrivals = field(default_factory=Arrivals)  # connections yet to send a request
    ws_clients: Counter[str] = field(default_factory=Counter)
    recent_keys: Recent[str, list[str]] = field(default_factory=Recent)  # by node_id
    recent_realms: Recent[str | None, Realm] = field(default_factory=Recent)  # by key id

    def keys_changed(self, circle_hint: str | None = None) -> None:
        """Forget the keys and realms read lately of a circle (or all): one changed here."""
        for recent in (self.recent_keys, self.recent_realms):
            if circle_hint is None:
                recent.clear()
            else:
                recent.forget(circle_hint)

    async def signing_keys(
        self, circle_hint: str, node: str, *, fresh: bool = False
    ) -> tuple[list[str], bool]:
        """The keys a signed call of ``node`` is checked against (see ``authenticate``),
        as read within the last second unless ``fresh``; whether they were kept."""
        now = time.monotonic()
        keys = None if fresh else self.recent_keys.get(circle_hint, node, now)
        if keys is not None:
            return keys, True
        keys = await self.store.read(
            self.store.store.signing_keys, circle_hint, node, MAX_KEYS_TRIED
        )
        if keys:  # none yet: a registration elsewhere is seen at once
            self.recent_keys.put(circle_hint, node, keys, now)
        return keys, False

    async def room(self, circle_hint: str, key: str | None) -> tuple[str, Realm]:
        """Where a circle's messages, signals and feed are kept for a call signed with
        ``key`` (None: unsigned), and where its realm stands: the circle_hint, or under
        ``require_signatures``, where every such call is signed, its realm's lineage (the
        hint and the first key of the lineage), so that a key of one's own reaches nobody
        else's and a re-keyed circle's realms share one room."""
        now = time.monotonic()
        kid = None if key is None else key_id(key)
        realm = self.recent_realms.get(circle_hint, kid, now)
        if realm is None:
            realm = await self.store.read(self.store.store.realm, circle_hint, kid)
            self.recent_realms.put(circle_hint, kid, realm, now)
        if not self.config.require_signatures or key is None:
            return circle_hint, realm
        return f"{circle_hint}:{realm.room}", realm  # ":" is never in a circle_hint

    def __post_init__(self) -> None:
        self.hub = Hub(self.config.ws_queue_bytes, self.config.send_budget_bytes)
        budget = self.hub.budget
        m.SEND_QUEUED_BYTES.set_function(lambda: budget.used)
        cfg = self.config
        self.limits = Limits.of(cfg.per_key, cfg.per_address, cfg.unverified, cfg.web_files)
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


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in proxies)


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind a trusted proxy, the one it reports."""
    proxies = request.app[RELAY].config.trusted_proxies
    return named_client(request.remote or "", request.headers, proxies)


def named_client(peer: str, headers: Mapping[str, str], proxies: tuple[Network, ...]) -> str:
    """``peer``, or if it is one of ``proxies``, the client its headers name."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    real = _address(headers.get("X-Real-IP", ""))
    if real is not None:
        return real
    # Each proxy appends the address it heard from: the last hop not a proxy of ours is
    # the client (the ones before it are the client's to write, and worth nothing).
    for hop in reversed(headers.get("X-Forwarded-For", "").split(",")):
        address = _address(hop)
        if address is None:
            break
        if not _trusted(address, proxies):
            return address
    return peer


def pay(
    request: web.Request, relay: Relay, payer: Payer, who: str, costs: dict[Unit, float]
) -> None:
    """Spend a request's costs from ``who``'s budget, and make ``who`` its payer
    (RATE_LIMITED, with Retry-After, if the budget cannot cover them now)."""
    limits, now = relay.limits, time.monotonic()
    if payer == "key":
        address = client_key(request["client"])
        payers = [(limits.key, who, "key"), (limits.keys_of_address, address, "keys_of_address")]
    else:
        payers = [(limits.address, who, "address")]
    for budgets, name, label in payers:
        wait, unit = budgets.wait(name, now, costs)
        if unit is not None:
            m.LIMITED.labels(label, unit).inc()
            whose = {
                "key": "signing key",
                "keys_of_address": "address's signing keys",
                "address": "address",
            }[label]
            raise ApiError(RATE_LIMITED, f"too many {unit} from this {whose}", retry_after(wait))
    for budgets, name, _ in payers:
        budgets.spend(name, now, costs)
    request["payer"] = (payer, who)


def pay_messages(request: web.Request, relay: Relay, count: int) -> None:
    """Spend ``count`` messages from the budget that paid for the request."""
    payer, who = request["payer"]
    pay(request, relay, payer, who, {"messages": count})


def pay_unsigned(request: web.Request, relay: Relay, size: int) -> None:
    """Spend a request from its client address's budget."""
    who = client_key(request["client"])
    pay(request, relay, "address", who, {"requests": 1, "bytes": size})


def pay_verified(request: web.Request, relay: Relay, key: str, body: bytes) -> None:
    """Charge a request whose signature verified under ``key`` to that key's budget."""
    request["verified"] = True  # a spent budget or a replay is no bad signature
    pay(request, relay, "key", key_id(key), {"requests": 1, "bytes": len(body)})


def nonce_spent(request: web.Request, fresh: bool) -> None:
    """Count a verified request's nonce as recorded: NONCE_REPLAY if it was not fresh."""
    if not fresh:
        m.AUTH.labels("signed", "replay").inc()
        raise ApiError(NONCE_REPLAY, "this nonce was used already")
    request["signed"] = True
    m.AUTH.labels("signed", "ok").inc()


async def spend_nonce(
    request: web.Request, relay: Relay, signed: Signed, key: str, body: bytes
) -> None:
    """Charge a verified request to its signing key's budget and record its nonce
    (NONCE_REPLAY if it was used already)."""
    pay_verified(request, relay, key, body)
    fresh = await relay.store.write(
        relay.store.store.use_nonce, signed.nonce, signed.nonce_expiry(time.time())
    )
    nonce_spent(request, fresh)


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
    defer_nonce: bool = False,
) -> str | None:
    """Apply the signature policy to a request of one circle; the key that verified it.

    With ``defer_nonce`` the nonce is left in ``request["nonce"]`` for the caller to
    record with its own write (one trip to the writer thread, not two; ``nonce_spent``).
    """
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
        keys, kept = await relay.signing_keys(circle_hint, node)
        if not keys:
            if required:
                raise ApiError(
                    INVALID_SIGNATURE,
                    "no signing key is registered for this circle_hint: POST /v1/register first",
                )
            m.AUTH.labels("signed", "unverifiable").inc()
            pay_unsigned(request, relay, len(body))
            return None
        key = verifying_key(signed, keys, request.method, path, body)
        if key is None and kept:  # perhaps under a key registered since (another instance)
            keys, _ = await relay.signing_keys(circle_hint, node, fresh=True)
            key = verifying_key(signed, keys, request.method, path, body)
        if key is None:
            raise ApiError(
                INVALID_SIGNATURE, "the signature does not verify under the circle's key"
            )
        if defer_nonce:
            pay_verified(request, relay, key, body)
            request["nonce"] = signed
        else:
            await spend_nonce(request, relay, signed, key, body)
    except ApiError as exc:
        if exc.code != NONCE_REPLAY:
            m.AUTH.labels(
                "signed" if exc.code != SIGNATURE_REQUIRED else "unsigned", "refused"
            ).inc()
        raise
    return key
