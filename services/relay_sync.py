"""The relay-sync actor: this node's circles at a relay (``relay.url``), over HTTP.

- Runs while the node has a relay URL: the runtime setting (``felund relay
  url``, ``store.settings``, or adopted from a relay invite code), else the
  configured ``relay.url`` (``FELUND_API_BASE`` also sets it). The supervisor
  starts it with that URL, restarts it when the URL changes and stops it when
  the URL is cleared.
- Per circle (``store.circle.keys``, reloaded on ``chat.circle.changed``),
  signed with the circle's relay signing key:
  - presence: ``POST /v1/register`` (carrying the signing key, which pins it
    at a fresh relay) every ``relay.register_interval_s``, then ``GET
    /v1/peers``: their tcp endpoints go to gossip through ``store.peers.add``;
  - push: every stored message of the circle not pulled from the relay
    (origin != "relay") after the durable push cursor, at most 50 a request;
    the cursor (a store_seq) moves only once the relay has answered ok, so a
    crash sends again what may not have arrived (the relay drops duplicates
    by msg_id). Woken by ``chat.msg.stored``, and every poll interval anyway;
  - pull: ``GET /v1/messages?cursor=`` from the durable pull cursor, appended
    through ``store.append`` (origin "relay"; the store checks and drops
    duplicates), the cursor moved to ``next_cursor`` only after the append
    was acknowledged. Every ``relay.poll_interval_s``, and at once when the
    WebSocket feed (``/v1/relay/ws``) says MESSAGES; while the feed is up
    polling slows to a safety net.
- Failures of the relay: backoff with jitter per circle and per loop (cap
  60 s), counted in ``felund_relay_requests_total{op,outcome}``, one log line
  per kind at most every 10 s (the relay's host, never keys or signatures).
  Nothing else waits on the relay.
- Leaving: a circle left, or a clean stop (SIGTERM), is ``DELETE
  /v1/register``-ed at once, bounded by 2 s; after a crash the registration
  just expires by its TTL.
- Cursors live in the store (``store.cursor``), per relay URL and circle.
- Restart: crash-only; holds nothing the store does not. A task that fails
  (not a relay error) ends the process and the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from felund import __version__, metrics, netaddr
from felund.actor.runtime import Runtime
from felund.bus.aio import AsyncRPCClient, AsyncSubscriber, until_answered
from felund.errors import InvalidMessage, RPCTimeout
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    OP_APPEND,
    OP_CIRCLE_KEYS,
    OP_CURSOR,
    OP_PEERS_ADD,
    OP_SNAPSHOT,
    SVC_RELAY_SYNC,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_MSG_STORED,
)
from felund.relay.client import (
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    RelayClient,
    RelayError,
    relay_host,
    signed_headers,
)
from felund.relay.protocol import (
    BATCH_TOO_LARGE,
    CIRCLE_MISMATCH,
    DEFAULT_PAGE,
    INVALID_MESSAGE,
    MAX_BATCH,
    MAX_TTL_S,
    MIN_TTL_S,
    PAYLOAD_TOO_LARGE,
)
from felund.v1 import crypto, ids
from felund.v1.wire import check_shape

TICK_S: Final = 0.2
BACKOFF_INITIAL_S: Final = 1.0
BACKOFF_MAX_S: Final = 60.0
PUSH_PAGE: Final = 500  # store.snapshot rows (with wire) read at a time
FEED_IDLE_S: Final = 75.0  # the relay PINGs every 15 s: this long silent means it is gone
FEED_MAX_FRAME: Final = 16 * 1024 * 1024
FEED_SLOW_POLL_S: Final = 30.0  # polling while the feed is up: a safety net only
UNREGISTER_TIMEOUT_S: Final = 2.0  # well inside the supervisor's stop grace period
_LOG_EVERY_S: Final = 10.0
# Refusals of a message itself: sending it again would be refused again.
_REFUSED_MESSAGE: Final = frozenset(
    {INVALID_MESSAGE, CIRCLE_MISMATCH, PAYLOAD_TOO_LARGE, BATCH_TOO_LARGE}
)


class Backoff:
    """A doubling delay with jitter, capped; reset on success."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_MAX_S) -> None:
        self.initial = initial
        self.cap = cap
        self.delay = 0.0

    def next(self, at_least: float = 0.0) -> float:
        """The next wait: the delay doubled (jittered ±50 %), at least ``at_least``."""
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.initial)
        return max(at_least, self.delay * random.uniform(0.5, 1.5))

    def reset(self) -> None:
        """Success: start from the initial delay next time."""
        self.delay = 0.0


