"""What relay-sync's loops share: the relay client, the store, and the bookkeeping of outcomes.

Every outcome of a relay call is counted (``felund_relay_requests_total{op,
outcome}``), fed to the circle's ``Connectivity`` and, when it is a failure,
logged at most once per kind every 10 s with the relay's host and the
circle's hint: never a key, signature, body or message text.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final

import structlog

from felund import metrics
from felund.bus.aio import AsyncRPCClient
from felund.errors import RelayError
from felund.protocol import OP_CURSOR
from felund.relay.circle import CircleSync
from felund.relay.client import RelayClient, relay_host

LOG_EVERY_S: Final = 10.0
FEED: Final = "feed"  # the feed's outcomes are counted; Connectivity reports the feed apart


class RelayLink:
    """This node's link to one relay: a signed client and the store's RPC."""

    def __init__(
        self,
        client: RelayClient,
        store: AsyncRPCClient,
        appender: AsyncRPCClient,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.client = client
        self.store = store  # reads and cursors
        self.appender = appender  # appends: not queued behind a slow read
        self.log = log
        self.node_id = client.node_id
        self.host = relay_host(client.base)
        self.url_tag = hashlib.sha256(client.base.encode()).hexdigest()[:16]
        self.pushed = 0
        self.pulled = 0
        self._logged: dict[str, float] = {}
        self._failing: set[str] = set()

    def ok(self, op: str, c: CircleSync | None = None) -> None:
        """A relay call ``op`` succeeded."""
        now = time.time()
        metrics.RELAY_REQUESTS.labels(op, "ok").inc()
        metrics.RELAY_LAST_SUCCESS.set(now)
        if c is not None and op != FEED:
            c.health.ok(op, now)
        if op in self._failing:
            self._failing.discard(op)
            self.log.info("relay.recovered", relay=self.host, op=op)

    def failed(self, op: str, c: CircleSync, exc: Exception) -> float:
        """Count and log a failure (a relay's or the store's); the relay's wish for a wait
        (Retry-After), if any."""
        if not isinstance(exc, RelayError):
            self.store_down(op)
            return 0.0
        metrics.RELAY_REQUESTS.labels(op, exc.kind).inc()
        if op != FEED:
            c.health.failed(op, f"{exc} {exc.code}".strip(), time.time())
        self._failing.add(op)
        self.warn(
            f"relay.{op}_failed",
            exc.kind,
            relay=self.host,
            circle_hint=c.hint,
            code=exc.code,
            detail=exc.detail,
        )
        return exc.retry_after

    def store_down(self, op: str = "") -> None:
        """The store did not answer (it is restarting: waited for, never a crash)."""
        self.warn("relay.store_unavailable", **({"op": op} if op else {}))

    def warn(self, event: str, kind: str = "", **fields: Any) -> None:
        """A warning, at most one per event and kind every ``LOG_EVERY_S``."""
        now = time.monotonic()
        key = f"{event}/{kind}"
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            self.log.warning(event, **({"kind": kind} if kind else {}), **fields)

    async def cursor(self, name: str, c: CircleSync, value: int | None = None) -> int:
        """Read (or set) the durable cursor ``name`` of this relay and circle."""
        body: dict[str, Any] = {"key": f"relay.{name}:{self.url_tag}:{c.hint}"}
        if value is not None:
            body["value"] = value
        answer = await self.store.call(OP_CURSOR, body)
        return int(answer["value"])
