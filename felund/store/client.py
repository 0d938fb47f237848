"""Talking to a node: over the bus when it runs, on its database when it does not.

Commands (and tests) open a node with ``open_node`` and call operations by
name; both paths run the same handlers (``felund.store.ops``), so a command
behaves the same whether the node is up or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

from felund import netaddr
from felund.actor.runtime import Context
from felund.bus.sockets import Bus
from felund.home import NodeLock
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    ENDPOINT_SUPERVISOR_CTL,
    OP_SUP_STATUS,
    SVC_CLI,
)
from felund.store.opening import note_circles, open_database
from felund.store.ops import NodeInfo, Ops


class NodeClient(Protocol):
    """What a command needs from a node."""

    online: bool

    def call(
        self,
        op: str,
        body: dict[str, Any],
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Run a store operation and return its answer."""
        ...

    def supervisor_status(self) -> dict[str, Any] | None:
        """The supervisor's status, or None when the node is not running."""
        ...


class BusNode:
    """A running node, reached through its bus."""

    online = True

    def __init__(self, ctx: Context, service: str = SVC_CLI) -> None:
        self.bus = Bus(ctx.layout, service, ctx.config.bus)
        self._store = self.bus.rpc_client(ENDPOINT_STORE_CTL)
        self._supervisor = self.bus.rpc_client(ENDPOINT_SUPERVISOR_CTL)

    def call(
        self,
        op: str,
        body: dict[str, Any],
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Run a store operation over RPC (retried, idempotent)."""
        return self._store.call(op, body, timeout_ms, retries)

    def supervisor_status(self) -> dict[str, Any] | None:
        """Ask the supervisor."""
        status: dict[str, Any] = self._supervisor.call(OP_SUP_STATUS, {}, 2000, 1)
        return status

    def close(self) -> None:
        """Close the bus."""
        self.bus.close()


class LocalNode:
    """A stopped node: the same operations, on its database, under its lock."""

    online = False

    def __init__(self, ctx: Context) -> None:
        cfg = ctx.config
        self.layout = ctx.layout
        self.db = open_database(ctx.layout, cfg.store.synchronous)
        self.ops = Ops(
            self.db,
            NodeInfo(
                ctx.node_id,
                cfg.node.name,
                cfg.node.encrypt_messages,
                netaddr.invite_peer(cfg.gossip),
                cfg.relay.url,
            ),
        )

    def call(
        self,
        op: str,
        body: dict[str, Any],
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Run an operation in a transaction of its own."""
        with self.db.transaction():
            out = self.ops.handle(op, body)
        if out.circles_changed:
            note_circles(self.layout, self.db)
        return out.reply

    def supervisor_status(self) -> dict[str, Any] | None:
        """No supervisor runs."""
        return None

    def close(self) -> None:
        """Close the database."""
        self.db.close()


@contextlib.contextmanager
def open_node(ctx: Context) -> Iterator[NodeClient]:
    """The node at ctx's home, running or not."""
    lock = NodeLock(ctx.layout)
    if lock.try_acquire():
        try:
            local = LocalNode(ctx)
            try:
                yield local
            finally:
                local.close()
        finally:
            lock.release()
        return
    _, runtime = lock.holder()
    if runtime is not None and runtime != ctx.layout.runtime_dir:
        ctx = dataclasses.replace(ctx, layout=dataclasses.replace(ctx.layout, runtime_dir=runtime))
    remote = BusNode(ctx)
    try:
        yield remote
    finally:
        remote.close()
