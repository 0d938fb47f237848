"""The RPC client's faces over one retry rule, on real sockets, against a server that is
absent, then present (as a store that restarts is): pyzmq's blocking and asyncio faces,
and a command's, which speaks ZMTP itself (felund.bus.dealer) to libzmq's ROUTER."""

from __future__ import annotations

import asyncio
import linecache
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from felund.bus import zmtp
from felund.bus.aio import AsyncRPCClient
from felund.bus.dealer import CommandBus
from felund.bus.sockets import Bus
from felund.config import BusConfig
from felund.errors import RPCTimeout
from felund.home import Layout

ENDPOINT = "test.ctl"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    """A bus of its own in a temporary runtime directory (no node)."""
    b = Bus(Layout(tmp_path, tmp_path, tmp_path / "db", True), "test-client", BusConfig())
    yield b
    b.close()


class EchoServer:
    """An RPC server on a thread: answers every request with its op and body, and keeps
    the ops it received in order."""

    def __init__(self, bus: Bus) -> None:
        self._bus = Bus(bus.layout, "test-server", bus.cfg)
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._bus.close()

    def _run(self) -> None:
        server = self._bus.rpc_server(ENDPOINT)
        self._ready.set()
        while not self._stop.is_set():
            if not server.sock.poll(50, zmq.POLLIN):
                continue
            while (req := server.recv_nowait()) is not None:
                self.seen.append(req.frame.topic)
                server.reply(req, {"op": req.frame.topic, "body": req.frame.body})


def test_async_retries_against_an_absent_server_leave_the_client_working(bus: Bus) -> None:
    """The double-close bug: every retry used to close a wrapper whose original later
    closed the reused handle (ZMQError: Socket operation on non-socket)."""

    async def scenario() -> None:
        rpc = AsyncRPCClient(bus, ENDPOINT)
        for i in range(200):  # each one retries three times on fresh sockets
            with pytest.raises(RPCTimeout):
                await rpc.call(f"test.down.{i}", {}, 1, 3)
        with EchoServer(bus):
            answer = await rpc.call("test.up", {"n": 1}, 5000, 0)
        assert answer == {"op": "test.up", "body": {"n": 1}}
        rpc.close()

    asyncio.run(scenario())


def test_sync_retries_against_an_absent_server_leave_the_client_working(bus: Bus) -> None:
    rpc = bus.rpc_client(ENDPOINT)
    for i in range(200):
        with pytest.raises(RPCTimeout):
            rpc.call(f"test.down.{i}", {}, 1, 3)
    with EchoServer(bus):
        assert rpc.call("test.up", {"n": 1}, 5000, 0) == {"op": "test.up", "body": {"n": 1}}
    rpc.close()


def test_a_call_after_a_timeout_starts_on_a_fresh_socket(bus: Bus) -> None:
    """What a timed-out try left queued is dropped with its socket as it times out, also
    when the call had no retry: a store that comes back is never served stale requests."""
    sync = bus.rpc_client(ENDPOINT)
    with pytest.raises(RPCTimeout):
        sync.call("test.stale", {}, 50, 0)

    async def one_async_timeout() -> AsyncRPCClient:
        rpc = AsyncRPCClient(bus, ENDPOINT)
        with pytest.raises(RPCTimeout):
            await rpc.call("test.stale", {}, 50, 0)
        return rpc

    loop = asyncio.new_event_loop()
    try:
        aio = loop.run_until_complete(one_async_timeout())
        with EchoServer(bus) as server:
            # The old sockets, had they been kept until the next call, reconnect to the
            # server within ZeroMQ's reconnect interval (0.1 s) and deliver what they
            # hold; ten of those intervals after the server answers a newcomer, nothing
            # of theirs came.
            newcomer = bus.rpc_client(ENDPOINT)
            assert newcomer.call("test.newcomer", {}, 5000, 0)["op"] == "test.newcomer"
            newcomer.close()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and "test.stale" not in server.seen:
                time.sleep(0.02)
            assert sync.call("test.fresh", {}, 5000, 0)["op"] == "test.fresh"
            answer = loop.run_until_complete(aio.call("test.fresh", {}, 5000, 0))
            assert answer["op"] == "test.fresh"
        assert server.seen == ["test.newcomer", "test.fresh", "test.fresh"]
        aio.close()
    finally:
        loop.close()
    sync.close()


