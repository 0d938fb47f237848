"""Concurrent POSTs appended together: one transaction, one commit for many requests.

- The POST handlers hand their appends to a ``GroupAppender``, which sends all
  that wait as one call (``_call``: a store's ``append_group`` on the writer
  thread for SQLite, one statement on a connection of its own for PostgreSQL,
  ``felund.relay.server.pgappend``). At most ``in_flight`` calls run at once;
  what arrives meanwhile waits for the next, so a lone request goes at once
  and a busy relay sends many per call, up to ``MAX_GROUP_REQUESTS`` and
  ``MAX_GROUP_BYTES``.
- Why on SQLite: the writer thread gets the GIL back after each statement
  from an event loop that holds it for most of a request's parsing. Measured
  (py-spy, one signed client posting 50 messages a request, 32 connections)
  with a transaction per request: the writer thread 98 % busy, half of it
  waiting for the GIL, a fifth writing WAL frames that the next request writes
  again. A group pays those once.
- Each request stays its own: its nonce is recorded in the same transaction
  and a replayed one refuses that request only; its stored seconds, cursors
  and feed note are its own (in a call, in the order the requests came).
- A call the database refuses for any other reason than being away is sent
  again one request at a time, so a bad request fails alone.
- A lost database (``DatabaseUnavailable``) fails the waiting requests (503)
  and calls ``_lost``.
- The queue holds at most one request per open connection (aiohttp reads
  the next request of a connection once it has answered this one), so the
  relay's caps bound it: ``max_connections`` requests of at most
  ``max_body_bytes`` each, already read by then.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from dataclasses import dataclass, field

from felund.errors import DatabaseUnavailable
from felund.relay.protocol import MessageBatch
from felund.relay.server import metrics as m
from felund.relay.server.store import Answer, AppendRequest

# One call's bounds: a few MiB of messages at most, and no request waits behind more
# than 63 others.
MAX_GROUP_REQUESTS = 64
MAX_GROUP_BYTES = 4 << 20


@dataclass(slots=True)
class _Waiting:
    request: AppendRequest
    size: int
    answer: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupAppender(abc.ABC):
    """Appends sent to the store together (see the module docstring); ``_call`` sends."""

    def __init__(self, in_flight: int) -> None:
        self.max_in_flight = in_flight
        self._waiting: deque[_Waiting] = deque()
        self._sending: set[asyncio.Task[None]] = set()

    async def append(
        self, batch: MessageBatch, poster: str, nonce: tuple[str, int] | None
    ) -> Answer:
        """Record ``nonce`` (a signed post's: it and its expiry) and, if it is fresh,
        store ``batch``: (nonce fresh, what was stored)."""
        waiting = _Waiting(
            AppendRequest(batch, poster, nonce), sum(len(m.payload) for m in batch.messages)
        )
        self._waiting.append(waiting)
        self._start()
        return await waiting.answer

    @abc.abstractmethod
    async def _call(self, requests: list[AppendRequest]) -> list[Answer]:
        """Append ``requests`` in one transaction: each one's answer, in order."""

    async def _lost(self) -> None:  # noqa: B027 - most appenders have nothing to drop
        """The database went away during a call (connections to drop, say)."""

    async def aclose(self) -> None:
        """Stop sending: requests still waiting are refused, calls running are cancelled."""
        for waiting in self._waiting:
            waiting.answer.cancel()
        self._waiting.clear()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

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
            m.DB_APPEND_GROUP.observe(len(group))
            answers = await self._call([w.request for w in group])
        except DatabaseUnavailable as exc:
            for w in group:
                _answer(w, exc)
            await self._lost()
        except Exception as exc:  # refused by the database: send each alone
            if len(group) == 1:
                _answer(group[0], exc)
                return
            for w in group:
                await self._send_group([w])
        else:
            for w, answer in zip(group, answers, strict=True):
                _answer(w, answer)


def _answer(waiting: _Waiting, answer: Answer | BaseException) -> None:
    if waiting.answer.done():  # its request went away; what was stored stays stored
        return
    if isinstance(answer, BaseException):
        waiting.answer.set_exception(answer)
    else:
        waiting.answer.set_result(answer)
