"""The relay's HTTP API on aiohttp: routes, authentication policy, limits, logs, metrics.

- Serves: ``/v1/health``, ``POST``/``DELETE /v1/register``, ``/v1/peers``,
  ``POST``/``GET /v1/messages``, the ``/v1/relay/ws`` feed, ``POST``/``GET
  /v1/signal`` and ``/metrics``, byte-compatible with the existing relays'
  clients (see the wire spec). Every answer, errors included, carries
  ``Access-Control-Allow-Origin: *``; every error is
  ``{"ok":false,"code","message"}`` (codes in ``felund.relay_protocol``).
- Authentication: a request that carries a signature is verified against
  the key pinned for its circle_hint at the circle's first registration,
  within ±300 s, with a nonce never seen before. Registration, peer lookup
  and unregistration must be signed; message and signalling calls and the
  feed may be unsigned (the existing browser client) unless the operator
  sets ``require_signatures``. A signed message call for a circle that has
  no pinned key yet cannot be verified and is handled as unsigned.
- Limits: body size (413), 50 messages a batch, field lengths, requests per
  client address (token bucket, 429 with Retry-After), 20 signalling posts
  per node per 10 s, WebSocket connections per client and in total.
- Owns: the ``Hub`` of WebSocket subscribers; the database is the store's.
- Logs one line per request (method, path, status, duration, client
  address, circle_hint, error code), never a body, key, signature or
  message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from felund import __version__
from felund import relay_metrics as m
from felund.relay_auth import (
    HEADER_NODE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TS,
    Signed,
    SlidingWindow,
    TokenBuckets,
    check_fresh,
    check_signature,
    client_key,
    retry_after,
    signed_request,
)
from felund.relay_hub import PING, PONG, Hub, Subscriber, chunked_frames
from felund.relay_protocol import (
    DEFAULT_PAGE,
    DEFAULT_PEERS,
    ERROR_CODES,
    INTERNAL,
    INVALID_REQUEST,
    INVALID_SIGNATURE,
    MAX_BODY_BYTES,
    MAX_PAGE,
    MAX_PEERS,
    METHOD_NOT_ALLOWED,
    NONCE_REPLAY,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    RETENTION_S,
    SIGNAL_PAGE,
    SIGNAL_RATE,
    SIGNAL_WINDOW_S,
    SIGNATURE_REQUIRED,
    SIGNING_KEY_MISMATCH,
    UNAVAILABLE,
    WS_BACKLOG_MAX,
    WS_BACKLOG_S,
    WS_MAX_CLIENT_FRAME,
    WS_PING_S,
    ApiError,
    circle_hint_field,
    header_node_id,
    int_param,
    invalid,
    node_id_field,
    parse_json_object,
    parse_message_batch,
    parse_registration,
    parse_signal,
    parse_unregistration,
    session_id_param,
    ws_node_id,
)
from felund.relay_store import AsyncStore

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Retry-After",
}
_PREFLIGHT = {
    **_CORS,
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": (
        f"Content-Type, {HEADER_NODE}, {HEADER_TS}, {HEADER_NONCE}, {HEADER_SIGNATURE}"
    ),
    "Access-Control-Max-Age": "600",
}
_JSON = "application/json"
_HTTP_CODES = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: PAYLOAD_TOO_LARGE}


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
    ws_queue: int = 256  # frames a slow WebSocket client may fall behind
    retention_s: int = RETENTION_S
    purge_interval_s: float = 60.0
    stats_interval_s: float = 15.0


@dataclass
class Relay:
    """The state of one serving relay."""

    config: RelayConfig
    store: AsyncStore
    log: structlog.stdlib.BoundLogger
    hub: Hub = field(init=False)
    buckets: TokenBuckets = field(init=False)
    signal_window: SlidingWindow = field(init=False)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    ws_clients: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.hub = Hub(self.config.ws_queue)
        self.buckets = TokenBuckets(self.config.rate_per_s, self.config.rate_burst)
        self.signal_window = SlidingWindow(SIGNAL_RATE, SIGNAL_WINDOW_S)


RELAY = web.AppKey("relay", Relay)


# --- answers --------------------------------------------------------------------------
def _json_response(data: Mapping[str, Any], status: int = 200) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=_JSON, charset="utf-8")


def _error_response(exc: ApiError) -> web.Response:
    response = _json_response(exc.body(), exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 413:
        return ApiError(PAYLOAD_TOO_LARGE, "the request body is larger than the relay accepts")
    code = _HTTP_CODES.get(exc.status, INVALID_REQUEST)
    if code == NOT_FOUND:
        return ApiError(NOT_FOUND, "no such endpoint")
    if code == METHOD_NOT_ALLOWED:
        return ApiError(METHOD_NOT_ALLOWED, "this endpoint does not take that method")
    return invalid(exc.reason or "bad request")


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


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


# --- middleware: CORS, errors, rate limit, logs, metrics -------------------------------
@web.middleware
async def relay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request passes here: preflight, limits, JSON errors, CORS, one log line."""
    relay = request.app[RELAY]
    started = time.perf_counter()
    route = _route(request)
    address = client_address(request)
    response: web.StreamResponse
    code = ""
    try:
        if request.method == "OPTIONS":
            response = web.Response(status=204, headers=_PREFLIGHT)
        else:
            if route != "/metrics":
                wait = relay.buckets.take(client_key(address), time.monotonic())
                if wait > 0:
                    raise ApiError(
                        RATE_LIMITED, "too many requests from this address", retry_after(wait)
                    )
            response = await handler(request)
    except ApiError as exc:
        code = exc.code
        response = _error_response(exc)
    except web.HTTPException as exc:
        api = _http_error(exc)
        code = api.code
        response = _error_response(api)
    except Exception:
        m.ERRORS.inc()
        relay.log.exception("http.error", method=request.method, path=request.path)
        code = INTERNAL
        response = _error_response(ApiError(INTERNAL, "the relay failed to answer; it is logged"))
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(_CORS)
    elapsed = time.perf_counter() - started
    status = response.status
    if code:
        m.REJECTIONS.labels(code if code in ERROR_CODES else INTERNAL).inc()
    m.REQUESTS.labels(route, request.method, str(status)).inc()
    if not isinstance(response, web.WebSocketResponse):
        m.REQUEST_SECONDS.labels(route).observe(elapsed)
    log = relay.log.debug if route == "/metrics" else relay.log.info
    log(
        "http.request",
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        client=address,
        circle_hint=request.get("circle_hint", ""),
        code=code,
        signed=request.get("signed", False),
    )
    return response


