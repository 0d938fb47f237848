"""The node's /metrics server against hostile clients, on real sockets on 127.0.0.1.

Most tests face a running node's supervisor; the ones that need a page of their own
(one that fails, one that is large) face a ``MetricsServer`` in this process.
Every wait is on an answer or a close, bounded well past ``DEADLINE_S``.
"""

from __future__ import annotations

import io
import select
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from felund import logs
from felund.actor.metrics_http import DEADLINE_S, MAX_CONNECTIONS, MetricsServer
from felund.testing import Node, free_port

HOST = "127.0.0.1"
WAIT_S = DEADLINE_S + 15  # a close the server owes us, under a loaded machine
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
HTTP_STACK = (  # what prometheus_client.exposition imports, and the supervisor must not
    "prometheus_client.exposition",
    "http.server",
    "http.client",
    "socketserver",
    "wsgiref",
    "urllib.request",
    "email",
    "gzip",
)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The /metrics port of a running node's supervisor."""
    node = Node(tmp_path_factory.mktemp("metrics") / "node", FELUND_GOSSIP_PORT=str(free_port()))
    node.cli("init", "--bind", "127.0.0.1")
    node.start()
    try:
        yield urllib.parse.urlsplit(node.status()["metrics_url"]).port or 0
    finally:
        node.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=WAIT_S)


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``, read the answer to its close: status, headers, body."""
    with connect(port) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (waits up to ``WAIT_S`` for it)."""
    sock.settimeout(WAIT_S)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    """Whether ``sock`` is open with nothing to read, right now."""
    return not select.select([sock], [], [], 0)[0]


# --- a node's supervisor ---------------------------------------------------------------


def test_a_scrape_in_either_format(port: int) -> None:
    status, headers, body = exchange(port, GET)
    assert status == 200 and b"felund_service_up{" in body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["Content-Length"] == str(len(body)) and headers["Connection"] == "close"
    om = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n"
    status, headers, body = exchange(port, om)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert status == 200 and body.endswith(b"# EOF\n")
    status, headers, body = exchange(port, b"HEAD /?x=1 HTTP/1.1\r\n\r\n")
    assert status == 200 and int(headers["Content-Length"]) > 0 and body == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /secrets HTTP/1.1\r\n\r\n", 404),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS, or garbage
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 400),  # closed before its head ended
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n", 431),
    ],
)
def test_refused_and_the_server_goes_on(port: int, request_bytes: bytes, status: int) -> None:
    assert exchange(port, request_bytes)[0] == status
    assert exchange(port, GET)[0] == 200


def test_a_silent_client_does_not_hold_up_a_scrape(port: int) -> None:
    with connect(port) as silent:
        assert exchange(port, GET)[0] == 200
        assert still_open(silent)  # answered while it was held, not after
        started = time.monotonic()
        assert closed_by_server(silent)  # at its deadline
        assert time.monotonic() - started < WAIT_S


def test_connections_beyond_the_limit_are_closed_and_the_rest_at_their_deadline(
    make_node,
) -> None:
    node = make_node()  # its own: no connection of another test is held yet
    node.cli("init", "--bind", "127.0.0.1")
    node.start()
    port = urllib.parse.urlsplit(node.status()["metrics_url"]).port or 0
    socks = [connect(port) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        # The last ones are closed at once, while the first ones are still held.
        extra = socks[MAX_CONNECTIONS:]
        assert all(closed_by_server(s) for s in extra)
        assert all(still_open(s) for s in socks[:MAX_CONNECTIONS])
        # Those go at their deadline; then a scrape is answered as usual.
        assert all(closed_by_server(s) for s in socks[:MAX_CONNECTIONS])
        assert exchange(port, GET)[0] == 200
    finally:
        for s in socks:
            s.close()


def test_the_supervisor_imports_no_http_stack() -> None:
    """``felund run``'s modules, then a scrape of each format served as the supervisor
    serves it: nothing of prometheus_client.exposition's HTTP stack is loaded."""
    script = """
import socket, sys
import services.supervisor
from prometheus_client.registry import CollectorRegistry
from felund import logs
from felund.actor import exposition
from felund.actor.metrics_http import MetricsServer
registry = CollectorRegistry()
server = MetricsServer.bind("127.0.0.1", 0, lambda a: exposition.render(registry, a), logs.get())
server.start()
for accept in (b"", b"application/openmetrics-text"):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\\r\\nAccept: " + accept + b"\\r\\n\\r\\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
server.stop()
EXTRA
print(" ".join(sorted(sys.modules)))
"""

    def loaded(extra: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", script.replace("EXTRA", extra)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        names = set(out.split())
        return {n for n in names for p in HTTP_STACK if n == p or n.startswith(p + ".")}

    assert loaded("import prometheus_client.exposition") >= set(HTTP_STACK)  # the check sees them
    assert loaded("") == set()


# --- a server of this process ------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str], tuple[str, bytes]]], tuple[int, io.StringIO]]]:
    """Start a MetricsServer on a free port with this render; its port and its log."""
    servers: list[MetricsServer] = []

    def start(render: Callable[[str], tuple[str, bytes]]) -> tuple[int, io.StringIO]:
        out = io.StringIO()
        server = MetricsServer.bind(HOST, 0, render, logs.setup("supervisor", stream=out))
        server.start()
        servers.append(server)
        return server.port, out

    yield start
    for server in servers:
        server.stop()


def test_a_failed_collect_is_a_500_and_a_log_line(serve) -> None:
    failures = ["/run/metrics/counter_1.db: struct.error"]

    def render(accept: str) -> tuple[str, bytes]:
        if failures:
            raise RuntimeError(failures.pop())
        return "text/plain", b"ok\n"

    port, log = serve(render)
    status, _, body = exchange(port, GET)
    assert status == 500 and b"Traceback" not in body
    assert '"event": "metrics.collect_failed"' in log.getvalue()
    assert '"error": "RuntimeError"' in log.getvalue()
    assert exchange(port, GET)[:3:2] == (200, b"ok\n")


def test_a_client_that_reads_nothing_holds_up_nobody(serve) -> None:
    big = b"x" * (32 << 20)  # far more than the kernel buffers of a connection hold
    port, _ = serve(lambda accept: ("text/plain", big))
    with connect(port) as stuck:
        stuck.sendall(GET)  # and reads nothing while the other is served
        accepted = time.monotonic()
        status, _, body = exchange(port, GET)
        assert status == 200 and body == big
        # What is tested here is the deadline itself, so it is waited out: past it,
        # the server has given up on the client, and what it reads then ends short.
        time.sleep(max(0.0, accepted + DEADLINE_S + 1 - time.monotonic()))
        assert len(read_to_close(stuck)) < len(big)


def read_to_close(sock: socket.socket) -> bytes:
    """What the server sends ``sock`` until it closes it."""
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_stop_closes_the_port_and_its_connections() -> None:
    server = MetricsServer.bind(HOST, 0, lambda accept: ("text/plain", b""), logs.get())
    server.start()
    with connect(server.port) as held:
        server.stop()
        assert closed_by_server(held)
    with pytest.raises(ConnectionRefusedError):
        connect(server.port)
