"""A native gossip session: one sealed connection, push, and reconciliation.

The client starts range reconciliation at once and again every
``anti_entropy_s``; each side answers RECON frames and sends (MSGS) what
its steps find the other lacks, so nothing is ever asked for and nothing
travels twice. New messages are pushed as they are stored. The send queue
is bounded in bytes: bulk answers wait for room, a live push to a peer that
cannot keep up closes the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from felund import metrics
from felund.errors import InvalidMessage, PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.gossip.handshake import Link
from felund.gossip.host import GossipHost
from felund.gossip.reconcile import Reconciler

IDLE_TIMEOUT_S = 120.0
# A round of ours holds the circle's turn until what it found missing has come
# and the peer has been quiet this long, or for at most ROUND_STALL_S without
# a frame: then the round goes on, but another session may start its own.
ROUND_QUIET_S = 0.3
ROUND_STALL_S = 10.0
QUEUE_BYTES = 8 * 1024 * 1024
FETCH_CHUNK = 1000
CAME_LIMIT = 50_000


class BoundedSet(collections.OrderedDict[str, None]):
    """The most recent keys, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def add_all(self, keys: Iterable[str]) -> None:
        """Add keys (a frame's worth at once: this runs for every message received)."""
        self.update(dict.fromkeys(keys))
        for _ in range(len(self) - self.limit):
            self.popitem(last=False)


