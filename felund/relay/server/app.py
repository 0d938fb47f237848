"""The relay's HTTP API on aiohttp: routes, authentication policy, limits, logs, metrics.

- Serves: ``/v1/health``, ``POST``/``DELETE /v1/register``, ``/v1/peers``,
  ``POST``/``GET /v1/messages``, the ``/v1/relay/ws`` feed, ``POST``/``GET
  /v1/signal``, ``GET /v1/ice`` (the operator's STUN/TURN servers,
  ``felund.relay.server.ice``), ``/metrics`` and the browser client at ``/``
  (``felund.relay.server.static``, unless ``serve_web`` is off), byte-compatible
  with the existing relays' clients (see the wire spec). Every answer, errors included, carries
  ``Access-Control-Allow-Origin: *``; every error is
  ``{"ok":false,"code","message"}`` (codes in ``felund.relay.protocol``).
  Beyond the wire spec, a ``POST /v1/messages`` that stored something answers
  ``after`` and ``cursor`` too, as live feed frames carry them (see ``hub``):
  with them a node's relay-sync moves its pull cursor past its own messages.
- Authentication (``felund.relay.server.state``): registration, peer lookup and
  unregistration must be signed; message and signalling calls and the feed
  may be unsigned (the existing browser client) unless the operator sets
  ``require_signatures``. A registration is signed with the signing key it
  carries; each key of a circle_hint is a realm of its own (peers always,
  messages, signals and the feed under ``require_signatures``), so an
  outsider's key never locks the members out nor lets it in. A registration
  may carry ``succeeds`` (a circle re-keyed): its realm then shares the old
  realm's room, whose key reads on but no longer posts ("Successions" in
  ``felund.relay.server.state``).
- Limits: body size (413), 50 messages a batch, field lengths, budgets of
  requests, messages and bytes per signing key or per client address
  (``felund.relay.server.limits``; 429 with Retry-After), 20 signalling posts
  per node per 10 s, live signals held per to_node_id, per circle and in
  total (429 SIGNALS_FULL; ``felund.relay.protocol``), WebSocket connections
  per client and in total.
- Signals: an unsigned GET reads any node's (the existing browser client
  sends no credentials); a signed one reads only its own node's (X-Felund-Node
  is to_node_id, signed with a key that node registered: NOT_ADDRESSEE).
- Owns: the ``Hub`` of WebSocket subscribers (fed by ``felund.relay.server.feed``);
  the database is the store's.
- Logs one line per request (method, path, status, duration, client
  address, circle_hint, error code), never a body, key, signature or
  message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from felund import __version__
from felund.errors import ApiError
from felund.relay.auth import (
    HEADER_NODE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TS,
    MAX_KEYS_TRIED,
    Signed,
    check_fresh,
    client_key,
    key_id,
    retry_after,
    signed_request,
    verify_succession,
    verifying_key,
)
from felund.relay.protocol import (
    BAD_SUCCESSION,
    DEFAULT_PAGE,
    DEFAULT_PEERS,
    ERROR_CODES,
    INTERNAL,
    INVALID_REQUEST,
    INVALID_SIGNATURE,
    MAX_NODE_KEYS,
    MAX_PAGE,
    MAX_PEERS,
    MAX_REALMS,
    MAX_SIGNALS_PER_CIRCLE,
    MAX_SIGNALS_PER_NODE,
    MAX_SIGNALS_TOTAL,
    METHOD_NOT_ALLOWED,
    MIN_SIGNAL_TTL_S,
    NOT_ADDRESSEE,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    REQUEST_TIMEOUT,
    SIGNAL_PAGE,
    SIGNAL_RATE,
    SIGNAL_WINDOW_S,
    SIGNALS_FULL,
    SIGNATURE_REQUIRED,
    SIGNING_KEY_MISMATCH,
    UNAVAILABLE,
    UNKNOWN_PREDECESSOR,
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
)
from felund.relay.server import metrics as m
from felund.relay.server.feed import close_within, on_feed
from felund.relay.server.pgnotify import feed_across_instances
from felund.relay.server.state import (
    JSON_TYPE,
    RELAY,
    Relay,
    authenticate,
    client_address,
    error_response,
    json_body,
    json_response,
    may_post,
    nonce_spent,
    pay_messages,
    pay_unsigned,
    spend_nonce,
)
from felund.relay.server.static import add_web_routes, is_web_file
from felund.relay.server.store import SignalQueue

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


# The status logged for a request whose client closed the connection before
# the answer (nginx's convention): no answer is sent.
CLIENT_GONE = 499
_HTTP_CODES = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: PAYLOAD_TOO_LARGE}


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 413:
        return ApiError(PAYLOAD_TOO_LARGE, "the request body is larger than the relay accepts")
    code = _HTTP_CODES.get(exc.status, INVALID_REQUEST)
    if code == NOT_FOUND:
        return ApiError(NOT_FOUND, "no such endpoint")
    if code == METHOD_NOT_ALLOWED:
        return ApiError(METHOD_NOT_ALLOWED, "this endpoint does not take that method")
    return invalid(exc.reason or "bad request")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


async def read_body(request: web.Request, timeout_s: float) -> None:
    """Read the whole body within ``timeout_s`` (handlers then get it from memory)."""
    if not request.body_exists:
        return
    if request.content.is_eof():  # all of it came with the headers: nothing to wait for
        await request.read()
        return
    try:
        async with asyncio.timeout(timeout_s):
            await request.read()
    except TimeoutError:
        raise ApiError(
            REQUEST_TIMEOUT, f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    except RuntimeError:  # aiohttp's word for a connection closed here (made room for another)
        if request.transport is not None:
            raise
        raise ConnectionResetError("closed while the body was read") from None


def _log_request(request: web.Request, started: float, *, status: int, code: str) -> None:
    relay = request.app[RELAY]
    route = _route(request)
    elapsed = time.perf_counter() - started
    if code:
        m.REJECTIONS.labels(code if code in ERROR_CODES else INTERNAL).inc()
    m.REQUESTS.labels(route, request.method, str(status)).inc()
    if status != 101:
        m.REQUEST_SECONDS.labels(route).observe(elapsed)
    log = relay.log.debug if route == "/metrics" else relay.log.info
    log(
        "http.request",
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        client=request["client"],
        circle_hint=request.get("circle_hint", ""),
        code=code,
        signed=request.get("signed", False),
    )


def _before_body(request: web.Request, relay: Relay) -> bool:
    """Charge an unsigned request to its address's budget before its body is read, or
    check a signed one's address has a signature that did not verify to spare (the
    signing key pays once it verifies, ``spend_nonce``; one that does not verify is
    charged to ``unverified`` once answered); whether it is signed."""
    if HEADER_SIGNATURE not in request.headers:
        pay_unsigned(request, relay, request.content_length or 0)
        return False
    wait = relay.limits.unverified.wait(client_key(request["client"]), time.monotonic())
    _refuse_if(wait, "unverified", "requests whose signature did not verify")
    return True


def _pay_web_file(request: web.Request, relay: Relay) -> None:
    """Charge a request for the web app's files to its address's ``web_files`` budget."""
    wait = relay.limits.web_files.take(client_key(request["client"]), time.monotonic())
    _refuse_if(wait, "web_files", "requests for the web app's files")


def _refuse_if(wait: float, payer: str, what: str) -> None:
    """RATE_LIMITED, counted for ``payer``, if an address's request must wait ``wait`` s."""
    if wait > 0:
        m.LIMITED.labels(payer, "requests").inc()
        raise ApiError(RATE_LIMITED, f"too many {what} from this address", retry_after(wait))


