"""The node's SQLite database: schema, writes and queries.

Only one process writes at a time: the store actor while the node runs, or
a command working offline while it holds the node lock. WAL mode, so
readers never block the writer. ``store_seq`` is gap-free: it is assigned
here, inside the writing transaction, from a counter kept in the same
database, so a rollback or a crash never leaves a hole.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from felund.actor.backoff import Backoff
from felund.errors import DiskFull
from felund.trust.identity import DERIVED_MARK
from felund.v1.wire import WireMessage, pack_wire, to_wire

# 2: messages.verified and .signer, the keys table; 3: messages.sealed_key, epoch_keys,
# channel_keys
SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS circles (
    circle_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    joined_ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    store_seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    circle_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    author_node_id TEXT NOT NULL,
    display_name TEXT NOT NULL,   -- as the reader sees it (decrypted)
    created_ts INTEGER NOT NULL,
    text TEXT NOT NULL,           -- as the reader sees it (decrypted)
    wire BLOB NOT NULL,           -- the message as peers get it (msgpack of its JSON object)
    origin TEXT NOT NULL,
    stored_ts REAL NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,  -- 1: signed by its author's key, or our own
    signer BLOB,                          -- the raw public key that verified it (NULL: unsigned)
    sealed_key TEXT                       -- NULL: opened; else the enc.key_id it awaits (no text)
);
CREATE INDEX IF NOT EXISTS messages_by_channel
    ON messages (circle_id, channel_id, store_seq);
CREATE INDEX IF NOT EXISTS messages_by_circle
    ON messages (circle_id, store_seq);
CREATE TABLE IF NOT EXISTS peers (
    circle_id TEXT NOT NULL,
    addr TEXT NOT NULL,
    node_id TEXT NOT NULL DEFAULT '',
    last_seen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (circle_id, addr)
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Messages removed by retention (store.retain_days): their ids stay, so that
-- reconciliation counts them as held and never fetches them again.
CREATE TABLE IF NOT EXISTS pruned (
    store_seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    circle_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_created ON messages (created_ts);
-- The key pinned, at first sight, for an author whose id is older than keys (per circle).
CREATE TABLE IF NOT EXISTS keys (
    circle_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    pk BLOB NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (circle_id, node_id)
);
-- The secrets of a circle's epochs n > 0 this node holds (the root's, epoch 0, is circles.secret).
CREATE TABLE IF NOT EXISTS epoch_keys (
    circle_id TEXT NOT NULL,
    epoch_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    secret TEXT NOT NULL,
    PRIMARY KEY (circle_id, epoch_id)
);
-- What opens a private channel (felund.trust.channels): part "k", the key its members
-- typed (a key channel); part "i<m>.<event id>", that channel epoch's secret (invite).
CREATE TABLE IF NOT EXISTS channel_keys (
    circle_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    part TEXT NOT NULL,
    secret TEXT NOT NULL,
    PRIMARY KEY (circle_id, channel_id, part)
);
"""
# Columns added since schema 1, for a database made before them (old rows: unverified).
_ADDED_COLUMNS = (
    ("messages", "verified", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "signer", "BLOB"),
    ("messages", "sealed_key", "TEXT"),
)
# Indexes on added columns: made once the columns are there.
_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_sealed
    ON messages (circle_id, sealed_key) WHERE sealed_key IS NOT NULL;
