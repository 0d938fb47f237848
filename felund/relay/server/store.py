"""Storage of the relay server: the ``RelayStore`` interface, its records, its threads.

- ``RelayStore`` is what the HTTP layer needs of a database; the SQLite
  implementation is ``felund.relay.server.sqlite`` (one file, WAL). A PostgreSQL
  implementation for several instances behind one database must give the
  same guarantees: stored seconds and cursors that become visible in order
  (for instance a per-circle counter row updated under lock in the same
  transaction), a nonce ledger shared by every instance, and a push channel
  (LISTEN/NOTIFY) feeding the WebSocket hubs of the other instances.
- Paging contract (``page_since``): the v1 cursor is ``since``, a whole
  second compared with the second a message was stored. A store gives every
  message of a circle a *stored second* that never decreases and that at
  most ``SECOND_CAP`` messages of the circle share (a burst spills into the
  following seconds), and answers whole seconds only: as many as fit in
  ``limit``, and always at least two. ``server_time`` is then the last whole
  second answered when more follow, or, on the last page, one second before
  any second a message could still be stored in. A client that pages with
  ``since = server_time`` (our spec) or ``since = server_time - 1`` (the
  existing browser client) gets every message, some twice (clients drop
  duplicates by msg_id), and always moves forward.
- ``page_after`` pages by ``cursor``, the message's row id: strictly
  increasing, and visible in commit order.
- Several processes: ``felund.relay.server.postgres`` takes every decision
  above in the database (locks, unique constraints), so instances behind one
  load balancer behave as one relay.
- Threads and grouped appends: ``felund.relay.server.asyncstore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from felund.relay.protocol import MessageBatch, Registration, SignalPost


# --- records --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One POST's append: its batch, its poster and, if signed, its nonce and expiry."""

    batch: MessageBatch
    poster: str
    nonce: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class Peer:
    """A live registration, as GET /v1/peers answers it."""

    node_id: str
    circle_hint: str
    endpoints: list[dict[str, Any]]
    capabilities: dict[str, Any]
    observed_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Realm:
    """Where a signing key's realm stands (see "Successions" in ``felund.relay.server.state``)."""

    room: str  # key id of the first key of its lineage (its own if never succeeded; "": none)
    ended: bool  # a successor was registered: it reads, it no longer posts
    rekeyed: bool  # some realm of its circle_hint succeeded another


class Stored(NamedTuple):
    """A message newly stored by ``append`` (a tuple: one is made per message, at a
    third of a frozen dataclass's cost)."""

    id: int
    msg_id: str
    author_node_id: str
    payload: str
    stored_at: int
    # The cursor of the circle's message before this one (0: none): a client holding
    # ``after`` that is handed this message holds the circle up to ``id``.
    after: int = 0


# What an append answers: whether its nonce was fresh, and the messages it stored.
Answer = tuple[bool, list[Stored]]


@dataclass(frozen=True, slots=True)
class Page:
    """An answer of GET /v1/messages: payloads, the v1 ``server_time`` and the cursor."""

    messages: list[str]
    server_time: int
    next_cursor: int
    # The ``since`` or ``cursor`` asked for is older than the retention: messages
    # after it were purged (the page goes on from the oldest kept, a gap the client
    # is told of rather than a silent one).
    expired: bool = False


def whole_seconds(
    rows: Sequence[tuple[int, int, str]],
    since: int,
    limit: int,
    *,
    fetch: int,
    last: int,
    top_id: int,
    expired: bool,
) -> Page:
    """The v1 page of ``rows`` (cursor, stored second, payload), read with ``LIMIT fetch``
    after ``since``: whole seconds only, as many as fit in ``limit``, at least two.

    ``last`` is the last second in which nothing more can be stored (the answer when
    every row fits), ``top_id`` the circle's newest cursor.
    """
    end, seconds = 0, 0
    while end < len(rows):
        second = rows[end][1]
        stop = end
        while stop < len(rows) and rows[stop][1] == second:
            stop += 1
        if stop == len(rows) and len(rows) == fetch:
            break  # this second may go on beyond what was fetched
        if seconds >= 2 and stop > limit:
            break
        end, seconds = stop, seconds + 1
    taken = rows[:end]
    payloads = [payload for _, _, payload in taken]
    if end == len(rows) and len(rows) < fetch:  # everything there is, so far
        return Page(payloads, last, top_id, expired)
    if not taken:  # only with a second larger than a page: stored before the cap
        return Page([], since, 0, expired)
    return Page(payloads, taken[-1][1], taken[-1][0], expired)


@dataclass(frozen=True, slots=True)
class Signal:
    """A stored call signal."""

    id: int
    session_id: str
    from_node: str
    to_node: str
    type: str
    payload: str
    created_at: int


