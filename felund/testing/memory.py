"""Test doubles for protocol code: an in-memory byte stream pair and a fake clock.

``stream_pair()`` gives two connected ends of a byte stream for asyncio
code written against ``felund.gossip.link.Stream``: what one end writes the
other reads, in order, with backpressure (``drain`` waits while the other
end has more than ``limit`` bytes unread) and a close that the other end
reads as the end of the stream. No socket, no thread.

``FakeClock`` is a clock that moves only when told, for the sans-IO state
machines, which take the time as an argument.
"""

from __future__ import annotations

import asyncio


class FakeClock:
    """``clock()`` reads it; ``advance(seconds)`` moves it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock on; the new time."""
        self.now += seconds
        return self.now


class MemoryStream:
    """One end of an in-memory byte stream."""

    def __init__(self, address: str, local_address: str, limit: int) -> None:
        self.address = address
        self.local_address = local_address
        self.limit = limit
        self.written = 0  # bytes this end has written, in all
        self.closed = False
        self._peer: MemoryStream | None = None
        self._inbox = bytearray()
        self._eof = False
        self._readable = asyncio.Event()  # the inbox has bytes, or the stream ended
        self._taken = asyncio.Event()  # bytes were read from the inbox

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, waiting for at least one; ``b""`` once either end closed."""
        while not self._inbox and not self._eof and not self.closed:
            self._readable.clear()
            await self._readable.wait()
        if self.closed:
            return b""
        data = bytes(self._inbox[:n])
        del self._inbox[:n]
        self._taken.set()
        return data

    def write(self, data: bytes) -> None:
        """Queue bytes for the other end (nothing happens once either end is closed)."""
        peer = self._peer
        if self.closed or peer is None or peer.closed:
            return
        self.written += len(data)
        peer._inbox += data
        peer._readable.set()

    async def drain(self) -> None:
        """Wait until the other end has at most ``limit`` bytes unread."""
        peer = self._peer
        while peer is not None and len(peer._inbox) > self.limit and not peer.closed:
            if self.closed:
                raise ConnectionResetError("this end was closed")
            peer._taken.clear()
            await peer._taken.wait()

    def close(self) -> None:
        """Close this end: the other end reads the end of the stream."""
        if self.closed:
            return
        self.closed = True
        self._readable.set()
        self._taken.set()
        if self._peer is not None:
            self._peer._eof = True
            self._peer._readable.set()


def stream_pair(
    client: str = "127.0.0.1:50000", server: str = "127.0.0.1:9999", limit: int = 64 * 1024
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends: (the client's, the server's), each named by the other's address."""
    a = MemoryStream(server, client, limit)
    b = MemoryStream(client, server, limit)
    a._peer, b._peer = b, a
    return a, b
