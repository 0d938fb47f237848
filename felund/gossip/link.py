"""Connections to peers: byte streams, and the handshake run over one (the I/O side of it).

``Stream`` is what the protocol code needs of a connection: a TCP
connection (``TcpStream``) or, in tests, ``felund.testing.memory``'s
in-memory pair. ``accept`` and ``connect`` move the bytes of
``felund.gossip.handshake``'s state machines and return a ``Link``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from felund import metrics
from felund.epochs import CircleKeys
from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip.handshake import (
    HANDSHAKE_TIMEOUT_S,
    ClientHandshake,
    Established,
    ServerHandshake,
)

READ_SIZE = nativeproto.MAX_FRAME + nativeproto.HEADER.size
STREAM_LIMIT = 64 * 1024  # bytes a connection buffers before TCP pushes back on the peer
Clock = Callable[[], float]


class Stream(Protocol):
    """A byte stream to a peer."""

    @property
    def address(self) -> str:
        """The peer's ``host:port`` as this side sees it."""
        ...

    @property
    def local_address(self) -> str:
        """This side's ``host:port``."""
        ...

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, waiting for at least one; ``b""`` once the peer has closed."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        ...

    async def drain(self) -> None:
        """Wait until the queued bytes are down to the stream's high-water mark."""
        ...

    def close(self) -> None:
        """Close the stream (no waiting)."""
        ...


def _host_port(name: object) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return "?"


class TcpStream:
    """A TCP connection, as asyncio streams give it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.address = _host_port(writer.get_extra_info("peername"))
        self.local_address = _host_port(writer.get_extra_info("sockname"))

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end."""
        return await self._reader.read(n)

    def write(self, data: bytes) -> None:
        """Queue bytes."""
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait for the kernel to take them."""
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection."""
        self._writer.close()


@dataclass(slots=True)
class Link:
    """An authenticated connection to a member of one circle."""

    stream: Stream
    agreed: Established
    bytes_in: int = 0
    bytes_out: int = 0
    _unread: bytes = b""  # what the handshake read beyond itself, read first

    def __post_init__(self) -> None:
        self._unread = self.agreed.rest

    @property
    def circle_id(self) -> str:
        """The circle this connection is about."""
        return self.agreed.circle_id

    @property
    def peer_node_id(self) -> str:
        """The node at the other end (as it authenticated)."""
        return self.agreed.peer_node_id

    @property
    def is_client(self) -> bool:
        """Whether this side connected."""
        return self.agreed.is_client

    @property
    def native(self) -> bool:
        """Whether the native protocol was agreed (else v1)."""
        return self.agreed.native

    async def read(self, timeout: float) -> bytes:
        """The next bytes from the peer (``b""`` at the end); TimeoutError after ``timeout``."""
        if self._unread:
            data, self._unread = self._unread, b""
        else:
            data = await asyncio.wait_for(self.stream.read(READ_SIZE), max(0.0, timeout))
        self.bytes_in += len(data)
        metrics.GOSSIP_BYTES.labels("in").inc(len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Send bytes (and wait until the connection takes them)."""
        if data:
            self.bytes_out += len(data)
            metrics.GOSSIP_BYTES.labels("out").inc(len(data))
            self.stream.write(data)
            await self.stream.drain()

    def close(self) -> None:
        """Close the connection (no waiting)."""
        self.stream.close()


async def _shake(
    stream: Stream, machine: ServerHandshake | ClientHandshake, clock: Clock
) -> Established:
    """Move the handshake's bytes until it is done; PeerError if it fails."""
    try:
        try:
            while machine.established is None:
                stream.write(machine.data_to_send())
                await stream.drain()
                try:
                    data = await asyncio.wait_for(
                        stream.read(READ_SIZE), max(0.0, machine.deadline - clock())
                    )
                except TimeoutError:
                    machine.expire(clock())
                    continue
                machine.receive_data(data)
        finally:
            # The last frame: WELCOME, HELLO_AUTH, or an ERROR saying why (closing
            # the stream still sends it).
            stream.write(machine.data_to_send())
        await stream.drain()
    except OSError as exc:  # reset by the peer, mid-handshake
        raise PeerError("closed", type(exc).__name__) from None
    return machine.established


async def accept(
    stream: Stream,
    keys: Mapping[str, CircleKeys],
    node_id: str,
    clock: Clock = time.monotonic,
    can_anchor: bool = False,
) -> Link:
    """Run the server side of the handshake; PeerError if the client fails it."""
    machine = ServerHandshake(keys, node_id, clock(), can_anchor)
    return Link(stream, await _shake(stream, machine, clock))


async def connect(
    host: str,
    port: int,
    *,
    keys: CircleKeys,
    node_id: str,
    listen_addr: str,
    offer_native: bool,
    clock: Clock = time.monotonic,
    can_anchor: bool = False,
) -> Link:
    """Open a TCP connection and run the client side of the handshake; PeerError
    ("unreachable") if it cannot be opened, or as the handshake fails."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=STREAM_LIMIT), HANDSHAKE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise PeerError("unreachable", type(exc).__name__) from None
    stream = TcpStream(reader, writer)
    try:
        return await handshake(
            stream,
            keys=keys,
            node_id=node_id,
            listen_addr=listen_addr,
            offer_native=offer_native,
            clock=clock,
            can_anchor=can_anchor,
        )
    except BaseException:
        stream.close()
        raise


async def handshake(
    stream: Stream,
    *,
    keys: CircleKeys,
    node_id: str,
    listen_addr: str,
    offer_native: bool,
    clock: Clock = time.monotonic,
    can_anchor: bool = False,
) -> Link:
    """Run the client side of the handshake over an open stream."""
    machine = ClientHandshake(
        keys=keys,
        node_id=node_id,
        listen_addr=listen_addr,
        offer_native=offer_native,
        now=clock(),
        can_anchor=can_anchor,
    )
    return Link(stream, await _shake(stream, machine, clock))
