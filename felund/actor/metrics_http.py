"""The node's /metrics over HTTP: one daemon thread, one ``selectors`` loop.

The port may be reachable by anyone on the machine or the network, so every
client is bounded: at most ``MAX_CONNECTIONS`` at once (one more is closed at
its accept), a head of at most ``http_page.MAX_HEAD`` bytes, and ``DEADLINE_S``
from accept to close for the whole exchange, reading and writing (never
blocking: a client that reads nothing holds a slot, not the thread). What an
answer is, is ``http_page``'s; a failure to collect is a 500 and a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import selectors
import socket
import threading
import time
from collections.abc import Callable

import structlog

from felund.actor import http_page

MAX_CONNECTIONS = 16
DEADLINE_S = 5.0  # from accept to close, whatever the client does
ACCEPT_PAUSE_S = 1.0  # after accept failed (out of descriptors): not a busy loop
_ACCEPTS_PER_ROUND = 64  # connections taken off the backlog before the others' turn
_DRAIN = 64 * 1024  # bytes read at once from a client after its answer, and dropped

Render = Callable[[str], tuple[str, bytes]]  # Accept header -> content type, body


class _Client:
    __slots__ = ("deadline", "done", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""  # the request head so far
        self.outbox: memoryview | None = None  # the answer's unsent rest, once there is one
        self.done = False  # answered: what the client still sends is read and dropped


class MetricsServer:
    """Serves ``render``'s page at /metrics (and /) of a listening socket, in a thread."""

    def __init__(
        self, listener: socket.socket, render: Render, log: structlog.stdlib.BoundLogger
    ) -> None:
        self._listener = listener
        self.port: int = listener.getsockname()[1]  # the port it listens on
        self._render = render
        self._log = log
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._clients: dict[socket.socket, _Client] = {}
        self._accept_paused_until = 0.0
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # the log lines' service, node_id, pid
            args=(self._run,),
            name="metrics-http",
            daemon=True,
        )

    @classmethod
    def bind(
        cls, host: str, port: int, render: Render, log: structlog.stdlib.BoundLogger
    ) -> MetricsServer:
        """A server listening on ``host:port`` (port 0: a free one); OSError if it cannot."""
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return cls(socket.create_server(address[:2], family=family), render, log)

    def start(self) -> None:
        """Serve from now on."""
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every socket, and wait for the thread."""
        self._stopping = True
        with contextlib.suppress(OSError):  # its buffer is full: the thread is awake anyway
            self._wake_w.send(b"\0")
        self._thread.join(DEADLINE_S)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj in self._clients:
                        self._step(self._clients[key.fileobj])
                self._expire()
        finally:
            for client in list(self._clients.values()):
                self._close(client)
            self._selector.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()

    def _timeout(self) -> float | None:
        times = [c.deadline for c in self._clients.values()]
        if self._accept_paused_until:
            times.append(self._accept_paused_until)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_ROUND):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of descriptors, most likely: try again later
                self._log.warning("metrics.accept_failed", error=exc.strerror)
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            if len(self._clients) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + DEADLINE_S)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ)

    def _expire(self) -> None:
        now = time.monotonic()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._close(client)
        if self._accept_paused_until and self._accept_paused_until <= now:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ)

    def _step(self, client: _Client) -> None:
        """Move the bytes the client is ready for; close it when it is through."""
        try:
            if client.outbox is None:
                self._read_head(client)
            if client.outbox is not None and not client.done:
                self._write(client)
            elif client.done:
                self._drain(client)
        except OSError:  # reset, broken pipe: the client is gone
            self._close(client)
        except Exception as exc:  # a bug here must cost one connection, never the thread
            self._log.error("metrics.http_failed", error=type(exc).__name__)
            self._close(client)

    def _read_head(self, client: _Client) -> None:
        try:
            data = client.sock.recv(http_page.MAX_HEAD + 1 - len(client.inbox))
        except BlockingIOError:
            return
        if not data:  # closed before its head ended
            if not client.inbox:
                self._close(client)
                return
            self._answer(client, http_page.incomplete())
            return
        client.inbox += data
        length = http_page.head_length(client.inbox)
        if length:
            self._answer(client, http_page.answer(client.inbox[:length], self._page))
        elif len(client.inbox) > http_page.MAX_HEAD:
            self._answer(client, http_page.too_large())

    def _answer(self, client: _Client, data: bytes) -> None:
        client.inbox = b""
        client.outbox = memoryview(data)
        self._selector.modify(client.sock, selectors.EVENT_WRITE)

    def _write(self, client: _Client) -> None:
        assert client.outbox is not None
        try:
            sent = client.sock.send(client.outbox)
        except BlockingIOError:
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            # Closing with unread bytes would reset the connection, and the client
            # could lose the answer: say we are done, then read until it closes.
            client.sock.shutdown(socket.SHUT_WR)
            client.done = True
            self._selector.modify(client.sock, selectors.EVENT_READ)

    def _drain(self, client: _Client) -> None:
        try:
            if not client.sock.recv(_DRAIN):
                self._close(client)
        except BlockingIOError:
            pass

    def _page(self, accept: str) -> tuple[int, str, bytes]:
        try:
            content_type, body = self._render(accept)
        except Exception as exc:
            # What collecting reads is the metric files: no secret in the text.
            self._log.error(
                "metrics.collect_failed", error=type(exc).__name__, detail=str(exc)[:200]
            )
            return 500, "text/plain; charset=utf-8", b"cannot collect the metrics\n"
        return 200, content_type, body

    def _close(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return  # closed already
        self._selector.unregister(client.sock)
        client.sock.close()
