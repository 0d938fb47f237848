"""The relay's SQLite store (``RelayStore`` of ``felund.relay.server.store``): one file, WAL.

- Owns: the database file (created 0600) and ``<file>.lock``, an flock that
  keeps a second relay process off the same file: the stored-second state
  that the paging contract rests on lives in this process.
- One writer connection (used from one thread at a time), one read-only
  connection per reader thread, and one that checkpoints the WAL off the
  writer's path (``felund.relay.server.checkpoint``).
- Stored seconds: ``append`` gives each new message of a circle
  ``max(wall clock, last stored second)``, moving to the next second once
  ``second_cap`` messages share one; the wall clock used never goes back.
  While an append is being committed its lowest possible second is
  published (``_pending``), so that a page read meanwhile answers a
  ``server_time`` before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from felund.errors import StoreInUse
from felund.relay.auth import key_id
from felund.relay.protocol import (
    MAX_BATCH,
    MAX_NODE_KEYS,
    MAX_REALMS,
    MAX_SIGNALS_PER_CIRCLE,
    MAX_SIGNALS_PER_NODE,
    MAX_SIGNALS_TOTAL,
    SECOND_CAP,
    IncomingMessage,
    MessageBatch,
    Registration,
    SignalPost,
    compact_json,
)
from felund.relay.server.checkpoint import BACKSTOP_PAGES, Checkpointer
from felund.relay.server.store import (
    Answer,
    AppendRequest,
    Page,
    Peer,
    Purged,
    Realm,
    RelayStats,
    Signal,
    SignalQueue,
    Stored,
    whole_seconds,
)

SCHEMA_VERSION = 4
# Version 1 pinned one signing key per circle_hint (the first registered) and
# kept one presence per (circle_hint, node_id): both tables are dropped and
# remade. Nodes register again within a minute; messages stay.
_DROPPED_IN_2 = ("presence", "circle_keys")
# Version 3 adds ``realms`` (successions of re-keyed circles); version 4 ``purged``
# (each circle's newest purged cursor and second); nothing else changes.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the cursor; never reused
    circle_hint TEXT    NOT NULL,
    msg_id      TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    stored_at   INTEGER NOT NULL,  -- the stored second that v1 paging compares
    stored_wall INTEGER NOT NULL,  -- the wall clock: retention and the WebSocket backlog
    payload     TEXT    NOT NULL,  -- the message's JSON object as it was posted
    UNIQUE (circle_hint, msg_id)
);
CREATE INDEX IF NOT EXISTS messages_by_second ON messages (circle_hint, stored_at);
CREATE INDEX IF NOT EXISTS messages_by_wall ON messages (stored_wall);
CREATE TABLE IF NOT EXISTS presence (
    circle_hint  TEXT    NOT NULL,
    realm        TEXT    NOT NULL,  -- key_id of the signing key it registered with
    node_id      TEXT    NOT NULL,
    endpoints    TEXT    NOT NULL,
    capabilities TEXT    NOT NULL,
    observed_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (circle_hint, realm, node_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS presence_by_expiry ON presence (expires_at);
CREATE TABLE IF NOT EXISTS circle_keys (
    circle_hint TEXT    NOT NULL,
    node_id     TEXT    NOT NULL,
    signing_key TEXT    NOT NULL,
    pinned_at   INTEGER NOT NULL,
    last_used   INTEGER NOT NULL,  -- its node's last registration with it
    PRIMARY KEY (circle_hint, node_id, signing_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS circle_keys_by_use ON circle_keys (circle_hint, last_used);
CREATE INDEX IF NOT EXISTS circle_keys_by_age ON circle_keys (last_used);
CREATE TABLE IF NOT EXISTS realms (
    circle_hint TEXT    NOT NULL,
    realm       TEXT    NOT NULL,  -- key_id of a key that succeeded another or was succeeded
    room        TEXT    NOT NULL,  -- key_id of the first key of its lineage: the room it shares
    ended_at    INTEGER,           -- when a successor was registered (NULL: it is current)
    PRIMARY KEY (circle_hint, realm)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS purged (
    circle_hint TEXT    NOT NULL PRIMARY KEY,
    last_id     INTEGER NOT NULL,  -- the newest cursor purged: a cursor before it has a gap
    last_second INTEGER NOT NULL   -- its stored second, for v1 ``since``
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
    nonce      TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS signals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    from_node   TEXT    NOT NULL,
    to_node     TEXT    NOT NULL,
    circle_hint TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS signals_by_target ON signals (to_node, id);
CREATE INDEX IF NOT EXISTS signals_by_expiry ON signals (expires_at);
CREATE INDEX IF NOT EXISTS signals_by_circle ON signals (circle_hint);
"""


