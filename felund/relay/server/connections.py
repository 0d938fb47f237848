"""The relay's listening socket, with a cap on open connections.

Every connection holds a file descriptor: without a cap, a client that
opens connections and sends nothing (or its headers a byte at a time) takes
every descriptor the process may have, and then nobody is answered. Here,
at ``max_connections`` open, a new connection first closes the oldest one
that has not yet sent a whole request (headers and body): a client that
sends slowly loses its place to one that does not, so slow senders cannot
keep the others out. Only when every open connection is busy (a request
being answered, a feed, an idle keep-alive) is the new one answered a 503
``UNAVAILABLE`` JSON error and closed. Descriptors stay below the cap plus
``OVERSHOOT``; the cap must stay below the process's open-files limit
(``usable_connections``).

The time a connection may hold its slot is bounded elsewhere: aiohttp's
keep-alive timeout closes one whose request headers have not all arrived
(``header_timeout_s``, from its opening or from its previous answer), the
middleware one whose body is too slow, and the feed one that does not read.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import OrderedDict

from aiohttp import web

from felund.errors import ApiError
from felund.relay.protocol import UNAVAILABLE
from felund.relay.server import metrics as m

# Descriptors the relay needs besides its connections: the database and its
# WAL, the lock file, the listening socket, stdio, the loop's own.
RESERVED_FDS = 64
# asyncio accepts up to this many connections at once, and aiohttp counts a
# connection as open an event-loop turn later: the cap can be passed by up
# to two such batches, so the open-files limit must leave room for them.
LISTEN_BACKLOG = 128
OVERSHOOT = 2 * LISTEN_BACKLOG


def usable_connections(wanted: int) -> int:
    """``wanted``, lowered to what the process's open-files limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FDS - OVERSHOOT))


def _refusal() -> bytes:
    body = json.dumps(
        ApiError(UNAVAILABLE, "the relay has as many connections as it takes").body(),
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Access-Control-Allow-Origin: *\r\n"
        "Retry-After: 5\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes: a connection over the cap."""

    answer = _refusal()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        m.CONNECTIONS_REFUSED.inc()
        transport.write(self.answer)
        transport.close()


class Arrivals:
    """The open connections that have not yet sent a whole request, oldest first."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[asyncio.BaseProtocol, None] = OrderedDict()

    def opened(self, connection: asyncio.BaseProtocol) -> None:
        """A connection was accepted."""
        self._waiting[connection] = None

    def served(self, connection: asyncio.BaseProtocol) -> None:
        """A connection has sent a whole request: it is not a slow sender."""
        self._waiting.pop(connection, None)

    def oldest(self, live: set[asyncio.BaseProtocol]) -> asyncio.BaseProtocol | None:
        """Forget and return the oldest waiting connection still in ``live``."""
        while self._waiting:
            connection, _ = self._waiting.popitem(last=False)
            if connection in live:
                return connection
        return None

    def prune(self, live: set[asyncio.BaseProtocol]) -> None:
        """Forget connections that closed before sending a request."""
        for connection in [c for c in self._waiting if c not in live]:
            del self._waiting[connection]

    def __len__(self) -> int:
        return len(self._waiting)


class CappedSite(web.BaseSite):
    """A TCP site that serves at most ``max_connections`` connections at once."""

    __slots__ = ("_host", "_port", "arrivals", "max_connections")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        max_connections: int,
        arrivals: Arrivals,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.max_connections = max_connections
        self.arrivals = arrivals

    @property
    def name(self) -> str:
        """The site's URL (for aiohttp's own messages)."""
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        open_ = server.connections
        if len(open_) >= self.max_connections:
            slow = self.arrivals.oldest(set(open_))
            if slow is None:
                return _Refuse()
            assert isinstance(slow, web.RequestHandler)
            slow.force_close()
            m.CONNECTIONS_EVICTED.inc()
        elif len(self.arrivals) > 2 * self.max_connections:
            self.arrivals.prune(set(open_))
        m.CONNECTIONS_OPENED.inc()
        handler = server()
        self.arrivals.opened(handler)
        return handler

    async def start(self) -> None:
        """Listen."""
        await super().start()
        server = self._runner.server
        assert server is not None
        m.CONNECTIONS_OPEN.set_function(lambda: len(server.connections))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=LISTEN_BACKLOG, reuse_address=True
        )