"""
_SCHEMA_NAMES = frozenset(re.findall(r"IF NOT EXISTS (\w+)", _SCHEMA + _INDEXES))
BUSY_TIMEOUT_S = 5.0  # how long a connection waits for another's lock
_LOW = 1 << 20  # bytes free under which an I/O error is taken for a full disk
# The database file and SQLite's companions: each holds circle secrets or texts.
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
_ROW_COLUMNS = (
    "store_seq, msg_id, circle_id, channel_id, author_node_id, display_name, "
    "created_ts, text, origin, verified, sealed_key IS NOT NULL"
)


class Row(NamedTuple):
    """A message to store, authenticated, as its reader sees it; or kept sealed."""

    msg: WireMessage
    display_name: str
    text: str
    verified: bool  # signed by its author's key, or written here
    signer: bytes | None  # the raw public key that signed it (None: unsigned)
    # The enc.key_id of an epoch not held yet: the row has no plaintext and is shown
    # nowhere until the secret arrives (then opened and judged). None: opened.
    sealed_key: str | None = None


@dataclass(frozen=True, slots=True)
class Circle:
    """A circle this node belongs to."""

    circle_id: str
    secret: str
    name: str
    joined_ts: int


@dataclass
class Commit:
    """What a transaction's body asks of its commit."""

    # Run in the transaction's thread while another commits (SQLite lets go of the GIL
    # as it writes): work that does not touch the database. What it raises is raised
    # once the transaction has committed; a failed commit raises its own error.
    meanwhile: Callable[[], object] | None = None


