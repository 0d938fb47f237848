"""The bus for asyncio processes (gossip, relay-sync): same sockets, same frames.

The asyncio faces of ``felund.bus.sockets``: sockets come from ``Bus.async_socket``
(same limits, made as asyncio sockets, never wrapped); decoding, loss counting and
the retry rule are the synchronous module's base classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from felund.bus import envelope
from felund.bus.rpc import RPCClientBase, Try, reply_to
from felund.bus.sockets import Bus, Received, SubscriberBase
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


class AsyncRPCClient(RPCClientBase[zmq.asyncio.Socket]):
    """Request/reply with timeout and retry, awaitable; one request in flight at a time."""

    _bus: Bus

    def __init__(self, bus: Bus, endpoint_name: str) -> None:
        super().__init__(bus, endpoint_name)
        self._lock = asyncio.Lock()

    def _new_socket(self) -> zmq.asyncio.Socket:
        return self._bus.async_socket(zmq.DEALER)

    @property
    def busy(self) -> bool:
        """Whether a request is in flight on this client."""
        return self._lock.locked()

    async def call(
        self, op: str, body: Any, timeout_ms: int | None = None, retries: int | None = None
    ) -> Any:
        """Send ``op`` and return the answer's body; RPCError or RPCTimeout otherwise."""
        async with self._lock:
            for attempt in self._tries(op, body, timeout_ms, retries):
                try:
                    reply = await asyncio.wait_for(self._exchange(attempt), attempt.timeout_s)
                except TimeoutError:
                    continue
                return self._answered(reply)
        raise self._timed_out(op, retries)

    async def _exchange(self, attempt: Try) -> envelope.Frame:
        await self._sock.send_multipart(attempt.parts)
        while True:
            parts = await self._sock.recv_multipart()
            frame = reply_to(self._bus, parts, attempt.req_id)
            if frame is not None:
                return frame


class AsyncSubscriber(SubscriberBase[zmq.asyncio.Socket]):
    """Events, awaitable, with the synchronous subscriber's loss accounting."""

    def __init__(self, bus: Bus, *prefixes: str) -> None:
        super().__init__(bus, prefixes)

    def _new_socket(self) -> zmq.asyncio.Socket:
        return self._bus.async_socket(zmq.SUB)

    async def recv(self) -> Received:
        """The next decodable event."""
        while True:
            got = self.accept(await self.sock.recv_multipart())
            if got is not None:
                return got

    async def recv_from(self, service: str) -> Received:
        """The next event published by ``service`` whose body is a map (others are skipped)."""
        while True:
            got = await self.recv()
            if isinstance(got.frame.body, dict) and got.frame.header.src == service:
                return got
