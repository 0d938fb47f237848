"""The relay's PostgreSQL store (``RelayStore`` of ``felund.relay.server.store``).

- Several relay processes may share one database: every decision that the
  SQLite store takes in its process is taken by the database here.
- Stored seconds and cursors: an append holds a per-circle advisory lock
  (exclusive) from reading the circle's last second (``circle_seconds``) to its
  commit, and reads the database's clock once it holds it; a page read holds
  the same lock shared. A page therefore never sees an append half way: what
  it does not see is committed after it, in a second at or after the one it
  read on the clock. That is the SQLite store's ``_pending`` across processes.
  Row ids come from one sequence; within a circle they are taken under the
  lock, so they grow in commit order (the ``cursor`` contract). The clock is
  the database's: the instances' own clocks never disagree about a second.
- Round trips: an append is one call of ``felund_append_group`` (migration 3,
  the stored-second rule in the server; migration 2's ``felund_append`` stays
  for instances of the version before during an upgrade), which carries the
  appends of several POSTs at once (``felund.relay.server.pgappend``); a page
  is one pipelined transaction; other calls are single statements on
  autocommit connections.
- Nonces, presence and keys: primary keys and ``ON CONFLICT``; a node's keys
  of a circle_hint are counted and added under a per-(circle_hint, node_id)
  lock, successions under a per-circle_hint lock: one decision each, whichever
  instance takes it.
- Feed: an append notifies channel ``felund_relay`` in its transaction (so on
  commit, in commit order) with each request's circle, poster and cursor span;
  ``felund.relay.server.pgnotify`` turns that into frames on the other
  instances.
- A lost database raises ``DatabaseUnavailable``: the HTTP layer answers 503;
  the pool reconnects by itself.
- Schema: ``MIGRATIONS``, applied in order by ``migrate`` under a lock and
  recorded in ``felund_relay_schema``: idempotent, safe for instances starting
  together.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import psycopg_pool

from felund.errors import DatabaseUnavailable
from felund.relay.auth import key_id
from felund.relay.protocol import (
    MAX_NODE_KEYS,
    MAX_REALMS,
    MAX_SIGNALS_PER_CIRCLE,
    MAX_SIGNALS_PER_NODE,
    MAX_SIGNALS_TOTAL,
    SECOND_CAP,
    MessageBatch,
    Registration,
    SignalPost,
    compact_json,
)
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

CHANNEL = "felund_relay"
# Advisory lock classes (the first key of pg_advisory_xact_lock(int, int)).
_LOCK_MIGRATE = 7100
_LOCK_CIRCLE = 7101  # written out in felund_append too
_LOCK_NODE_KEYS = 7102
_LOCK_REALMS = 7103
_LOCK_SIGNALS = 7104

MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite schema (version 4), with the key id stored beside each key
    # (SQLite computes it in a function) and each circle's last stored second.
    """
    CREATE TABLE messages (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        circle_hint text   NOT NULL,
        msg_id      text   NOT NULL,
        author      text   NOT NULL,
        stored_at   bigint NOT NULL,
        stored_wall bigint NOT NULL,
        payload     text   NOT NULL,
        UNIQUE (circle_hint, msg_id)
    );
    CREATE INDEX messages_by_second ON messages (circle_hint, stored_at, id);
    CREATE INDEX messages_by_wall ON messages (stored_wall);
    CREATE TABLE circle_seconds (
        circle_hint text   PRIMARY KEY,
        second      bigint NOT NULL,
        count       int    NOT NULL,
        last_id     bigint NOT NULL
    );
    CREATE TABLE purged (
        circle_hint text   PRIMARY KEY,
        last_id     bigint NOT NULL,
        last_second bigint NOT NULL
    );
    CREATE TABLE presence (
        circle_hint  text   NOT NULL,
        realm        text   NOT NULL,
        node_id      text   NOT NULL,
        endpoints    text   NOT NULL,
        capabilities text   NOT NULL,
        observed_at  bigint NOT NULL,
        expires_at   bigint NOT NULL,
        PRIMARY KEY (circle_hint, realm, node_id)
    );
    CREATE INDEX presence_by_expiry ON presence (expires_at);
    CREATE TABLE circle_keys (
        circle_hint text   NOT NULL,
        node_id     text   NOT NULL,
        signing_key text   NOT NULL,
        key_id      text   NOT NULL,
        pinned_at   bigint NOT NULL,
        last_used   bigint NOT NULL,
        PRIMARY KEY (circle_hint, node_id, signing_key)
    );
    CREATE INDEX circle_keys_by_use ON circle_keys (circle_hint, last_used);
    CREATE INDEX circle_keys_by_id ON circle_keys (circle_hint, key_id);
    CREATE INDEX circle_keys_by_age ON circle_keys (last_used);
    CREATE TABLE realms (
        circle_hint text   NOT NULL,
        realm       text   NOT NULL,
        room        text   NOT NULL,
        ended_at    bigint,
        PRIMARY KEY (circle_hint, realm)
    );
    CREATE TABLE nonces (
        nonce      text   PRIMARY KEY,
        expires_at bigint NOT NULL
    );
    CREATE INDEX nonces_by_expiry ON nonces (expires_at);
    CREATE TABLE signals (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id  text   NOT NULL,
        from_node   text   NOT NULL,
        to_node     text   NOT NULL,
        circle_hint text   NOT NULL,
        type        text   NOT NULL,
        payload     text   NOT NULL,
        created_at  bigint NOT NULL,
        expires_at  bigint NOT NULL
    );
    CREATE INDEX signals_by_target ON signals (to_node, id);
    CREATE INDEX signals_by_expiry ON signals (expires_at);
    CREATE INDEX signals_by_circle ON signals (circle_hint);
    """,
    # 2: an append in one round trip (the stored seconds of ``append``, in the server).
    """
    CREATE OR REPLACE FUNCTION felund_append(
        p_hint text, p_ids text[], p_authors text[], p_payloads text[], p_cap int,
        p_instance text, p_poster text
    ) RETURNS TABLE (o_id bigint, o_msg_id text, o_stored_at bigint, o_after bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_second bigint := 0; v_count int := 0; v_first bigint := 0; v_last bigint;
        v_wall bigint; v_at bigint; v_n int; v_id bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock(7101, hashtext(p_hint));  -- _LOCK_CIRCLE
        SELECT s.second, s.count, s.last_id INTO v_second, v_count, v_first
            FROM circle_seconds s WHERE s.circle_hint = p_hint;
        v_second := coalesce(v_second, 0); v_count := coalesce(v_count, 0);
        v_first := coalesce(v_first, 0); v_last := v_first;
        -- The clock is read once the lock is held: see the module docstring.
        v_wall := floor(extract(epoch FROM clock_timestamp()))::bigint;
        FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
            IF v_wall > v_second THEN v_at := v_wall; v_n := 0;
            ELSIF v_count >= p_cap THEN v_at := v_second + 1; v_n := 0;
            ELSE v_at := v_second; v_n := v_count;
            END IF;
            v_id := NULL;
            INSERT INTO messages (circle_hint, msg_id, author, stored_at, stored_wall, payload)
                VALUES (p_hint, p_ids[i], p_authors[i], v_at, v_wall, p_payloads[i])
                ON CONFLICT DO NOTHING RETURNING id INTO v_id;
            IF v_id IS NOT NULL THEN
                v_second := v_at; v_count := v_n + 1;
                o_id := v_id; o_msg_id := p_ids[i]; o_stored_at := v_at; o_after := v_last;
                RETURN NEXT;
                v_last := v_id;
            END IF;
        END LOOP;
        IF v_last <> v_first THEN
            INSERT INTO circle_seconds VALUES (p_hint, v_second, v_count, v_last)
                ON CONFLICT (circle_hint) DO UPDATE SET second = excluded.second,
                count = excluded.count, last_id = excluded.last_id;
            PERFORM pg_notify('felund_relay', json_build_object(
                'i', p_instance, 'c', p_hint, 'p', p_poster, 'a', v_first, 'l', v_last)::text);
        END IF;
    END $$;
    """,
    # 3: the appends of several requests in one call (``felund.relay.server.pgappend``):
    # each request's nonce, stored seconds and cursors are its own; one commit and one
    # NOTIFY for all.
    """
    CREATE OR REPLACE FUNCTION felund_append_group(
        p_hints text[], p_posters text[], p_nonces text[], p_expiries bigint[],
        p_sizes int[], p_ids text[], p_authors text[], p_payloads text[], p_cap int,
        p_instance text
    ) RETURNS TABLE (o_req int, o_msg int, o_id bigint, o_stored_at bigint, o_after bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_second bigint; v_count int; v_first bigint; v_last bigint; v_wall bigint;
        v_at bigint; v_n int; v_id bigint; v_end int := 0; v_notes text := '';
    BEGIN
        -- The circles' locks (_LOCK_CIRCLE) in one order: two groups never wait in a cycle.
        PERFORM pg_advisory_xact_lock(7101, s.h)
            FROM (SELECT DISTINCT hashtext(x) AS h FROM unnest(p_hints) x ORDER BY 1) s;
        -- The clock is read once the locks are held: see the module docstring.
        v_wall := floor(extract(epoch FROM clock_timestamp()))::bigint;
        FOR r IN 1 .. coalesce(array_length(p_hints, 1), 0) LOOP
            v_end := v_end + p_sizes[r];
            IF p_nonces[r] IS NOT NULL THEN
                INSERT INTO nonces VALUES (p_nonces[r], p_expiries[r]) ON CONFLICT DO NOTHING;
                IF NOT FOUND THEN  -- a replay refuses its own request only
                    o_req := r; o_msg := NULL; o_id := NULL; o_stored_at := NULL;
                    o_after := NULL;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            END IF;
            SELECT s.second, s.count, s.last_id INTO v_second, v_count, v_first
                FROM circle_seconds s WHERE s.circle_hint = p_hints[r];
            v_second := coalesce(v_second, 0); v_count := coalesce(v_count, 0);
            v_first := coalesce(v_first, 0); v_last := v_first;
            FOR i IN v_end - p_sizes[r] + 1 .. v_end LOOP
                IF v_wall > v_second THEN v_at := v_wall; v_n := 0;
                ELSIF v_count >= p_cap THEN v_at := v_second + 1; v_n := 0;
                ELSE v_at := v_second; v_n := v_count;
                END IF;
                v_id := NULL;
                INSERT INTO messages (circle_hint, msg_id, author, stored_at, stored_wall,
                    payload) VALUES (p_hints[r], p_ids[i], p_authors[i], v_at, v_wall,
                    p_payloads[i])
                    ON CONFLICT DO NOTHING RETURNING id INTO v_id;
                IF v_id IS NOT NULL THEN
                    v_second := v_at; v_count := v_n + 1;
                    o_req := r; o_msg := i; o_id := v_id; o_stored_at := v_at;
                    o_after := v_last;
                    RETURN NEXT;
                    v_last := v_id;
                END IF;
            END LOOP;
            IF v_last <> v_first THEN
                INSERT INTO circle_seconds VALUES (p_hints[r], v_second, v_count, v_last)
                    ON CONFLICT (circle_hint) DO UPDATE SET second = excluded.second,
                    count = excluded.count, last_id = excluded.last_id;
                -- A notification holds at most 8000 bytes; a note at most about 300.
                IF length(v_notes) > 7000 THEN
                    PERFORM pg_notify('felund_relay', json_build_object(
                        'i', p_instance, 'n', (('[' || v_notes || ']')::json))::text);
                    v_notes := '';
                END IF;
                v_notes := v_notes || CASE WHEN v_notes = '' THEN '' ELSE ',' END
                    || json_build_array(p_hints[r], p_posters[r], v_first, v_last)::text;
            END IF;
        END LOOP;
        IF v_notes <> '' THEN
            PERFORM pg_notify('felund_relay', json_build_object(
                'i', p_instance, 'n', (('[' || v_notes || ']')::json))::text);
        END IF;
    END $$;
    """,
)

_NOW = "floor(extract(epoch FROM clock_timestamp()))::bigint"
# The arrays go in binary: psycopg writes a text array element by element with an
# escaping regex (measured: 240 us for a call of 20 messages, 42 us in binary).
APPEND_GROUP = (
    "SELECT * FROM felund_append_group(%b::text[], %b::text[], %b::text[], %b::bigint[],"
    " %b::int[], %b::text[], %b::text[], %b::text[], %s, %s)"
)


def group_args(requests: list[AppendRequest], cap: int, instance: str) -> tuple[Any, ...]:
    """The arguments of ``APPEND_GROUP`` for ``requests``, in order."""
    msgs = [m for r in requests for m in r.batch.messages]
    return (
        [r.batch.circle_hint for r in requests],
        [r.poster for r in requests],
        [None if r.nonce is None else r.nonce[0].lower() for r in requests],
        [None if r.nonce is None else r.nonce[1] for r in requests],
        [len(r.batch.messages) for r in requests],
        [m.msg_id for m in msgs],
        [m.author_node_id for m in msgs],
        [m.payload for m in msgs],
        cap,
        instance,
    )


def group_results(requests: list[AppendRequest], rows: list[tuple[Any, ...]]) -> list[Answer]:
    """What ``APPEND_GROUP`` answered, per request: (nonce fresh, what was stored)."""
    msgs = [m for r in requests for m in r.batch.messages]
    fresh = [True] * len(requests)
    stored: list[list[Stored]] = [[] for _ in requests]
    for req, index, cursor, second, after in rows:
        if index is None:  # a replayed nonce: nothing of the request was stored
            fresh[req - 1] = False
            continue
        m = msgs[index - 1]
        stored[req - 1].append(
            Stored(int(cursor), m.msg_id, m.author_node_id, m.payload, int(second), int(after))
        )
    return list(zip(fresh, stored, strict=True))


def migrate(conninfo: str) -> tuple[int, int]:
    """Bring the schema to the newest version: (version before, version after)."""
    try:
        with psycopg.connect(conninfo, autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_MIGRATE,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS felund_relay_schema"
                " (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM felund_relay_schema"
            ).fetchone()
            before = int(row[0]) if row else 0
            for version in range(before + 1, len(MIGRATIONS) + 1):
                conn.execute(cast(Any, MIGRATIONS[version - 1]))
                conn.execute("INSERT INTO felund_relay_schema (version) VALUES (%s)", (version,))
            conn.commit()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc)) from None
    return before, len(MIGRATIONS)


class PostgresRelayStore:
    """The relay's PostgreSQL database; see ``RelayStore``."""

    def __init__(
        self,
        conninfo: str,
        *,
        second_cap: int = SECOND_CAP,
        pool_size: int = 8,
        timeout_s: float = 3.0,
    ) -> None:
        self.conninfo = conninfo
        self.second_cap = second_cap
        # Names this process in its notifications: its own feed has them already.
        self.instance = secrets.token_hex(8)
        self.pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=2,
            max_size=pool_size,
            timeout=timeout_s,
            kwargs={"autocommit": True},
            reconnect_timeout=0,  # never give up: the relay recovers by itself
            open=False,
            name="felund-relay",
        )
        self.pool.open(wait=False)

    def close(self) -> None:
        """Release every connection."""
        self.pool.close()

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: one statement, one round trip); a lost
        database is ``DatabaseUnavailable``, and the broken connection is dropped."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on a pooled connection."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def pool_stats(self) -> tuple[int, int, int]:
        """(connections open, in use, requests waiting for one)."""
        stats = self.pool.get_stats()
        size = stats.get("pool_size", 0)
        return size, size - stats.get("pool_available", 0), stats.get("requests_waiting", 0)

    # --- presence and signing keys -------------------------------------------------
    def register(self, reg: Registration, key: str, now: int) -> int | None:
        """Record a presence in the realm of ``key``, and ``key`` as the node's, in use now."""
        expires_at = now + reg.ttl_s
        with self._tx() as c:
            c.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (_LOCK_NODE_KEYS, f"{reg.circle_hint}/{reg.node_id}"),
            )
            row = c.execute(
                "SELECT count(*) FROM circle_keys"
                " WHERE circle_hint = %s AND node_id = %s AND signing_key != %s"
                " AND key_id NOT IN (SELECT realm FROM realms"
                "  WHERE circle_hint = %s AND ended_at IS NOT NULL)",
                (reg.circle_hint, reg.node_id, key, reg.circle_hint),
            ).fetchone()
            if row is not None and row[0] >= MAX_NODE_KEYS:
                return None
            c.execute(
                "INSERT INTO circle_keys VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (circle_hint, node_id, signing_key)"
                " DO UPDATE SET last_used = excluded.last_used",
                (reg.circle_hint, reg.node_id, key, key_id(key), now, now),
            )
            c.execute(
                "INSERT INTO presence VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (circle_hint, realm, node_id) DO UPDATE SET"
                " endpoints = excluded.endpoints, capabilities = excluded.capabilities,"
                " observed_at = excluded.observed_at, expires_at = excluded.expires_at",
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
        with self._conn() as c:
            cur = c.execute(
                "DELETE FROM presence WHERE circle_hint = %s AND realm = %s AND node_id = %s",
                (circle_hint, realm, node_id),
            )
            return cur.rowcount > 0

    def peers(self, circle_hint: str, realm: str, exclude: str, limit: int, now: int) -> list[Peer]:
        """Live presences of a realm, newest first."""
        with self._conn() as c:
            rows = c.execute(
                "SELECT node_id, endpoints, capabilities, observed_at, expires_at FROM presence"
                " WHERE circle_hint = %s AND realm = %s AND expires_at > %s AND node_id != %s"
                " ORDER BY observed_at DESC, node_id LIMIT %s",
                (circle_hint, realm, now, exclude, limit),
            ).fetchall()
        return [
            Peer(node, circle_hint, json.loads(endpoints), json.loads(caps), observed, expires)
            for node, endpoints, caps, observed, expires in rows
        ]

    def node_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The keys the node registered for the circle_hint, newest first."""
        with self._conn() as c:
            rows = c.execute(
                "SELECT signing_key FROM circle_keys WHERE circle_hint = %s AND node_id = %s"
                " ORDER BY last_used DESC LIMIT %s",
                (circle_hint, node_id, limit),
            ).fetchall()
        return [str(key) for (key,) in rows]

    def signing_keys(self, circle_hint: str, node_id: str, limit: int) -> list[str]:
        """The node's keys for the circle_hint, else the circle_hint's most recently used."""
        keys = self.node_keys(circle_hint, node_id, limit)
        if not keys:
            with self._conn() as c:
                rows = c.execute(
                    "SELECT signing_key FROM circle_keys WHERE circle_hint = %s"
                    " GROUP BY signing_key ORDER BY max(last_used) DESC LIMIT %s",
                    (circle_hint, limit),
                ).fetchall()
            keys = [str(key) for (key,) in rows]
        return keys

    def key_by_id(self, circle_hint: str, realm: str) -> str | None:
        """A signing key registered for the circle_hint whose key_id is ``realm``, if any."""
        with self._conn() as c:
            row = c.execute(
                "SELECT signing_key FROM circle_keys WHERE circle_hint = %s AND key_id = %s"
                " LIMIT 1",
                (circle_hint, realm),
            ).fetchone()
        return str(row[0]) if row else None

    # --- successions (re-keyed circles) ---------------------------------------------------
    def succeed(self, circle_hint: str, old: str, new: str, now: int) -> str:
        """Record that realm ``new`` succeeds realm ``old``: "ok", "other_room" or "full"."""
        with self._tx() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_REALMS, circle_hint))
            rooms = dict(
                c.execute(
                    "SELECT realm, room FROM realms WHERE circle_hint = %s AND realm IN (%s, %s)",
                    (circle_hint, old, new),
                ).fetchall()
            )
            room = rooms.get(old, old)
            if new in rooms and rooms[new] != room:
                return "other_room"
            if new not in rooms:
                row = c.execute(
                    "SELECT count(*) FROM realms WHERE circle_hint = %s", (circle_hint,)
                ).fetchone()
                if row is not None and row[0] >= MAX_REALMS:
                    return "full"
            c.execute(
                "INSERT INTO realms VALUES (%s, %s, %s, NULL) ON CONFLICT DO NOTHING",
                (circle_hint, new, room),
            )
            c.execute(
                "INSERT INTO realms VALUES (%s, %s, %s, %s) ON CONFLICT (circle_hint, realm)"
                " DO UPDATE SET ended_at = COALESCE(realms.ended_at, excluded.ended_at)",
                (circle_hint, old, room, now),
            )
        return "ok"

    def realm(self, circle_hint: str, realm: str | None) -> Realm:
        """Where a realm (a key id; None: unsigned) of a circle_hint stands."""
        with self._conn() as c:
            row = c.execute(
                "SELECT r.room, r.ended_at IS NOT NULL,"
                " EXISTS (SELECT 1 FROM realms WHERE circle_hint = %s)"
                " FROM (SELECT 1) one LEFT JOIN realms r"
                " ON r.circle_hint = %s AND r.realm = %s",
                (circle_hint, circle_hint, realm or ""),
            ).fetchone()
        assert row is not None
        if row[0] is None:
            return Realm(realm or "", ended=False, rekeyed=bool(row[2]))
        return Realm(str(row[0]), ended=bool(row[1]), rekeyed=True)

    # --- nonces -----------------------------------------------------------------------
    def use_nonce(self, nonce: str, expires_at: int) -> bool:
        """Record a nonce; False on a replay (whichever instance saw it first)."""
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO nonces VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (nonce.lower(), expires_at),
            )
            return cur.rowcount == 1

    # --- messages ---------------------------------------------------------------------
    def append(self, batch: MessageBatch, poster: str = "") -> list[Stored]:
        """Store new messages, each in a stored second shared by at most ``second_cap``,
        and notify the other instances on commit."""
        if not batch.messages:
            return []
        return self.append_group([AppendRequest(batch, poster, None)])[0][1]

    def append_group(self, requests: list[AppendRequest]) -> list[Answer]:
        """Nonces recorded and batches appended in one call of ``felund_append_group``."""
        with self._conn() as c:
            rows = c.execute(APPEND_GROUP, group_args(requests, self.second_cap, self.instance))
            return group_results(requests, rows.fetchall())

    def span(self, circle_hint: str, after: int, last: int) -> list[tuple[int, str, str]]:
        """(cursor, author, payload) of a circle's messages with a cursor in (after, last]."""
        with self._conn() as c:
            rows = c.execute(
                "SELECT id, author, payload FROM messages WHERE circle_hint = %s"
                " AND id > %s AND id <= %s ORDER BY id",
                (circle_hint, after, last),
            ).fetchall()
        return [(int(i), str(a), str(p)) for i, a, p in rows]

    def _page(
        self, circle_hint: str, query: str, args: tuple[Any, ...]
    ) -> tuple[tuple[int, int, int, int, int], list[tuple[int, int, str]]]:
        """Read a page under the circle's lock (shared), in one round trip: (database
        clock, top second, top cursor, newest purged cursor, its second) and the rows."""
        with self._tx() as c, c.pipeline():
            c.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))", (_LOCK_CIRCLE, circle_hint)
            )
            head = c.execute(
                f"SELECT {_NOW}, s.second, s.last_id, p.last_id, p.last_second"  # noqa: S608
                " FROM (SELECT 1) one LEFT JOIN circle_seconds s ON s.circle_hint = %s"
                " LEFT JOIN purged p ON p.circle_hint = %s",
                (circle_hint, circle_hint),
            )
            rows = c.execute(cast(Any, query), args)
            first = head.fetchone()
            found = rows.fetchall()
        assert first is not None
        return cast(tuple[int, int, int, int, int], tuple(int(v or 0) for v in first)), found

    def page_since(self, circle_hint: str, since: int, limit: int) -> Page:
        """Whole stored seconds after ``since``: as many as fit in ``limit``, at least two."""
        fetch = max(limit, 2 * self.second_cap) + 1
        (wall, top_second, top_id, _, purged_second), rows = self._page(
            circle_hint,
            "SELECT id, stored_at, payload FROM messages"
            " WHERE circle_hint = %s AND stored_at > %s ORDER BY stored_at, id LIMIT %s",
            (circle_hint, since, fetch),
        )
        return whole_seconds(
            rows,
            since,
            limit,
            fetch=fetch,
            last=max(wall, top_second) - 1,
            top_id=top_id,
            expired=0 < since < purged_second,
        )

    def page_after(self, circle_hint: str, cursor: int, limit: int) -> Page:
        """Messages after the cursor (their row id)."""
        (wall, top_second, _, purged_id, _), rows = self._page(
            circle_hint,
            "SELECT id, stored_at, payload FROM messages"
            " WHERE circle_hint = %s AND id > %s AND stored_at >= COALESCE("
            "  (SELECT stored_at FROM messages WHERE id = %s AND circle_hint = %s), 0)"
            " ORDER BY stored_at, id LIMIT %s",
            (circle_hint, cursor, cursor, circle_hint, limit),
        )
        payloads = [payload for _, _, payload in rows]
        # A full page: a v1 client re-reads the last second (no skip).
        server_time = max(wall, top_second) - 1 if len(rows) < limit else rows[-1][1] - 1
        expired = 0 < cursor < purged_id
        return Page(payloads, server_time, rows[-1][0] if rows else cursor, expired)

    def recent(
        self, circle_hint: str, since_wall: int, limit: int, not_by: str = "", *, max_bytes: int
    ) -> list[str]:
        """The newest messages since ``since_wall`` and not by ``not_by``, oldest first,
        within ``limit`` and ``max_bytes``."""
        with self._conn() as c:
            cur = c.execute(
                "SELECT payload FROM messages"
                " WHERE circle_hint = %s AND stored_at >= %s AND stored_wall >= %s"
                " AND author != %s ORDER BY stored_at DESC, id DESC LIMIT %s",
                (circle_hint, since_wall, since_wall, not_by, limit),
            )
            newest: list[str] = []
            size = 0
            for (payload,) in cur:
                size += len(payload.encode())
                if newest and size > max_bytes:
                    break
                newest.append(payload)
        newest.reverse()
        return newest

    # --- signals ------------------------------------------------------------------------
    def add_signal(self, sig: SignalPost, now: int) -> int | SignalQueue:
        """Store a call signal, unless one of its queues is full (live signals counted)."""
        with self._tx() as c:
            # One relay-wide bound: the queues are counted under one lock.
            c.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SIGNALS,))
            c.execute("DELETE FROM signals WHERE expires_at <= %s", (now,))
            for queue, where, args, bound in (
                ("node", "to_node = %s", (sig.to_node_id,), MAX_SIGNALS_PER_NODE),
                ("circle", "circle_hint = %s", (sig.circle_hint,), MAX_SIGNALS_PER_CIRCLE),
                ("relay", "true", (), MAX_SIGNALS_TOTAL),
            ):
                row = c.execute(
                    cast(
                        Any,
                        f"SELECT count(*) FROM (SELECT 1 FROM signals WHERE {where} LIMIT %s) s",  # noqa: S608
                    ),
                    (*args, bound),
                ).fetchone()
                if row is not None and row[0] >= bound:
                    return cast(SignalQueue, queue)
            row = c.execute(
                "INSERT INTO signals (session_id, from_node, to_node, circle_hint, type, payload,"
                " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
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
            ).fetchone()
        assert row is not None
        return int(row[0])

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
        query = (
            "SELECT id, session_id, from_node, to_node, type, payload, created_at FROM signals"
            " WHERE to_node = %s AND id > %s AND expires_at > %s"
        )
        args: list[Any] = [to_node, since_id, now]
        if session_id:
            query += " AND session_id = %s"
            args.append(session_id)
        if circle_hint:
            query += " AND circle_hint = %s"
            args.append(circle_hint)
        with self._conn() as c:
            rows = c.execute(cast(Any, query + " ORDER BY id LIMIT %s"), [*args, limit]).fetchall()
        return [Signal(*row) for row in rows]

    # --- upkeep ---------------------------------------------------------------------------
    def purge_messages(self, before_wall: int, chunk: int) -> int:
        """Delete one chunk of messages older than the retention, remembering per circle
        the newest removed (a cursor at or before it was purged past)."""
        with self._conn() as c:
            row = c.execute(
                "WITH gone AS (DELETE FROM messages WHERE id IN (SELECT id FROM messages"
                "  WHERE stored_wall < %s ORDER BY stored_wall LIMIT %s FOR UPDATE SKIP LOCKED)"
                "  RETURNING circle_hint, id, stored_at),"
                " marks AS (INSERT INTO purged SELECT circle_hint, max(id), max(stored_at)"
                "  FROM gone GROUP BY circle_hint ON CONFLICT (circle_hint) DO UPDATE SET"
                "  last_id = greatest(purged.last_id, excluded.last_id),"
                "  last_second = greatest(purged.last_second, excluded.last_second))"
                " SELECT count(*) FROM gone",
                (before_wall, chunk),
            ).fetchone()
        return int(row[0]) if row else 0

    def purge_expired(self, now: int, key_idle_s: int) -> Purged:
        """Delete what has expired."""
        with self._tx() as c:
            counts = [
                c.execute(cast(Any, f"DELETE FROM {table} WHERE {column} < %s"), (bound,)).rowcount  # noqa: S608
                for table, column, bound in (
                    ("presence", "expires_at", now + 1),
                    ("signals", "expires_at", now + 1),
                    ("nonces", "expires_at", now + 1),
                    ("circle_keys", "last_used", now - key_idle_s),
                )
            ]
        return Purged(*counts)

    def statistics(self) -> RelayStats:
        """Counts for metrics (row counts are the planner's estimates past 100k rows)."""
        with self._conn() as c:
            row = c.execute(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM messages LIMIT 100000) m),"
                " (SELECT greatest(reltuples, 0)::bigint FROM pg_class"
                "  WHERE oid = 'messages'::regclass),"
                " (SELECT count(DISTINCT circle_hint) FROM circle_keys),"
                " (SELECT count(*) FROM presence), (SELECT count(*) FROM signals),"
                " pg_database_size(current_database())"
            ).fetchone()
        assert row is not None
        exact, estimate, circles, presence, signals, size = (int(v) for v in row)
        messages = exact if exact < 100_000 else estimate
        return RelayStats(messages, circles, presence, signals, size)


def open_store(conninfo: str, **kwargs: Any) -> PostgresRelayStore:
    """Migrate the schema (idempotent) and open the store."""
    migrate(conninfo)
    return PostgresRelayStore(conninfo, **kwargs)