class MonotonicWallClock:
    """``time.time()`` that never goes back, shared by threads."""

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self._last = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current time, never earlier than a time already returned."""
        with self._lock:
            self._last = max(self._last, self._source())
            return self._last


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    # Autocommit (isolation_level None): transactions are explicit BEGINs.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    # Keys are found by their id (a succession names its predecessor so), never stored.
    conn.create_function("key_id", 1, key_id, deterministic=True)
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives the process being killed; a
        # power cut may lose the last commits, which their senders still hold.
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "") -> Iterator[sqlite3.Connection]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# A batch is two statements, whatever it holds: one finds the messages already
# stored, one inserts the rest. sqlite3 gives up the GIL for each statement, and the
# writer thread then waits for the event loop to give it back; an INSERT a message
# paid that wait 50 times for a POST of 50.
_MESSAGE_COLUMNS = "(circle_hint, msg_id, author, stored_at, stored_wall, payload)"


@functools.lru_cache(maxsize=MAX_BATCH)
def _insert_messages(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)  # placeholders only
    return f"INSERT INTO messages {_MESSAGE_COLUMNS} VALUES {values}"  # noqa: S608


def _new_messages(conn: sqlite3.Connection, batch: MessageBatch) -> list[IncomingMessage]:
    """The batch's messages not stored yet, each msg_id once (its first), in order."""
    known = {
        row[0]
        for row in conn.execute(
            "SELECT msg_id FROM messages WHERE circle_hint = ?"
            " AND msg_id IN (SELECT value FROM json_each(?))",
            (batch.circle_hint, json.dumps([m.msg_id for m in batch.messages])),
        )
    }
    fresh = []
    for msg in batch.messages:
        if msg.msg_id not in known:
            known.add(msg.msg_id)
            fresh.append(msg)
    return fresh