@web.middleware
async def relay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request passes here: preflight, limits, JSON errors, CORS, one log line."""
    relay = request.app[RELAY]
    started = time.perf_counter()
    request["client"] = client_address(request)  # gone with the connection, if that goes
    response: web.StreamResponse
    code = ""
    try:
        if request.method == "OPTIONS":
            relay.arrivals.served(request.protocol)
            response = web.Response(status=204, headers=_PREFLIGHT)
        else:
            if is_web_file(request):  # the page's own files: not the API's budget
                _pay_web_file(request, relay)
                signed = False
            else:
                signed = _route(request) != "/metrics" and _before_body(request, relay)
            await read_body(request, relay.config.body_timeout_s)
            if not signed and request.content_length is None and request.body_exists:
                # A chunked body's size is known only now: it is paid for after the fact.
                bytes_budget = relay.limits.address.buckets["bytes"]
                size = len(await request.read())
                bytes_budget.spend(client_key(request["client"]), time.monotonic(), size)
            relay.arrivals.served(request.protocol)
            try:
                response = await handler(request)
            finally:
                if signed and "payer" not in request and "verified" not in request:
                    relay.limits.unverified.spend(client_key(request["client"]), time.monotonic())
    except ApiError as exc:
        code = exc.code
        response = error_response(exc)
    except web.HTTPException as exc:
        api = _http_error(exc)
        code = api.code
        response = error_response(api)
    except HttpProcessingError:  # a body the parser refused: a broken chunk, a short length
        code = INVALID_REQUEST
        response = error_response(invalid("the request body is malformed"))
    except ConnectionError:  # the client went away mid-request: this answer goes nowhere
        _log_request(request, started, status=CLIENT_GONE, code="")
        return error_response(invalid("the request was cut off"))
    except Exception:
        m.ERRORS.inc()
        relay.log.exception("http.error", method=request.method, path=request.path)
        code = INTERNAL
        response = error_response(ApiError(INTERNAL, "the relay failed to answer; it is logged"))
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(_CORS)
    _log_request(request, started, status=response.status, code=code)
    if code == REQUEST_TIMEOUT:
        # Answer, then close: aiohttp would otherwise read ("linger" on) the
        # rest of a slow body for another 10 s before closing.
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


async def send_counted(request: web.Request, body: bytes) -> web.StreamResponse:
    """A GET's JSON answer, sent while its bytes count in the relay's send budget.

    The budget is the feeds' (``Hub.budget``): an answer held for a client that
    reads slowly, or not at all, is memory as a frame queued for a feed is, so
    one limit bounds both. An answer that does not fit is refused (UNAVAILABLE,
    503 with Retry-After); one its client takes nothing of for ``send_timeout_s``
    is cut off, as a feed's is.
    """
    relay = request.app[RELAY]
    budget = relay.hub.budget
    if not budget.take(body):
        m.ANSWERS_REFUSED.inc()
        raise ApiError(UNAVAILABLE, "the relay is holding all the answers it can", retry_after(1))
    # Prepared here, so the CORS headers go on now (the middleware's come too late).
    response = web.Response(body=body, content_type=JSON_TYPE, charset="utf-8", headers=_CORS)
    try:
        async with asyncio.timeout(relay.config.send_timeout_s):
            await response.prepare(request)
            await response.write_eof()  # returns once the socket took all but a little
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # the bytes it holds go with it
    finally:
        budget.give(body)
    return response


async def on_health(request: web.Request) -> web.StreamResponse:
    """GET /v1/health."""
    return json_response({"ok": True, "version": __version__, "time": int(time.time())})


async def on_register(request: web.Request) -> web.StreamResponse:
    """POST /v1/register: signed with the signing_key it carries (see "Signing keys" in
    ``felund.relay.server.state``); a node registered already may leave it out."""
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
    offered = [reg.signing_key] if reg.signing_key else []
    key = verifying_key(signed, offered, request.method, "/register", body)
    if key is None:
        known = await relay.store.read(
            store.signing_keys, reg.circle_hint, reg.node_id, MAX_KEYS_TRIED
        )
        key = verifying_key(signed, known, request.method, "/register", body)
        if key is None:
            raise ApiError(
                INVALID_SIGNATURE,
                "a registration is signed with the signing_key it carries"
                if offered
                else "the first registration of a node carries signing_key",
            )
        if offered:  # a client that signs with one key and sends another
            raise ApiError(SIGNING_KEY_MISMATCH, "signed with another key than its signing_key")
    await spend_nonce(request, relay, signed, key, body)
    if reg.succeeds is not None:
        await _succeed(relay, reg.circle_hint, key, *reg.succeeds)
    expires_at = await relay.store.write(store.register, reg, key, now)
    relay.keys_changed(reg.circle_hint)
    if expires_at is None:
        raise ApiError(
            SIGNING_KEY_MISMATCH,
            f"this node_id has registered {MAX_NODE_KEYS} other signing keys for this circle_hint",
        )
    address = client_address(request)
    observed = {"host": address, "family": "ipv6" if ":" in address else "ipv4"}
    return json_response(
        {
            "ok": True,
            "server_time": now,
            "expires_at": expires_at,
            "observed_host": observed if address else None,
        }
    )


async def _succeed(relay: Relay, circle_hint: str, key: str, old: str, proof: str) -> None:
    """Make ``key``'s realm the successor of realm ``old`` (a key id) once its proof, an
    HMAC under the old key, verifies (see "Successions" in ``felund.relay.server.state``)."""
    store = relay.store.store
    if old == key_id(key):
        raise invalid("a signing key cannot succeed itself")
    old_key = await relay.store.read(store.key_by_id, circle_hint, old)
    if old_key is None:
        raise ApiError(
            UNKNOWN_PREDECESSOR,
            "no signing key with that key_id is registered for this circle_hint: "
            "register with it first",
        )
    if not verify_succession(old_key, key, proof):
        raise ApiError(BAD_SUCCESSION, "the succession proof does not verify under the old key")
    done = await relay.store.write(store.succeed, circle_hint, old, key_id(key), int(time.time()))
    relay.keys_changed(circle_hint)
    if done == "other_room":
        raise ApiError(BAD_SUCCESSION, "this signing key already succeeds a key of another room")
    if done == "full":
        raise ApiError(BAD_SUCCESSION, f"this circle_hint was re-keyed {MAX_REALMS} times here")


async def on_unregister(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/register: signed; removes the node from the signing key's realm."""
    relay = request.app[RELAY]
    body = await request.read()
    hint, node_id = parse_unregistration(parse_json_object(body))
    key = await authenticate(request, relay, hint, "/register", body, required=True)
    assert key is not None  # required
    removed = await relay.store.write(relay.store.store.unregister, hint, key_id(key), node_id)
    relay.keys_changed(hint)
    return json_response({"ok": True, "removed": removed})


