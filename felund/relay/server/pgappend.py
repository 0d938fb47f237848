"""Concurrent POSTs appended together on PostgreSQL: one round trip, one commit, one NOTIFY.

- The POST handlers of an instance hand their appends to ``GroupAppender``,
  which sends all that wait as one call of ``felund_append_group``
  (``postgres.APPEND_GROUP``) on connections of its own, from the event loop:
  no thread hop per request. At most ``MAX_IN_FLIGHT`` calls run at once;
  what arrives meanwhile waits for the next, so a lone request goes at once
  and a busy instance sends many per call. Measured (``python -m bench.relay
  backends``, 32 connections, one message per POST, on 2 cores shared with
  other work): per POST, relay CPU about 700 -> 400 us and PostgreSQL CPU
  about 150 -> 25 us.
- Each request stays its own: its nonce is recorded in the same transaction
  and a replayed one refuses that request only; its stored seconds, cursors
  and feed note are its own (in a call, in the order the requests came).
- A call the database refuses for any other reason than being away is sent
  again one request at a time, so a bad request fails alone.
- A lost database fails the waiting requests with ``DatabaseUnavailable``
  (503) and has the store's pool drop its broken connections; the next call
  connects again. So does a call not answered within ``CALL_TIMEOUT_S`` (a
  database that hangs rather than goes away): its connection is closed, so
  the requests queued behind it are not held for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiohttp import web

from felund.errors import DatabaseUnavailable
from felund.relay.protocol import MessageBatch
from felund.relay.server import metrics as m
from felund.relay.server.postgres import (
    APPEND_GROUP,
    AppendRequest,
    PostgresRelayStore,
    group_args,
    group_results,
)
from felund.relay.server.state import RELAY
from felund.relay.server.store import Stored

# One call's bounds: a NOTIFY per 20-odd requests, and a statement of a few MiB at most.
MAX_GROUP_REQUESTS = 64
MAX_GROUP_BYTES = 4 << 20
# Calls in flight at once: two, so that the relay prepares one while PostgreSQL runs the
# other (on two cores), and still most requests wait to go together.
MAX_IN_FLIGHT = 2
CONNECT_TIMEOUT_S = 3
# A call's answer: a group of 64 takes milliseconds; far beyond that, the database hangs.
CALL_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Waiting:
    request: AppendRequest
    size: int
    answer: asyncio.Future[tuple[bool, list[Stored]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupAppender:
    """Appends of one instance, sent to PostgreSQL together (see the module docstring)."""

    def __init__(
        self,
        store: PostgresRelayStore,
        in_flight: int = MAX_IN_FLIGHT,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.max_in_flight = in_flight
        self.call_timeout_s = call_timeout_s
        self._waiting: deque[_Waiting] = deque()
        self._sending: set[asyncio.Task[None]] = set()
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    async def append(
        self, batch: MessageBatch, poster: str, nonce: tuple[str, int] | None
    ) -> tuple[bool, list[Stored]]:
        """Record ``nonce`` (a signed post's: it and its expiry) and, if it is fresh,
        store ``batch``: (nonce fresh, what was stored)."""
        waiting = _Waiting(
            AppendRequest(batch, poster, nonce), sum(len(m.payload) for m in batch.messages)
        )
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer

    async def aclose(self) -> None:
        """Stop sending (requests still waiting are refused) and close the connections."""
        for waiting in self._waiting:
            waiting.answer.cancel()
        self._waiting.clear()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)

    def _start(self) -> None:
        while self._waiting and len(self._sending) < self.max_in_flight:
            task = asyncio.create_task(self._send(self._take()))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._start()

    def _take(self) -> list[_Waiting]:
        group = [self._waiting.popleft()]
        size = group[0].size
        while (
            self._waiting
            and len(group) < MAX_GROUP_REQUESTS
            and size + self._waiting[0].size <= MAX_GROUP_BYTES
        ):
            size += self._waiting[0].size
            group.append(self._waiting.popleft())
        return group

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            await self._send_group(group)
        finally:  # cancelled (closing): nobody waits for ever
            for w in group:
                if not w.answer.done():
                    w.answer.cancel()

    async def _send_group(self, group: list[_Waiting]) -> None:
        try:
            answers = await self._call([w.request for w in group])
        except DatabaseUnavailable as exc:
            for w in group:
                _answer(w, exc)
            # The pool's idle connections broke too, most likely: dropped now, rather
            # than each failing a request of its own once the database is back.
            await asyncio.to_thread(self.store.pool.check)
        except Exception as exc:  # refused by the database: send each alone
            if len(group) == 1:
                _answer(group[0], exc)
                return
            for w in group:
                await self._send_group([w])
        else:
            for w, answer in zip(group, answers, strict=True):
                _answer(w, answer)

    async def _call(self, requests: list[AppendRequest]) -> list[tuple[bool, list[Stored]]]:
        store = self.store
        conn = None
        try:
            conn = (
                self._idle.pop()
                if self._idle
                else await psycopg.AsyncConnection.connect(
                    store.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            )
            m.DB_APPEND_GROUP.observe(len(requests))
            async with asyncio.timeout(self.call_timeout_s):
                cur = await conn.execute(
                    APPEND_GROUP, group_args(requests, store.second_cap, store.instance)
                )
                answers = group_results(requests, await cur.fetchall())
        except BaseException as exc:
            if conn is not None:
                await _close(conn)
            if isinstance(exc, psycopg.OperationalError | TimeoutError):
                raise DatabaseUnavailable(type(exc).__name__) from None
            raise
        self._idle.append(conn)
        return answers


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        await conn.close()


def _answer(waiting: _Waiting, answer: tuple[bool, list[Stored]] | BaseException) -> None:
    if waiting.answer.done():  # its request went away; what was stored stays stored
        return
    if isinstance(answer, BaseException):
        waiting.answer.set_exception(answer)
    else:
        waiting.answer.set_result(answer)


async def appends_grouped(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the group appender's connections are closed at the end."""
    yield
    appender = app[RELAY].store.appender
    if isinstance(appender, GroupAppender):
        await appender.aclose()
