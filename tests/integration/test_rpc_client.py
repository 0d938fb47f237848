"""The RPC client's two faces over one retry rule, on real sockets, against a server that
is absent, then present (as a store that restarts is)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from felund.bus.aio import AsyncRPCClient
from felund.bus.sockets import Bus
from felund.config import BusConfig
from felund.errors import RPCTimeout
from felund.home import Layout

ENDPOINT = "test.ctl"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    """A bus of its own in a temporary runtime directory (no node)."""
    b = Bus(Layout(tmp_path, tmp_path, tmp_path / "db", tmp_path), "test-client", BusConfig())
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
