"""The gossip process: its circles and index, its peer table, its sessions, and their tasks.

Everything it runs lives in one ``asyncio.TaskGroup``: heartbeats, the
store's events, the dial loop, every dial and every inbound connection.
A session's end is handled where it ends (``run_link``: one log line, one
counter, whatever the cause); anything else that fails ends the process,
and the supervisor starts it again from what the store holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from felund import metrics, netaddr
from felund.actor.runtime import Runtime
from felund.bus.aio import AsyncRPCClient, AsyncSubscriber, until_answered
from felund.bus.catchup import AsyncCatchUp
from felund.errors import PeerError, RPCError, RPCTimeout
from felund.gossip import addresses
from felund.gossip.circles import Circles
from felund.gossip.dialer import Dialer
from felund.gossip.inbound import Inbound
from felund.gossip.link import STREAM_LIMIT, Link, TcpStream
from felund.gossip.native_session import BoundedSet
from felund.gossip.peertable import PeerTable
from felund.gossip.reconcile import ItemSet
from felund.gossip.sessions import NativeRun, run_v1
from felund.gossip.v1_anchor import PAGE_ROWS, AnchorCursors
from felund.gossip.warn import Warnings
from felund.protocol import (
    CONTROL_CHANNEL,
    ENDPOINT_STORE_CTL,
    MAX_REPORTED_CIRCLES,
    OP_ANCHOR_PAGE,
    OP_CONTROL,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
)
from felund.v1 import events, ids
from felund.v1.wire import pack_wire

TICK_S = 0.2
MIN_ANNOUNCE_S = 1.0  # a config of 0 must not write an event per circle in a loop


class GossipNode:
    """The process's state, and the tasks that serve it."""

    def __init__(self, rt: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.cfg = rt.ctx.config.gossip
        self.node_id = rt.ctx.node_id
        self.clock = clock
        self.warn = Warnings(rt.log, clock)
        rpc = AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL)
        self.peers = PeerTable(rpc)
        self.sessions: dict[tuple[str, str], NativeRun] = {}  # (circle, peer node) -> live
        # (circle, peer node) -> end of its last good v1 round
        self.v1_contacts: dict[tuple[str, str], float] = {}
        self.exchanged: dict[str, float] = {}  # circle -> when (Unix) a message last crossed
        # Serving v1 peers as an anchor: where each one's pulls have got to.
        self.anchor_cursors = AnchorCursors() if self.cfg.anchor else None
        appenders = [AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL) for _ in range(2)]
        self.circles = Circles(rpc, appenders, self.push, self._local_post)
        self.dialer = Dialer(
            self.cfg,
            self.node_id,
            self.circles.keys,
            peers=self.peers,
            run_link=self.run_link,
            in_touch=self.in_touch,
            warn=self.warn,
            clock=clock,
        )
        self.inbound = Inbound(
            self.cfg,
            self.node_id,
            self.circles.keys,
            run_link=self.run_link,
            warn=self.warn,
            clock=clock,
        )
        # Pruned messages too (ids only): counted as held, never fetched again.
        self.catchup = AsyncCatchUp(rt.bus, rpc, self.store_down, with_pruned=True)
        self.circle_events = AsyncSubscriber(rt.bus, TOPIC_CIRCLE_CHANGED)

    # --- what sessions ask of the process (felund.gossip.host.GossipHost) ------------
    @property
    def index(self) -> dict[str, ItemSet]:
        """Per circle, the messages the store holds."""
        return self.circles.index

    @property
    def control(self) -> dict[str, ItemSet]:
        """Per circle, the control events the store holds."""
        return self.circles.control

    def turn(self, circle_id: str) -> asyncio.Lock:
        """Held by a session's own reconciliation round (one per circle at a time)."""
        return self.circles.turn(circle_id)

    async def fetch(self, msg_ids: list[str]) -> list[dict[str, Any]]:
        """Wire messages held among ``msg_ids``."""
        return await self.circles.fetch(msg_ids)

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """As ``fetch``, packed."""
        return await self.circles.fetch_packed(msg_ids)

    async def receive(
        self,
        circle_id: str,
        raw_msgs: list[Any],
        came: BoundedSet | None = None,
        awaited: Collection[str] = (),
        control_only: bool = False,
    ) -> int:
        """Check and store messages from a peer (``Circles.receive``)."""
        stored = await self.circles.receive(circle_id, raw_msgs, came, awaited, control_only)
        if stored:
            self.crossed(circle_id)
        return stored

    def crossed(self, circle_id: str) -> None:
        """Messages of the circle went to a peer or came from one, now."""
        self.exchanged[circle_id] = time.time()

    async def anchor_page(self, circle_id: str, since: int, after: int) -> list[dict[str, Any]]:
        """A circle's messages by when the store took them (``store.anchor.page``)."""
        body = {"circle_id": circle_id, "since": since, "after": after, "limit": PAGE_ROWS}
        answer = await self.circles.rpc.call(OP_ANCHOR_PAGE, body)
        rows: list[dict[str, Any]] = answer["rows"]
        return rows

    async def known_peers(self, circle_id: str) -> list[dict[str, Any]]:
        """The addresses of a circle to tell its members of: those where this node met
        the node it names (hearsay is not passed on: a member's junk goes no further
        than the nodes it told)."""
        shared = []
        for row in await self.peers.known(circle_id):
            node = row["node_id"] or self.dialer.met.get((circle_id, row["addr"]), "")
            if node and row["last_seen"]:
                shared.append({**row, "node_id": node})
        return shared

    async def learn_peers(self, circle_id: str, teacher: str, peers: list[dict[str, Any]]) -> None:
        """Remember addresses a member told us about (bounded: ``PeerTable.take``)."""
        await self.peers.learn(circle_id, teacher, peers)

    # --- sessions ----------------------------------------------------------------------
    def push(self, circle_id: str, wires: list[dict[str, Any]]) -> None:
        """Send stored messages to the circle's native peers, not back to a peer they came
        from."""
        packed: dict[str, bytes] = {}  # each packed once, for however many peers
        for (session_circle, _), run in list(self.sessions.items()):
            if session_circle == circle_id:
                came = run.session.came
                out = []
                for w in wires:
                    if run.catch_up and w.get("channel_id") != CONTROL_CHANNEL:
                        continue
                    if w["msg_id"] not in came:
                        if w["msg_id"] not in packed:
                            packed[w["msg_id"]] = pack_wire(w)
                        out.append(packed[w["msg_id"]])
                run.push(out)
                if out:
                    self.crossed(circle_id)

    def in_touch(self, circle_id: str, addr: str, node_id: str) -> bool:
        """Whether a native session of the circle is open with that address or node."""
        if node_id and (circle_id, node_id) in self.sessions:
            return True
        return any(c == circle_id and run.addr == addr for (c, _), run in self.sessions.items())

    async def run_link(self, link: Link, addr: str, configured: bool) -> None:
        """Run an authenticated connection to its end; log one line about it.

        ``addr``: the address dialled (``configured``: one the user gave), or the
        peer's own for an inbound link.
        """
        started = self.clock()
        outcome, proto, moved = "ok", "native" if link.native else "v1", 0
        key = (link.circle_id, link.peer_node_id)
        try:
            if link.peer_node_id == self.node_id:
                self.peers.own.add(addr)
                outcome = "self"
                return
            await self._note_address(link, addr, configured)
            if not link.native:
                moved = await run_v1(link, self, self.clock, self.anchor_cursors)
                return
            if key in self.sessions:
                outcome = "duplicate"
                return
            if self._rekeyed_since(link.circle_id, link.agreed.newest):
                outcome = "rekeyed"  # keyed under a view of the epochs already gone: redial
                return
            run = NativeRun(link, addr, self, self.cfg.anti_entropy_interval_s, self.clock)
            self.sessions[key] = run
            metrics.GOSSIP_PEERS_CONNECTED.inc()
            try:
                await run.run()
            finally:
                metrics.GOSSIP_PEERS_CONNECTED.dec()
                del self.sessions[key]
                moved = run.received
        except PeerError as exc:
            outcome = exc.kind
            if exc.kind != "closed":  # a peer that goes away broke no rule
                metrics.BAD_INPUT.labels("gossip", exc.kind).inc()
                self.warn(
                    f"peer.{exc.kind}",
                    peer=addr,
                    circle_id=link.circle_id,
                    peer_node_id=link.peer_node_id,
                    detail=exc.detail,
                )
        except OSError as exc:
            outcome = "closed"
            self.rt.log.info("peer.disconnected", peer=addr, error=type(exc).__name__)
        except RPCTimeout:
            outcome = "store_unavailable"  # the peer will come back; so will the store
            self.warn("gossip.store_unavailable")
        except Exception as exc:  # a bug met by one session ends that session, not the process
            outcome = "error"
            self.rt.log.error("gossip.session_error", peer=addr, exc_info=exc)
        finally:
            link.close()
            metrics.GOSSIP_SESSIONS.labels(proto, outcome).inc()
            if proto == "v1" and outcome == "ok":
                self.v1_contacts[key] = self.clock()
            self.rt.log.info(
                "gossip.session",
                peer=addr,
                protocol=proto,
                catch_up=link.agreed.catch_up,
                outcome=outcome,
                inbound=not link.is_client,
                messages_in=moved,
                bytes_in=link.bytes_in,
                bytes_out=link.bytes_out,
                seconds=round(self.clock() - started, 3),
            )

    async def _note_address(self, link: Link, addr: str, configured: bool) -> None:
        """What the connection tells the peer table: an address we reached, or the one
        an inbound peer listens at (v1's rule: the address we see it at, with the port
        it advertises)."""
        if link.is_client:
            await self.peers.reached(link.circle_id, addr, "" if configured else link.peer_node_id)
            return
        seen = addresses.parse(addr)
        port = link.agreed.peer_listen_addr.rpartition(":")[2]
        if seen is not None and port.isdigit() and len(port) <= 5:
            learned = dataclasses.replace(seen, port=int(port)).text
            entry = {"addr": learned, "node_id": link.peer_node_id}
            await self.peers.learn(link.circle_id, link.peer_node_id, [entry], seen=True)

    def peer_count(self) -> int:
        """Other nodes in touch now: an open native session, or a good v1 round lately.

        Distinct node ids across circles: a peer met in two circles is one
        peer. A v1 peer counts for two round intervals after its last round
        (rounds come one interval apart), so one slow round does not hide it.
        """
        return len({node for _, node in self._in_touch()})

    def _in_touch(self) -> set[tuple[str, str]]:
        """(circle, peer node) of every peer in touch now (``peer_count``'s rule)."""
        recent = self.clock() - 2 * self.cfg.round_interval_s
        for key, seen in list(self.v1_contacts.items()):
            if seen < recent:
                del self.v1_contacts[key]
        return self.sessions.keys() | self.v1_contacts.keys()

    def connectivity(self) -> dict[str, dict[str, Any]]:
        """The heartbeat's per-circle report (relay-sync's map, of gossip's facts): peers in
        touch now and when a message last crossed, for at most MAX_REPORTED_CIRCLES."""
        peers = Counter(circle_id for circle_id, _ in self._in_touch())
        return {
            circle_id: {"peers": peers[circle_id], "last_message_ts": self.exchanged.get(circle_id)}
            for circle_id in itertools.islice(self.circles.keys, MAX_REPORTED_CIRCLES)
        }

    def _local_post(self) -> None:
        self.dialer.wake.set()  # v1 peers have no push: give them a round now

    # --- the store ---------------------------------------------------------------------
    def store_down(self) -> None:
        """The store did not answer (it is waited for)."""
        self.warn("gossip.store_unavailable")

    async def load_circles(self) -> None:
        """Circles and epoch secrets from the store; sessions of a circle left are ended,
        and those of a circle with a new newest epoch (they were keyed under another, or
        catching up: the next ones are under the new one, or catch up from it)."""
        await until_answered(self.circles.load, self.store_down)
        for (circle_id, _), run in list(self.sessions.items()):
            if self._rekeyed_since(circle_id, run.link.agreed.newest):
                run.close()
        for circle_id in self.exchanged.keys() - self.circles.keys.keys():
            del self.exchanged[circle_id]

    def _rekeyed_since(self, circle_id: str, newest: str) -> bool:
        """Whether a circle was left, or its newest epoch is no longer ``newest`` (the one
        a session was keyed with: each side judges from its own newest, so comparing a
        session's own snapshot, not a change seen by a reload, misses no handshake that
        was under way while the epochs moved)."""
        keys = self.circles.keys.get(circle_id)
        return keys is None or keys.newest != newest

    async def follow_circles(self) -> None:
        """Reload the circles whenever the store says they changed."""
        while True:
            await self.circle_events.recv_from(SVC_STORE)
            await self.load_circles()
            self.dialer.wake.set()

    async def announce(self) -> None:
        """Announce this node as an anchor in each circle, once per interval, from one
        interval after start (as v1 does; a process restarting in a loop never floods).

        Written by the store like any control event of ours, so it travels by gossip
        and relay alike. Skipped for a round when the store does not answer.
        """
        interval = max(self.cfg.anchor_announce_interval_s, MIN_ANNOUNCE_S)
        while True:
            await asyncio.sleep(interval)
            for circle_id in list(self.circles.keys):
                now = int(time.time())
                body = {
                    "circle_id": circle_id,
                    "msg_id": ids.new_msg_id(self.node_id, now),
                    "created_ts": now,
                    "event": events.anchor_announce(self.node_id),
                }
                try:
                    await self.circles.rpc.call(OP_CONTROL, body)
                except RPCTimeout:
                    self.warn("gossip.store_unavailable")
                    break
                except RPCError as exc:  # a circle left meanwhile
                    self.warn("gossip.announce_refused", circle_id=circle_id, detail=exc.message)

    # --- the process -------------------------------------------------------------------
    async def heartbeats(self, stop: Callable[[], object]) -> None:
        """Heartbeats; ``stop()`` once the process is asked to stop."""
        while self.rt.running():
            peers = self.peer_count()
            metrics.GOSSIP_PEERS.set(peers)
            self.rt.tick(
                {
                    "sessions": len(self.sessions),
                    "last_seq": self.catchup.follower.last,
                    "peers": peers,
                    "connectivity": self.connectivity(),
                }
            )
            await asyncio.sleep(TICK_S)
        stop()

    async def serve(self, listener: socket.socket) -> None:
        """Serve until asked to stop (then return)."""
        port = listener.getsockname()[1]
        self.dialer.listen_addr = netaddr.invite_peer(self.cfg._replace(port=port))
        asyncio.get_running_loop().set_exception_handler(self._on_loop_error)
        me = asyncio.current_task()
        assert me is not None
        server: asyncio.Server | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.heartbeats(me.cancel))  # while waiting for the store too
                # Subscribed (in __init__) before the index loads, so events meanwhile
                # wait in the socket; peers are met only once it has loaded, as
                # reconciling against a half-loaded index would have them send us
                # everything we already hold.
                await self.load_circles()
                await self.catchup.snapshot(self.circles.apply_stored)

                def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    stream = TcpStream(reader, writer)
                    if self.inbound.admit(stream):
                        serving = self.inbound.serve(stream)
                        try:
                            tg.create_task(serving)
                        except RuntimeError:  # the group is ending: so is the process
                            serving.close()
                            stream.close()

                server = await asyncio.start_server(accepted, sock=listener, limit=STREAM_LIMIT)
                self.rt.log.info(
                    "gossip.ready",
                    listen=self.dialer.listen_addr,
                    circles=len(self.circles.keys),
                    messages=self.catchup.follower.last,
                )
                tg.create_task(self.catchup.follow(self.circles.apply_stored))
                tg.create_task(self.follow_circles())
                tg.create_task(self.dialer.run(tg))
                if self.cfg.anchor:
                    tg.create_task(self.announce())
        except asyncio.CancelledError:
            if self.rt.running():
                raise  # not our own stop
        finally:
            if server is not None:
                server.close()
            for run in list(self.sessions.values()):
                run.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # What asyncio reports outside any task of ours (a transport's write failing).
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError | ConnectionError):
            return  # connections cut at shutdown or by the peer
        self.rt.log.error(
            "gossip.loop_error",
            message=str(context.get("message")),
            error=type(exc).__name__ if exc else None,
            detail=str(exc)[:200],
        )
