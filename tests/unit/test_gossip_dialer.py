"""The dialer: what it dials, how many at once and per round, how often, and what it forgets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from felund.bus.aio import AsyncRPCClient
from felund.config import GossipConfig
from felund.epochs import root_only
from felund.errors import PeerError
from felund.gossip.dialer import FORGET_AFTER, MAX_IN_FLIGHT, MAX_PER_ROUND, Dialer
from felund.gossip.handshake import Established
from felund.gossip.link import Link
from felund.gossip.peertable import PeerTable
from felund.gossip.warn import Warnings
from felund.testing.memory import FakeClock, stream_pair

CIRCLE = "c" * 24


class Rows(PeerTable):
    """The peer table as rows in memory."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(cast(AsyncRPCClient, None))
        self.rows = rows
        self.forgotten: list[str] = []

    async def known(self, circle_id: str) -> list[dict[str, Any]]:
        return list(self.rows)

    async def forget(self, circle_id: str, addrs: list[str]) -> None:
        self.forgotten.extend(addrs)
        self.rows = [r for r in self.rows if r["addr"] not in addrs]


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


class Peers:
    """What the fake network does when an address is dialled: its calls, in order."""

    def __init__(self, answer: Callable[[str, bool], Awaitable[Link]]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, bool]] = []  # (host:port, native offered)

    async def __call__(self, host: str, port: int, **kw: Any) -> Link:
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.calls.append((addr, kw["offer_native"]))
        return await self.answer(addr, kw["offer_native"])


def _learned(addr: str, last_seen: int = 0) -> dict[str, Any]:
    return {"addr": addr, "node_id": "n-" + addr, "last_seen": last_seen}


def _given(addr: str) -> dict[str, Any]:
    return {"addr": addr, "node_id": "", "last_seen": 0}


def _dialer(rows: Rows, net: Peers, clock: FakeClock) -> tuple[Dialer, list[str]]:
    ran: list[str] = []

    async def run_link(link: Link, addr: str, configured: bool) -> None:
        ran.append(addr)
        link.close()

    dialer = Dialer(
        GossipConfig(),
        "me",
        {CIRCLE: root_only(CIRCLE, "ab" * 32)},
        peers=rows,
        run_link=run_link,
        in_touch=lambda circle, addr, node: False,
        warn=Warnings(Log(), clock),
        clock=clock,
        connect=net,
    )
    return dialer, ran


async def _unreachable(addr: str, offered: bool) -> Link:
    raise PeerError("unreachable", "ConnectionRefusedError")


def test_in_flight_and_per_round_are_bounded_whatever_the_table_holds() -> None:
    release = asyncio.Event()

    async def hang(addr: str, offered: bool) -> Link:
        await release.wait()
        raise PeerError("unreachable", "TimeoutError")

    rows = Rows([_learned(f"10.0.{i // 256}.{i % 256}:9999") for i in range(1000)])
    net, clock = Peers(hang), FakeClock()
    dialer, _ = _dialer(rows, net, clock)

    async def run() -> list[int]:
        started = []
        async with asyncio.TaskGroup() as tg:
            started.append(await dialer.round(tg))
            await asyncio.sleep(0)
            started.append(await dialer.round(tg))  # all slots still taken
            release.set()
        async with asyncio.TaskGroup() as tg:
            started.append(await dialer.round(tg))  # the failed ones wait their backoff
        return started

    counts = asyncio.run(run())
    assert counts[0] == min(MAX_PER_ROUND, MAX_IN_FLIGHT) and counts[1] == 0
    assert counts[2] == counts[0]
    dialled = [addr for addr, _ in net.calls]
    assert len(dialled) == len(set(dialled)) == 2 * counts[0]  # no address twice


def test_what_a_member_named_that_is_no_peer_is_forgotten_never_dialled() -> None:
    bad = ["169.254.169.254:80", "evil.example:9999", "127.0.0.1:22", "224.0.0.1:9999",
           "0.0.0.0:22", "255.255.255.255:9999", "8.8.8.8:53"]  # fmt: skip
    rows = Rows([*map(_learned, bad), _learned("10.0.0.1:9999"), _given("localhost:9999")])
    net, clock = Peers(_unreachable), FakeClock()
    dialer, _ = _dialer(rows, net, clock)

    async def run() -> None:
        async with asyncio.TaskGroup() as tg:
            await dialer.round(tg)

    asyncio.run(run())
    assert sorted(addr for addr, _ in net.calls) == ["10.0.0.1:9999", "localhost:9999"]
    assert sorted(rows.forgotten) == sorted(bad)


def test_a_failing_address_waits_its_backoff_on_the_clock() -> None:
    rows = Rows([_learned("10.0.0.1:9999", last_seen=5)])
    net, clock = Peers(_unreachable), FakeClock()
    dialer, _ = _dialer(rows, net, clock)

    async def rounds(n: int, step: float) -> None:
        for _ in range(n):
            async with asyncio.TaskGroup() as tg:
                await dialer.round(tg)
            clock.advance(step)

    asyncio.run(rounds(3, 0.1))
    assert len(net.calls) == 1  # the first failure's wait is about a second
    asyncio.run(rounds(1, 0.0))
    clock.advance(1.5)
    asyncio.run(rounds(1, 0.0))
    assert len(net.calls) == 2
    assert rows.forgotten == []  # reached once: kept however often it fails


def test_a_learned_address_never_reached_is_forgotten_after_failing() -> None:
    rows = Rows([_learned("10.0.0.1:9999"), _given("127.0.0.1:9999")])
    net, clock = Peers(_unreachable), FakeClock()
    dialer, _ = _dialer(rows, net, clock)

    async def rounds() -> None:
        for _ in range(FORGET_AFTER + 2):
            async with asyncio.TaskGroup() as tg:
                await dialer.round(tg)
            clock.advance(120)  # past any backoff

    asyncio.run(rounds())
    assert rows.forgotten == ["10.0.0.1:9999"]
    assert sum(addr == "10.0.0.1:9999" for addr, _ in net.calls) == FORGET_AFTER
    assert sum(addr == "127.0.0.1:9999" for addr, _ in net.calls) == FORGET_AFTER + 2


def test_a_peer_that_chokes_on_the_native_offer_is_spoken_v1_to() -> None:
    async def choke(addr: str, offered: bool) -> Link:
        if offered:
            raise PeerError("closed", "connection closed")
        mine, _ = stream_pair()
        return Link(mine, Established(CIRCLE, "s", "peer", is_client=True, native=False))

    rows = Rows([_given("127.0.0.1:9999")])
    net, clock = Peers(choke), FakeClock()
    dialer, ran = _dialer(rows, net, clock)

    async def rounds() -> None:
        for _ in range(2):
            async with asyncio.TaskGroup() as tg:
                await dialer.round(tg)
            clock.advance(120)

    asyncio.run(rounds())
    assert net.calls == [("127.0.0.1:9999", True), ("127.0.0.1:9999", False)]
    assert ran == ["127.0.0.1:9999"]
    assert dialer.met[CIRCLE, "127.0.0.1:9999"] == "peer"
