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
  is answered with an error and leaves the rest of its batch intact. While
  a batch commits (SQLite writes without the GIL, in a thread of its own),
  the requests that came meanwhile are read and their peers' messages
  parsed: the next batch's first step, on the other core.
- Restart: nothing is held in memory that the database does not hold;
  clients retry unanswered requests, and appends are idempotent by msg_id.
- Full disk: a batch that finds no room is rolled back whole and every
  request in it answered ``disk_full`` ("disk full: N bytes free"); the store
  stays up (``felund_store_disk_full`` is 1) and the next batch after space
  returns commits. A start on a full disk waits the same way for the database.
- Retention (``store.retain_days``, off at 0): between batches, old messages
  are pruned in small transactions; their ids stay as tombstones, which
  ``store.snapshot`` gives gossip (``with_pruned``), so reconciliation counts
  them as held and never fetches them again, and which appends skip.
"""

from __future__ import annotations

from felund import lazy

if __name__ == "__main__":  # run as the process, not imported by a test
    lazy.unavailable(*lazy.NODE_PROCESSES_WITHOUT)

import sqlite3
import time
from typing import Any

import zmq

from felund import metrics, netaddr
from felund.actor.runtime import Runtime
from felund.bus.sockets import Request, RPCServer
from felund.errors import DatabaseLost, DiskFull, RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    ENDPOINT_STORE_CTL,
    ERR_DISK_FULL,
    ERR_INTERNAL,
    OP_APPEND,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_MSG_STORED,
    TOPIC_SETTINGS_CHANGED,
)
from felund.store.database import Database, free_bytes
from felund.store.opening import note_circles, open_database
from felund.store.ops import WRITE_OPS, NodeInfo, Ops, Outcome

EVENT_CHUNK = 100  # messages per chat.msg.stored event: a subscriber decodes one at a time, and
# what a burst of them leaves behind in its heap grows with their size (README: footprint)
POLL_MS = 200
PRUNE_BATCH = 500  # messages per retention transaction: a few ms, between batches
PRUNE_IDLE_S = 60.0  # after a pass that found nothing more to prune
DAY_S = 86_400
ROOM_BYTES = 1 << 20  # free bytes at which a full disk is taken to have room again


class StoreActor:
    """The store's loop, its batches and its events."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        cfg = rt.ctx.config
        self.server: RPCServer = rt.bus.rpc_server(ENDPOINT_STORE_CTL)
        self.max_batch = cfg.store.batch_max_messages
        self.disk_full = False
        self.db = self._open()
        rt.on_idle.append(self.db.release_memory)
        node = NodeInfo(
            node_id=rt.ctx.node_id,
            display_name=cfg.node.name,
            encrypt=cfg.node.encrypt_messages,
            invite_peer=netaddr.invite_peer(cfg.gossip),
            relay_url=cfg.relay.url,
            key=rt.ctx.key,
        )
        if node.key is None:
            rt.log.warning("store.unsigned", detail="this node writes unsigned: shown unverified")
        self.ops = Ops(self.db, node)
        self._announce()
        self.messages = self.db.message_count()
        # Kept here, not read per heartbeat: only this process writes it (after commits).
        self.relay_url = self.ops.relay_url()
        self.retain_s = cfg.store.retain_days * DAY_S
        self.next_prune = 0.0

    def _announce(self) -> None:
        """Announce this node's key in the circles it held before it had one; then follow
        the epochs as the events held say (a re-key of ours cut short is finished)."""
        try:
            with self.db.transaction():
                stored = self.ops.announce_keys()
                out = self.ops.follow_all()
        except DiskFull:
            self.ops.forget_derived()
            return  # the next start announces
        stored += out.stored
        if stored:
            self._publish(stored)
        if out.circles_changed:
            self.rt.pub.publish(TOPIC_CIRCLE_CHANGED, {"last_seq": self.db.last_seq})

    def _open(self) -> Database:
        """The database; on a full disk, wait for room, refusing writes meanwhile."""
        layout, synchronous = self.rt.ctx.layout, self.rt.ctx.config.store.synchronous
        while True:
            try:
                db = open_database(layout, synchronous)
            except DiskFull as exc:
                self._full(exc)
                if self.server.sock.poll(1000):
                    for req in self._drain():
                        if req.frame.topic in WRITE_OPS:
                            self._refuse(req, exc)
                self.rt.tick({})
                if not self.rt.running():
                    raise SystemExit(0) from None
                continue
            self._room()
            return db

    def _full(self, exc: DiskFull) -> None:
        if not self.disk_full:
            self.rt.log.error("store.disk_full", free_bytes=exc.free_bytes)
        self.disk_full = True
        metrics.STORE_DISK_FULL.set(1)

    def _room(self) -> None:
        if self.disk_full:
            self.rt.log.info("store.disk_ok", free_bytes=free_bytes(self.rt.ctx.layout.database))
        self.disk_full = False
        metrics.STORE_DISK_FULL.set(0)

    def _publish(self, stored: list[dict[str, Any]]) -> None:
        """``chat.msg.stored`` of rows just committed, in chunks."""
        for i in range(0, len(stored), EVENT_CHUNK):
            chunk = stored[i : i + EVENT_CHUNK]
            self.rt.pub.publish(
                TOPIC_MSG_STORED,
                {"first": chunk[0]["store_seq"], "last": chunk[-1]["store_seq"], "msgs": chunk},
            )

    def _refuse(self, req: Request, exc: DiskFull) -> None:
        metrics.RPC_REQUESTS.labels(SVC_STORE, req.frame.topic, ERR_DISK_FULL).inc()
        self.server.error(req, ERR_DISK_FULL, str(exc))

    def run(self) -> None:
        """Serve until asked to stop."""
        poller = zmq.Poller()
        poller.register(self.server.sock, zmq.POLLIN)
        self.rt.log.info("store.ready", last_seq=self.db.last_seq, messages=self.messages)
        batch: list[Request] = []
        while self.rt.running():
            if batch or poller.poll(POLL_MS):
                batch = self._serve(batch or self._drain())
            if self.retain_s:
                self._prune()
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

    def _drain_ahead(self, into: list[Request]) -> None:
        """The next batch, and its peers' messages parsed: the work done while a commit
        writes (SQLite does that without the GIL)."""
        into += self._drain()
        bodies = [r.frame.body for r in into if r.frame.topic == OP_APPEND]
        self.ops.parse_ahead(
            [b["msgs"] for b in bodies if isinstance(b, dict) and isinstance(b.get("msgs"), list)]
        )

    def _serve(self, batch: list[Request]) -> list[Request]:
        """Apply a batch in one transaction, then answer it; the next batch, drained
        while this one committed."""
        if not batch:
            return []
        answers: list[tuple[Request, Outcome | RPCError]] = []
        started = time.perf_counter()
        changes = self.db.changes()
        ahead: list[Request] = []
        try:
            with self.db.transaction() as commit:
                for req in batch:
                    answers.append((req, self._apply(req)))
                # With requests waiting, they are read and parsed while this commits (a
                # commit in a thread of its own costs a thread's start: not for nothing).
                if self.server.sock.poll(0, zmq.POLLIN):
                    commit.meanwhile = lambda: self._drain_ahead(ahead)
        except DiskFull as exc:
            # Rolled back whole: nothing of it was stored, so nothing is acknowledged.
            self._full(exc)
            for req in batch:
                self._refuse(req, exc)
            self.ops.forget_derived()
            return ahead
        if self.db.changes() != changes:
            self._room()  # a write went through (a batch of reads proves nothing)
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
            self.messages += sum(not r.get("sealed") for r in stored)
            self._publish(stored)
        if circles_changed:
            note_circles(self.rt.ctx.layout, self.db)
            self.rt.pub.publish(TOPIC_CIRCLE_CHANGED, {"last_seq": self.db.last_seq})
        if settings_changed:
            settings = self.ops.current_settings()
            self.relay_url = settings["relay_url"]
            self.rt.pub.publish(TOPIC_SETTINGS_CHANGED, settings)
        return ahead

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
            # database fails the COMMIT instead, which ends this process. What the
            # request derived (states, what gossip was told) goes with its rows.
            self.ops.forget_derived()
            metrics.STORE_ERRORS.inc()
            self.rt.log.error(
                "store.request_failed", op=op[:64], error=type(exc).__name__, detail=str(exc)
            )
            return RPCError(ERR_INTERNAL, f"the store could not apply {op[:64]}")

    def _prune(self) -> None:
        """One small retention transaction, when one is due."""
        now = time.monotonic()
        if now < self.next_prune:
            return
        try:
            with self.db.transaction():
                horizon = int(time.time() - self.retain_s)
                pruned = self.db.prune(horizon, PRUNE_BATCH, CONTROL_CHANNEL)
        except DiskFull as exc:
            self._full(exc)
            pruned = 0
        if pruned:
            metrics.STORE_PRUNED.inc(pruned)
            self.messages -= pruned
        # A small step between batches while there is a backlog, then once a minute.
        self.next_prune = now + (POLL_MS / 1000 if pruned == PRUNE_BATCH else PRUNE_IDLE_S)

    def _stats(self) -> dict[str, Any]:
        metrics.STORE_LAST_SEQ.set(self.db.last_seq)
        metrics.STORE_MESSAGES.set(self.messages)
        metrics.STORE_DB_SIZE.set(self.db.size_bytes())
        free = free_bytes(self.db.path)
        metrics.STORE_DISK_FREE.set(free)
        if self.disk_full and free >= ROOM_BYTES:
            self._room()
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
    except DatabaseLost as exc:
        rt.log.error("store.database_lost", detail=str(exc))
        raise SystemExit(1) from None
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
