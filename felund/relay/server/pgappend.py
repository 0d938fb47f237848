"""Concurrent POSTs appended together on PostgreSQL: one round trip, one commit, one NOTIFY.

- The grouping is ``felund.relay.server.appendgroup``'s; a group goes as one
  call of ``felund_append_group`` (``postgres.APPEND_GROUP``) on connections
  of the appender's own, from the event loop: no thread hop per request. Two
  calls run at once, so that the relay prepares one while PostgreSQL runs
  the other (on two cores), and still most requests wait to go together.
  Measured (``python -m bench.relay backends``, 32 connections, one message
  per POST, on 2 cores shared with other work): per POST, relay CPU about
  700 -> 400 us and PostgreSQL CPU about 150 -> 25 us.
- A lost database has the store's pool drop its broken connections; the next
  call connects again. So does a call not answered within
  ``CALL_TIMEOUT_S`` (a database that hangs rather than goes away): its
  connection is closed, so the requests queued behind it are not held for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from felund.errors import DatabaseUnavailable
from felund.relay.server.appendgroup import GroupAppender
from felund.relay.server.postgres import (
    APPEND_GROUP,
    PostgresRelayStore,
    group_args,
    group_results,
)
from felund.relay.server.store import Answer, AppendRequest

MAX_IN_FLIGHT = 2
CONNECT_TIMEOUT_S = 3
# A call's answer: a group of 64 takes milliseconds; far beyond that, the database hangs.
CALL_TIMEOUT_S = 10.0


class PgAppender(GroupAppender):
    """Appends of one instance, sent to PostgreSQL together (see the module docstring)."""

    def __init__(
        self,
        store: PostgresRelayStore,
        in_flight: int = MAX_IN_FLIGHT,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        super().__init__(in_flight)
        self.store = store
        self.call_timeout_s = call_timeout_s
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    async def aclose(self) -> None:
        """Stop sending (requests still waiting are refused) and close the connections."""
        await super().aclose()
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)

    async def _lost(self) -> None:
        # The pool's idle connections broke too, most likely: dropped now, rather
        # than each failing a request of its own once the database is back.
        await asyncio.to_thread(self.store.pool.check)

    async def _call(self, requests: list[AppendRequest]) -> list[Answer]:
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
