"""Running a session over an authenticated link: the bytes, the store's part, the timers.

The protocols themselves are the sans-IO machines (``V1Round``,
``NativeSession``); this module moves their bytes, answers their events
through the process (``GossipHost``: the index, the store, the peer table),
and keeps the native session's tasks (writer, receivers, rounds) in one
task group, ended with the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from felund import metrics
from felund.errors import PeerError, RPCTimeout
from felund.gossip import native_frames as nativeproto
from felund.gossip.events import Event, MsgsReceived, MsgsWanted, PeersReceived
from felund.gossip.host import GossipHost
from felund.gossip.link import Link
from felund.gossip.native_session import NativeSession
from felund.gossip.v1_anchor import RETAIN_S, AnchorCursors, AnchorPushed, AnchorServer
from felund.gossip.v1_round import V1Round

FETCH_CHUNK = 1000
WRITE_CHUNK = 1 << 20  # bytes handed to the connection at a time: the queue stays ours
RECEIVERS = 2  # batches being stored while the next is read
# What ends a session without being a bug: the peer's doing, the network's, the store's.
ENDS = (PeerError, OSError, RPCTimeout)
Clock = Callable[[], float]


async def run_v1(
    link: Link,
    host: GossipHost,
    clock: Clock = time.monotonic,
    anchor: AnchorCursors | None = None,
) -> int:
    """One v1 round, and the anchor exchange after it when a peer opened it with us and
    ``anchor`` is given (this node serves as one); the number of messages newly stored."""
    circle_id = link.circle_id
    peers = await host.known_peers(circle_id)
    session = V1Round(circle_id, link.agreed.v1_key, host.index[circle_id], peers, clock())
    received = 0
    while not session.done:
        event = session.next_event(clock())
        await link.write(session.data_to_send())  # what the frames read so far asked for
        if event is None:
            try:
                data = await link.read(session.deadline - clock())
            except TimeoutError:
                session.expire(clock())
                continue
            session.receive_data(data, clock())
        elif isinstance(event, PeersReceived):
            await host.learn_peers(circle_id, link.peer_node_id, event.peers)
        elif isinstance(event, MsgsWanted):
            held = await host.fetch(event.msg_ids)
            metrics.GOSSIP_MESSAGES.labels("out").inc(session.send_msgs(held))
            if held:
                host.crossed(circle_id)
        else:
            received = await host.receive(circle_id, event.msgs)
    await link.write(session.data_to_send())
    if anchor is not None and not link.is_client:
        server = AnchorServer(circle_id, link.agreed.v1_key, session.leftover(), clock())
        received += await _serve_anchor(link, host, server, anchor, clock)
    return received


async def _serve_anchor(
    link: Link, host: GossipHost, server: AnchorServer, cursors: AnchorCursors, clock: Clock
) -> int:
    """Serve a v1 peer's anchor exchange; the messages newly stored. Envelopes the store
    refuses are refused one by one and the exchange goes on: the PeerError saying so
    (already counted by kind) is raised once it is over."""
    circle_id, peer = link.circle_id, link.peer_node_id
    received, refused = 0, None
    while not server.done:
        event = server.next_event(clock())
        if event is None:
            try:
                data = await link.read(server.deadline - clock())
            except TimeoutError:
                server.expire(clock())
                continue
            server.receive_data(data, clock())
        elif isinstance(event, AnchorPushed):
            try:
                received += await host.receive(circle_id, event.envelopes)
            except PeerError as exc:
                if exc.kind != "bad_message":
                    raise
                refused = exc
            server.ack(len(event.envelopes), clock())
        else:
            since = max(event.since, int(time.time()) - RETAIN_S)
            after = cursors.after(circle_id, peer, event.since)
            rows = await host.anchor_page(circle_id, since, after)
            position = server.answer(rows, event.since)
            if rows:
                host.crossed(circle_id)
            if position is not None:
                cursors.moved(circle_id, peer, position)
            if server.skipped:
                metrics.BAD_INPUT.labels("gossip", "anchor_oversize").inc(server.skipped)
        await link.write(server.data_to_send())
    if refused is not None:
        raise refused
    return received


class NativeRun:
    """A native session over a link, from its first frame to its end."""

    def __init__(
        self,
        link: Link,
        addr: str,
        host: GossipHost,
        anti_entropy_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        assert link.agreed.channel is not None
        self.link, self.addr, self.host = link, addr, host
        self.anti_entropy_s, self.clock = anti_entropy_s, clock
        # A catch-up session (felund.gossip.handshake) reconciles and sends control
        # events only: the index of those is what its rounds compare.
        self.catch_up = link.agreed.catch_up
        index = (host.control if self.catch_up else host.index)[link.circle_id]
        self.session = NativeSession(link.agreed.channel, link.is_client, index, clock())
        self.received = 0
        self.closed = False
        self.failure: Exception | None = None  # what ended it, first cause only
        self._queued = asyncio.Event()  # the session has bytes to send
        self._room = asyncio.Event()  # the session's send queue went below its cap
        self._activity = asyncio.Event()  # a frame of a round came, or a batch was stored
        self._receivers = asyncio.Semaphore(RECEIVERS)

    async def run(self) -> None:
        """Exchange frames until the connection ends; raises what ended it, if not the peer's
        goodbye."""
        async with asyncio.TaskGroup() as tg:
            helpers = [tg.create_task(self._write_loop())]
            if self.link.is_client:
                helpers.append(tg.create_task(self._rounds()))
            try:
                if not self.catch_up:  # a removed member learns nothing new, addresses neither
                    peers = await self.host.known_peers(self.link.circle_id)
                    self.session.send_peers(self.link.circle_id, peers)
                    self._queued.set()
                await self._read_loop(tg)
            except ENDS as exc:
                self._fail(exc)
            finally:
                self.closed = True
                for task in helpers:
                    task.cancel()
        # Batches still being stored were waited for by the task group.
        if self.failure is not None:
            raise self.failure

    def push(self, packed: list[bytes]) -> None:
        """Send new messages (``wire.pack_wire``) now; a peer too slow for them is dropped."""
        if self.closed:
            return
        if not self.session.push(packed):
            metrics.BUS_DROPPED.labels("gossip", "slow_peer").inc()
            self.close()
            return
        metrics.GOSSIP_MESSAGES.labels("out").inc(len(packed))
        self._queued.set()

    def close(self) -> None:
        """End the session."""
        self.closed = True
        self.link.close()

    def _fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc
        self.close()

    async def _read_loop(self, tg: asyncio.TaskGroup) -> None:
        session, clock = self.session, self.clock
        while not self.closed and not session.ended:
            try:
                data = await self.link.read(session.deadline - clock())
            except TimeoutError:
                session.expire(clock())
                continue
            session.receive_data(data, clock())
            while (event := session.next_event(clock())) is not None:
                self._queued.set()  # answers queued on the way (RECON, PONG) go out now
                await self._on_event(event, tg)
            self._queued.set()
            self._activity.set()

    async def _on_event(self, event: Event, tg: asyncio.TaskGroup) -> None:
        if isinstance(event, MsgsReceived):
            # Store this batch while the next is read: the store and this process
            # work at the same time. Bounded, so TCP still pushes back on a peer
            # that sends faster than we store.
            await self._receivers.acquire()
            tg.create_task(self._receive(event.msgs))
        elif isinstance(event, PeersReceived):
            await self.host.learn_peers(self.link.circle_id, self.link.peer_node_id, event.peers)
        else:
            await self._send_wanted(event.msg_ids)

    async def _receive(self, msgs: list[object]) -> None:
        session = self.session
        try:
            stored = await self.host.receive(
                self.link.circle_id,
                msgs,
                came=session.came,
                awaited=session.awaiting,
                control_only=self.catch_up,
            )
            self.received += stored  # after the await: two batches are stored at once
        except ENDS as exc:
            self._fail(exc)
        finally:
            self._receivers.release()
            session.stored(msgs, self.clock())
            self._activity.set()

    async def _send_wanted(self, msg_ids: list[str]) -> None:
        for i in range(0, len(msg_ids), FETCH_CHUNK):
            packed = await self.host.fetch_packed(msg_ids[i : i + FETCH_CHUNK])
            for chunk in nativeproto.msgs_chunks(packed):
                while not self.session.has_room:
                    self._room.clear()
                    await self._room.wait()
                self.session.send_msgs(chunk)
                self._queued.set()
            metrics.GOSSIP_MESSAGES.labels("out").inc(len(packed))
            if packed:
                self.host.crossed(self.link.circle_id)

    async def _write_loop(self) -> None:
        session = self.session
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                while session.queued:
                    await self.link.write(session.data_to_send(WRITE_CHUNK))
                    if session.has_room:
                        self._room.set()
        except ENDS as exc:
            self._fail(exc)

    async def _rounds(self) -> None:
        """Reconcile now and every ``anti_entropy_s``, one session of a circle at a time.

        Each peer sends all that our round finds missing, so a node joining a
        circle whose members all reconcile with it at once would take its
        history from every one of them. Taking turns, the second round finds
        little left. Only rounds we start wait for the turn: waiting never
        holds up an answer to a peer, so two nodes cannot wait on each other.
        """
        session, clock = self.session, self.clock
        while True:
            async with self.host.turn(self.link.circle_id):
                session.start_round(clock())
                self._queued.set()
                while (wait := session.settled_in(clock())) > 0:
                    self._activity.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._activity.wait(), wait)
            await asyncio.sleep(self.anti_entropy_s)