class SqliteRelayStore:
    """The relay's SQLite database; see ``RelayStore``."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        second_cap: int = SECOND_CAP,
        max_tracked_circles: int = 50_000,
    ) -> None:
        self.path = path
        self.second_cap = second_cap
        self._clock = MonotonicWallClock(clock)
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The stored-second state lives in this process: a second process
        # writing the same file would break the paging guarantee.
        self._lock_file = open(f"{path}.lock", "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreInUse(f"another relay process is using {path}") from None
        except OSError:
            pass  # no flock here (a sandbox filtering it): the lock is only a safety net
        self._conn = _connect(path, readonly=False)
        if fresh:
            os.chmod(path, 0o600)
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if 0 < version < 2:
            with _transaction(self._conn, "IMMEDIATE") as c:
                for table in _DROPPED_IN_2:
                    c.execute(f"DROP TABLE IF EXISTS {table}")
        self._conn.executescript(_SCHEMA)  # idempotent: IF NOT EXISTS throughout
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        # Guards the stored-second state shared by the writer and the readers.
        self._lock = threading.Lock()
        # circle_hint -> (last stored second, messages in it); reloaded when evicted.
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max_tracked = max_tracked_circles
        # circle_hint -> lowest stored second of the append being committed.
        self._pending: dict[str, int] = {}
        self._checkpointer = Checkpointer(functools.partial(_connect, path, readonly=False))

    def close(self) -> None:
        """Release every connection."""
        self._checkpointer.stop()
        for conn in [*self._readers, self._conn]:
            conn.close()
        self._readers.clear()
        self._lock_file.close()  # releases the lock

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    # --- presence and signing keys -------------------------------------------------
    def register(self, reg: Registration, key: str, now: int) -> int | None:
        """Record a presence in the realm of ``key``, and ``key`` as the node's, in use now."""
        expires_at = now + reg.ttl_s
        with _transaction(self._conn, "IMMEDIATE") as c:
            # A key whose realm has a successor does not count: a node registers one
            # key per epoch of a circle, and may still read with the old ones.
            others = c.execute(
                "SELECT count(*) FROM circle_keys"
                " WHERE circle_hint = ? AND node_id = ? AND signing_key != ?"
                " AND key_id(signing_key) NOT IN (SELECT realm FROM realms"
                "  WHERE circle_hint = ? AND ended_at IS NOT NULL)",
                (reg.circle_hint, reg.node_id, key, reg.circle_hint),
            ).fetchone()[0]
            if others >= MAX_NODE_KEYS:
                return None
            c.execute(
                "INSERT INTO circle_keys VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (circle_hint, node_id, signing_key)"
                " DO UPDATE SET last_used = excluded.last_used",
                (reg.circle_hint, reg.node_id, key, now, now),
            )
            c.execute(
                "INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reg.circle_hint,
                    key_id(key),
                    reg.node_id,
                    compact_json(list(reg.endpoints), ascii_only=True),
                    compact_json(reg.capabilities, ascii_only=True),
                    now,
                    expires_at,
                ),
            )
        return expires_at

    def unregister(self, circle_hint: str, realm: str, node_id: str) -> bool:
        """Remove a presence."""
        cur = self._conn.execute(
            "DELETE FROM presence WHERE circle_hint = ? AND realm = ? AND node_id = ?",
            (circle_hint, realm, node_id),
        )
        return cur.rowcount > 0

    def peers(self, circle_hint: str, realm: str, exclude: str, limit: int, now: int) -> list[Peer]:
        """Live presences of a realm, newest first."""
        rows = (
            self._reader()
            .execute(
                "SELECT node_id, endpoints, capabilities, observed_at, expires_at FROM presence"
                " WHERE circle_hint = ? AND realm = ? AND expires_at > ? AND node_id != ?"
                " ORDER BY observed_at DESC, node_id LIMIT ?",
                (circle_hint, realm, now, exclude, limit),
            )
            .fetchall()
        )
        return [
            Peer(node, circle_hint, json.loads(endpoints), json.loads(caps), observed, expires)
            for node, endpoints, caps, observed, expires in rows
        ]

    def node_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The keys the node registered for the circle_hint, newest first."""
        rows = (
            self._reader()
            .execute(
                "SELECT signing_key FROM circle_keys WHERE circle_hint = ? AND node_id = ?"
                " ORDER BY last_used DESC LIMIT ?",
                (circle_hint, node_id, limit),
            )
            .fetchall()
        )
        return [str(key) for (key,) in rows]

    def signing_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The node's keys for the circle_hint, else the circle_hint's most recently used."""
        keys = self.node_keys(circle_hint, node_id, limit)
        if not keys:
            rows = (
                self._reader()
                .execute(
                    "SELECT signing_key FROM circle_keys WHERE circle_hint = ?"
                    " GROUP BY signing_key ORDER BY max(last_used) DESC LIMIT ?",
                    (circle_hint, limit),
                )
                .fetchall()
            )
            keys = [str(key) for (key,) in rows]
        return keys

    def key_by_id(self, circle_hint: str, realm: str) -> str | None:
        """A signing key registered for the circle_hint whose key_id is ``realm``, if any."""
        row = (
            self._reader()
            .execute(
                "SELECT signing_key FROM circle_keys"
                " WHERE circle_hint = ? AND key_id(signing_key) = ? LIMIT 1",
                (circle_hint, realm),
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    # --- successions (re-keyed circles) ---------------------------------------------------
    def succeed(self, circle_hint: str, old: str, new: str, now: int) -> str:
        """Record that realm ``new`` succeeds realm ``old`` (key ids): ``new`` shares
        ``old``'s room, ``old`` has ended. "ok", "other_room" or "full"."""
        with _transaction(self._conn, "IMMEDIATE") as c:
            row = c.execute(
                "SELECT room FROM realms WHERE circle_hint = ? AND realm = ?", (circle_hint, old)
            ).fetchone()
            room = row[0] if row else old
            row = c.execute(
                "SELECT room FROM realms WHERE circle_hint = ? AND realm = ?", (circle_hint, new)
            ).fetchone()
            if row is not None and row[0] != room:
                return "other_room"
            if row is None:
                (count,) = c.execute(
                    "SELECT count(*) FROM realms WHERE circle_hint = ?", (circle_hint,)
                ).fetchone()
                if count >= MAX_REALMS:  # ended realms' keys count for no node's bound
                    return "full"
            c.execute(
                "INSERT OR IGNORE INTO realms VALUES (?, ?, ?, NULL)", (circle_hint, new, room)
            )
            c.execute(
                "INSERT INTO realms VALUES (?, ?, ?, ?) ON CONFLICT (circle_hint, realm)"
                " DO UPDATE SET ended_at = COALESCE(ended_at, excluded.ended_at)",
                (circle_hint, old, room, now),
            )
        return "ok"

    def realm(self, circle_hint: str, realm: str | None) -> Realm:
        """Where a realm (a key id; None: unsigned) of a circle_hint stands."""
        conn = self._reader()
        row = None
        if realm is not None:
            row = conn.execute(
                "SELECT room, ended_at IS NOT NULL FROM realms WHERE circle_hint = ? AND realm = ?",
                (circle_hint, realm),
            ).fetchone()
        rekeyed = conn.execute(
            "SELECT 1 FROM realms WHERE circle_hint = ? LIMIT 1", (circle_hint,)
        ).fetchone()
        if row is None:
            return Realm(realm or "", ended=False, rekeyed=rekeyed is not None)
        return Realm(str(row[0]), ended=bool(row[1]), rekeyed=True)

    # --- nonces -----------------------------------------------------------------------
    def use_nonce(self, nonce: str, expires_at: int) -> bool:
        """Record a nonce; False on a replay."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO nonces VALUES (?, ?)", (nonce.lower(), expires_at)
        )
        return cur.rowcount == 1

    # --- messages ---------------------------------------------------------------------
    def _load_last(self, circle_hint: str) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT stored_at FROM messages WHERE circle_hint = ? ORDER BY stored_at DESC LIMIT 1",
            (circle_hint,),
        ).fetchone()
        if row is None:
            return 0, 0
        (count,) = self._conn.execute(
            "SELECT count(*) FROM messages WHERE circle_hint = ? AND stored_at = ?",
            (circle_hint, row[0]),
        ).fetchone()
        return int(row[0]), int(count)

    def append(self, batch: MessageBatch, poster: str = "") -> list[Stored]:
        """Store new messages, each in a stored second shared by at most ``second_cap``
        (``poster``: one process, whose hub the caller publishes to)."""
        return self.append_group([AppendRequest(batch, poster, None)])[0][1]

    def append_group(self, requests: list[AppendRequest]) -> list[Answer]:
        """Nonces recorded and batches appended in one transaction, in order."""
        hints = {r.batch.circle_hint for r in requests if r.batch.messages}
        with self._lock:
            wall = int(self._clock.now())
            # circle_hint -> (last stored second, messages in it), as this group goes.
            last = {h: self._last.get(h) or self._load_last(h) for h in hints}
            for hint, (second, _) in last.items():
                # Anything this group stores gets a second at or after this one.
                self._pending[hint] = max(wall, second)
        try:
            answers: list[Answer] = []
            tops: dict[str, int] = {}
            with _transaction(self._conn, "IMMEDIATE") as c:
                for r in requests:
                    if r.nonce is not None and not self.use_nonce(*r.nonce):
                        answers.append((False, []))
                    elif r.batch.messages:
                        answers.append((True, self._insert(c, r.batch, wall, last, tops)))
                    else:
                        answers.append((True, []))
            with self._lock:
                for hint, state in last.items():
                    self._last[hint] = state
                    self._last.move_to_end(hint)
                while len(self._last) > self._max_tracked:
                    self._last.popitem(last=False)
        finally:
            with self._lock:
                for hint in hints:
                    del self._pending[hint]
        return answers

    def _insert(
        self,
        c: sqlite3.Connection,
        batch: MessageBatch,
        wall: int,
        last: dict[str, tuple[int, int]],
        tops: dict[str, int],
    ) -> list[Stored]:
        """Insert a batch's new messages (``last`` and ``tops`` follow): what was stored."""
        hint = batch.circle_hint
        if hint not in tops:
            top = c.execute(
                "SELECT id FROM messages WHERE circle_hint = ?"
                " ORDER BY stored_at DESC, id DESC LIMIT 1",
                (hint,),
            ).fetchone()
            tops[hint] = top[0] if top else 0
        second, count = last[hint]
        rows: list[tuple[str, str, str, int, int, str]] = []
        for msg in _new_messages(c, batch):
            if wall > second:
                at, n = wall, 0
            elif count >= self.second_cap:
                at, n = second + 1, 0
            else:
                at, n = second, count
            second, count = at, n + 1
            rows.append((hint, msg.msg_id, msg.author_node_id, at, wall, msg.payload))
        last[hint] = second, count
        stored: list[Stored] = []
        after = tops[hint]
        for i in range(0, len(rows), MAX_BATCH):
            part = rows[i : i + MAX_BATCH]
            cur = c.execute(_insert_messages(len(part)), [v for r in part for v in r])
            # One statement in a write transaction: AUTOINCREMENT gives its rows the
            # ids after the largest ever used, one after the other.
            row_id = cast(int, cur.lastrowid) - len(part)
            for _, msg_id, author, at, _, payload in part:
                row_id += 1
                stored.append(Stored(row_id, msg_id, author, payload, at, after))
                after = row_id
        tops[hint] = after
        return stored

    def _bound(self, circle_hint: str) -> tuple[int | None, int]:
        """(pending second, wall clock), read before the page's snapshot."""
        with self._lock:
            return self._pending.get(circle_hint), int(self._clock.now())

    def _open_second(self, pending: int | None, wall: int, top: int) -> int:
        """The earliest second a message not yet visible can be stored in."""
        bound = max(wall, top)
        return bound if pending is None else min(bound, pending)

    def page_since(self, circle_hint: str, since: int, limit: int) -> Page:
        """Whole stored seconds after ``since``: as many as fit in ``limit``, at least two."""
        pending, wall = self._bound(circle_hint)
        fetch = max(limit, 2 * self.second_cap) + 1
        conn = self._reader()
        with _transaction(conn):
            rows = conn.execute(
                "SELECT id, stored_at, payload FROM messages"
                " WHERE circle_hint = ? AND stored_at > ? ORDER BY stored_at, id LIMIT ?",
                (circle_hint, since, fetch),
            ).fetchall()
            expired = 0 < since < self._purged(conn, circle_hint)[1]
            top = conn.execute(
                "SELECT id, stored_at FROM messages WHERE circle_hint = ?"
                " ORDER BY stored_at DESC, id DESC LIMIT 1",
                (circle_hint,),
            ).fetchone()
        top_id, top_second = top if top is not None else (0, 0)
        last = self._open_second(pending, wall, top_second) - 1
        return whole_seconds(
            rows, since, limit, fetch=fetch, last=last, top_id=top_id, expired=expired
        )

    def page_after(self, circle_hint: str, cursor: int, limit: int) -> Page:
        """Messages after the cursor (their row id)."""
        pending, wall = self._bound(circle_hint)
        conn = self._reader()
        with _transaction(conn):
            # Stored seconds grow with ids within a circle, so the cursor's own
            # second bounds the index range; a purged cursor row means every
            # earlier row of the circle is purged too.
            rows = conn.execute(
                "SELECT id, stored_at, payload FROM messages"
                " WHERE circle_hint = ? AND id > ? AND stored_at >= COALESCE("
                "  (SELECT stored_at FROM messages WHERE id = ? AND circle_hint = ?), 0)"
                " ORDER BY stored_at, id LIMIT ?",
                (circle_hint, cursor, cursor, circle_hint, limit),
            ).fetchall()
            expired = 0 < cursor < self._purged(conn, circle_hint)[0]
            top = conn.execute(
                "SELECT stored_at FROM messages WHERE circle_hint = ?"
                " ORDER BY stored_at DESC LIMIT 1",
                (circle_hint,),
            ).fetchone()
        payloads = [payload for _, _, payload in rows]
        if len(rows) < limit:
            server_time = self._open_second(pending, wall, top[0] if top else 0) - 1
        else:
            server_time = rows[-1][1] - 1  # a v1 client re-reads that second: no skip
        return Page(payloads, server_time, rows[-1][0] if rows else cursor, expired)

    def _purged(self, conn: sqlite3.Connection, circle_hint: str) -> tuple[int, int]:
        """The circle's newest purged (cursor, second); (0, 0) if none was."""
        row = conn.execute(
            "SELECT last_id, last_second FROM purged WHERE circle_hint = ?", (circle_hint,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def recent(
        self, circle_hint: str, since_wall: int, limit: int, not_by: str = "", *, max_bytes: int
    ) -> list[str]:
        """The newest messages since ``since_wall`` and not by ``not_by``, oldest first,
        within ``limit`` and ``max_bytes``."""
        # stored_at >= stored_wall always, so the index range is a superset.
        rows = self._reader().execute(
            "SELECT payload FROM messages"
            " WHERE circle_hint = ? AND stored_at >= ? AND stored_wall >= ? AND author != ?"
            " ORDER BY stored_at DESC, id DESC LIMIT ?",
            (circle_hint, since_wall, since_wall, not_by, limit),
        )
        newest: list[str] = []
        size = 0
        for (payload,) in rows:  # newest first, read lazily: stops at the byte cap
            size += len(payload.encode())
            if newest and size > max_bytes:
                break
            newest.append(payload)
        rows.close()
        newest.reverse()
        return newest

    # --- signals ------------------------------------------------------------------------
    def add_signal(self, sig: SignalPost, now: int) -> int | SignalQueue:
        """Store a call signal, unless one of its queues is full (live signals counted)."""
        with _transaction(self._conn, "IMMEDIATE") as c:
            c.execute("DELETE FROM signals WHERE expires_at <= ?", (now,))
            for queue, where, args, bound in (
                ("node", "to_node = ?", (sig.to_node_id,), MAX_SIGNALS_PER_NODE),
                ("circle", "circle_hint = ?", (sig.circle_hint,), MAX_SIGNALS_PER_CIRCLE),
                ("relay", "1", (), MAX_SIGNALS_TOTAL),
            ):
                # LIMIT: the count stops at the bound, whatever the table holds.
                held = c.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM signals WHERE {where} LIMIT ?)",  # noqa: S608
                    (*args, bound),
                ).fetchone()[0]
                if held >= bound:
                    return cast(SignalQueue, queue)
            cur = c.execute(
                "INSERT INTO signals (session_id, from_node, to_node, circle_hint, type, payload,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sig.session_id,
                    sig.from_node_id,
                    sig.to_node_id,
                    sig.circle_hint,
                    sig.type,
                    sig.payload,
                    now,
                    now + sig.ttl_s,
                ),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

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
        """Live signals for a node, in id order."""
        sql = (
            "SELECT id, session_id, from_node, to_node, type, payload, created_at FROM signals"
            " WHERE to_node = ? AND id > ? AND expires_at > ?"
        )
        args: list[Any] = [to_node, since_id, now]
        if session_id:
            sql += " AND session_id = ?"
            args.append(session_id)
        if circle_hint:
            sql += " AND circle_hint = ?"
            args.append(circle_hint)
        rows = self._reader().execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [Signal(*row) for row in rows]

    # --- upkeep ---------------------------------------------------------------------------
    def purge_messages(self, before_wall: int, chunk: int) -> int:
        """Delete one chunk of messages older than the retention, remembering per circle
        the newest removed (a page asked from before it is ``expired``)."""
        with _transaction(self._conn, "IMMEDIATE") as c:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS purging (id INTEGER PRIMARY KEY)")
            c.execute("DELETE FROM purging")
            c.execute(
                "INSERT INTO purging SELECT id FROM messages WHERE stored_wall < ?"
                " ORDER BY stored_wall LIMIT ?",
                (before_wall, chunk),
            )
            c.execute(
                "INSERT INTO purged SELECT circle_hint, max(id), max(stored_at) FROM messages"
                " WHERE id IN (SELECT id FROM purging) GROUP BY circle_hint"
                " ON CONFLICT (circle_hint) DO UPDATE SET"
                " last_id = max(last_id, excluded.last_id),"
                " last_second = max(last_second, excluded.last_second)"
            )
            cur = c.execute("DELETE FROM messages WHERE id IN (SELECT id FROM purging)")
        return cur.rowcount

    def purge_expired(self, now: int, key_idle_s: int) -> Purged:
        """Delete what has expired."""
        with _transaction(self._conn, "IMMEDIATE") as c:
            presence = c.execute("DELETE FROM presence WHERE expires_at <= ?", (now,)).rowcount
            signals = c.execute("DELETE FROM signals WHERE expires_at <= ?", (now,)).rowcount
            nonces = c.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,)).rowcount
            keys = c.execute(
                "DELETE FROM circle_keys WHERE last_used < ?", (now - key_idle_s,)
            ).rowcount
        return Purged(presence, signals, nonces, keys)

    def statistics(self) -> RelayStats:
        """Counts for metrics (a scan of the smallest index: fine at a few million rows)."""
        conn = self._reader()
        messages, circles, registrations, signals = (
            int(conn.execute(f"SELECT count({what}) FROM {table}").fetchone()[0])  # noqa: S608
            for what, table in (
                ("*", "messages"),
                ("DISTINCT circle_hint", "circle_keys"),
                ("*", "presence"),
                ("*", "signals"),
            )
        )
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(f"{self.path}{suffix}")
        return RelayStats(messages, circles, registrations, signals, size)

    def pool_stats(self) -> tuple[int, int, int]:
        """No pool: a writer connection and one per reader thread, never waited for."""
        return 0, 0, 0
