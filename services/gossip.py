"""The gossip actor: TCP sessions with the other members of this node's circles.

- Owns: live TCP connections; the listening socket is the supervisor's
  (inherited as ``FELUND_GOSSIP_FD``), so a restart drops no connection
  attempt queued in the kernel.
- Talks to the store: ``store.circle.keys``, ``store.snapshot`` (its index of
  message ids), ``store.fetch`` (wire messages to send), ``store.append``
  (messages received; only an acknowledged append counts as received),
  ``store.peers`` / ``store.peers.add`` (addresses, peer exchange).
- Subscribes: ``chat.msg.stored`` (push to connected peers at once),
  ``chat.circle.changed``, store heartbeats (to notice lost events).
- Sessions: native peers keep one sealed connection per circle, with push
  and periodic range reconciliation; v1 peers get the v1 round every
  ``gossip.round_interval_s`` and at once after a local post.
- Heartbeat: ``sessions`` (open native sessions), ``last_seq`` (the index's),
  and ``peers``: the distinct other nodes it is in touch with now, those
  with an open native session or a v1 round that ended well within the last
  two round intervals (also the ``felund_gossip_peers`` gauge).
- Restart: holds nothing the store does not; rebuilds its index from it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import socket
import time
from typing import Any

from felund import metrics, netaddr
from felund.actor.runtime import Runtime
from felund.bus.aio import AsyncRPCClient, AsyncSubscriber, until_answered
from felund.bus.catchup import Follower
from felund.errors import InvalidMessage, PeerError, RPCError, RPCTimeout
from felund.gossip.handshake import Link, accept, connect
from felund.gossip.native_session import NativeSession
from felund.gossip.reconcile import ItemSet
from felund.gossip.v1_frames import MAX_READ_LINE
from felund.gossip.v1_round import v1_round
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    GOSSIP_FD_ENV,
    MAX_POST_BATCH,
    MAX_SNAPSHOT_PAGE,
    OP_APPEND,
    OP_CIRCLE_KEYS,
    OP_FETCH,
    OP_PEERS,
    OP_PEERS_ADD,
    OP_SNAPSHOT,
    PUSH_FRESH_S,
    SVC_GOSSIP,
    SVC_STORE,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_HEARTBEAT,
    TOPIC_MSG_STORED,
)
from felund.v1.wire import check_shape, pack_wire

TICK_S = 0.2
BACKOFF_MAX_S = 60.0
MAX_MSGS_PER_FRAME = 5000
_LOG_EVERY_S = 10.0


class Gossip:
    """The process: its index, its sessions, its connections."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cfg = rt.ctx.config.gossip
        self.node_id = rt.ctx.node_id
        self.rpc = AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL)
        # Appends from two sessions (or two batches of one) wait on the store
        # together, so it can commit them in one transaction.
        self.appenders = [AsyncRPCClient(rt.bus, ENDPOINT_STORE_CTL) for _ in range(2)]
        self.secrets: dict[str, str] = {}
        self.index: dict[str, ItemSet] = collections.defaultdict(ItemSet)
        self.turns: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.pending: set[str] = set()  # msg_ids sent to the store, not yet answered
        self.follower = Follower()
        self.sessions: dict[tuple[str, str], NativeSession] = {}  # (circle, peer node) -> live
        self.dialing: set[tuple[str, str]] = set()  # (circle, addr) being contacted
        self.backoff: dict[tuple[str, str], tuple[float, float]] = {}  # -> (until, delay)
        self.v1_only: set[str] = set()  # addrs that did not take the native offer
        self.self_addrs: set[str] = set()
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.wake = asyncio.Event()
        self.listen_addr = ""
        self._logged: dict[str, float] = {}
        self.v1_contacts: dict[str, float] = {}  # peer node id -> end of its last good v1 round

    # --- store --------------------------------------------------------------
    async def load_circles(self) -> None:
        """Circles and secrets, from the store."""
        answer = await self.rpc.call(OP_CIRCLE_KEYS, {})
        self.secrets = {c["circle_id"]: c["secret"] for c in answer["circles"]}
        for (circle_id, _), session in list(self.sessions.items()):
            if circle_id not in self.secrets:
                session.close()  # a circle left: stop syncing it now

    async def catch_up(self) -> None:
        """Page the store's messages into the index until it is current."""
        while True:
            # Pruned messages too (ids only): counted as held, never fetched again.
            answer = await self.rpc.call(
                OP_SNAPSHOT,
                {"since": self.follower.last, "limit": MAX_SNAPSHOT_PAGE, "with_pruned": True},
            )
            self._index_rows(self.follower.on_snapshot(answer["msgs"], answer["covers"]))
            if not answer["more"]:
                break
        self._apply_stored(self.follower.finish_snapshot())

    def _index_rows(self, rows: list[dict[str, Any]]) -> None:
        by_circle: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
        for r in rows:
            by_circle[r["circle_id"]].append((r["created_ts"], r["msg_id"]))
        for circle_id, items in by_circle.items():
            self.index[circle_id].add_many(items)

    def _apply_stored(self, rows: list[dict[str, Any]]) -> None:
        """Messages newly stored: index them, push them to connected peers."""
        self._index_rows(rows)
        by_circle: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        local = False
        for r in rows:
            # The store attaches the wire form only to what is worth pushing
            # on (ours, and peers' fresh ones: protocol.PUSH_FRESH_S).
            if "wire" in r:
                by_circle[r["circle_id"]].append(r["wire"])
            local |= r.get("origin") == "local"
        for circle_id, wires in by_circle.items():
            self._push(circle_id, wires)
        if local:
            self.wake.set()  # v1 peers have no push: give them a round now

    def turn(self, circle_id: str) -> asyncio.Lock:
        """Held by a session's own reconciliation round (one per circle at a time)."""
        return self.turns[circle_id]

    def _push(self, circle_id: str, wires: list[dict[str, Any]]) -> None:
        """Send stored messages to the circle's connected native peers, but not back to
        a peer they came from."""
        packed: dict[str, bytes] = {}  # each packed once, for however many peers
        for (session_circle, _), session in list(self.sessions.items()):
            if session_circle == circle_id:
                out = []
                for w in wires:
                    if w["msg_id"] not in session.came:
                        if w["msg_id"] not in packed:
                            packed[w["msg_id"]] = pack_wire(w)
                        out.append(packed[w["msg_id"]])
                session.push(out)

    async def follow(self, sub: AsyncSubscriber) -> None:
        """Apply the store's events for as long as the process runs."""
        while True:
            got = await sub.recv_from(SVC_STORE)
            frame, body = got.frame, got.frame.body
            if frame.topic == TOPIC_MSG_STORED and isinstance(body.get("msgs"), list):
                if got.missed:
                    self.follower.syncing = True
                self._apply_stored(self.follower.on_event(frame.header.inc, body["msgs"]))
            elif frame.topic == TOPIC_CIRCLE_CHANGED:
                await until_answered(self.load_circles, self._store_down)
                self.wake.set()
            elif frame.topic == TOPIC_HEARTBEAT and type(body.get("last_seq")) is int:
                self.follower.on_heartbeat(str(body.get("inc")), body["last_seq"])
            if self.follower.syncing:
                await until_answered(self.catch_up, self._store_down)

    async def fetch(self, msg_ids: list[str]) -> list[dict[str, Any]]:
        """Wire messages held among ``msg_ids``."""
        return await self._fetch(msg_ids, packed=False)

    async def fetch_packed(self, msg_ids: list[str]) -> list[bytes]:
        """Wire messages held among ``msg_ids``, packed (``wire.pack_wire``)."""
        return await self._fetch(msg_ids, packed=True)

    async def _fetch(self, msg_ids: list[str], packed: bool) -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(msg_ids), MAX_POST_BATCH):
            chunk = msg_ids[i : i + MAX_POST_BATCH]
            answer = await self.rpc.call(OP_FETCH, {"msg_ids": chunk, "packed": packed})
            out.extend(answer["msgs"])
        return out

    async def receive(self, link: Link, raw_msgs: list[Any]) -> int:
        """Store messages from a peer; PeerError (after storing the good ones) if any
        was malformed, forged or of another circle.

        Checked once, by the store: here only their shape (check_shape: what the
        index needs, and that the map can go on the bus), then they go to the
        store as they came, which parses and authenticates every one before
        storing it and answers each refusal with its kind, counted here as the
        peer's bad input. The store is the only writer and must check whatever
        it is given (relay-sync's messages too), so checking fully here as well
        would be the same work twice (it was a third of this process's CPU in a
        backlog). Trusting a check made here instead would let one buggy
        producer put a bad row in the database.
        """
        if len(raw_msgs) > MAX_MSGS_PER_FRAME:
            raise PeerError("frame", f"more than {MAX_MSGS_PER_FRAME} messages in one frame")
        problems: collections.Counter[str] = collections.Counter()
        fresh: list[dict[str, Any]] = []
        index, pending = self.index[link.circle_id], self.pending
        unknown = []
        for raw in raw_msgs:
            try:
                msg_id, circle_id, _ = check_shape(raw)
            except InvalidMessage as exc:
                problems[exc.kind] += 1
                continue
            if circle_id != link.circle_id:
                problems["other_circle"] += 1
            elif msg_id not in index:
                unknown.append(msg_id)
                # Another session (or this frame) is storing it already: two peers
                # sending one backlog would otherwise have every message appended
                # twice. If that append fails, reconciliation brings it again.
                if msg_id not in pending:
                    pending.add(msg_id)
                    fresh.append(raw)
        # Not to be pushed back to this peer, however and whenever we store them.
        came = link.extra.get("came")
        if came is not None:
            came.add_all(unknown)
        awaited = link.extra.get("awaiting", ())
        stored, push = 0, []
        try:
            for i in range(0, len(fresh), MAX_POST_BATCH):
                chunk = fresh[i : i + MAX_POST_BATCH]
                appender = min(self.appenders, key=lambda c: c.busy)
                answer = await appender.call(OP_APPEND, {"origin": "gossip", "msgs": chunk})
                now = time.time()
                fresh_since = now - PUSH_FRESH_S
                held = []
                for raw, result in zip(chunk, answer["results"], strict=True):
                    if result.startswith("rejected:"):
                        problems[result.removeprefix("rejected:")] += 1
                        continue
                    held.append((raw["created_ts"], raw["msg_id"]))
                    if result == "stored":
                        stored += 1
                        metrics.DELIVERY_LATENCY.observe(max(0.0, now - raw["created_ts"]))
                        if raw["created_ts"] >= fresh_since and raw["msg_id"] not in awaited:
                            push.append(raw)
                index.add_many(held)
        finally:
            pending.difference_update(raw["msg_id"] for raw in fresh)
        # Stored, so pushing on loses nothing if this process dies now (the store's
        # event does not carry gossip's own messages: protocol.PUSH_FRESH_S). Not
        # what a reconciliation brought (NativeSession.awaiting).
        if push:
            self._push(link.circle_id, push)
        metrics.GOSSIP_MESSAGES.labels("in").inc(stored)
        if problems:
            for kind, n in problems.items():
                metrics.BAD_INPUT.labels("gossip", kind).inc(n)
            raise PeerError("bad_message", ", ".join(f"{n} {k}" for k, n in problems.items()))
        return stored

    async def known_peers(self, circle_id: str) -> list[dict[str, Any]]:
        """Addresses known for a circle."""
        answer = await self.rpc.call(OP_PEERS, {})
        return [p for p in answer["peers"] if p["circle_id"] == circle_id]

    async def learn_peers(self, circle_id: str, peers: list[dict[str, Any]]) -> None:
        """Remember addresses a peer told us about (the store skips invalid ones)."""
        entries = [
            {**p, "circle_id": circle_id}
            for p in peers
            if p.get("addr") not in self.self_addrs and p.get("addr") != self.listen_addr
        ]
        if entries:
            await self.rpc.call(OP_PEERS_ADD, {"peers": entries})

    # --- sessions -----------------------------------------------------------
    async def run_link(self, link: Link, addr: str) -> None:
        """Run an authenticated connection to its end; log one line about it."""
        started = time.monotonic()
        outcome, proto, moved = "ok", "native" if link.native else "v1", 0
        key = (link.circle_id, link.peer_node_id)
        link.extra["addr"] = addr
        try:
            if link.peer_node_id == self.node_id:
                self.self_addrs.add(addr)
                outcome = "self"
                return
            if link.is_client:  # an address we dialled; an inbound one is a source port
                await self.learn_peers(
                    link.circle_id,
                    [{"addr": addr, "node_id": link.peer_node_id, "last_seen": int(time.time())}],
                )
            if not link.native:
                moved = await v1_round(link, self)
                return
            if key in self.sessions:
                outcome = "duplicate"
                return
            session = NativeSession(link, self, self.cfg.anti_entropy_interval_s)
            self.sessions[key] = session
            metrics.GOSSIP_PEERS_CONNECTED.inc()
            try:
                await session.run()
            finally:
                metrics.GOSSIP_PEERS_CONNECTED.dec()
                del self.sessions[key]
                moved = session.received
        except PeerError as exc:
            outcome = exc.kind
            if exc.kind != "closed":  # a peer that goes away broke no rule
                metrics.BAD_INPUT.labels("gossip", exc.kind).inc()
                self._warn(
                    f"peer.{exc.kind}",
                    peer=addr,
                    circle_id=link.circle_id,
                    peer_node_id=link.peer_node_id,
                    detail=exc.detail,
                )
        except (ConnectionError, OSError) as exc:
            outcome = "closed"
            self.rt.log.info("peer.disconnected", peer=addr, error=type(exc).__name__)
        except RPCTimeout:
            outcome = "store_unavailable"  # the peer will come back; so will the store
            self._warn("gossip.store_unavailable")
        finally:
            link.close()
            metrics.GOSSIP_SESSIONS.labels(proto, outcome).inc()
            if proto == "v1" and outcome == "ok":
                self.v1_contacts[link.peer_node_id] = time.monotonic()
            self.rt.log.info(
                "gossip.session",
                peer=addr,
                protocol=proto,
                outcome=outcome,
                inbound=not link.is_client,
                messages_in=moved,
                bytes_in=link.bytes_in,
                bytes_out=link.bytes_out,
                seconds=round(time.monotonic() - started, 3),
            )

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError | ConnectionError):
            return  # connections cut at shutdown or by the peer
        self.rt.log.error(
            "gossip.loop_error",
            message=str(context.get("message")),
            error=type(exc).__name__ if exc else None,
            detail=str(exc)[:200],
        )

    def _warn(self, event: str, **fields: Any) -> None:
        """A warning about a peer, at most one per kind every few seconds."""
        now = time.monotonic()
        if now - self._logged.get(event, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[event] = now
            self.rt.log.warning(event, **fields)

    async def on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A peer connected to us."""
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        addr = f"{ip}:{peer[1]}" if peer else "?"
        if (
            self.per_ip[ip] >= self.cfg.max_connections_per_ip
            or sum(self.per_ip.values()) >= self.cfg.max_connections
        ):
            metrics.BAD_INPUT.labels("gossip", "too_many_connections").inc()
            self._warn("peer.too_many_connections", peer=addr)
            writer.close()
            return
        self.per_ip[ip] += 1
        try:
            try:
                link = await accept(reader, writer, self.secrets, self.node_id)
            except PeerError as exc:
                metrics.BAD_INPUT.labels("gossip", exc.kind).inc()
                metrics.GOSSIP_SESSIONS.labels("handshake", exc.kind).inc()
                self._warn(f"peer.{exc.kind}", peer=addr, detail=exc.detail)
                writer.close()
                return
            except (ConnectionError, OSError):
                writer.close()
                return
            listen = link.peer_listen_addr
            if listen.rpartition(":")[2].isdigit():
                # v1's rule: the address we saw, with the port it listens on.
                learned = f"{ip}:{listen.rpartition(':')[2]}"
                await self.learn_peers(
                    link.circle_id,
                    [
                        {
                            "addr": learned,
                            "node_id": link.peer_node_id,
                            "last_seen": int(time.time()),
                        }
                    ],
                )
            await self.run_link(link, addr)
        finally:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]

    async def dial(self, circle_id: str, addr: str) -> None:
        """Contact one known peer address of a circle."""
        key = (circle_id, addr)
        host, _, port = addr.rpartition(":")
        offer = self.cfg.offer_native and addr not in self.v1_only
        try:
            link = await connect(
                host.strip("[]"),
                int(port),
                circle_id=circle_id,
                secret=self.secrets[circle_id],
                node_id=self.node_id,
                listen_addr=self.listen_addr,
                offer_native=offer,
            )
        except PeerError as exc:
            if offer and exc.kind in ("closed", "garbage", "unexpected", "frame"):
                self.v1_only.add(addr)  # it choked on the offer: speak plain v1 to it
                self.wake.set()
            _, delay = self.backoff.get(key, (0.0, 0.5))
            delay = min(delay * 2, BACKOFF_MAX_S)
            self.backoff[key] = (time.monotonic() + delay * random.uniform(0.8, 1.2), delay)
            self._warn(
                "peer.unreachable" if exc.kind == "unreachable" else f"peer.{exc.kind}",
                peer=addr,
                circle_id=circle_id,
                detail=exc.detail,
            )
            return
        finally:
            self.dialing.discard(key)
        self.backoff.pop(key, None)
        await self.run_link(link, addr)

    async def dial_loop(self) -> None:
        """Keep native sessions open and v1 rounds going to every known peer."""
        while True:
            now = time.monotonic()
            connected = {(c, s.link.extra.get("addr")) for (c, _), s in self.sessions.items()}
            for circle_id in list(self.secrets):
                try:
                    peers = await self.known_peers(circle_id)
                except (RPCTimeout, RPCError):
                    break
                for p in peers:
                    addr, key = p["addr"], (circle_id, p["addr"])
                    if (
                        addr in self.self_addrs
                        or addr == self.listen_addr
                        or key in self.dialing
                        or key in connected
                        or (circle_id, p["node_id"]) in self.sessions
                        or self.backoff.get(key, (0.0, 0.0))[0] > now
                    ):
                        continue
                    self.dialing.add(key)
                    asyncio.get_running_loop().create_task(self.dial(circle_id, addr))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.cfg.round_interval_s)

    def peer_count(self) -> int:
        """Other nodes in touch now: an open native session, or a good v1 round lately.

        Distinct node ids across circles: a peer met in two circles is one
        peer. A v1 peer counts for two round intervals after its last round
        (rounds come one interval apart), so one slow round does not hide it.
        """
        recent = time.monotonic() - 2 * self.cfg.round_interval_s
        for node_id, seen in list(self.v1_contacts.items()):
            if seen < recent:
                del self.v1_contacts[node_id]
        return len({node for _, node in self.sessions} | self.v1_contacts.keys())

    async def tick_loop(self) -> None:
        """Heartbeats; end the process when asked to stop."""
        while self.rt.running():
            peers = self.peer_count()
            metrics.GOSSIP_PEERS.set(peers)
            self.rt.tick(
                {"sessions": len(self.sessions), "last_seq": self.follower.last, "peers": peers}
            )
            await asyncio.sleep(TICK_S)

    def _store_down(self) -> None:
        self._warn("gossip.store_unavailable")

    async def run(self, listener: socket.socket) -> None:
        """Serve until asked to stop."""
        port = listener.getsockname()[1]
        self.listen_addr = netaddr.invite_peer(dataclasses.replace(self.cfg, port=port))
        asyncio.get_running_loop().set_exception_handler(self._on_loop_error)
        ticks = asyncio.create_task(self.tick_loop())  # heartbeats while waiting for the store
        # Subscribe first, then load the index (events meanwhile wait in the
        # socket), and only then meet peers: reconciling against a half-loaded
        # index would have them send us everything we already hold.
        sub = AsyncSubscriber(self.rt.bus, TOPIC_MSG_STORED, TOPIC_CIRCLE_CHANGED, TOPIC_HEARTBEAT)
        await until_answered(self.load_circles, self._store_down)
        await until_answered(self.catch_up, self._store_down)
        server = await asyncio.start_server(self.on_inbound, sock=listener, limit=MAX_READ_LINE + 1)
        self.rt.log.info(
            "gossip.ready",
            listen=self.listen_addr,
            circles=len(self.secrets),
            messages=self.follower.last,
        )
        tasks = [ticks, *(asyncio.create_task(c) for c in (self.follow(sub), self.dial_loop()))]
        try:
            # Any task that fails ends the process (crash-only: the supervisor restarts it).
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            server.close()
            for t in tasks:
                t.cancel()
            for s in list(self.sessions.values()):
                s.link.close()


def _listener(rt: Runtime) -> socket.socket:
    fd = os.environ.get(GOSSIP_FD_ENV)
    if fd is not None:
        return socket.socket(fileno=int(fd))
    cfg = rt.ctx.config.gossip
    # Run on its own (not under the supervisor): bind the port ourselves.
    return socket.create_server((cfg.bind, cfg.port))


def main() -> None:
    """Entry point: ``python -m services.gossip``."""
    rt = Runtime(SVC_GOSSIP)
    listener = _listener(rt)
    listener.setblocking(False)
    try:
        asyncio.run(Gossip(rt).run(listener))
    finally:
        rt.close()


if __name__ == "__main__":
    main()
