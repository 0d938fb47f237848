"""GET /v1/relay/ws: the circle's messages pushed to WebSocket clients as they are stored.

As the existing browser client expects it: ``?circle_hint=H&node_id=N``; on
connect the last 120 s of messages (the newest ``ws_backlog_bytes`` of
them; the client polls for the rest), then every stored batch except to
the node that posted it, a ``{"t":"PING"}`` every 15 s (answered
``{"t":"PONG"}``), and a ``PONG`` for the client's ``PING``.

Nothing here waits for a client without bound: one silent for four PING
intervals is closed (1001); one more than its queue behind, or whose
frames do not fit the budget of every connection together, is closed
(1013); one that takes no frame for ``send_timeout_s`` (a reader that
never reads, however often it PINGs) has its connection cut, which frees
what was buffered for it. The relay closes every feed with 1001 when it
stops. Under ``require_signatures`` the upgrade request must be signed
(path ``/relay/ws``), in headers or, since browsers cannot set them, in
``ts``, ``nonce`` and ``signature`` query parameters.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

from aiohttp import WSCloseCode, WSMsgType, web

from felund.errors import ApiError
from felund.relay.auth import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TS,
    client_key,
)
from felund.relay.protocol import (
    RATE_LIMITED,
    UNAVAILABLE,
    WS_BACKLOG_MAX,
    WS_BACKLOG_S,
    WS_MAX_CLIENT_FRAME,
    circle_hint_field,
    ws_node_id,
)
from felund.relay.server import metrics as m
from felund.relay.server.hub import PING, PONG, Subscriber, chunked_frames
from felund.relay.server.state import RELAY, authenticate, client_address


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
    key = await authenticate(
        request,
        relay,
        hint,
        "/relay/ws",
        b"",
        required=cfg.require_signatures,
        headers=_ws_signature(request),
        node_id=node_id,
    )
    room, _ = await relay.room(hint, key)
    client = client_key(client_address(request))
    if len(relay.hub) >= cfg.ws_total:
        raise ApiError(UNAVAILABLE, "the relay has as many feed connections as it takes")
    if relay.ws_clients[client] >= cfg.ws_per_client:
        raise ApiError(RATE_LIMITED, "too many feed connections from this address", 30)
    ws = web.WebSocketResponse(
        heartbeat=None, autoping=True, max_msg_size=WS_MAX_CLIENT_FRAME, compress=False
    )
    await ws.prepare(request)
    sub = relay.hub.subscribe(room, node_id)
    relay.sockets[ws] = request
    relay.ws_clients[client] += 1
    m.WS_CONNECTIONS.inc()
    tasks: list[asyncio.Task[str]] = []
    reason = "slow"
    try:
        now = int(time.time())
        # Not the node's own, as live pushes are not: it has them, and a
        # message it posts while this is read would otherwise come back.
        backlog = await relay.store.read(
            relay.store.store.recent,
            room,
            now - WS_BACKLOG_S,
            WS_BACKLOG_MAX,
            node_id,
            max_bytes=cfg.ws_backlog_bytes,
        )
        if sub.start(list(chunked_frames(backlog, now))):
            m.MESSAGES_SERVED.labels("backlog").inc(len(backlog))
            tasks = [
                asyncio.create_task(_pump(ws, sub, cfg.ws_ping_s, cfg.send_timeout_s)),
                asyncio.create_task(_read_client(ws, sub, idle_s=4 * cfg.ws_ping_s)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason = done.pop().result()
    except Exception:  # the upgrade is sent: no error answer can follow it
        m.ERRORS.inc()
        relay.log.exception("relay.feed_failed", circle_hint=hint)
        reason = "error"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        relay.hub.unsubscribe(sub)
        relay.sockets.pop(ws, None)
        relay.ws_clients[client] -= 1
        if relay.ws_clients[client] <= 0:
            del relay.ws_clients[client]
        m.WS_CONNECTIONS.dec()
        m.WS_CLOSED.labels(reason).inc()
        if reason == "stalled":
            cut(request)
        elif not ws.closed:
            code = WSCloseCode.TRY_AGAIN_LATER if reason == "slow" else WSCloseCode.GOING_AWAY
            await close_within(ws, request, code, cfg.send_timeout_s)
    return ws


def cut(request: web.Request) -> None:
    """Drop a connection and whatever is buffered for it, without a goodbye."""
    if request.transport is not None:
        request.transport.abort()


async def close_within(
    ws: web.WebSocketResponse, request: web.Request, code: int, timeout_s: float
) -> None:
    """Close politely if the client takes the close frame within ``timeout_s``, else cut."""
    try:
        async with asyncio.timeout(timeout_s):
            await ws.close(code=code)
    except TimeoutError:
        cut(request)


async def _pump(ws: web.WebSocketResponse, sub: Subscriber, ping_s: float, timeout_s: float) -> str:
    """Send queued frames, and a PING when the connection has been quiet for ``ping_s``.

    Returns why it stopped: "slow" (the queue overflowed), "stalled" (a frame
    not taken within ``timeout_s``) or "client" (the connection went).
    """
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + ping_s
    while not ws.closed:
        frame = await sub.wait_frame(max(0.0, next_ping - loop.time()))
        if sub.overflowed:
            if frame is not None:
                sub.sent(frame)
            return "slow"
        queued = frame is not None
        if frame is None:
            frame, next_ping = PING, loop.time() + ping_s
        try:
            async with asyncio.timeout(timeout_s):
                await ws.send_frame(frame, WSMsgType.TEXT)
        except TimeoutError:
            return "stalled"
        except (ConnectionError, RuntimeError):
            return "client"
        finally:
            if queued:
                sub.sent(frame)
    return "client"


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
        if msg.type == WSMsgType.TEXT and is_ping(msg.data):
            sub.offer(PONG)


def is_ping(data: str) -> bool:
    """Whether a client's text frame is a ``{"t":"PING"}`` (any other frame is ignored)."""
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(frame, dict) and frame.get("t") == "PING"
