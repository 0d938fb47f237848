"""The bus for asyncio processes (gossip, relay-sync): same sockets, same frames.

Built on ``felund.bus.sockets``: sockets come from ``Bus.socket`` (same limits) and
are wrapped for asyncio; decoding, loss counting and the retry rules are
the synchronous module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from felund import metrics
from felund.bus import envelope
from felund.bus.sockets import Bus, Received, Subscriber, answer_of, reply_to
from felund.errors import RPCTimeout

T = TypeVar("T")


async def until_answered(call: Callable[[], Awaitable[T]], on_timeout: Callable[[], None]) -> T:
    """Run ``call`` until the store (or whoever it asks) answers: a restarting peer is
    waited for, never a reason to crash. ``on_timeout`` says so (rate-limited by the caller)."""
    while True:
        try:
            return await call()
        except RPCTimeout:
            on_timeout()


class AsyncRPCClient:
    """Request/reply with timeout and retry, awaitable; a retry keeps the request's id."""

    def __init__(self, bus: Bus, endpoint_name: str) -> None:
        self._bus = bus
        self._endpoint = bus.endpoint(endpoint_name)
        self._sock = self._connect()
        self._lock = asyncio.Lock()  # one request in flight per socket

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._bus.socket(zmq.DEALER)
        sock.connect(self._endpoint)
        return zmq.asyncio.Socket.from_socket(sock)

    @property
    def busy(self) -> bool:
        """Whether a request is in flight on this client."""
        return self._lock.locked()

    async def call(
        self, op: str, body: Any, timeout_ms: int | None = None, retries: int | None = None
    ) -> Any:
        """Send ``op`` and return the answer's body; RPCError or RPCTimeout otherwise."""
        timeout = (self._bus.cfg.rpc_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        tries = 1 + (self._bus.cfg.rpc_retries if retries is None else retries)
        header = self._bus.stamper.next()
        parts = envelope.encode(op, header, body)
        async with self._lock:
            for attempt in range(tries):
                if attempt:
                    metrics.RPC_RETRIES.labels(self._bus.service, op).inc()
                    self._sock.close(linger=0)
                    self._sock = self._connect()
                try:
                    reply = await asyncio.wait_for(self._exchange(parts, header.id), timeout)
                except TimeoutError:
                    continue
                return answer_of(reply)
        raise RPCTimeout(f"no answer to {op} from {self._endpoint} after {tries} tries")

    async def _exchange(self, parts: list[bytes], req_id: str) -> envelope.Frame:
        await self._sock.send_multipart(parts)
        while True:
            frame = reply_to(self._bus, await self._sock.recv_multipart(), req_id)
            if frame is not None:
                return frame

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(linger=0)


class AsyncSubscriber:
    """Events, awaitable, with the synchronous subscriber's loss accounting."""

    def __init__(self, bus: Bus, *prefixes: str) -> None:
        self._sub = Subscriber(bus, prefixes)
        self._sock = zmq.asyncio.Socket.from_socket(self._sub.sock)

    async def recv(self) -> Received:
        """The next decodable event."""
        while True:
            got = self._sub.accept(await self._sock.recv_multipart())
            if got is not None:
                return got

    async def recv_from(self, service: str) -> Received:
        """The next event published by ``service`` whose body is a map (others are skipped)."""
        while True:
            got = await self.recv()
            if isinstance(got.frame.body, dict) and got.frame.header.src == service:
                return got