class Database:
    """One connection to the node's database."""

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        try:
            make_private(path)
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot open {path}: {exc.strerror}") from None
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.last_seq = 0
        try:
            with self._disk_full_as_error():
                self._setup(synchronous)
        except BaseException:
            self._db.close()
            raise
        # SQLite made the -wal and -shm with the file's mode; older ones may not be.
        with contextlib.suppress(OSError):
            make_private(path)

    def _setup(self, synchronous: str) -> None:
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self._use_wal()
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"database schema {version} is newer than this felund ({SCHEMA_VERSION})"
            )
        # Every statement is idempotent (IF NOT EXISTS), so a crash between
        # them is repaired by the next start. Only run when something is
        # missing: a store opening on a full disk must still be able to read.
        if version != SCHEMA_VERSION or not self._has_schema():
            self._db.executescript(_SCHEMA)
            self._add_columns()
            self._db.executescript(_INDEXES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.last_seq = self._meta("last_seq")

    def _use_wal(self) -> None:
        """Put the file in WAL mode (it keeps it: only a new file's first opens switch)."""
        # Openers of a new file at once (`felund run` and `felund status`) switch it
        # together, and SQLite fails one of them at once rather than call the busy
        # handler, which could deadlock there: that one tries again.
        backoff = Backoff(initial=0.005, cap=0.1)
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(backoff.next())

    def _add_columns(self) -> None:
        """Add the columns a database of an older schema lacks (each ALTER is atomic, and
        a crash between them is repaired by the next start: only missing ones are added)."""
        for table, column, decl in _ADDED_COLUMNS:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _has_schema(self) -> bool:
        names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        return names >= _SCHEMA_NAMES

    @contextlib.contextmanager
    def _disk_full_as_error(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as DiskFull, with the bytes left."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            free = free_bytes(self.path)
            # An I/O error with no room left is ENOSPC too (growing the -shm at open).
            if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and free < _LOW):
                raise DiskFull(free, self.path.parent) from None
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Commit]:
        """One write transaction: everything inside commits together or not at all.

        DiskFull when the disk has no room for it: nothing of it is kept, and
        the connection stays usable for when space comes back. What it yields
        says what to do while it commits (``Commit.meanwhile``).
        """
        with self._disk_full_as_error():
            self._db.execute("BEGIN IMMEDIATE")
        committed_seq = self.last_seq
        commit = Commit()
        aside: BaseException | None = None
        try:
            with self._disk_full_as_error():
                yield commit
                if self.last_seq != committed_seq:
                    self._set_meta("last_seq", self.last_seq)
                aside = self._commit(commit.meanwhile)
        except BaseException:
            # SQLite has already rolled back after some errors (a full disk at COMMIT).
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self.last_seq = committed_seq
            raise
        if aside is not None:
            raise aside

    def _commit(self, meanwhile: Callable[[], object] | None) -> BaseException | None:
        """COMMIT, with ``meanwhile`` run beside it; what ``meanwhile`` raised."""
        if meanwhile is None:
            self._db.execute("COMMIT")
            return None
        failed: list[BaseException] = []

        def commit() -> None:
            try:
                self._db.execute("COMMIT")
            except BaseException as exc:  # the transaction's own error: raised below
                failed.append(exc)

        worker = threading.Thread(target=commit, name="sqlite-commit")
        worker.start()
        aside = None
        try:
            meanwhile()
        except BaseException as exc:  # not the transaction's: it ends as SQLite says
            aside = exc
        worker.join()
        if failed:
            raise failed[0]
        return aside

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: undo one request's writes without undoing its batch.

        A DiskFull inside is not undone here: it ends the whole transaction.
        """
        before = self.last_seq
        self._db.execute("SAVEPOINT request")
        try:
            with self._disk_full_as_error():
                yield
        except DiskFull:
            raise
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK TO request")
                self._db.execute("RELEASE request")
            self.last_seq = before
            raise
        self._db.execute("RELEASE request")

    def changes(self) -> int:
        """Rows written by this connection so far (to tell a write from a read)."""
        return self._db.total_changes

    def release_memory(self) -> None:
        """Free SQLite's page cache (up to its 2 MiB), refilled from the OS's as used."""
        self._db.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- messages -----------------------------------------------------------
    def insert_messages(
        self, rows: Sequence[Row], origin: str, held: set[str] | None = None
    ) -> list[int | None]:
        """Store authenticated rows; each new store_seq or None if held (``held``: the ids
        of ``rows`` held, if the caller asked ``held()`` already)."""
        if held is None:
            held = self.held({r.msg.msg_id for r in rows})
        seqs: list[int | None] = []
        values = []
        stored_ts = time.time()
        for msg, display_name, text, verified, signer, sealed_key in rows:
            if msg.msg_id in held:
                seqs.append(None)
                continue
            held.add(msg.msg_id)
            self.last_seq += 1
            seqs.append(self.last_seq)
            values.append(
                (
                    self.last_seq,
                    msg.msg_id,
                    msg.circle_id,
                    msg.channel_id,
                    msg.author_node_id,
                    display_name,
                    msg.created_ts,
                    text,
                    pack_wire(to_wire(msg)),
                    origin,
                    stored_ts,
                    verified,
                    signer,
                    sealed_key,
                )
            )
        self._db.executemany(
            "INSERT INTO messages (store_seq, msg_id, circle_id, channel_id, "
            "author_node_id, display_name, created_ts, text, wire, origin, stored_ts, "
            "verified, signer, sealed_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        return seqs

    def held(self, msg_ids: set[str]) -> set[str]:
        """Those of ``msg_ids`` held, or held once and pruned (never stored again)."""
        ids = list(msg_ids)
        return {r[0] for r in self._where_msg_id_in("msg_id", ids)} | {
            r[0] for r in self._where_msg_id_in("msg_id", ids, "pruned")
        }

    def wire_of(self, msg_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The wire form of the messages held among ``msg_ids``, in store order."""
        return [msgpack.unpackb(b) for b in self.packed_wire_of(msg_ids)]

    def packed_wire_of(self, msg_ids: Sequence[str]) -> list[bytes]:
        """As ``wire_of``, packed (``wire.pack_wire``) as they are kept."""
        return [r[1] for r in sorted(self._where_msg_id_in("store_seq, wire", list(msg_ids)))]

    def _where_msg_id_in(
        self, columns: str, msg_ids: list[str], table: str = "messages"
    ) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        for i in range(0, len(msg_ids), 500):  # SQLite caps bound parameters
            chunk = msg_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.extend(
                self._db.execute(
                    f"SELECT {columns} FROM {table} WHERE msg_id IN ({marks})",  # noqa: S608 - only ?s
                    chunk,
                )
            )
        return found

    def seq_of(self, msg_id: str) -> int | None:
        """The store_seq of a message held, if any."""
        row = self._db.execute(
            "SELECT store_seq FROM messages WHERE msg_id = ?", (msg_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def since(
        self,
        since: int,
        limit: int,
        *,
        with_wire: bool = False,
        circle_id: str | None = None,
        exclude_origin: str = "",
        with_pruned: bool = False,
    ) -> list[dict[str, Any]]:
        """Messages with store_seq > since, oldest first: of one circle if given (by the
        ``messages_by_circle`` index, so the cost follows that circle's rows), and not of
        ``exclude_origin``; with ``with_pruned``, the pruned ones too, as rows marked
        ``pruned`` that hold only their ids and time."""
        cols = _ROW_COLUMNS + (", wire" if with_wire else "")
        where, args = "store_seq > ? AND origin != ?", [since, exclude_origin]
        if circle_id is not None:
            where = f"circle_id = ? AND {where}"
            args.insert(0, circle_id)
        rows = self._db.execute(
            f"SELECT {cols} FROM messages WHERE {where} ORDER BY store_seq LIMIT ?",  # noqa: S608 - fixed column list
            (*args, limit),
        ).fetchall()
        out = [_row(r, with_wire) for r in rows]
        if with_pruned:
            tombs = self._db.execute(
                "SELECT store_seq, msg_id, circle_id, created_ts FROM pruned "
                "WHERE store_seq > ? AND (? IS NULL OR circle_id = ?) ORDER BY store_seq LIMIT ?",
                (since, circle_id, circle_id, limit),
            ).fetchall()
            if tombs:
                out.extend(
                    {"store_seq": q, "msg_id": m, "circle_id": c, "created_ts": t, "pruned": True}
                    for q, m, c, t in tombs
                )
                out = sorted(out, key=lambda r: int(r["store_seq"]))[:limit]
        return out

    def first_seq_stored_since(self, ts: int) -> int:
        """The first store_seq stored at ``ts`` (Unix seconds) or later; last_seq + 1 if none.

        A bisection by the primary key: store_seq and stored_ts grow together
        (one writer assigns both), so no index on the time is needed.
        """
        lo, hi = 1, self.last_seq + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._db.execute(
                "SELECT store_seq, stored_ts FROM messages WHERE store_seq >= ?"
                " ORDER BY store_seq LIMIT 1",
                (mid,),
            ).fetchone()
            if row is None or row[1] >= ts:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    def stored_from(self, circle_id: str, first_seq: int, limit: int) -> list[dict[str, Any]]:
        """A circle's messages from store_seq ``first_seq`` on, oldest first: each its
        ``seq``, the whole second it was stored ``at``, and its ``wire`` form."""
        rows = self._db.execute(
            "SELECT store_seq, stored_ts, wire FROM messages"
            " WHERE circle_id = ? AND store_seq >= ? ORDER BY store_seq LIMIT ?",
            (circle_id, first_seq, limit),
        ).fetchall()
        return [{"seq": q, "at": int(t), "wire": msgpack.unpackb(w)} for q, t, w in rows]

    def circle_rows(
        self, circle_id: str, channel_id: str | None, page: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every opened message of a circle (or one channel), wire form included, in store order.

        Read page by page along the circle's (or channel's) index, a read
        transaction each, so memory stays flat whatever the size and the
        store goes on writing meanwhile.
        """
        where, args = ("AND channel_id = ?", (channel_id,)) if channel_id else ("", ())
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT {_ROW_COLUMNS}, wire FROM messages "  # noqa: S608 - fixed text
                f"WHERE circle_id = ? {where} AND store_seq > ? AND sealed_key IS NULL "
                "ORDER BY store_seq LIMIT ?",
                (circle_id, *args, last, page),
            ).fetchall()
            for r in rows:
                yield _row(r, True)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def prune(self, before_ts: int, limit: int, keep_channel: str) -> int:
        """Remove up to ``limit`` messages dated before ``before_ts`` (never of
        ``keep_channel``), keeping their ids as tombstones; how many were removed."""
        seqs = [
            r[0]
            for r in self._db.execute(
                "SELECT store_seq FROM messages WHERE created_ts < ? AND channel_id != ? "
                "ORDER BY created_ts LIMIT ?",
                (before_ts, keep_channel, limit),
            )
        ]
        if not seqs:
            return 0
        marks = ",".join("?" * len(seqs))
        self._db.execute(
            "INSERT OR IGNORE INTO pruned (store_seq, msg_id, circle_id, created_ts) "  # noqa: S608 - only ?s
            "SELECT store_seq, msg_id, circle_id, created_ts FROM messages "
            f"WHERE store_seq IN ({marks})",
            seqs,
        )
        self._db.execute(f"DELETE FROM messages WHERE store_seq IN ({marks})", seqs)  # noqa: S608
        return len(seqs)

    def pruned_count(self) -> int:
        """How many messages retention has removed."""
        return int(self._db.execute("SELECT count(*) FROM pruned").fetchone()[0])

    def newest(
        self, circle_id: str, channel_id: str | None, limit: int, hidden: str = ""
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` messages of one channel, or of every channel but
        ``hidden``, oldest first."""
        where, args = ("channel_id = ?", channel_id) if channel_id else ("channel_id != ?", hidden)
        rows = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM messages WHERE circle_id = ? AND {where} "  # noqa: S608
            "AND sealed_key IS NULL ORDER BY store_seq DESC LIMIT ?",
            (circle_id, args, limit),
        ).fetchall()
        return [_row(r, False) for r in reversed(rows)]

    def message_count(self) -> int:
        """How many messages are held opened (sealed ones are not counted)."""
        # All less the sealed, each counted on an index: "WHERE sealed_key IS NULL" read
        # every row (267 ms at 100k signed, for each `felund status` during a sync).
        query = (
            "SELECT (SELECT count(*) FROM messages) - "
            "(SELECT count(*) FROM messages WHERE sealed_key IS NOT NULL)"
        )
        return int(self._db.execute(query).fetchone()[0])

    # --- circles and peers --------------------------------------------------
    def add_circle(self, circle: Circle) -> bool:
        """Record a circle; False if it was already known."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO circles (circle_id, secret, name, joined_ts) "
            "VALUES (?, ?, ?, ?)",
            (circle.circle_id, circle.secret, circle.name, circle.joined_ts),
        )
        return cur.rowcount == 1

    def circle(self, circle_id: str) -> Circle | None:
        """A circle by id."""
        row = self._db.execute(
            "SELECT circle_id, secret, name, joined_ts FROM circles WHERE circle_id = ?",
            (circle_id,),
        ).fetchone()
        return Circle(*row) if row else None

    def remove_circle(self, circle_id: str, delete_history: bool) -> None:
        """Forget a circle's secret and peers, and its messages if asked."""
        self._db.execute("DELETE FROM circles WHERE circle_id = ?", (circle_id,))
        self._db.execute("DELETE FROM epoch_keys WHERE circle_id = ?", (circle_id,))
        self._db.execute("DELETE FROM channel_keys WHERE circle_id = ?", (circle_id,))
        self._db.execute("DELETE FROM peers WHERE circle_id = ?", (circle_id,))
        if delete_history:
            # store_seq values are never reused (last_seq lives in meta).
            self._db.execute("DELETE FROM messages WHERE circle_id = ?", (circle_id,))

    # --- epochs and sealed rows ---------------------------------------------
    def epoch_keys(self, circle_id: str) -> list[tuple[str, int, str]]:
        """(epoch_id, n, secret) of every epoch n > 0 of a circle held, newest n first."""
        return self._db.execute(
            "SELECT epoch_id, n, secret FROM epoch_keys WHERE circle_id = ? "
            "ORDER BY n DESC, epoch_id",
            (circle_id,),
        ).fetchall()

    def add_epoch_key(
        self, circle_id: str, epoch_id: str, n: int, secret: str, replace: bool = False
    ) -> None:
        """Keep an epoch's secret (the first kept stays, unless ``replace``)."""
        verb = "REPLACE" if replace else "IGNORE"
        self._db.execute(
            f"INSERT OR {verb} INTO epoch_keys (circle_id, epoch_id, n, secret) "  # noqa: S608
            "VALUES (?, ?, ?, ?)",
            (circle_id, epoch_id, n, secret),
        )

    def channel_keys(self, circle_id: str) -> list[tuple[str, str, str]]:
        """(channel_id, part, secret) of what this node holds of a circle's private channels."""
        return self._db.execute(
            "SELECT channel_id, part, secret FROM channel_keys WHERE circle_id = ? "
            "ORDER BY channel_id, part",
            (circle_id,),
        ).fetchall()

    def add_channel_key(self, circle_id: str, channel_id: str, part: str, secret: str) -> bool:
        """Keep a private channel's key or epoch secret; whether it was new (the first stays)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO channel_keys (circle_id, channel_id, part, secret) "
            "VALUES (?, ?, ?, ?)",
            (circle_id, channel_id, part, secret),
        )
        return cur.rowcount == 1

    def set_root_secret(self, circle_id: str, secret: str) -> None:
        """Put the root secret (epoch 0) where a node that joined by an epoch's code kept that."""
        self._db.execute("UPDATE circles SET secret = ? WHERE circle_id = ?", (secret, circle_id))

    def sealed_count(self, circle_id: str) -> int:
        """How many rows of a circle wait, sealed, for an epoch's secret."""
        row = self._db.execute(
            "SELECT count(*) FROM messages WHERE circle_id = ? AND sealed_key IS NOT NULL",
            (circle_id,),
        ).fetchone()
        return int(row[0])

    def sealed_wires(
        self, circle_id: str, key_id: str, limit: int, channel_id: str | None = None
    ) -> list[tuple[dict[str, Any], str]]:
        """(wire form, origin) of up to ``limit`` rows sealed under ``key_id`` (in
        ``channel_id`` if given), in store order."""
        rows = self._db.execute(
            "SELECT wire, origin FROM messages WHERE circle_id = ?1 AND sealed_key = ?2 "
            "AND (?3 IS NULL OR channel_id = ?3) ORDER BY store_seq LIMIT ?4",
            (circle_id, key_id, channel_id, limit),
        ).fetchall()
        return [(msgpack.unpackb(w), o) for w, o in rows]

    def sealed_row(self, msg_id: str) -> tuple[dict[str, Any], str, str] | None:
        """(wire form, the key_id it awaits, channel) of a message held sealed, if it is."""
        row = self._db.execute(
            "SELECT wire, sealed_key, channel_id FROM messages "
            "WHERE msg_id = ? AND sealed_key IS NOT NULL",
            (msg_id,),
        ).fetchone()
        return (msgpack.unpackb(row[0]), row[1], row[2]) if row else None

    def open_sealed(self, row: Row) -> int:
        """A sealed row, opened: its plaintext kept and a new store_seq (readers that followed
        past it see it now, as a message just stored); that store_seq."""
        self.last_seq += 1
        self._db.execute(
            "UPDATE messages SET store_seq = ?, display_name = ?, text = ?, verified = ?, "
            "signer = ?, sealed_key = NULL, stored_ts = ? WHERE msg_id = ?",
            (
                self.last_seq,
                row.display_name,
                row.text,
                row.verified,
                row.signer,
                time.time(),
                row.msg.msg_id,
            ),
        )
        return self.last_seq

    def drop_sealed(self, msg_id: str) -> None:
        """Forget a sealed row that did not open, or was refused once opened."""
        self._db.execute(
            "DELETE FROM messages WHERE msg_id = ? AND sealed_key IS NOT NULL", (msg_id,)
        )

    def control_events(
        self, circle_id: str, channel_id: str
    ) -> list[tuple[str, str, int, str, bytes | None]]:
        """(msg_id, author, created_ts, text, signer) of a circle's control messages."""
        return self._db.execute(
            "SELECT msg_id, author_node_id, created_ts, text, signer FROM messages "
            "WHERE circle_id = ? AND channel_id = ? AND sealed_key IS NULL",
            (circle_id, channel_id),
        ).fetchall()

    def newest_local(self, circle_id: str, channel_id: str) -> int:
        """The newest created_ts of this node's own messages in a channel (0 if none)."""
        row = self._db.execute(
            "SELECT max(created_ts) FROM messages "
            "WHERE circle_id = ? AND channel_id = ? AND origin = 'local'",
            (circle_id, channel_id),
        ).fetchone()
        return int(row[0] or 0)

    def authors(self, circle_id: str) -> list[tuple[str, str, int]]:
        """(author, latest display name, last message time) of everyone who wrote.

        An unsigned message in the name of a derived-form id that signs is anyone's
        forgery (chatmodel's ``unsigned_from_signer``): it names and dates nobody.
        """
        return self._db.execute(
            "SELECT author_node_id, display_name, max(created_ts) FROM messages "
            "WHERE circle_id = ? AND sealed_key IS NULL AND (signer IS NOT NULL "
            "OR substr(author_node_id, 1, ?) != ? OR author_node_id NOT IN ("
            "SELECT author_node_id FROM messages WHERE circle_id = ? AND signer IS NOT NULL)) "
            "GROUP BY author_node_id",
            (circle_id, len(DERIVED_MARK), DERIVED_MARK, circle_id),
        ).fetchall()

    def signers(self, circle_id: str) -> dict[str, bytes]:
        """The key each author's messages in a circle verified with (pinned or derived)."""
        rows = self._db.execute(
            "SELECT author_node_id, signer FROM messages "
            "WHERE circle_id = ? AND signer IS NOT NULL GROUP BY author_node_id",
            (circle_id,),
        )
        return {author: bytes(pk) for author, pk in rows}

    def pinned(self, circle_id: str, node_id: str) -> bytes | None:
        """The key pinned for an author in a circle, if any."""
        row = self._db.execute(
            "SELECT pk FROM keys WHERE circle_id = ? AND node_id = ?", (circle_id, node_id)
        ).fetchone()
        return bytes(row[0]) if row else None

    def pin(self, circle_id: str, node_id: str, pk: bytes) -> None:
        """Pin an author's key in a circle (the first pinned stays)."""
        self._db.execute(
            "INSERT OR IGNORE INTO keys (circle_id, node_id, pk, first_seen) VALUES (?, ?, ?, ?)",
            (circle_id, node_id, pk, int(time.time())),
        )

    def setting(self, key: str) -> str | None:
        """A local setting (e.g. this node's display name after a rename)."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        """Store a local setting."""
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def circles(self) -> list[Circle]:
        """Every circle, oldest first."""
        rows = self._db.execute(
            "SELECT circle_id, secret, name, joined_ts FROM circles ORDER BY joined_ts, circle_id"
        ).fetchall()
        return [Circle(*r) for r in rows]

    def add_peer(self, circle_id: str, addr: str, node_id: str = "", last_seen: int = 0) -> None:
        """Remember an address at which a circle's member may be reached."""
        self._db.execute(
            "INSERT INTO peers (circle_id, addr, node_id, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (circle_id, addr) DO UPDATE SET "
            "node_id = CASE WHEN excluded.node_id != '' THEN excluded.node_id ELSE node_id END, "
            "last_seen = max(last_seen, excluded.last_seen)",
            (circle_id, addr, node_id, last_seen),
        )

    def peers(
        self, circle_id: str | None = None, after: tuple[str, str] | None = None, limit: int = -1
    ) -> list[dict[str, Any]]:
        """Known peer addresses (of one circle, or all) in (circle_id, addr) order, from
        after ``after``; at most ``limit`` (-1: all)."""
        rows = self._db.execute(
            "SELECT circle_id, addr, node_id, last_seen FROM peers "
            "WHERE (?1 IS NULL OR circle_id = ?1) AND (circle_id, addr) > (?2, ?3) "
            "ORDER BY circle_id, addr LIMIT ?4",
            (circle_id, *(after or ("", "")), limit),
        ).fetchall()
        return [{"circle_id": c, "addr": a, "node_id": n, "last_seen": s} for c, a, n, s in rows]

    def trim_peers(self, circle_id: str, keep: int) -> int:
        """Keep at most ``keep`` addresses of a circle, dropping learned ones (with a node
        id) never reached first, oldest first; the user's own (no node id) stay. The
        number dropped."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM peers WHERE circle_id = ?", (circle_id,)
        ).fetchone()
        if count <= keep:
            return 0
        cur = self._db.execute(
            "DELETE FROM peers WHERE rowid IN (SELECT rowid FROM peers "
            "WHERE circle_id = ? AND node_id != '' ORDER BY last_seen, rowid LIMIT ?)",
            (circle_id, count - keep),
        )
        return cur.rowcount

    def forget_peer(self, circle_id: str, addr: str) -> bool:
        """Drop a learned address (never the user's own); whether there was one."""
        cur = self._db.execute(
            "DELETE FROM peers WHERE circle_id = ? AND addr = ? AND node_id != ''",
            (circle_id, addr),
        )
        return cur.rowcount == 1

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the whole database into ``target`` (SQLite's online backup).

        One step, so it is one read transaction: writers go on (WAL) and it
        never starts over because of them. The copy is flushed to disk as it
        grows: left to the kernel, a gigabyte of it would be written back all
        at once, and the store's own fsync would wait behind it (a send
        stalled 440 ms at 1M messages).
        """
        make_private(target)
        dst = sqlite3.connect(target, isolation_level=None)
        done = threading.Event()
        flusher = threading.Thread(target=_flush_while, args=(target, done), daemon=True)
        flusher.start()
        try:
            self._db.backup(dst)
        finally:
            done.set()
            flusher.join()
            dst.close()

    def size_bytes(self) -> int:
        """Bytes used by the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file ("ok" when sound)."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _flush_while(path: Path, done: threading.Event, every_s: float = 0.05) -> None:
    """fdatasync ``path`` every ``every_s`` until ``done``: its dirty pages stay few."""
    fd = os.open(path, os.O_RDONLY)
    try:
        while not done.wait(every_s):
            os.fdatasync(fd)
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """Create the database file if missing, and make it and its companions 0600,
    whatever the umask (they hold circle secrets and texts)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in DB_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            companion = Path(f"{path}{suffix}")
            if companion.stat().st_mode & 0o777 != 0o600:
                companion.chmod(0o600)


def free_bytes(path: Path) -> int:
    """Bytes free for us on the file system holding ``path``."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _row(r: tuple[Any, ...], with_wire: bool) -> dict[str, Any]:
    out = {
        "store_seq": r[0],
        "msg_id": r[1],
        "circle_id": r[2],
        "channel_id": r[3],
        "author_node_id": r[4],
        "display_name": r[5],
        "created_ts": r[6],
        "text": r[7],
        "origin": r[8],
        "verified": bool(r[9]),
    }
    if r[10]:
        out["sealed"] = True  # held for its epoch's secret: relayed, never shown
    if with_wire:
        out["wire"] = msgpack.unpackb(r[11])
    return out
