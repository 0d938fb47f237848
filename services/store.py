"""The store actor: the only writer of the node's SQLite database.

- Serves: ``store.ctl`` (ROUTER), the operations of ``felund.store.ops``.
- Publishes: ``chat.msg.stored`` ({first, last, msgs}) after every commit
  that stored messages, with consecutive store_seqs; ``chat.circle.changed``;
  ``sys.settings.changed`` ({display_name, relay_url}: the effective values)
  after a commit that changed one; ``sys.svc.heartbeat`` with ``last_seq``
  and ``relay_url`` (the supervisor runs relay-sync by it: a lost event
  costs at most one heartbeat interval).
- Owns: the database file.
- Group commit: every request waiting when a batch starts is applied in one
  transaction, committed, and only then answered, so an answer means the
  write is on disk. Each request runs in a savepoint: one failing request
  is answered with an error and leaves the rest of its batch intact.
- Restart: nothing is held in memory that the database does not hold;
  clients retry unanswered requests, and appends are idempotent by msg_id.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import zmq

from felund import metrics, netaddr
from felund.actor.runtime import Runtime
from felund.bus.sockets import Request, RPCServer
from felund.errors import RPCError
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    ERR_INTERNAL,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_MSG_STORED,
    TOPIC_SETTINGS_CHANGED,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops, Outcome

EVENT_CHUNK = 500  # messages per chat.msg.stored event, to keep frames small
POLL_MS = 200


class StoreActor:
    """The store's loop, its batches and its events."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        cfg = rt.ctx.config
        self.db = Database(rt.ctx.layout.database, cfg.store.synchronous)
        os.chmod(rt.ctx.layout.database, 0o600)
        node = NodeInfo(
            node_id=rt.ctx.node_id,
            display_name=cfg.node.name,
            encrypt=cfg.node.encrypt_messages,
            invite_peer=netaddr.invite_peer(cfg.gossip),
            relay_url=cfg.relay.url,
        )
        self.ops = Ops(self.db, node)
        self.server: RPCServer = rt.bus.rpc_server(ENDPOINT_STORE_CTL)
        self.max_batch = cfg.store.batch_max_messages
        self.messages = self.db.message_count()
        # Kept here, not read per heartbeat: only this process writes it (after commits).
        self.relay_url = self.ops.relay_url()

    def run(self) -> None:
        """Serve until asked to stop."""
        poller = zmq.Poller()
        poller.register(self.server.sock, zmq.POLLIN)
        self.rt.log.info("store.ready", last_seq=self.db.last_seq, messages=self.messages)
        while self.rt.running():
            if poller.poll(POLL_MS):
                batch = self._drain()
                if batch:
                    self._serve(batch)
            self.rt.tick(self._stats())
        self.rt.log.info("store.stopped", last_seq=self.db.last_seq)
        self.db.close()

    def _drain(self) -> list[Request]:
        batch: list[Request] = []
        weight = 0
        while weight < self.max_batch:
            req = self.server.recv_nowait()
            if req is None:
                break
            batch.append(req)
            body = req.frame.body
            msgs = body.get("msgs") if isinstance(body, dict) else None
            weight += len(msgs) if isinstance(msgs, list) else 1
        return batch

    def _serve(self, batch: list[Request]) -> None:
        answers: list[tuple[Request, Outcome | RPCError]] = []
        started = time.perf_counter()
        with self.db.transaction():
            for req in batch:
                answers.append((req, self._apply(req)))
        metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        stored: list[dict[str, Any]] = []
        circles_changed = settings_changed = False
        for req, answer in answers:
            op = req.frame.topic
            if isinstance(answer, RPCError):
                metrics.RPC_REQUESTS.labels(SVC_STORE, op, answer.code).inc()
                self.server.error(req, answer.code, answer.message)
                continue
            metrics.RPC_REQUESTS.labels(SVC_STORE, op, "ok").inc()
            self.server.reply(req, answer.reply)
            stored.extend(answer.stored)
            circles_changed |= answer.circles_changed
            settings_changed |= answer.settings_changed
        if stored:
            metrics.STORE_BATCH_SIZE.observe(len(stored))
            self.messages += len(stored)
            for i in range(0, len(stored), EVENT_CHUNK):
                chunk = stored[i : i + EVENT_CHUNK]
                self.rt.pub.publish(
                    TOPIC_MSG_STORED,
                    {
                        "first": chunk[0]["store_seq"],
                        "last": chunk[-1]["store_seq"],
                        "msgs": chunk,
                    },
                )
        if circles_changed:
            self.rt.pub.publish(TOPIC_CIRCLE_CHANGED, {"last_seq": self.db.last_seq})
        if settings_changed:
            settings = self.ops.current_settings()
            self.relay_url = settings["relay_url"]
            self.rt.pub.publish(TOPIC_SETTINGS_CHANGED, settings)

    def _apply(self, req: Request) -> Outcome | RPCError:
        op = req.frame.topic
        try:
            with self.db.savepoint():
                return self.ops.handle(op, req.frame.body)
        except RPCError as exc:
            return exc
        except sqlite3.Error as exc:
            # A request that trips the database (disk full, a constraint we
            # did not foresee) is refused alone; the batch goes on. A broken
            # database fails the COMMIT instead, which ends this process.
            metrics.STORE_ERRORS.inc()
            self.rt.log.error(
                "store.request_failed", op=op[:64], error=type(exc).__name__, detail=str(exc)
            )
            return RPCError(ERR_INTERNAL, f"the store could not apply {op[:64]}")

    def _stats(self) -> dict[str, Any]:
        metrics.STORE_LAST_SEQ.set(self.db.last_seq)
        metrics.STORE_MESSAGES.set(self.messages)
        metrics.STORE_DB_SIZE.set(self.db.size_bytes())
        st = os.statvfs(self.db.path.parent)
        metrics.STORE_DISK_FREE.set(st.f_bavail * st.f_frsize)
        return {
            "last_seq": self.db.last_seq,
            "messages": self.messages,
            "relay_url": self.relay_url,
        }


def main() -> None:
    """Entry point: ``python -m services.store``."""
    rt = Runtime(SVC_STORE)
    try:
        actor = StoreActor(rt)
    except sqlite3.Error as exc:
        rt.log.error(
            "store.open_failed",
            database=str(rt.ctx.layout.database),
            error=type(exc).__name__,
            detail=str(exc),
        )
        raise SystemExit(1) from None
    try:
        actor.run()
    finally:
        rt.close()


if __name__ == "__main__":
    main()
