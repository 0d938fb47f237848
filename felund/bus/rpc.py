"""What every face of the bus shares, without ZeroMQ: who speaks, where, and the RPC rule.

``BusBase`` names a process on the bus (its service, its frame stamper, its limits,
the node's endpoints) and counts the undecodable frames it meets. The request rule
(Lazy Pirate) is written once here: ``RPCClientBase`` numbers and retries a request,
``BlockingRPCClient`` waits for its answer; the faces move the bytes, over pyzmq's
sockets (``felund.bus.sockets``, ``felund.bus.aio``) or, for commands, over the
wire spoken directly (``felund.bus.dealer``).

``felund.metrics`` and ``felund.logs`` load at their first use (``felund.lazy``):
a command's bus client (send, inbox, status) uses neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from felund import lazy
from felund.bus import envelope
from felund.bus.envelope import Frame, Stamper
from felund.config import BusConfig
from felund.errors import FrameError, RPCError, RPCTimeout
from felund.home import Layout
from felund.protocol import REPLY_ERR_SUFFIX

if TYPE_CHECKING:
    from felund import logs, metrics
else:
    logs, metrics = lazy.module("felund.logs"), lazy.module("felund.metrics")

_BAD_FRAME_LOG_EVERY_S = 60.0


class Connectable(Protocol):
    """What the retry rule does with a face's socket."""

    def connect(self, addr: str) -> Any:
        """Connect to an endpoint."""

    def close(self, linger: int | None = None) -> None:
        """Close, dropping what is queued after ``linger`` ms."""


SocketT = TypeVar("SocketT", bound=Connectable)


class BusBase:
    """One process's name on the node's bus, whatever carries its frames."""

    def __init__(self, lay: Layout, service: str, cfg: BusConfig) -> None:
        self.layout = lay
        self.service = service
        self.cfg = cfg
        self.stamper = Stamper(service)
        self._bad_logged: dict[str, float] = {}

    def endpoint(self, name: str) -> str:
        """The address of a named endpoint of this node."""
        return self.layout.endpoint(name)

    def bad_frame(self, exc: FrameError, where: str) -> None:
        """Count an undecodable frame; log its kind at most once a minute."""
        metrics.BUS_BAD_FRAMES.labels(self.service, exc.kind).inc()
        now = time.monotonic()
        if now - self._bad_logged.get(exc.kind, -_BAD_FRAME_LOG_EVERY_S) >= _BAD_FRAME_LOG_EVERY_S:
            self._bad_logged[exc.kind] = now
            logs.get().warning("bus.bad_frame", kind=exc.kind, detail=exc.detail, socket=where)


class Try(NamedTuple):
    """One attempt of a request: its frames, its id, how long to wait for the answer."""

    parts: list[bytes]
    req_id: str
    timeout_s: float


class RPCClientBase(Generic[SocketT]):
    """The retry rule both RPC clients share (Lazy Pirate); the faces only move bytes.

    A request keeps its id across tries, so a server answers a retry idempotently. A try
    that times out closes its socket at once, so what a dead or stuck server left queued
    is dropped before that server can come back; the next try goes out on a fresh socket.
    The socket is made of the face's own kind (``_new_socket``), never a wrapper of
    another: each handle has one owner and is closed once.
    """

    def __init__(self, bus: BusBase, endpoint_name: str) -> None:
        self._bus = bus
        self._endpoint = bus.endpoint(endpoint_name)
        self._sock = self._connect()
        self._stale = False  # a try timed out on this socket: the next one starts afresh

    def _connect(self) -> SocketT:
        sock = self._new_socket()
        sock.connect(self._endpoint)
        return sock

    def _new_socket(self) -> SocketT:
        raise NotImplementedError

    def _tries(
        self, op: str, body: Any, timeout_ms: int | None, retries: int | None
    ) -> Iterator[Try]:
        """One ``Try`` per attempt, each on a socket fit for it. The face marks an answered
        try with ``_answered``, and raises ``_timed_out`` once every try is spent."""
        timeout = self._bus.cfg.rpc_timeout_ms if timeout_ms is None else timeout_ms
        header = self._bus.stamper.next()
        parts = envelope.encode(op, header, body)
        for attempt in range(self._count(retries)):
            if attempt:
                metrics.RPC_RETRIES.labels(self._bus.service, op).inc()
            if self._stale:  # the last call was abandoned (cancelled) mid-try
                self._renew()
            self._stale = True
            yield Try(parts, header.id, timeout / 1000)
            # Resumed: this try timed out. Drop what it left queued now, not at the next
            # try: a server that comes back in between would be served it first.
            self._renew()

    def _renew(self) -> None:
        self._sock.close(linger=0)
        self._sock = self._connect()
        self._stale = False

    def _count(self, retries: int | None) -> int:
        return 1 + (self._bus.cfg.rpc_retries if retries is None else retries)

    def _timed_out(self, op: str, retries: int | None) -> RPCTimeout:
        tries = self._count(retries)
        return RPCTimeout(f"no answer to {op} from {self._endpoint} after {tries} tries")

    def _answered(self, reply: Frame) -> Any:
        """The answer's body (or its error raised); the socket is good for the next call."""
        self._stale = False
        return answer_of(reply)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(linger=0)


def reply_to(bus: BusBase, parts: list[bytes], req_id: str) -> Frame | None:
    """The reply to ``req_id`` if these parts are it; None for bad frames (counted)
    and for answers to earlier, abandoned tries."""
    try:
        frame = envelope.decode(parts)
    except FrameError as exc:
        bus.bad_frame(exc, "dealer")
        return None
    return frame if frame.header.corr == req_id else None


def answer_of(reply: Frame) -> Any:
    """The body of an answer, or its error raised as RPCError."""
    if reply.topic.endswith(REPLY_ERR_SUFFIX):
        body = reply.body if isinstance(reply.body, dict) else {}
        raise RPCError(str(body.get("code", "")), str(body.get("message", "")))
    return reply.body


class BlockingRPCClient(RPCClientBase[SocketT]):
    """Request/reply with timeout and retry, blocking; the face sends and receives."""

    def call(
        self, op: str, body: Any, timeout_ms: int | None = None, retries: int | None = None
    ) -> Any:
        """Send ``op`` and return the answer's body; RPCError or RPCTimeout otherwise."""
        for attempt in self._tries(op, body, timeout_ms, retries):
            reply = self._exchange(attempt)
            if reply is not None:
                return self._answered(reply)
        raise self._timed_out(op, retries)

    def _exchange(self, attempt: Try) -> Frame | None:
        deadline = time.monotonic() + attempt.timeout_s
        if not self._send(attempt.parts, deadline):
            time.sleep(min(attempt.timeout_s, 0.05))
            return None
        while deadline - time.monotonic() > 0:
            parts = self._receive(deadline)
            if parts is None:
                return None
            frame = reply_to(self._bus, parts, attempt.req_id)
            if frame is not None:
                return frame
        return None

    def _send(self, parts: list[bytes], deadline: float) -> bool:
        """Hand a request to the socket; False if it cannot take it now."""
        raise NotImplementedError

    def _receive(self, deadline: float) -> list[bytes] | None:
        """The next message received before ``deadline`` (``time.monotonic``), or None."""
        raise NotImplementedError