@dataclass(slots=True)
class CircleSync:
    """One circle's state at the relay."""

    circle_id: str
    secret: str
    hint: str
    key: str  # the relay signing key every member derives from the secret
    push_now: asyncio.Event = field(default_factory=asyncio.Event)
    pull_now: asyncio.Event = field(default_factory=asyncio.Event)
    feed_up: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class RelaySync:
    """The process: one set of loops per circle, one HTTP session."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        cfg = rt.ctx.config
        self.cfg = cfg.relay
        self.gossip_cfg = cfg.gossip
        self.node_id = rt.ctx.node_id
        self.host = relay_host(self.cfg.url)
        self.url_tag = hashlib.sha256(self.cfg.url.rstrip("/").encode()).hexdigest()[:16]
        self.rpc = AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL)
        self.appender = AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL)
        self.circles: dict[str, CircleSync] = {}
        self.failed: asyncio.Future[None] | None = None
        self.client: RelayClient | None = None
        self.pushed = 0
        self.pulled = 0
        self._logged: dict[str, float] = {}
        self._failing: set[str] = set()

    # --- circles ------------------------------------------------------------
    async def load_circles(self) -> None:
        """Start loops for new circles, stop those of circles left."""
        answer = await self.rpc.call(OP_CIRCLE_KEYS, {})
        secrets = {c["circle_id"]: c["secret"] for c in answer["circles"]}
        for circle_id in list(self.circles):
            if circle_id not in secrets:
                left = self.circles.pop(circle_id)
                for task in left.tasks:
                    task.cancel()
                await self.unregister([left])
        for circle_id, secret in secrets.items():
            if circle_id in self.circles:
                continue
            c = CircleSync(
                circle_id, secret, ids.circle_hint(circle_id), crypto.api_signing_key(secret)
            )
            self.circles[circle_id] = c
            for loop in (self.presence_loop, self.push_loop, self.pull_loop, self.feed_loop):
                c.tasks.append(self._spawn(loop(c)))
        self.rt.log.info("relay.circles", relay=self.host, circles=len(self.circles))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.failed is None or self.failed.done():
            return
        exc = task.exception()
        if exc is not None:
            self.failed.set_exception(exc)  # crash-only: the process ends, and is restarted

    # --- bookkeeping --------------------------------------------------------
    def _ok(self, op: str) -> None:
        metrics.RELAY_REQUESTS.labels(op, "ok").inc()
        metrics.RELAY_LAST_SUCCESS.set(time.time())
        if op in self._failing:
            self._failing.discard(op)
            self.rt.log.info("relay.recovered", relay=self.host, op=op)

    def _failed(self, op: str, c: CircleSync, exc: Exception) -> float:
        """Count and log a failure; the relay's wish for a wait (Retry-After), if any."""
        if isinstance(exc, RelayError):
            metrics.RELAY_REQUESTS.labels(op, exc.kind).inc()
            self._failing.add(op)
            self._warn(
                f"relay.{op}_failed",
                exc.kind,
                relay=self.host,
                circle_hint=c.hint,
                code=exc.code,
                detail=exc.detail,
            )
            return exc.retry_after
        self._warn("relay.store_unavailable", op=op)
        return 0.0

    def _warn(self, event: str, kind: str = "", **fields: Any) -> None:
        """A warning, at most one per event and kind every few seconds."""
        now = time.monotonic()
        key = f"{event}/{kind}"
        if now - self._logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[key] = now
            self.rt.log.warning(event, **({"kind": kind} if kind else {}), **fields)

    async def cursor(self, name: str, c: CircleSync, value: int | None = None) -> int:
        """Read (or set) a durable cursor of this relay and circle."""
        body: dict[str, Any] = {"key": f"relay.{name}:{self.url_tag}:{c.hint}"}
        if value is not None:
            body["value"] = value
        answer = await self.rpc.call(OP_CURSOR, body)
        return int(answer["value"])

    async def _retrying(self, op: str, c: CircleSync, call: Callable[[], Awaitable[int]]) -> int:
        """``call`` until it succeeds (a store that is restarting comes back)."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except RPCTimeout as exc:
                self._failed(op, c, exc)
                await asyncio.sleep(backoff.next())

    # --- presence and peers -----------------------------------------------
    def endpoints(self) -> list[dict[str, Any]]:
        """Where peers reach this node's gossip (the supervisor passes the real port)."""
        if not self.gossip_cfg.port:
            return []
        host, _, port = netaddr.invite_peer(self.gossip_cfg).rpartition(":")
        family = "ipv6" if host.startswith("[") else "ipv4"
        return [
            {
                "transport": "tcp",
                "host": host.strip("[]"),
                "port": int(port),
                "family": family,
                "nat": "unknown",
            }
        ]

    async def register(self, c: CircleSync) -> None:
        """POST /v1/register, with the signing key (pinned by the first registration)."""
        assert self.client is not None
        ttl = int(min(MAX_TTL_S, max(MIN_TTL_S, 2 * self.cfg.register_interval_s + 30)))
        await self.client.call(
            "POST",
            "/register",
            c.key,
            body={
                "node_id": self.node_id,
                "circle_hint": c.hint,
                "endpoints": self.endpoints(),
                "capabilities": {"relay": True, "transport": ["tcp"], "client": "felund-node"},
                "ttl_s": ttl,
                "signing_key": c.key,
            },
        )
        self._ok("register")

    async def unregister(self, circles: list[CircleSync]) -> None:
        """DELETE /v1/register: leave the peer lists now rather than when the TTL runs out.

        Best effort and bounded: a relay that does not answer in time lets the
        registration expire by itself, so stopping never waits long on it.
        """
        if self.client is None or not circles:
            return
        client = self.client

        async def one(c: CircleSync) -> None:
            body = {"node_id": self.node_id, "circle_hint": c.hint}
            try:
                await client.call("DELETE", "/register", c.key, body=body)
                self._ok("unregister")
            except RelayError as exc:
                metrics.RELAY_REQUESTS.labels("unregister", exc.kind).inc()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(c) for c in circles)), UNREGISTER_TIMEOUT_S)

    async def lookup_peers(self, c: CircleSync) -> None:
        """GET /v1/peers; hand their tcp addresses to gossip."""
        assert self.client is not None
        answer = await self.client.call(
            "GET", "/peers", c.key, query={"circle_hint": c.hint, "limit": "50"}
        )
        self._ok("peers")
        peers = answer.get("peers")
        entries: list[dict[str, Any]] = []
        for p in peers if isinstance(peers, list) else []:
            if not isinstance(p, dict) or p.get("node_id") == self.node_id:
                continue
            seen = p.get("observed_at")
            for e in p.get("endpoints") or []:
                if not isinstance(e, dict) or e.get("transport") != "tcp":
                    continue
                host, port = e.get("host"), e.get("port")
                if not isinstance(host, str) or type(port) is not int:
                    continue
                addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                entries.append(
                    {
                        "circle_id": c.circle_id,
                        "addr": addr,
                        "node_id": str(p.get("node_id", ""))[:128],
                        "last_seen": seen if type(seen) is int and seen >= 0 else 0,
                    }
                )
        if entries:
            await self.rpc.call(OP_PEERS_ADD, {"peers": entries[:256]})

    async def presence_loop(self, c: CircleSync) -> None:
        """Register and look up peers every register interval; back off on failure."""
        backoff = Backoff()
        while True:
            op = "register"
            try:
                await self.register(c)
                op = "peers"
                await self.lookup_peers(c)
                backoff.reset()
                wait = self.cfg.register_interval_s
            except (RelayError, RPCTimeout) as exc:
                wait = backoff.next(self._failed(op, c, exc))
            await asyncio.sleep(wait)

    # --- push ---------------------------------------------------------------
    async def push_pending(self, c: CircleSync, cursor: int) -> int:
        """Post the circle's messages after ``cursor``; the cursor reached."""
        assert self.client is not None
        while True:
            answer = await self.rpc.call(
                OP_SNAPSHOT, {"since": cursor, "limit": PUSH_PAGE, "with_wire": True}
            )
            rows = [
                r
                for r in answer["msgs"]
                if r["circle_id"] == c.circle_id and r["origin"] != "relay" and "wire" in r
            ]
            for i in range(0, len(rows), MAX_BATCH):
                chunk = rows[i : i + MAX_BATCH]
                try:
                    await self.post(c, chunk)
                except RelayError as exc:
                    if exc.code not in _REFUSED_MESSAGE:
                        raise
                    # One message the relay will never take must not stop the rest.
                    for row in chunk:
                        try:
                            await self.post(c, [row])
                        except RelayError as one:
                            if one.code not in _REFUSED_MESSAGE:
                                raise
                            metrics.RELAY_REQUESTS.labels("push", "refused").inc()
                            self._warn(
                                "relay.push_refused",
                                one.code,
                                relay=self.host,
                                circle_hint=c.hint,
                                msg_id=row["msg_id"][:64],
                            )
                cursor = await self.cursor("push", c, chunk[-1]["store_seq"])
            covers = int(answer["covers"])
            if covers > cursor:
                cursor = await self.cursor("push", c, covers)
            if not answer["more"]:
                return cursor

    async def post(self, c: CircleSync, rows: list[dict[str, Any]]) -> None:
        """POST /v1/messages with X-Felund-Node (the feed does not echo them to us)."""
        assert self.client is not None
        await self.client.call(
            "POST",
            "/messages",
            c.key,
            body={"circle_hint": c.hint, "messages": [r["wire"] for r in rows]},
        )
        self._ok("push")
        self.pushed += len(rows)

    async def push_loop(self, c: CircleSync) -> None:
        """Push what is new, when woken by a stored message or every poll interval."""
        await self._cursor_loop(
            "push", c, self.push_pending, c.push_now, lambda: self.cfg.poll_interval_s
        )

    async def _cursor_loop(
        self,
        op: str,
        c: CircleSync,
        step: Callable[[CircleSync, int], Awaitable[int]],
        wake: asyncio.Event,
        interval: Callable[[], float],
    ) -> None:
        """Run ``step`` from the durable cursor ``op`` when woken or every ``interval()``.

        A relay or store failure backs off; the cursor only moves as ``step`` says.
        """
        cursor = await self._retrying(op, c, lambda: self.cursor(op, c))
        backoff = Backoff()
        while True:
            wake.clear()
            try:
                cursor = await step(c, cursor)
            except (RelayError, RPCTimeout) as exc:
                await asyncio.sleep(backoff.next(self._failed(op, c, exc)))
                continue
            backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval())

    # --- pull ---------------------------------------------------------------
    async def pull(self, c: CircleSync, cursor: int) -> int:
        """Pull pages after ``cursor`` until the relay has no more; the cursor reached."""
        assert self.client is not None
        while True:
            answer = await self.client.call(
                "GET",
                "/messages",
                c.key,
                query={"circle_hint": c.hint, "cursor": str(cursor), "limit": str(DEFAULT_PAGE)},
            )
            msgs, nxt = answer.get("messages"), answer.get("next_cursor")
            if not isinstance(msgs, list) or type(nxt) is not int or nxt < 0:
                raise RelayError("bad_answer", "messages or next_cursor missing")
            self._ok("pull")
            mine, rejected = self._shaped(c, msgs)
            if mine:
                result = await self.appender.call(OP_APPEND, {"origin": "relay", "msgs": mine})
                self.pulled += sum(1 for r in result["results"] if r == "stored")
                rejected += [
                    r.removeprefix("rejected:")
                    for r in result["results"]
                    if r.startswith("rejected:")
                ]
            for kind in rejected:
                metrics.BAD_INPUT.labels("relay", kind).inc()
            if rejected:
                self._warn(
                    "relay.pull_rejected",
                    relay=self.host,
                    circle_hint=c.hint,
                    count=len(rejected),
                    reasons=sorted(set(rejected)),
                )
            if nxt != cursor:
                cursor = await self.cursor("pull", c, nxt)
            if len(msgs) < DEFAULT_PAGE:
                return cursor

    @staticmethod
    def _shaped(c: CircleSync, msgs: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """The messages of ``c`` fit to hand to the store, and the kinds of those refused.

        The store checks each one fully; this first look keeps out what could
        not even cross the bus (a lone surrogate from a JSON escape would stop
        this process at every pull, on the same page, for ever).
        """
        mine: list[dict[str, Any]] = []
        refused: list[str] = []
        for m in msgs:
            try:
                _, circle_id, _ = check_shape(m)
            except InvalidMessage as exc:
                refused.append(exc.kind)
                continue
            if circle_id == c.circle_id:
                mine.append(m)
        return mine, refused

    async def pull_loop(self, c: CircleSync) -> None:
        """Pull every poll interval (slower while the feed is up), and when the feed says."""

        def interval() -> float:
            poll = self.cfg.poll_interval_s
            return max(FEED_SLOW_POLL_S, poll) if c.feed_up else poll

        await self._cursor_loop("pull", c, self.pull, c.pull_now, interval)

    async def feed_loop(self, c: CircleSync) -> None:
        """Keep the WebSocket feed open; every frame of messages triggers a pull."""
        assert self.client is not None
        backoff = Backoff(initial=2.0)
        while True:
            try:
                await self._feed_once(c, backoff)
                exc: Exception = RelayError("unavailable", "the feed closed")
            except RelayError as err:
                exc = err
            except (aiohttp.ClientError, OSError) as err:
                exc = RelayError("unreachable", type(err).__name__)
            except TimeoutError:
                exc = RelayError("timeout", f"silent for {FEED_IDLE_S:g} s")
            finally:
                c.feed_up = False
            await asyncio.sleep(backoff.next(self._failed("feed", c, exc)))

    async def _feed_once(self, c: CircleSync, backoff: Backoff) -> None:
        assert self.client is not None
        headers = signed_headers(c.key, self.node_id, "GET", "/relay/ws", b"")
        async with self.client.session.ws_connect(
            self.client.feed_url(),
            params={"circle_hint": c.hint, "node_id": self.node_id},
            headers=headers,
            heartbeat=None,
            autoping=True,
            max_msg_size=FEED_MAX_FRAME,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        ) as ws:
            self._ok("feed")
            c.feed_up = True
            c.pull_now.set()  # what was stored while the feed was down
            backoff.reset()
            while True:
                msg = await ws.receive(timeout=FEED_IDLE_S)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return
                    continue
                try:
                    frame = json.loads(msg.data)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("t") == "PING":
                    await ws.send_str('{"t":"PONG"}')
                elif frame.get("t") == "MESSAGES":
                    c.pull_now.set()  # the pull takes them, with the durable cursor

    # --- events -------------------------------------------------------------
    async def follow(self, sub: AsyncSubscriber) -> None:
        """Wake pushes on stored messages; reload circles when they change."""
        while True:
            got = await sub.recv_from(SVC_STORE)
            frame, body = got.frame, got.frame.body
            if frame.topic == TOPIC_MSG_STORED and isinstance(body.get("msgs"), list):
                woken = {
                    r.get("circle_id")
                    for r in body["msgs"]
                    if isinstance(r, dict) and r.get("origin") != "relay"
                }
                if got.missed:
                    woken = set(self.circles)
                for circle_id in woken:
                    c = self.circles.get(str(circle_id))
                    if c is not None:
                        c.push_now.set()
            elif frame.topic == TOPIC_CIRCLE_CHANGED:
                await until_answered(self.load_circles, self._store_down)

    async def tick_loop(self) -> None:
        """Heartbeats; end the process when asked to stop."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while self.rt.running():
            now = loop.time()
            if now - last > 1.0 + TICK_S:  # something held the loop: say so, once a while
                self._warn("relay_sync.loop_stalled", seconds=round(now - last, 2))
            last = now
            self.rt.tick(
                {
                    "circles": len(self.circles),
                    "feeds": sum(c.feed_up for c in self.circles.values()),
                    "pushed": self.pushed,
                    "pulled": self.pulled,
                }
            )
            await asyncio.sleep(TICK_S)

    def _store_down(self) -> None:
        self._warn("relay.store_unavailable")

    async def run(self) -> None:
        """Sync until asked to stop."""
        self.failed = asyncio.get_running_loop().create_future()
        ticks = asyncio.create_task(self.tick_loop())  # heartbeats while waiting for the store
        sub = AsyncSubscriber(self.rt.bus, TOPIC_MSG_STORED, TOPIC_CIRCLE_CHANGED)
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"felund/{__version__}"},
            # Each call passes its own; this bounds the feed's handshake.
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
        ) as session:
            self.client = RelayClient(session, self.cfg.url, self.node_id)
            try:
                await until_answered(self.load_circles, self._store_down)
                self.rt.log.info("relay_sync.ready", relay=self.host, circles=len(self.circles))
                follow = asyncio.create_task(self.follow(sub))
                # Any task that fails ends the process (crash-only: the supervisor restarts it).
                done, _ = await asyncio.wait(
                    [ticks, follow, self.failed], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()
                follow.cancel()
            finally:
                ticks.cancel()
                for c in self.circles.values():
                    for t in c.tasks:
                        t.cancel()
                if self.rt.stopping:  # a clean stop, not a crash: say goodbye
                    await self.unregister(list(self.circles.values()))


def main() -> None:
    """Entry point: ``python -m services.relay_sync``."""
    rt = Runtime(SVC_RELAY_SYNC)
    try:
        if not rt.ctx.config.relay.url:
            rt.log.error("relay_sync.no_url", detail="relay.url is not configured")
            raise SystemExit(2)
        asyncio.run(RelaySync(rt).run())
    finally:
        rt.close()


if __name__ == "__main__":
    main()
