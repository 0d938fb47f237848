"""Relay-sync's process logic: this node's circles at one relay, a group of loops per circle.

Structure (``asyncio.TaskGroup``): the process's group holds the bus follower
and one task per circle; a circle's task holds its group of four loops:
presence (``felund.relay.presence``), push (``push``), pull (``pull``) and the
feed (``feed``). A circle left has its task cancelled. A relay that fails, or
a store that does not answer, is waited for with backoff; any other failure
fails the groups and ends the process, which the supervisor restarts
(crash-only: everything to start again from is in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp

from felund import __version__
from felund.actor.backoff import Backoff
from felund.actor.runtime import Runtime
from felund.bus.aio import AsyncRPCClient, AsyncSubscriber, until_answered
from felund.epochs import circle_keys
from felund.errors import RelayError, RPCTimeout
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    MAX_REPORTED_CIRCLES,
    OP_CIRCLE_KEYS,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_MSG_STORED,
)
from felund.relay.circle import CircleSync
from felund.relay.client import CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, RelayClient
from felund.relay.feed import feed_loop
from felund.relay.link import RelayLink
from felund.relay.presence import endpoints, presence_loop, unregister
from felund.relay.pull import pull
from felund.relay.push import push

TICK_S: Final = 0.2

Step = Callable[[RelayLink, CircleSync], Awaitable[None]]


class RelaySync:
    """The process: one set of loops per circle, one HTTP session."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cfg = rt.ctx.config.relay
        self.where = endpoints(rt.ctx.config.gossip)
        self.circles: dict[str, CircleSync] = {}
        self._link: RelayLink | None = None
        self._group: asyncio.TaskGroup | None = None

    @property
    def link(self) -> RelayLink:
        """The link to the relay (there from the start of ``run``)."""
        assert self._link is not None
        return self._link

    async def run(self) -> None:
        """Sync until asked to stop; a clean stop unregisters every circle."""
        sub = AsyncSubscriber(self.rt.bus, TOPIC_MSG_STORED, TOPIC_CIRCLE_CHANGED)
        store = AsyncRPCClient(self.rt.bus, ENDPOINT_STORE_CTL)
        appender = AsyncRPCClient(self.rt.bus, ENDPOINT_STORE_CTL)
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"felund/{__version__}"},
            # Each call passes its own; this bounds the feed's handshake.
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
        ) as session:
            client = RelayClient(session, self.cfg.url, self.rt.ctx.node_id)
            self._link = RelayLink(client, store, appender, self.rt.log)
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    follower = group.create_task(self.follow(sub))
                    await self.beat()
                    follower.cancel()
                    for c in self.circles.values():
                        self._cancel(c)
            finally:
                if self.rt.stopping:  # a clean stop, not a crash: say goodbye
                    await unregister(self.link, list(self.circles.values()))

    # --- circles ------------------------------------------------------------
    async def load_circles(self) -> None:
        """Start the loops of new circles, stop those of circles left, and start again
        those of circles with a new newest epoch: under its key, in a realm of its own
        that succeeds the old one (the cursors are the circle's: they carry on)."""
        keys = circle_keys(await self.link.store.call(OP_CIRCLE_KEYS, {}))
        fresh = {circle_id: CircleSync.of(k) for circle_id, k in keys.items()}
        for circle_id, c in list(self.circles.items()):
            if circle_id not in fresh or fresh[circle_id].key != c.key:
                if circle_id in fresh:
                    self.rt.log.info("relay.rekeyed", relay=self.link.host, circle_hint=c.hint)
                left = self.circles.pop(circle_id)
                self._cancel(left)
                await unregister(self.link, [left])
        assert self._group is not None
        for circle_id, c in fresh.items():
            if circle_id not in self.circles:
                self.circles[circle_id] = c
                c.task = self._group.create_task(self.run_circle(c))
        self.rt.log.info("relay.circles", relay=self.link.host, circles=len(self.circles))

    @staticmethod
    def _cancel(c: CircleSync) -> None:
        if c.task is not None:
            c.task.cancel()

    async def run_circle(self, c: CircleSync) -> None:
        """One circle's loops, together: one failing ends them all."""

        def load_push(value: int) -> None:
            c.push_cursor = value

        async with asyncio.TaskGroup() as group:
            group.create_task(presence_loop(self.link, c, self.cfg.register_interval_s, self.where))
            group.create_task(self.cursor_loop("push", c, push, c.push_now, load_push))
            group.create_task(self.cursor_loop("pull", c, pull, c.pull_now, c.pull.load))
            group.create_task(feed_loop(self.link, c))

    async def cursor_loop(
        self,
        op: str,
        c: CircleSync,
        step: Step,
        wake: asyncio.Event,
        load: Callable[[int], None],
    ) -> None:
        """From the durable cursor ``op``, run ``step`` when woken, and every poll interval anyway.

        A relay or store failure backs off; the cursor only moves as ``step`` moves it.
        """
        link = self.link
        load(await until_answered(lambda: link.cursor(op, c), lambda: link.store_down(op)))
        backoff = Backoff()
        while True:
            wake.clear()
            try:
                await step(link, c)
            except (RelayError, RPCTimeout) as exc:
                await asyncio.sleep(backoff.next(link.failed(op, c, exc)))
                continue
            backoff.reset()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.poll_interval_s):
                    await wake.wait()

    # --- events -------------------------------------------------------------
    async def follow(self, sub: AsyncSubscriber) -> None:
        """Load the circles; then wake pushes on stored messages, reload circles on changes."""
        await until_answered(self.load_circles, self.link.store_down)
        self.rt.log.info("relay_sync.ready", relay=self.link.host, circles=len(self.circles))
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
                await until_answered(self.load_circles, self.link.store_down)

    async def beat(self) -> None:
        """Heartbeat until asked to stop (or orphaned)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while self.rt.running():
            now = loop.time()
            if now - last > 1.0 + TICK_S:  # something held the loop: say so, once a while
                self.link.warn("relay_sync.loop_stalled", seconds=round(now - last, 2))
            last = now
            self.rt.tick(self.statistics())
            await asyncio.sleep(TICK_S)

    def statistics(self) -> dict[str, Any]:
        """The heartbeat's body: counts, and each circle's connectivity to the relay."""
        return {
            "circles": len(self.circles),
            "feeds": sum(c.health.feed for c in self.circles.values()),
            "pushed": self.link.pushed,
            "pulled": self.link.pulled,
            "connectivity": {
                circle_id: c.health.report()
                for circle_id, c in itertools.islice(self.circles.items(), MAX_REPORTED_CIRCLES)
            },
        }
