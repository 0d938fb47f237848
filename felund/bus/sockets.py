"""The ZeroMQ bus: socket factory, publisher, subscriber, RPC client and server.

Events go through the supervisor's XSUB/XPUB proxy and may be lost (full
queues, restarts): each frame carries a sequence number per publisher
process and topic, so a subscriber counts every gap instead of losing
silently, and state is always recovered from the store, never from events.
Requests go to one actor's ROUTER; a client retries with the same id until
answered (Lazy Pirate), so servers must treat requests idempotently.
The subscriber's accounting is written once (``SubscriberBase``) and the
client's retry rule once (``felund.bus.rpc``), with blocking faces here and
asyncio faces in ``felund.bus.aio``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import zmq

from felund import lazy
from felund.bus import envelope
from felund.bus.envelope import Frame
from felund.bus.rpc import BlockingRPCClient, BusBase
from felund.config import BusConfig
from felund.errors import FrameError
from felund.home import Layout
from felund.protocol import (
    BUS_MAX_MSG_SIZE,
    ENDPOINT_EVENTS_IN,
    ENDPOINT_EVENTS_OUT,
    REPLY_ERR_SUFFIX,
    REPLY_OK_SUFFIX,
    TOPIC_HEARTBEAT,
)

if TYPE_CHECKING:
    import zmq.asyncio

    from felund import metrics
else:
    metrics = lazy.module("felund.metrics")

SocketT = TypeVar("SocketT", bound="zmq.Socket[Any]")


class _Tally:
    """A counter child updated in bulk: the multiprocess counter costs microseconds an inc."""

    __slots__ = ("_child", "pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.pending = 0

    def flush(self) -> None:
        if self.pending:
            self._child.inc(self.pending)
            self.pending = 0


_FLUSH_EVERY = 4096


class Bus(BusBase):
    """One process's access to the node's bus, through ZeroMQ sockets."""

    def __init__(self, lay: Layout, service: str, cfg: BusConfig) -> None:
        super().__init__(lay, service, cfg)
        self.ctx = zmq.Context()
        self.topic_seqs: dict[str, int] = {}
        self._tallies: list[_Tally] = []

    def tally(self, child: Any) -> _Tally:
        """A bulk-updated counter, flushed by ``flush_metrics``."""
        t = _Tally(child)
        self._tallies.append(t)
        return t

    def flush_metrics(self) -> None:
        """Push bulk-counted values to the metrics (each heartbeat, and at close)."""
        for t in self._tallies:
            t.flush()

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        """A socket with explicit limits: bounded queues, no linger, capped frames."""
        sock: zmq.Socket[bytes] = self.ctx.socket(kind)
        return self._limited(sock)

    def async_socket(self, kind: int) -> zmq.asyncio.Socket:
        """An asyncio socket with the same limits. Made as one, never wrapped around a
        synchronous socket: a wrapper and its original would both close the handle."""
        ctx: Any = self.ctx  # typed as a context of synchronous sockets only
        sock: zmq.asyncio.Socket = ctx.socket(kind, lazy.module("zmq.asyncio").Socket)
        return self._limited(sock)

    def _limited(self, sock: SocketT) -> SocketT:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.cfg.hwm)
        sock.setsockopt(zmq.RCVHWM, self.cfg.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, BUS_MAX_MSG_SIZE)
        return sock

    def publisher(self) -> Publisher:
        """A publisher connected to the proxy's input."""
        return Publisher(self)

    def subscriber(self, *prefixes: str) -> Subscriber:
        """A subscriber to topic prefixes (each ends at a dot boundary)."""
        return Subscriber(self, prefixes)

    def rpc_client(self, endpoint_name: str) -> RPCClient:
        """A client of one actor's request endpoint."""
        return RPCClient(self, endpoint_name)

    def rpc_server(self, endpoint_name: str) -> RPCServer:
        """Bind this actor's request endpoint."""
        return RPCServer(self, endpoint_name)

    def next_event_header(self, topic: str) -> envelope.Header:
        """A header numbered per topic, so any subscription can see its gaps."""
        seq = self.topic_seqs.get(topic, 0) + 1
        self.topic_seqs[topic] = seq
        return envelope.Header(
            v=1,
            id=f"{self.stamper.inc}.{topic}.{seq}",
            src=self.service,
            inc=self.stamper.inc,
            seq=seq,
            ts=time.time(),
        )

    def close(self, linger_ms: int = 0) -> None:
        """Close every socket, giving queued outgoing frames ``linger_ms`` to leave."""
        self.flush_metrics()
        self.ctx.destroy(linger=linger_ms)


class Publisher:
    """Publishes events; never blocks (a full queue drops, and the gap is seen downstream)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.sock = bus.socket(zmq.PUB)
        self.sock.connect(bus.endpoint(ENDPOINT_EVENTS_IN))
        self._published = bus.tally(metrics.BUS_PUBLISHED.labels(bus.service))

    def publish(self, topic: str, body: Any) -> None:
        """Send one event."""
        parts = envelope.encode(topic, self._bus.next_event_header(topic), body)
        self.sock.send_multipart(parts, flags=zmq.NOBLOCK)
        self._published.pending += 1
        if self._published.pending >= _FLUSH_EVERY:
            self._published.flush()

    def heartbeat(self, body: dict[str, Any]) -> None:
        """Publish a heartbeat naming the last seq of every topic, so losses at a
        stream's end (no later event to show the gap) are seen within a beat."""
        self.publish(TOPIC_HEARTBEAT, {**body, "seqs": dict(self._bus.topic_seqs)})