# --- the command's client: ZMTP spoken by felund.bus.dealer, against libzmq's ROUTER -------


@pytest.fixture
def command_bus(bus: Bus) -> Iterator[CommandBus]:
    """A command's bus on the same runtime directory as ``bus``."""
    b = CommandBus(bus.layout, "test-command", bus.cfg)
    yield b
    b.close()


def test_a_command_s_client_is_answered_by_a_zeromq_router(
    bus: Bus, command_bus: CommandBus
) -> None:
    rpc = command_bus.rpc_client(ENDPOINT)
    with EchoServer(bus) as server:
        assert rpc.call("test.small", {"n": 1}, 5000, 0) == {"op": "test.small", "body": {"n": 1}}
        big = {"text": "x" * (3 * 1024 * 1024)}  # several MiB each way: LONG frames
        assert rpc.call("test.big", big, 10_000, 0) == {"op": "test.big", "body": big}
        for i in range(50):  # one connection serves call after call
            assert rpc.call(f"test.n{i}", i, 5000, 0)["body"] == i
    assert server.seen[:2] == ["test.small", "test.big"] and len(server.seen) == 52


def test_a_command_s_client_waits_within_a_try_for_a_router_that_comes_up(
    bus: Bus, command_bus: CommandBus
) -> None:
    """As pyzmq's DEALER reconnects, so does it: a restarting store is waited for, within
    the try, not given up at the first refused connection."""
    rpc = command_bus.rpc_client(ENDPOINT)
    answers: list[object] = []
    caller = threading.Thread(target=lambda: answers.append(rpc.call("test.late", {}, 20_000, 0)))
    caller.start()
    deadline = time.monotonic() + 10
    while not _waiting_to_reconnect(caller):  # its first connection was refused
        assert time.monotonic() < deadline and caller.is_alive(), "the call never tried"
        time.sleep(0.005)  # polling the thread's state, not waiting in its place
    with EchoServer(bus):
        caller.join(10)
    assert answers == [{"op": "test.late", "body": {}}]


def _waiting_to_reconnect(thread: threading.Thread) -> bool:
    """Whether ``thread`` is in the dealer's pause between two connection attempts."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "_open":
            return "time.sleep" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return False


def test_a_command_s_client_against_no_server_gives_up_after_its_tries(
    command_bus: CommandBus,
) -> None:
    rpc = command_bus.rpc_client(ENDPOINT)
    started = time.monotonic()
    with pytest.raises(RPCTimeout, match="after 3 tries"):
        rpc.call("test.down", {}, 300, 2)
    assert 0.6 < time.monotonic() - started < 5


class RawServer:
    """A Unix socket server on the endpoint that answers every connection with ``reply``
    (and then says nothing more): a peer off the protocol, or a silent one."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self._path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._listener.settimeout(0.05)
        self._reply = reply
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            conn.sendall(self._reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self._conns:
            conn.close()
        self._listener.close()
        self._path.unlink()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", id="an-http-server"),
        pytest.param(b"", id="a-silent-server"),
        pytest.param(zmtp.GREETING + zmtp.ready("PUB"), id="a-publisher"),
        pytest.param(
            zmtp.GREETING
            + zmtp.ready("ROUTER")
            + b"\x02"
            + (2**62).to_bytes(8, "big"),  # a frame of 4 EiB: refused on its head
            id="a-router-claiming-a-huge-answer",
        ),
    ],
)
def test_a_command_s_client_meets_a_peer_off_the_protocol_and_goes_on(
    bus: Bus, command_bus: CommandBus, reply: bytes
) -> None:
    """Each try ends by its deadline and drops its connection; the next try connects
    afresh, and once a real ROUTER is there the same client is answered."""
    path = Path(bus.endpoint(ENDPOINT).removeprefix("ipc://"))
    raw = RawServer(path, reply)
    rpc = command_bus.rpc_client(ENDPOINT)
    started = time.monotonic()
    try:
        with pytest.raises(RPCTimeout):
            rpc.call("test.odd", {}, 400, 2)
    finally:
        raw.close()
    assert time.monotonic() - started < 5
    assert raw.accepted >= 3  # a connection per try: none was kept after it failed
    with EchoServer(bus):
        assert rpc.call("test.after", {}, 5000, 0)["op"] == "test.after"