# --- authentication ---------------------------------------------------------------------
async def _verified(
    request: web.Request,
    relay: Relay,
    signed: Signed,
    *,
    key: str,
    path: str,
    body: bytes,
) -> None:
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
        await _verified(request, relay, signed, key=key, path=path, body=body)
    except ApiError as exc:
        if exc.code != NONCE_REPLAY:
            m.AUTH.labels(
                "signed" if exc.code != SIGNATURE_REQUIRED else "unsigned", "refused"
            ).inc()
        raise
    return True


# --- handlers ---------------------------------------------------------------------------
async def on_health(request: web.Request) -> web.StreamResponse:
    """GET /v1/health."""
    return _json_response({"ok": True, "version": __version__, "time": int(time.time())})


async def on_register(request: web.Request) -> web.StreamResponse:
    """POST /v1/register: signed; the first registration of a circle pins its key."""
    relay = request.app[RELAY]
    store = relay.store.store
    body = await request.read()
    reg = parse_registration(parse_json_object(body))
    request["circle_hint"] = reg.circle_hint
    signed = signed_request(request.headers)
    if signed is None:
        raise ApiError(SIGNATURE_REQUIRED, "registration must be signed (X-Felund-Signature)")
    now = int(time.time())
    check_fresh(signed, now)
    pinned = await relay.store.read(store.pinned_key, reg.circle_hint)
    key = pinned or reg.signing_key
    if key is None:
        raise ApiError(INVALID_SIGNATURE, "the first registration of a circle carries signing_key")
    # Against the pinned key once there is one: a key of one's own proves nothing.
    await _verified(request, relay, signed, key=key, path="/register", body=body)
    if pinned is None:
        pinned = await relay.store.write(store.pin_key, reg.circle_hint, key, now)
        if pinned != key:
            raise ApiError(INVALID_SIGNATURE, "another signing key is pinned for this circle_hint")
    elif reg.signing_key is not None and reg.signing_key != pinned:
        raise ApiError(SIGNING_KEY_MISMATCH, "another signing key is pinned for this circle_hint")
    expires_at = await relay.store.write(store.register, reg, now)
    address = client_address(request)
    observed = {"host": address, "family": "ipv6" if ":" in address else "ipv4"}
    return _json_response(
        {
            "ok": True,
            "server_time": now,
            "expires_at": expires_at,
            "observed_host": observed if address else None,
        }
    )


