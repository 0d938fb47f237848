"""The relay store's calls off the event loop: threads, and POSTs' appends in groups.

``AsyncStore`` runs the blocking calls off the event loop: every write on
one writer thread (SQLite has one writer anyway; PostgreSQL gets as many as
its pool has connections), reads on a small pool of reader threads with
their own connections (WAL lets them read beside the writer). A WAL
checkpoint, the retention purge or a slow disk then never stalls the loop
that serves WebSockets and other circles, and sqlite3 releases the GIL
while it works. The POSTs' appends go in groups, all those waiting in one
transaction (``felund.relay.server.appendgroup``): on SQLite on the writer
thread, on PostgreSQL from the loop, on connections of their own
(``felund.relay.server.pgappend``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, Protocol, TypeVar

from felund.errors import ApiError, DatabaseUnavailable
from felund.relay.protocol import DATABASE_UNAVAILABLE, MessageBatch
from felund.relay.server import metrics as m
from felund.relay.server.appendgroup import GroupAppender
from felund.relay.server.store import Answer, AppendRequest, RelayStore

P = ParamSpec("P")
T = TypeVar("T")


# How long a client waits before trying again while the database is unreachable.
DATABASE_RETRY_S = 2


class Appender(Protocol):
    """Appends of concurrent POSTs, sent together (``felund.relay.server.appendgroup``)."""

    async def append(
        self, batch: MessageBatch, poster: str, nonce: tuple[str, int] | None
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class _WriterThreadAppender(GroupAppender):
    """Groups sent to the store's ``append_group`` on the writer thread, one at a time."""

    def __init__(self, store: RelayStore, writer: ThreadPoolExecutor) -> None:
        super().__init__(in_flight=1)
        self._store = store
        self._writer = writer

    async def _call(self, requests: list[AppendRequest]) -> list[Answer]:
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, self._store.append_group, requests
        )


class AsyncStore:
    """Runs a ``RelayStore``'s blocking calls: writes on ``writers`` threads, reads on a pool;
    appends grouped, on ``appender`` if given (else by ``append_group`` on a writer thread).

    A call that finds the database unreachable (``DatabaseUnavailable``) is refused
    as 503 DATABASE_UNAVAILABLE with Retry-After, and ``db_up`` says so until a call
    succeeds again.
    """

    def __init__(
        self,
        store: RelayStore,
        readers: int = 2,
        writers: int = 1,
        appender: Appender | None = None,
    ) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(writers, thread_name_prefix="relay-db-write")
        self.appender = appender or _WriterThreadAppender(store, self._writer)
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="relay-db-read")
        m.DB_UP.set(1)

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except DatabaseUnavailable:
            m.DB_UP.set(0)
            m.DB_ERRORS.labels("unavailable").inc()
            raise ApiError(
                DATABASE_UNAVAILABLE, "the relay's database is unreachable", DATABASE_RETRY_S
            ) from None
        m.DB_UP.set(1)
        return result

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a write of the store on a writer thread."""
        call = functools.partial(fn, *args, **kwargs)
        return await self._guard(asyncio.get_running_loop().run_in_executor(self._writer, call))

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read of the store on a reader thread."""
        call = functools.partial(fn, *args, **kwargs)
        return await self._guard(asyncio.get_running_loop().run_in_executor(self._readers, call))

    async def append(
        self, batch: MessageBatch, poster: str, nonce: tuple[str, int] | None
    ) -> Answer:
        """Record ``nonce`` and, if it is fresh, store ``batch``, together with the
        appends of other requests waiting meanwhile: (nonce fresh, what was stored)."""
        return await self._guard(self.appender.append(batch, poster, nonce))

    def close(self) -> None:
        """Wait for running calls, then close the store."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.store.close()
