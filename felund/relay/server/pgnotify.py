"""The feed across relay instances on one PostgreSQL database: LISTEN/NOTIFY.

- Every append notifies ``felund_relay`` on commit with its instance and, for
  each request, its circle, poster and cursor span (``felund_append_group``:
  one notification for the requests of one call). Each instance
  listens on a connection of its own, skips its own notifications (its POST
  handler published them already), reads the messages of the spans whose
  circle has subscribers here, and publishes them to its hub in commit order,
  as if they had been posted here.
- Notifications that arrive together are read in one query per circle: a
  burst costs one read per wake-up, not one per POST.
- A lost listening connection (or a failed read) may have missed messages:
  the feeds concerned are closed, so their clients reconnect and get the
  backlog; the listener reconnects with ``Backoff``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
from aiohttp import web

from felund.actor.backoff import Backoff
from felund.errors import ApiError
from felund.relay.server import metrics as m
from felund.relay.server.postgres import CHANNEL, PostgresRelayStore
from felund.relay.server.state import RELAY, Relay


@dataclass(frozen=True, slots=True)
class Note:
    """One append of another instance: its circle, poster and cursor span (after, last]."""

    circle_hint: str
    poster: str
    after: int
    last: int


def parse_notes(payload: str, own: str) -> list[Note]:
    """The notes of a notification (``felund_append_group``'s ``{"i", "n": [[circle,
    poster, after, last], ...]}``, or an older instance's single note), none if it is
    this instance's own or malformed."""
    try:
        obj = json.loads(payload)
        if obj["i"] == own:
            return []
        if "n" not in obj:
            return [Note(str(obj["c"]), str(obj["p"]), int(obj["a"]), int(obj["l"]))]
        return [Note(str(c), str(p), int(a), int(last)) for c, p, a, last in obj["n"]]
    except (ValueError, KeyError, TypeError):
        return []


async def deliver(relay: Relay, store: PostgresRelayStore, notes: list[Note]) -> None:
    """Publish the messages of ``notes`` (in commit order) to this instance's hub."""
    by_circle: dict[str, list[Note]] = {}
    for note in notes:
        if relay.hub.listens(note.circle_hint):
            by_circle.setdefault(note.circle_hint, []).append(note)
    for hint, group in by_circle.items():
        low, high = min(n.after for n in group), max(n.last for n in group)
        try:
            rows = await relay.store.read(store.span, hint, low, high)
        except ApiError:
            relay.hub.drop(hint)  # the database is away: their clients catch up on reconnect
            continue
        now = int(time.time())
        for note in group:
            stored = [(a, p) for i, a, p in rows if note.after < i <= note.last]
            pushed = relay.hub.publish(hint, note.poster, stored, now, (note.after, note.last))
            m.MESSAGES_SERVED.labels("push").inc(pushed)


async def listen(relay: Relay, store: PostgresRelayStore) -> None:
    """Follow the other instances' appends until cancelled, reconnecting when cut."""
    backoff = Backoff(initial=0.2, cap=5.0)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                store.conninfo, autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if backoff.failures:
                    relay.hub.drop()  # what was notified while away is lost: catch up
                    relay.log.info("relay.feed_listening_again")
                backoff.reset()
                queue: asyncio.Queue[Note] = asyncio.Queue()
                reader = asyncio.create_task(_read(conn, store.instance, queue))
                try:
                    while not reader.done():
                        getter = asyncio.ensure_future(queue.get())
                        await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            break
                        notes = [getter.result()]
                        while not queue.empty():
                            notes.append(queue.get_nowait())
                        await deliver(relay, store, notes)
                    reader.result()  # raises what ended it
                finally:
                    reader.cancel()
        except Exception as exc:  # the listener never dies: it reconnects
            m.DB_ERRORS.labels("listen").inc()
            relay.log.warning("relay.feed_listen_lost", error=type(exc).__name__)
            relay.hub.drop()
        await asyncio.sleep(backoff.next())


async def _read(
    conn: psycopg.AsyncConnection[object], own: str, queue: asyncio.Queue[Note]
) -> None:
    async for notify in conn.notifies():
        for note in parse_notes(notify.payload, own):
            queue.put_nowait(note)


async def feed_across_instances(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the listener, while the app runs (PostgreSQL only)."""
    relay = app[RELAY]
    store = relay.store.store
    task = None
    if isinstance(store, PostgresRelayStore):
        task = asyncio.create_task(listen(relay, store))
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
