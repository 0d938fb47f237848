"""A command's way to the node's actors: a ZeroMQ DEALER spoken in Python, without pyzmq.

A command (send, inbox, status) makes a few requests and exits, and importing
pyzmq cost it more than everything else it does (README, architecture). Its
requests go to the same ROUTERs, under the same retry rule
(``felund.bus.rpc``), over the node's ipc endpoints, with the wire spoken by
``felund.bus.zmtp``. Processes that subscribe or serve keep pyzmq.

The socket is ``_socket``'s, what ``socket`` wraps: the wrapper's enums cost a
command 3 ms to import, for nothing it uses here. Every wait is bounded by the
try's deadline; a peer off the protocol is counted as a bad frame and its
connection dropped, and the next try starts afresh.
"""

from __future__ import annotations

import _socket
import time
from collections import deque
from collections.abc import Callable

from felund.bus import zmtp
from felund.bus.rpc import BlockingRPCClient, BusBase
from felund.config import BusConfig
from felund.errors import FrameError
from felund.home import Layout
from felund.protocol import BUS_MAX_MSG_SIZE

_IPC = "ipc://"
_RECONNECT_S = 0.1  # as ZeroMQ's own reconnect interval: a restarting actor is waited for
_RECV_CHUNK = 256 * 1024
_PEERS = frozenset({b"ROUTER"})


class Dealer:
    """One DEALER's connection to a ROUTER's ipc endpoint; connected at its first send.

    ``on_refused`` runs when nobody listens on the endpoint (its actor is down, or not
    up yet), before the next attempt; it may raise to end the wait.
    """

    def __init__(self, on_refused: Callable[[], None] | None = None) -> None:
        self._on_refused = on_refused
        self._path = ""
        self._sock: _socket.socket | None = None
        self._reader = zmtp.Reader(BUS_MAX_MSG_SIZE, _PEERS)
        self._inbox: deque[list[bytes]] = deque()  # one read may bring many messages

    def connect(self, addr: str) -> None:
        """Name the endpoint (``ipc://PATH``); the connection is made by ``send``."""
        if not addr.startswith(_IPC):
            raise ValueError(f"a command reaches the bus over ipc only, not {addr}")
        self._path = addr.removeprefix(_IPC)

    def send(self, parts: list[bytes], deadline: float) -> bool:
        """Send a message, connecting first if need be (retried until ``deadline``);
        FrameError if the endpoint's peer is off the protocol."""
        if self._sock is None and not self._open(deadline):
            return False
        assert self._sock is not None
        try:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._sock.sendall(zmtp.message(parts))
        except OSError:
            self.close()
            return False
        return True

    def receive(self, deadline: float) -> list[bytes] | None:
        """The next message received before ``deadline``; None if none came or the
        connection ended. FrameError (the connection dropped) if the peer is off the
        protocol."""
        while not self._inbox:
            if not self._read(deadline):
                return None
        return self._inbox.popleft()

    def close(self, linger: int | None = None) -> None:
        """Drop the connection and whatever it held; ``linger`` is ZeroMQ's, unused."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._reader = zmtp.Reader(BUS_MAX_MSG_SIZE, _PEERS)
        self._inbox.clear()

    def _read(self, deadline: float) -> bool:
        """Take what arrives before ``deadline``; False on timeout or a closed connection."""
        remaining = deadline - time.monotonic()
        if self._sock is None or remaining <= 0:
            return False
        try:
            self._sock.settimeout(remaining)
            data = self._sock.recv(_RECV_CHUNK)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:  # the actor went away: what it owed is lost with the connection
            self.close()
            return False
        try:
            self._inbox.extend(self._reader.feed(data))
        except FrameError:
            self.close()
            raise
        return True

    def _open(self, deadline: float) -> bool:
        """Connect and greet, retrying a missing or refusing endpoint until ``deadline``.

        The first message waits for the ROUTER's READY: libzmq takes a frame that
        comes before it has sent its own READY for a malformed command and hangs up.
        """
        while True:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(self._path)
                sock.sendall(zmtp.GREETING + zmtp.ready("DEALER"))
            except OSError as exc:
                sock.close()
                if self._on_refused is not None and isinstance(
                    exc, ConnectionRefusedError | FileNotFoundError
                ):
                    self._on_refused()
                if time.monotonic() + _RECONNECT_S >= deadline:
                    return False
                time.sleep(_RECONNECT_S)
                continue
            self._sock = sock
            while not self._reader.ready:
                if not self._read(deadline):
                    self.close()
                    return False
            return True


class DealerRPCClient(BlockingRPCClient[Dealer]):
    """Request/reply with timeout and retry, blocking, on a ``Dealer``."""

    def __init__(
        self, bus: BusBase, endpoint_name: str, on_refused: Callable[[], None] | None = None
    ) -> None:
        self._on_refused = on_refused
        super().__init__(bus, endpoint_name)

    def _new_socket(self) -> Dealer:
        return Dealer(self._on_refused)

    def _send(self, parts: list[bytes], deadline: float) -> bool:
        try:
            return self._sock.send(parts, deadline)
        except FrameError as exc:
            self._bus.bad_frame(exc, "dealer")
            return False

    def _receive(self, deadline: float) -> list[bytes] | None:
        try:
            return self._sock.receive(deadline)
        except FrameError as exc:
            self._bus.bad_frame(exc, "dealer")
            return None


class CommandBus(BusBase):
    """A command's bus: requests only, over ``Dealer``s."""

    def __init__(self, lay: Layout, service: str, cfg: BusConfig) -> None:
        super().__init__(lay, service, cfg)
        self._clients: list[DealerRPCClient] = []

    def rpc_client(
        self, endpoint_name: str, on_refused: Callable[[], None] | None = None
    ) -> DealerRPCClient:
        """A client of one actor's request endpoint (see ``Dealer`` for ``on_refused``)."""
        client = DealerRPCClient(self, endpoint_name, on_refused)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every client's connection."""
        for client in self._clients:
            client.close()