# The bounds of the signals held at once, as ``add_signal`` names the one reached.
SignalQueue = Literal["node", "circle", "relay"]


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows removed by one ``purge_expired``."""

    presence: int
    signals: int
    nonces: int
    keys: int


@dataclass(frozen=True, slots=True)
class RelayStats:
    """What the store holds, for metrics."""

    messages: int
    circles: int
    registrations: int
    signals: int
    database_bytes: int


class RelayStore(Protocol):
    """Storage of a relay server; see the module docstring for the paging contract.

    Calls block. Writes (``register``, ``unregister``,
    ``use_nonce``, ``append``, ``add_signal``, ``purge_*``) come from one
    thread at a time on SQLite (from several on PostgreSQL, which decides in
    the database); reads may come from several threads at once.
    """

    def close(self) -> None:
        """Release every connection."""

    def register(self, reg: Registration, key: str, now: int) -> int | None:
        """Record a presence in the realm of ``key`` until ``now + reg.ttl_s`` and the key
        as the node's (in use now); that expiry, or None if the node has registered
        ``MAX_NODE_KEYS`` other keys for the circle_hint (of realms not ended)."""

    def unregister(self, circle_hint: str, realm: str, node_id: str) -> bool:
        """Remove a presence of a realm (``key_id`` of its key); whether there was one."""

    def peers(self, circle_hint: str, realm: str, exclude: str, limit: int, now: int) -> list[Peer]:
        """Live presences of a circle's realm, newest first, without ``exclude``."""

    def node_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The keys ``node_id`` itself registered for a circle_hint, newest first."""

    def signing_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The keys ``node_id`` registered for a circle_hint, newest first; if it has none,
        the circle_hint's most recently used keys."""

    def key_by_id(self, circle_hint: str, realm: str) -> str | None:
        """A signing key registered for the circle_hint whose ``key_id`` is ``realm``."""

    def succeed(self, circle_hint: str, old: str, new: str, now: int) -> str:
        """Record that realm ``new`` succeeds realm ``old`` (key ids): it shares ``old``'s
        room and ``old`` has ended. "ok"; "other_room" if ``new`` already shares another
        room; "full" if the circle_hint has ``MAX_REALMS`` realms in successions."""

    def realm(self, circle_hint: str, realm: str | None) -> Realm:
        """Where a realm (a key id; None for an unsigned request) stands."""

    def use_nonce(self, nonce: str, expires_at: int) -> bool:
        """Record a nonce; False if it was already used (a replay)."""

    def append(self, batch: MessageBatch, poster: str = "") -> list[Stored]:
        """Store the messages not stored yet (by circle and msg_id); the new ones, each
        with the cursor of the circle's message before it (``Stored.after``). ``poster``
        (X-Felund-Node) is told to the other instances' feeds, which leave it out."""

    def append_group(self, requests: list[AppendRequest]) -> list[Answer]:
        """Each request's nonce recorded and, if it was fresh, its batch appended, all in
        one transaction, in order: (nonce fresh, what was stored) per request."""

    def page_since(self, circle_hint: str, since: int, limit: int) -> Page:
        """Whole stored seconds after ``since`` (v1 paging)."""

    def page_after(self, circle_hint: str, cursor: int, limit: int) -> Page:
        """At most ``limit`` messages after the cursor, in cursor order."""

    def recent(
        self, circle_hint: str, since_wall: int, limit: int, not_by: str = "", *, max_bytes: int
    ) -> list[str]:
        """The newest messages stored at or after ``since_wall`` (wall clock), oldest first:
        at most ``limit`` of them and ``max_bytes`` of UTF-8 (at least one message).

        ``not_by`` leaves out one author's: a feed never sends a node its own messages.
        """

    def add_signal(self, sig: SignalPost, now: int) -> int | SignalQueue:
        """Store a call signal until ``now + ttl``: its id, or the queue that is full
        (expired signals are dropped first, so only live ones count)."""

    def signals(
        self,
        to_node: str,
        since_id: int,
        *,
        session_id: str,
        circle_hint: str,
        now: int,
        limit: int,
    ) -> list[Signal]:
        """Live signals for a node after ``since_id``, optionally of one session or circle."""

    def purge_messages(self, before_wall: int, chunk: int) -> int:
        """Delete up to ``chunk`` messages stored before ``before_wall``; how many. Each
        circle's newest purged cursor and second are kept: a page asked from before
        them is ``Page.expired``."""

    def purge_expired(self, now: int, key_idle_s: int) -> Purged:
        """Delete expired presences, signals and nonces, and keys not registered with for
        ``key_idle_s``."""

    def statistics(self) -> RelayStats:
        """Counts for metrics."""

    def pool_stats(self) -> tuple[int, int, int]:
        """Database connections (open, in use, calls waiting for one)."""