async def on_peers(request: web.Request) -> web.StreamResponse:
    """GET /v1/peers: signed; the signing key's realm, the caller (X-Felund-Node) left out."""
    relay = request.app[RELAY]
    hint = circle_hint_field(request.query.get("circle_hint"))
    limit = int_param(request.query, "limit", DEFAULT_PEERS, 1, MAX_PEERS)
    key = await authenticate(request, relay, hint, "/peers", b"", required=True)
    assert key is not None  # required
    exclude = header_node_id(request.headers.get(HEADER_NODE))
    peers = await relay.store.read(
        relay.store.store.peers, hint, key_id(key), exclude, limit, int(time.time())
    )
    return await send_counted(
        request,
        json_body(
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
        ),
    )


async def on_post_messages(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages: store new messages and push them to the circle's feed."""
    relay = request.app[RELAY]
    body = await request.read()
    obj = parse_json_object(body)
    hint = circle_hint_field(obj.get("circle_hint"))
    key = await authenticate(
        request,
        relay,
        hint,
        "/messages",
        body,
        required=relay.config.require_signatures,
        defer_nonce=True,
    )
    batch = parse_message_batch(obj)
    pay_messages(request, relay, len(batch.messages))
    room, realm = await relay.room(hint, key)
    may_post(realm, key)
    poster = header_node_id(request.headers.get(HEADER_NODE))
    signed: Signed | None = request.get("nonce")
    nonce = None if signed is None else (signed.nonce, signed.nonce_expiry(time.time()))
    fresh, stored = await relay.store.append(
        dataclasses.replace(batch, circle_hint=room), poster, nonce
    )
    if signed is not None:
        nonce_spent(request, fresh)
    now = int(time.time())
    m.MESSAGES_STORED.inc(len(stored))
    m.MESSAGES_DUPLICATE.inc(len(batch.messages) - len(stored))
    answer: dict[str, Any] = {"ok": True, "stored": len(stored), "server_time": now}
    if stored:
        # The cursors of what was stored: the poster holds them (it gets no frame of them).
        span = (stored[0].after, stored[-1].id)
        answer["after"], answer["cursor"] = span
        pushed = relay.hub.publish(
            room, poster, [(s.author_node_id, s.payload) for s in stored], now, span
        )
        m.MESSAGES_SERVED.labels("push").inc(pushed)
    return json_response(answer)


async def on_get_messages(request: web.Request) -> web.StreamResponse:
    """GET /v1/messages: by ``since`` (v1, whole stored seconds) or by ``cursor``."""
    relay = request.app[RELAY]
    store = relay.store.store
    query = request.query
    hint = circle_hint_field(query.get("circle_hint"))
    limit = int_param(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    key = await authenticate(
        request, relay, hint, "/messages", b"", required=relay.config.require_signatures
    )
    room, _ = await relay.room(hint, key)  # an ended realm still reads: it catches up
    if query.get("cursor"):
        cursor = int_param(query, "cursor", 0, 0, 2**62)
        page = await relay.store.read(store.page_after, room, cursor, limit)
    else:
        since = int_param(query, "since", 0, 0, 2**62)
        page = await relay.store.read(store.page_since, room, since, limit)
    m.MESSAGES_SERVED.labels("poll").inc(len(page.messages))
    # "expired": messages after the cursor asked for were purged (older than retention).
    gap = ',"expired":true' if page.expired else ""
    body = (
        f'{{"ok":true,"messages":[{",".join(page.messages)}],'
        f'"server_time":{page.server_time},"next_cursor":{page.next_cursor}{gap}}}'
    )
    return await send_counted(request, body.encode())


async def on_post_signal(request: web.Request) -> web.StreamResponse:
    """POST /v1/signal: a call signal for one node, 20 per node per 10 s."""
    relay = request.app[RELAY]
    body = await request.read()
    sig = parse_signal(parse_json_object(body))
    key = await authenticate(
        request, relay, sig.circle_hint, "/signal", body, required=relay.config.require_signatures
    )
    room, realm = await relay.room(sig.circle_hint, key)
    may_post(realm, key)
    wait = relay.signal_window.take(sig.from_node_id, time.monotonic())
    if wait > 0:
        raise ApiError(
            RATE_LIMITED,
            f"at most {SIGNAL_RATE} signals per node per {SIGNAL_WINDOW_S:g} s",
            retry_after(wait),
        )
    now = int(time.time())
    stored = await relay.store.write(
        relay.store.store.add_signal, dataclasses.replace(sig, circle_hint=room), now
    )
    if isinstance(stored, str):
        m.SIGNALS_REFUSED.labels(stored).inc()
        raise ApiError(SIGNALS_FULL, _FULL[stored], retry_after(MIN_SIGNAL_TTL_S))
    m.SIGNALS.inc()
    return json_response({"ok": True, "server_time": now, "id": stored})


_FULL: dict[SignalQueue, str] = {
    "node": f"{MAX_SIGNALS_PER_NODE} signals wait for this to_node_id already",
    "circle": f"{MAX_SIGNALS_PER_CIRCLE} signals wait in this circle already",
    "relay": f"the relay holds {MAX_SIGNALS_TOTAL} signals already",
}


async def on_get_signal(request: web.Request) -> web.StreamResponse:
    """GET /v1/signal: signals for ``to_node_id`` after ``since_id``."""
    relay = request.app[RELAY]
    query = request.query
    to_node = node_id_field(query.get("to_node_id"), "to_node_id")
    since_id = int_param(query, "since_id", 0, 0, 2**62)
    session_id = session_id_param(query.get("session_id"))
    room = ""
    signed = signed_request(request.headers) is not None
    if query.get("circle_hint") or signed or relay.config.require_signatures:
        hint = circle_hint_field(query.get("circle_hint"))
        key = await authenticate(
            request, relay, hint, "/signal", b"", required=relay.config.require_signatures
        )
        if signed:
            await _own_signals(relay, request, hint, key, to_node)
        room, _ = await relay.room(hint, key)
    now = int(time.time())
    signals = await relay.store.read(
        relay.store.store.signals,
        to_node,
        since_id,
        session_id=session_id,
        circle_hint=room,
        now=now,
        limit=SIGNAL_PAGE,
    )
    return await send_counted(
        request,
        json_body(
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
        ),
    )


async def _own_signals(
    relay: Relay, request: web.Request, hint: str, key: str | None, to_node: str
) -> None:
    """A signed GET reads only its own node's signals: X-Felund-Node is ``to_node_id``
    and the key that verified is one ``to_node_id`` registered for the circle_hint."""
    if header_node_id(request.headers.get(HEADER_NODE)) != to_node:
        raise ApiError(
            NOT_ADDRESSEE,
            f"a signed read of signals is the addressee's: {HEADER_NODE} must be to_node_id",
        )
    own = await relay.store.read(relay.store.store.node_keys, hint, to_node, MAX_KEYS_TRIED)
    if key is None or key not in own:
        raise ApiError(
            NOT_ADDRESSEE, "signed with a key to_node_id did not register for this circle_hint"
        )


async def on_ice(request: web.Request) -> web.StreamResponse:
    """GET /v1/ice: the STUN and TURN servers the operator names (none by default)."""
    servers = request.app[RELAY].config.ice_servers
    return json_response({"ok": True, "ice_servers": [s.as_json() for s in servers]})


async def on_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics for Prometheus."""
    return web.Response(body=m.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    if purged.keys:
        relay.keys_changed()
    for kind, count in (
        ("messages", removed),
        ("registrations", purged.presence),
        ("signals", purged.signals),
        ("nonces", purged.nonces),
        ("keys", purged.keys),
    ):
        m.PURGED.labels(kind).inc(count)
    monotonic = time.monotonic()
    relay.limits.prune(monotonic)
    relay.signal_window.prune(monotonic)
    if removed or purged.keys:
        relay.log.info("relay.purged", messages=removed, keys=purged.keys)


async def refresh_stats(relay: Relay) -> None:
    """Update the gauges of what the store holds."""
    stats = await relay.store.read(relay.store.store.statistics)
    m.STORED_MESSAGES.set(stats.messages)
    m.PINNED_CIRCLES.set(stats.circles)
    m.REGISTRATIONS.set(stats.registrations)
    m.STORED_SIGNALS.set(stats.signals)
    m.DATABASE_BYTES.set(stats.database_bytes)
    size, in_use, waiting = relay.store.store.pool_stats()
    m.DB_POOL_SIZE.set(size)
    m.DB_POOL_IN_USE.set(in_use)
    m.DB_POOL_WAITING.set(waiting)


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


async def _appends_grouped(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RELAY].store.appender.aclose()  # waiting appends refused, connections closed


async def _close_feeds(app: web.Application) -> None:
    relay = app[RELAY]
    await asyncio.gather(
        *(
            close_within(ws, request, WSCloseCode.GOING_AWAY, relay.config.send_timeout_s)
            for ws, request in list(relay.sockets.items())
        )
    )


def make_app(relay: Relay) -> web.Application:
    """The aiohttp application of a relay."""
    app = web.Application(
        middlewares=[relay_middleware], client_max_size=relay.config.max_body_bytes
    )
    app[RELAY] = relay
    app.cleanup_ctx.append(_upkeep)
    app.cleanup_ctx.append(feed_across_instances)
    app.cleanup_ctx.append(_appends_grouped)
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
    r.add_get("/v1/ice", on_ice)
    r.add_get("/metrics", on_metrics)
    if relay.config.serve_web:
        add_web_routes(app)  # last: it answers any other GET path
    return app