async def on_unregister(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/register: signed."""
    relay = request.app[RELAY]
    body = await request.read()
    hint, node_id = parse_unregistration(parse_json_object(body))
    await authenticate(request, relay, hint, "/register", body, required=True)
    removed = await relay.store.write(relay.store.store.unregister, hint, node_id)
    return _json_response({"ok": True, "removed": removed})


async def on_peers(request: web.Request) -> web.StreamResponse:
    """GET /v1/peers: signed; the caller (X-Felund-Node) is left out."""
    relay = request.app[RELAY]
    hint = circle_hint_field(request.query.get("circle_hint"))
    limit = int_param(request.query, "limit", DEFAULT_PEERS, 1, MAX_PEERS)
    await authenticate(request, relay, hint, "/peers", b"", required=True)
    exclude = header_node_id(request.headers.get(HEADER_NODE))
    peers = await relay.store.read(relay.store.store.peers, hint, exclude, limit, int(time.time()))
    return _json_response(
        {
            "ok": True,
            "peers": [
                {
                    "node_id": p.node_id,
                    "circle_hint": p.circle_hint,
                    "endpoints": p.endpoints,
                    "capabilities": p.capabilities,
                    "observed_at": p.observed_at,
                    "expires_at": p.expires_at,
                }
                for p in peers
            ],
        }
    )


async def on_post_messages(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages: store new messages and push them to the circle's feed."""
    relay = request.app[RELAY]
    body = await request.read()
    obj = parse_json_object(body)
    hint = circle_hint_field(obj.get("circle_hint"))
    await authenticate(
        request, relay, hint, "/messages", body, required=relay.config.require_signatures
    )
    batch = parse_message_batch(obj)
    stored = await relay.store.write(relay.store.store.append, batch)
    now = int(time.time())
    m.MESSAGES_STORED.inc(len(stored))
    m.MESSAGES_DUPLICATE.inc(len(batch.messages) - len(stored))
    if stored:
        poster = header_node_id(request.headers.get(HEADER_NODE))
        pushed = relay.hub.publish(
            hint, poster, [(s.author_node_id, s.payload) for s in stored], now
        )
        m.MESSAGES_SERVED.labels("push").inc(pushed)
    return _json_response({"ok": True, "stored": len(stored), "server_time": now})


async def on_get_messages(request: web.Request) -> web.StreamResponse:
    """GET /v1/messages: by ``since`` (v1, whole stored seconds) or by ``cursor``."""
    relay = request.app[RELAY]
    store = relay.store.store
    query = request.query
    hint = circle_hint_field(query.get("circle_hint"))
    limit = int_param(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    await authenticate(
        request, relay, hint, "/messages", b"", required=relay.config.require_signatures
    )
    if query.get("cursor"):
        cursor = int_param(query, "cursor", 0, 0, 2**62)
        page = await relay.store.read(store.page_after, hint, cursor, limit)
    else:
        since = int_param(query, "since", 0, 0, 2**62)
        page = await relay.store.read(store.page_since, hint, since, limit)
    m.MESSAGES_SERVED.labels("poll").inc(len(page.messages))
    body = (
        f'{{"ok":true,"messages":[{",".join(page.messages)}],'
        f'"server_time":{page.server_time},"next_cursor":{page.next_cursor}}}'
    )
    return web.Response(body=body.encode(), content_type=_JSON, charset="utf-8")


async def on_post_signal(request: web.Request) -> web.StreamResponse:
    """POST /v1/signal: a call signal for one node, 20 per node per 10 s."""
    relay = request.app[RELAY]
    body = await request.read()
    sig = parse_signal(parse_json_object(body))
    await authenticate(
        request, relay, sig.circle_hint, "/signal", body, required=relay.config.require_signatures
    )
    wait = relay.signal_window.take(sig.from_node_id, time.monotonic())
    if wait > 0:
        raise ApiError(
            RATE_LIMITED,
            f"at most {SIGNAL_RATE} signals per node per {SIGNAL_WINDOW_S:g} s",
            retry_after(wait),
        )
    now = int(time.time())
    signal_id = await relay.store.write(relay.store.store.add_signal, sig, now)
    m.SIGNALS.inc()
    return _json_response({"ok": True, "server_time": now, "id": signal_id})


async def on_get_signal(request: web.Request) -> web.StreamResponse:
    """GET /v1/signal: signals for ``to_node_id`` after ``since_id``."""
    relay = request.app[RELAY]
    query = request.query
    to_node = node_id_field(query.get("to_node_id"), "to_node_id")
    since_id = int_param(query, "since_id", 0, 0, 2**62)
    session_id = session_id_param(query.get("session_id"))
    hint = ""
    if query.get("circle_hint") or relay.config.require_signatures:
        hint = circle_hint_field(query.get("circle_hint"))
        await authenticate(
            request, relay, hint, "/signal", b"", required=relay.config.require_signatures
        )
    now = int(time.time())
    signals = await relay.store.read(
        relay.store.store.signals,
        to_node,
        since_id,
        session_id=session_id,
        circle_hint=hint,
        now=now,
        limit=SIGNAL_PAGE,
    )
    return _json_response(
        {
            "ok": True,
            "signals": [
                {
                    "id": s.id,
                    "session_id": s.session_id,
                    "from_node": s.from_node,
                    "to_node": s.to_node,
                    "type": s.type,
                    "payload": s.payload,
                    "created_at": s.created_at,
                }
                for s in signals
            ],
            "server_time": now,
        }
    )


def _ws_signature(request: web.Request) -> Mapping[str, str]:
    """Signature headers, or the same as query parameters (browsers cannot set headers)."""
    if any(h in request.headers for h in (HEADER_TS, HEADER_NONCE, HEADER_SIGNATURE)):
        return request.headers
    names = {"ts": HEADER_TS, "nonce": HEADER_NONCE, "signature": HEADER_SIGNATURE}
    return {header: request.query[q] for q, header in names.items() if q in request.query}


async def on_feed(request: web.Request) -> web.StreamResponse:
    """GET /v1/relay/ws: the circle's messages pushed as they are stored."""
    relay = request.app[RELAY]
    cfg = relay.config
    hint = circle_hint_field(request.query.get("circle_hint"))
    node_id = ws_node_id(request.query.get("node_id"))
    await authenticate(
        request,
        relay,
        hint,
        "/relay/ws",
        b"",
        required=cfg.require_signatures,
        headers=_ws_signature(request),
    )
    client = client_key(client_address(request))
    if len(relay.hub) >= cfg.ws_total:
        raise ApiError(UNAVAILABLE, "the relay has as many feed connections as it takes")
    if relay.ws_clients[client] >= cfg.ws_per_client:
        raise ApiError(RATE_LIMITED, "too many feed connections from this address", 30)
    ws = web.WebSocketResponse(
        heartbeat=None, autoping=True, max_msg_size=WS_MAX_CLIENT_FRAME, compress=False
    )
    await ws.prepare(request)
    sub = relay.hub.subscribe(hint, node_id)
    relay.sockets.add(ws)
    relay.ws_clients[client] += 1
    m.WS_CONNECTIONS.inc()
    pump = asyncio.create_task(_pump(ws, sub, cfg.ws_ping_s))
    reason = "client"
    try:
        now = int(time.time())
        backlog = await relay.store.read(
            relay.store.store.recent, hint, now - WS_BACKLOG_S, WS_BACKLOG_MAX
        )
        m.MESSAGES_SERVED.labels("backlog").inc(len(backlog))
        sub.start(list(chunked_frames(backlog, now)) if backlog else [])
        reason = await _read_client(ws, sub, idle_s=4 * cfg.ws_ping_s)
    except Exception:  # the upgrade is sent: no error answer can follow it
        m.ERRORS.inc()
        relay.log.exception("relay.feed_failed", circle_hint=hint)
        reason = "error"
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        if sub.overflowed:
            reason = "slow"
        relay.hub.unsubscribe(sub)
        relay.sockets.discard(ws)
        relay.ws_clients[client] -= 1
        if relay.ws_clients[client] <= 0:
            del relay.ws_clients[client]
        m.WS_CONNECTIONS.dec()
        m.WS_CLOSED.labels(reason).inc()
        if not ws.closed:
            code = WSCloseCode.TRY_AGAIN_LATER if sub.overflowed else WSCloseCode.GOING_AWAY
            await ws.close(code=code)
    return ws


async def _pump(ws: web.WebSocketResponse, sub: Subscriber, ping_s: float) -> None:
    """Send queued frames, and a PING when the connection has been quiet for ``ping_s``."""
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + ping_s
    while not ws.closed:
        try:
            frame = await asyncio.wait_for(sub.queue.get(), max(0.0, next_ping - loop.time()))
        except TimeoutError:
            frame, next_ping = PING, loop.time() + ping_s
        if sub.overflowed:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
            return
        try:
            await ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            return


async def _read_client(ws: web.WebSocketResponse, sub: Subscriber, idle_s: float) -> str:
    """Answer the client's PINGs until it goes; why it went."""
    while True:
        try:
            msg = await ws.receive(timeout=idle_s)
        except TimeoutError:
            return "idle"
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return "client"
        if msg.type == WSMsgType.ERROR:
            return "error"
        if msg.type != WSMsgType.TEXT:
            continue
        with contextlib.suppress(ValueError, RecursionError):
            frame = json.loads(msg.data)
            if isinstance(frame, dict) and frame.get("t") == "PING":
                sub.offer(PONG)


async def on_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics for Prometheus."""
    return web.Response(body=m.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- upkeep ----------------------------------------------------------------------------
async def purge_once(relay: Relay, chunk: int = 2000) -> None:
    """Apply retention and expiry once, a chunk at a time so writes interleave."""
    store = relay.store.store
    now = int(time.time())
    removed = 0
    while True:
        count = await relay.store.write(store.purge_messages, now - relay.config.retention_s, chunk)
        removed += count
        if count < chunk:
            break
    purged = await relay.store.write(store.purge_expired, now, relay.config.retention_s)
    for kind, count in (
        ("messages", removed),
        ("registrations", purged.presence),
        ("signals", purged.signals),
        ("nonces", purged.nonces),
        ("keys", purged.keys),
    ):
        m.PURGED.labels(kind).inc(count)
    monotonic = time.monotonic()
    relay.buckets.prune(monotonic)
    relay.signal_window.prune(monotonic)
    if removed or purged.keys:
        relay.log.info("relay.purged", messages=removed, keys=purged.keys)


async def refresh_stats(relay: Relay) -> None:
    """Update the gauges of what the store holds."""
    stats = await relay.store.read(relay.store.store.statistics)
    m.STORED_MESSAGES.set(stats.messages)
    m.PINNED_CIRCLES.set(stats.circles)
    m.REGISTRATIONS.set(stats.registrations)
    m.DATABASE_BYTES.set(stats.database_bytes)


async def _every(
    interval_s: float, job: Callable[[Relay], Awaitable[None]], relay: Relay, name: str
) -> None:
    while True:
        try:
            await job(relay)
        except Exception:  # one failed round is logged; the next one runs
            m.ERRORS.inc()
            relay.log.exception("relay.upkeep_failed", job=name)
        await asyncio.sleep(interval_s)


async def _upkeep(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    tasks = [
        asyncio.create_task(_every(relay.config.purge_interval_s, purge_once, relay, "purge")),
        asyncio.create_task(_every(relay.config.stats_interval_s, refresh_stats, relay, "stats")),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close_feeds(app: web.Application) -> None:
    for ws in list(app[RELAY].sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")


def make_app(relay: Relay) -> web.Application:
    """The aiohttp application of a relay."""
    app = web.Application(
        middlewares=[relay_middleware], client_max_size=relay.config.max_body_bytes
    )
    app[RELAY] = relay
    app.cleanup_ctx.append(_upkeep)
    app.on_shutdown.append(_close_feeds)
    r = app.router
    r.add_get("/v1/health", on_health)
    r.add_post("/v1/register", on_register)
    r.add_delete("/v1/register", on_unregister)
    r.add_get("/v1/peers", on_peers)
    r.add_post("/v1/messages", on_post_messages)
    r.add_get("/v1/messages", on_get_messages)
    r.add_get("/v1/relay/ws", on_feed)
    r.add_post("/v1/signal", on_post_signal)
    r.add_get("/v1/signal", on_get_signal)
    r.add_get("/metrics", on_metrics)
    return app
