"""The relay's listening socket, with a cap on open connections.

Every connection holds a file descriptor: without a cap, a client that
opens connections and sends nothing (or its headers a byte at a time) takes
every descriptor the process may have, and then nobody is answered. Here
a connection beyond ``max_connections`` is answered at once with a 503
``UNAVAILABLE`` JSON error and closed, so the count of descriptors stays
below the cap plus ``OVERSHOOT``. The cap must stay below the
process's open-files limit (``usable_connections``).

The time a connection may hold its slot is bounded elsewhere: aiohttp's
keep-alive timeout closes one whose request headers have not all arrived
(``header_timeout_s``, from its opening or from its previous answer), the
middleware one whose body is too slow, and the feed one that does not read.
"""

from __future__ import annotations

import asyncio
import json
import resource

from aiohttp import web

from felund.relay.protocol import UNAVAILABLE, ApiError
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


class CappedSite(web.BaseSite):
    """A TCP site that serves at most ``max_connections`` connections at once."""

    __slots__ = ("_host", "_port", "max_connections")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.max_connections = max_connections

    @property
    def name(self) -> str:
        """The site's URL (for aiohttp's own messages)."""
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self.max_connections:
            return _Refuse()
        m.CONNECTIONS_OPENED.inc()
        return server()

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