class Received(NamedTuple):
    """An event, and how many events of its stream were lost just before it."""

    frame: Frame
    missed: int


class SubscriberBase(Generic[SocketT]):
    """A subscription and its accounting: events lost per publisher and topic are counted.

    The faces (``Subscriber`` here, ``felund.bus.aio.AsyncSubscriber``) make the socket
    (``_new_socket``) and receive; decoding and loss counting are this class's.
    """

    def __init__(self, bus: Bus, prefixes: tuple[str, ...]) -> None:
        self._bus = bus
        self.sock = self._new_socket()
        for prefix in prefixes:
            self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self.sock.connect(bus.endpoint(ENDPOINT_EVENTS_OUT))
        self._last: dict[tuple[str, str], tuple[str, int]] = {}
        self.lost = 0  # events known lost, from gaps and from heartbeats
        self._received = bus.tally(metrics.BUS_RECEIVED.labels(bus.service))

    def _new_socket(self) -> SocketT:
        raise NotImplementedError

    def accept(self, parts: list[bytes]) -> Received | None:
        """Decode and account for received parts; None (counted) if they are bad."""
        try:
            frame = envelope.decode(parts)
        except FrameError as exc:
            self._bus.bad_frame(exc, "sub")
            return None
        self._received.pending += 1
        if self._received.pending >= _FLUSH_EVERY:
            self._received.flush()
        return Received(frame, self._track(frame))

    def _track(self, frame: Frame) -> int:
        src, inc = frame.header.src, frame.header.inc
        missed = self._advance((src, frame.topic), inc, frame.header.seq - 1)
        self._last[(src, frame.topic)] = (inc, frame.header.seq)
        if frame.topic == TOPIC_HEARTBEAT and isinstance(frame.body, dict):
            seqs = frame.body.get("seqs")
            for topic, seq in seqs.items() if isinstance(seqs, dict) else ():
                if type(seq) is int and (src, topic) in self._last:
                    self._advance((src, topic), inc, seq)
        return missed

    def _advance(self, key: tuple[str, str], inc: str, seen_up_to: int) -> int:
        """Count the events of a stream lost between the last one seen and ``seen_up_to``."""
        last = self._last.get(key)
        if last is None or last[0] != inc or seen_up_to <= last[1]:
            return 0
        self._last[key] = (inc, seen_up_to)
        missed = seen_up_to - last[1]
        self.lost += missed
        metrics.BUS_DROPPED.labels(self._bus.service, "gap").inc(missed)
        return missed


class Subscriber(SubscriberBase["zmq.Socket[bytes]"]):
    """Receives events, blocking up to a timeout."""

    def _new_socket(self) -> zmq.Socket[bytes]:
        return self._bus.socket(zmq.SUB)

    def recv(self, timeout_ms: int) -> Received | None:
        """The next decodable event, or None after ``timeout_ms``."""
        got = self.recv_nowait()  # under load an event is waiting: skip the poll
        if got is not None:
            return got
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(remaining, zmq.POLLIN):
                return None
            got = self.recv_nowait()
            if got is not None:
                return got

    def recv_nowait(self) -> Received | None:
        """One event if one is waiting and decodes, else None."""
        try:
            parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        return self.accept(parts)


class RPCClient(BlockingRPCClient["zmq.Socket[bytes]"]):
    """Request/reply with timeout and retry, blocking, on a ZeroMQ DEALER."""

    _bus: Bus

    def _new_socket(self) -> zmq.Socket[bytes]:
        return self._bus.socket(zmq.DEALER)

    def _send(self, parts: list[bytes], deadline: float) -> bool:
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _receive(self, deadline: float) -> list[bytes] | None:
        remaining = deadline - time.monotonic()
        if not self._sock.poll(max(0, int(remaining * 1000)) + 1, zmq.POLLIN):
            return None
        return self._sock.recv_multipart()


class Request(NamedTuple):
    """A request received by an RPC server, with the route back to its sender."""

    ident: bytes
    frame: Frame


class RPCServer:
    """An actor's ROUTER: receives requests, sends answers."""

    def __init__(self, bus: Bus, endpoint_name: str) -> None:
        self._bus = bus
        self.sock = bus.socket(zmq.ROUTER)
        self.sock.bind(bus.endpoint(endpoint_name))

    def recv_nowait(self) -> Request | None:
        """One request if one is waiting; bad frames are counted and skipped."""
        while True:
            try:
                parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return None
            if len(parts) < 2:
                self._bus.bad_frame(FrameError("garbage", "no routing id"), "router")
                continue
            try:
                return Request(parts[0], envelope.decode(parts[1:]))
            except FrameError as exc:
                self._bus.bad_frame(exc, "router")

    def reply(self, req: Request, body: Any) -> None:
        """Answer a request."""
        self._send(req, req.frame.topic + REPLY_OK_SUFFIX, body)

    def error(self, req: Request, code: str, message: str) -> None:
        """Answer a request with an error code and a human message."""
        self._send(req, req.frame.topic + REPLY_ERR_SUFFIX, {"code": code, "message": message})

    def _send(self, req: Request, topic: str, body: Any) -> None:
        header = self._bus.stamper.next(corr=req.frame.header.id)
        try:
            self.sock.send_multipart(
                [req.ident, *envelope.encode(topic, header, body)], flags=zmq.NOBLOCK
            )
        except zmq.Again:
            # The client's queue is full or it is gone; it retries on timeout.
            metrics.BUS_DROPPED.labels(self._bus.service, "reply").inc()
