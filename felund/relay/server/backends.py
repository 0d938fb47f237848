"""Which store a relay's ``--db`` names: a ``postgresql://`` URL, or a SQLite file path.

One place for ``felund relay serve`` and ``felund relay migrate``; the
environment's ``FELUND_RELAY_DB`` stands in for a missing ``--db`` (a URL
with a password stays out of the process list that way).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from felund.relay.server.asyncstore import AsyncStore
from felund.relay.server.pgappend import PgAppender
from felund.relay.server.postgres import migrate as migrate_pg
from felund.relay.server.postgres import open_store as open_pg
from felund.relay.server.sqlite import SCHEMA_VERSION, SqliteRelayStore

DB_ENV = "FELUND_RELAY_DB"
_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
# PostgreSQL takes writes side by side: as many writer threads as pool connections.
PG_POOL = 8


def database(arg: str | None) -> str:
    """The database named by ``--db``, else ``$FELUND_RELAY_DB``; "" if neither."""
    return arg or os.environ.get(DB_ENV, "")


def is_postgres(db: str) -> bool:
    """Whether ``db`` is a PostgreSQL URL (else a SQLite file path)."""
    return bool(_URL.match(db))


def describe(db: str) -> str:
    """``db`` for a log line: a URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", db) if is_postgres(db) else db


def open_store(db: str) -> AsyncStore:
    """Open (and migrate) the store ``db`` names, with its threads.

    Raises ``StoreInUse``, ``DatabaseUnavailable`` or ``OSError`` with what is wrong.
    """
    if is_postgres(db):
        store = open_pg(db, pool_size=PG_POOL)
        return AsyncStore(store, readers=PG_POOL, writers=PG_POOL, appender=PgAppender(store))
    try:
        return AsyncStore(SqliteRelayStore(Path(db)))
    except sqlite3.Error as exc:
        raise OSError(str(exc)) from None


def migrate(db: str) -> str:
    """Bring the schema of ``db`` to this version (idempotent); what was done, in words."""
    if is_postgres(db):
        before, after = migrate_pg(db)
        return (
            f"schema version {after} (was {before})"
            if before != after
            else f"schema version {after}, up to date"
        )
    try:
        SqliteRelayStore(Path(db)).close()  # it migrates when it opens
    except sqlite3.Error as exc:
        raise OSError(str(exc)) from None
    return f"schema version {SCHEMA_VERSION}"