class NativeSession:
    """One live native connection to a member of one circle."""

    def __init__(self, link: Link, host: GossipHost, anti_entropy_s: float) -> None:
        self.link = link
        self.host = host
        self.anti_entropy_s = anti_entropy_s
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.ready = asyncio.Event()  # the queue has something
        self.room = asyncio.Event()  # the queue is below its cap
        self.room.set()
        self.recon: Reconciler | None = None
        self.received = 0
        self.closed = False
        self.inflight = asyncio.Semaphore(2)
        self.receiving: set[asyncio.Task[None]] = set()
        self.failure: PeerError | None = None
        # Ids this peer sent us or its reconciliation says it holds: not pushed to it.
        self.came: BoundedSet = BoundedSet(CAME_LIMIT)
        link.extra["came"] = self.came
        # Ids the round on this session found missing, which the peer is to send:
        # what our round waits for, and what gossip does not push on to others
        # (their own rounds bring it them: pushing a joiner's whole history back
        # to the peers it came from doubled the bytes of a join).
        self.awaiting: set[str] = set()
        link.extra["awaiting"] = self.awaiting
        self.activity = asyncio.Event()  # a frame of the round came

    # --- sending ------------------------------------------------------------
    def _enqueue(self, frame: dict[str, Any]) -> None:
        self._queue(lambda channel: channel.seal(frame))

    def _enqueue_msgs(self, packed: list[bytes]) -> None:
        self._queue(lambda channel: channel.seal_msgs(packed))

    def _queue(self, seal: Callable[[nativeproto.Channel], bytes]) -> None:
        assert self.link.channel is not None
        try:
            data = seal(self.link.channel)
        except ValueError as exc:  # a frame of ours over the cap: a bug, end the session
            raise PeerError("local_frame", str(exc)) from None
        self.queue.append(data)
        self.queued += len(data)
        self.ready.set()
        if self.queued >= QUEUE_BYTES:
            self.room.clear()

    async def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame, waiting for room (answers and bulk transfers)."""
        await self.room.wait()
        self._enqueue(frame)

    def push(self, packed: list[bytes]) -> None:
        """Queue new messages (``wire.pack_wire``) without waiting; a peer too slow for
        them is dropped."""
        if self.closed:
            return
        if self.queued >= QUEUE_BYTES:
            metrics.BUS_DROPPED.labels("gossip", "slow_peer").inc()
            self.close()
            return
        for chunk in nativeproto.msgs_chunks(packed):
            self._enqueue_msgs(chunk)
        metrics.GOSSIP_MESSAGES.labels("out").inc(len(packed))

    async def _write_loop(self) -> None:
        writer = self.link.writer
        while True:
            await self.ready.wait()
            while self.queue:
                data = self.queue.popleft()
                self.queued -= len(data)
                writer.write(data)
                self.link.count_out(len(data))
                await writer.drain()
            self.ready.clear()
            if self.queued < QUEUE_BYTES:
                self.room.set()

    def close(self) -> None:
        """End the session."""
        self.closed = True
        self.link.close()

    # --- the session ----------------------------------------------------------
    async def run(self) -> None:
        """Exchange frames until the connection ends; PeerError if the peer misbehaves."""
        writer = asyncio.create_task(self._write_loop())
        timer = asyncio.create_task(self._anti_entropy()) if self.link.is_client else None
        try:
            peers = await self.host.known_peers(self.link.circle_id)
            await self.send(v1proto.peers_frame(self.link.circle_id, peers))
            while not self.closed:
                frame = await self.link.read_frame(IDLE_TIMEOUT_S)
                await self.handle(frame)
                if writer.done():
                    writer.result()  # the write side failed: raise its error
            if self.receiving:
                await asyncio.wait(self.receiving)
        except PeerError:
            if self.failure is not None:
                raise self.failure from None  # the cause, not the closed socket it left
            raise
        finally:
            for task in (writer, timer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.closed = True
        if self.failure is not None:
            raise self.failure

    async def _receive(self, msgs: list[Any]) -> None:
        try:
            self.received += await self.host.receive(self.link, msgs)
        except PeerError as exc:
            self.failure = exc
            self.close()
        finally:
            self.inflight.release()
            self.receiving.discard(asyncio.current_task())
            if self.awaiting:  # come, stored or refused: no longer awaited
                self.awaiting.difference_update(
                    m["msg_id"]
                    for m in msgs
                    if isinstance(m, dict) and type(m.get("msg_id")) is str
                )
            self.activity.set()

    async def _anti_entropy(self) -> None:
        """Reconcile now and every ``anti_entropy_s``, one session of a circle at a time.

        Each peer sends all that our round finds missing, so a node joining a
        circle whose members all reconcile with it at once would take its
        history from every one of them. Taking turns, the second round finds
        little left. Only rounds we start wait for the turn: waiting never
        holds up an answer to a peer, so two nodes cannot wait on each other.
        """
        while True:
            async with self.host.turn(self.link.circle_id):
                self.recon = Reconciler(self.host.index[self.link.circle_id])
                self.awaiting.clear()
                await self.send({"t": "RECON", "start": True, "ranges": self.recon.initiate()})
                metrics.GOSSIP_RECONCILE_ROUNDS.inc()
                await self._round_settled()
            await asyncio.sleep(self.anti_entropy_s)

    async def _round_settled(self) -> None:
        """Return once the round's missing messages have come and the peer is quiet, or
        once it has stalled."""
        while True:
            self.activity.clear()
            wait = ROUND_STALL_S if self.awaiting else ROUND_QUIET_S
            try:
                await asyncio.wait_for(self.activity.wait(), wait)
            except TimeoutError:
                return

    async def handle(self, frame: dict[str, Any]) -> None:
        """Act on one frame from the peer."""
        t = frame["t"]
        if t == "MSGS":
            msgs = nativeproto.field(frame, "msgs", list)
            # Check and store this batch while the next one is read: the store
            # and this process then work at the same time. Bounded, so TCP
            # still pushes back on a peer that sends faster than we store.
            await self.inflight.acquire()
            self.receiving.add(asyncio.create_task(self._receive(msgs)))
        elif t == "RECON":
            await self._on_recon(frame)
        elif t == "PEERS":
            await self.host.learn_peers(self.link.circle_id, v1proto.peer_list(frame))
        elif t == "PING":
            await self.send({"t": "PONG"})
        elif t == "BYE":
            self.closed = True

    async def _on_recon(self, frame: dict[str, Any]) -> None:
        ranges = frame.get("ranges")
        if frame.get("start") is True:
            if self.link.is_client:
                raise PeerError("frame", "only the client starts reconciliation")
            self.recon = Reconciler(self.host.index[self.link.circle_id])
            self.awaiting.clear()
            metrics.GOSSIP_RECONCILE_ROUNDS.inc()
        if self.recon is None:
            raise PeerError("frame", "RECON outside a reconciliation")
        try:
            step = self.recon.receive(ranges)
        except InvalidMessage as exc:
            raise PeerError("recon", exc.detail) from None
        if step.reply is not None:
            await self.send({"t": "RECON", "start": False, "ranges": step.reply})
        # What we lack (step.need) is what the peer holds that we lack: its own
        # step lists it under "have" and sends it. Asking too would double it.
        # Nor is it pushed to this peer when another peer's copy is stored first.
        self.came.add_all(step.need)
        index = self.host.index[self.link.circle_id]
        self.awaiting.update(m for m in step.need if m not in index)
        self.activity.set()
        if step.have:
            await self._send_messages(step.have)

    async def _send_messages(self, msg_ids: list[str]) -> None:
        for i in range(0, len(msg_ids), FETCH_CHUNK):
            packed = await self.host.fetch_packed(msg_ids[i : i + FETCH_CHUNK])
            for chunk in nativeproto.msgs_chunks(packed):
                await self.room.wait()
                self._enqueue_msgs(chunk)
            metrics.GOSSIP_MESSAGES.labels("out").inc(len(packed))
