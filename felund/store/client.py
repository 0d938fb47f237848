"""Talking to a node: over the bus when it runs, on its database when it does not.

Commands (and tests) open a node with ``open_node`` and call operations by
name; both paths run the same handlers (``felund.store.ops``), so a command
behaves the same whether the node is up or not. ``find_running`` is how any
process finds the running node (the ui too).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from felund import lazy, netaddr
from felund.actor.context import Context
from felund.bus.dealer import CommandBus
from felund.errors import RPCTimeout, ServiceDown
from felund.home import NodeLock
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    ENDPOINT_SUPERVISOR_CTL,
    OP_SUP_STATUS,
    SVC_CLI,
    SVC_STORE,
)

if TYPE_CHECKING:
    from felund.store import opening, ops
else:  # loaded by a stopped node's commands only (``felund.lazy``)
    opening, ops = lazy.module("felund.store.opening"), lazy.module("felund.store.ops")


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
        """The supervisor's status, None when the node is not running; RPCTimeout if the
        supervisor does not answer."""
        ...


class BusNode:
    """A running node, reached through its bus.

    When the store's endpoint refuses a connection it asks the supervisor: a store
    given up fails the call at once (``ServiceDown``) instead of being retried in
    vain. A store that answers costs no question to the supervisor.
    """

    online = True

    def __init__(self, ctx: Context, service: str = SVC_CLI) -> None:
        self.bus = CommandBus(ctx.layout, service, ctx.config.bus)
        self._store = self.bus.rpc_client(ENDPOINT_STORE_CTL, self._fail_if_given_up)
        self._supervisor = self.bus.rpc_client(ENDPOINT_SUPERVISOR_CTL)
        self._status: dict[str, Any] | None = None

    def call(
        self,
        op: str,
        body: dict[str, Any],
        timeout_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Run a store operation over RPC (retried, idempotent)."""
        return self._store.call(op, body, timeout_ms, retries)

    def _fail_if_given_up(self) -> None:
        try:
            store = self.supervisor_status()["services"].get(SVC_STORE, {})
        except RPCTimeout:
            return  # the supervisor is busy: the store may still come back
        if store.get("state") == "failed":
            retry = store.get("next_start")
            when = time.strftime("%H:%M:%S", time.localtime(retry)) if retry else "later"
            raise ServiceDown(
                f"the node's store is given up ({store.get('reason') or 'it kept exiting'}); "
                f"the supervisor tries it again at {when}: see `felund status`"
            )

    def supervisor_status(self) -> dict[str, Any]:
        """The supervisor's status (asked once per command); RPCTimeout if it does not answer."""
        if self._status is None:
            self._status = self._supervisor.call(OP_SUP_STATUS, {}, 2000, 1)
        return self._status

    def close(self) -> None:
        """Close the bus."""
        self.bus.close()


class LocalNode:
    """A stopped node: the same operations, on its database, under its lock."""

    online = False

    def __init__(self, ctx: Context) -> None:
        cfg = ctx.config
        self.layout = ctx.layout
        self.db = opening.open_database(ctx.layout, cfg.store.synchronous)
        self.ops = ops.Ops(
            self.db,
            ops.NodeInfo(
                ctx.node_id,
                cfg.node.name,
                cfg.node.encrypt_messages,
                netaddr.invite_peer(cfg.gossip),
                cfg.relay.url,
                ctx.key,
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
            opening.note_circles(self.layout, self.db)
        return out.reply

    def supervisor_status(self) -> dict[str, Any] | None:
        """No supervisor runs."""
        return None

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def find_running(ctx: Context, lock: NodeLock) -> Context | None:
    """The context to reach the node running at ctx's home (its runtime directory as
    its lock names it), or None if none runs: then ``lock`` is taken, for the caller
    to work offline under or release."""
    if lock.try_acquire():
        return None
    _, runtime = lock.holder()
    if runtime is not None and runtime != ctx.layout.runtime_dir:
        ctx = ctx._replace(layout=ctx.layout._replace(runtime_dir=runtime))
    return ctx


@contextlib.contextmanager
def open_node(ctx: Context) -> Iterator[NodeClient]:
    """The node at ctx's home, running or not."""
    lock = NodeLock(ctx.layout)
    running = find_running(ctx, lock)
    if running is None:
        try:
            local = LocalNode(ctx)
            try:
                yield local
            finally:
                local.close()
        finally:
            lock.release()
        return
    remote = BusNode(running)
    try:
        yield remote
    finally:
        remote.close()
