"""Prometheus metrics of the relay server, in a registry of its own.

The relay is one process (not a node's multiprocess tree), so it keeps its
own ``CollectorRegistry`` and serves it with ``generate_latest``; nothing
here touches the node's registry in ``felund.metrics``. Labels take bounded
values only: route names, HTTP methods, status codes, error codes, outcome
words; never a circle, node, address or message id.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

START_TIME = Gauge(
    "felund_relay_server_start_time_seconds",
    "Unix time at which the relay server started.",
    registry=REGISTRY,
)
REQUESTS = Counter(
    "felund_relay_server_requests",
    "HTTP requests answered, by route, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "felund_relay_server_request_duration_seconds",
    "Time to answer an HTTP request, by route (WebSocket connections excluded).",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "felund_relay_server_rejections",
    "Requests refused, by error code.",
    ["code"],
    registry=REGISTRY,
)
LIMITED = Counter(
    "felund_relay_server_limited",
    "Requests refused for a spent budget, by payer (key, keys_of_address, address, "
    "unverified, web_files) and unit.",
    ["payer", "unit"],
    registry=REGISTRY,
)
AUTH = Counter(
    "felund_relay_server_auth_checks",
    "Requests by how they were authenticated (signed, unsigned) and the result.",
    ["kind", "result"],
    registry=REGISTRY,
)
MESSAGES_STORED = Counter(
    "felund_relay_server_messages_stored",
    "Messages newly stored.",
    registry=REGISTRY,
)
MESSAGES_DUPLICATE = Counter(
    "felund_relay_server_messages_duplicate",
    "Messages posted that were stored already (same circle and msg_id).",
    registry=REGISTRY,
)
MESSAGES_SERVED = Counter(
    "felund_relay_server_messages_served",
    "Messages sent to clients, by channel (poll, push, backlog).",
    ["channel"],
    registry=REGISTRY,
)
WS_CONNECTIONS = Gauge(
    "felund_relay_server_websocket_connections",
    "Open WebSocket feed connections.",
    registry=REGISTRY,
)
WS_CLOSED = Counter(
    "felund_relay_server_websocket_closed",
    "WebSocket feed connections closed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
SIGNALS = Counter(
    "felund_relay_server_signals_stored",
    "Call signals stored.",
    registry=REGISTRY,
)
SIGNALS_REFUSED = Counter(
    "felund_relay_server_signals_refused",
    "Call signals refused because a queue was full (node, circle or relay).",
    ["queue"],
    registry=REGISTRY,
)
PURGED = Counter(
    "felund_relay_server_purged",
    "Rows removed by retention and expiry, by kind.",
    ["kind"],
    registry=REGISTRY,
)
STORED_MESSAGES = Gauge(
    "felund_relay_server_stored_messages",
    "Messages held (30 days of them).",
    registry=REGISTRY,
)
PINNED_CIRCLES = Gauge(
    "felund_relay_server_pinned_circles",
    "circle_hints with a registered signing key.",
    registry=REGISTRY,
)
REGISTRATIONS = Gauge(
    "felund_relay_server_registrations",
    "Presence registrations held (live or not yet purged).",
    registry=REGISTRY,
)
STORED_SIGNALS = Gauge(
    "felund_relay_server_stored_signals",
    "Call signals held (live or not yet purged; at most MAX_SIGNALS_TOTAL live).",
    registry=REGISTRY,
)
DATABASE_BYTES = Gauge(
    "felund_relay_server_database_size_bytes",
    "Size of the SQLite database and its WAL.",
    registry=REGISTRY,
)
CONNECTIONS_OPEN = Gauge(
    "felund_relay_server_connections_open",
    "Open TCP connections (HTTP and WebSocket).",
    registry=REGISTRY,
)
CONNECTIONS_OPENED = Counter(
    "felund_relay_server_connections_opened",
    "TCP connections accepted and served.",
    registry=REGISTRY,
)
CONNECTIONS_EVICTED = Counter(
    "felund_relay_server_connections_evicted",
    "Connections closed, at max_connections, to make room: the oldest that had not "
    "sent a whole request.",
    registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "felund_relay_server_connections_refused",
    "TCP connections answered 503 and closed: max_connections open, none of them slow.",
    registry=REGISTRY,
)
SEND_QUEUED_BYTES = Gauge(
    "felund_relay_server_feed_queued_bytes",
    "Bytes queued for clients, all connections together: WebSocket feed frames and the "
    "answers to GETs (one budget, --send-budget-bytes).",
    registry=REGISTRY,
)
ANSWERS_REFUSED = Counter(
    "felund_relay_server_answers_refused",
    "GET answers refused (503) because the send budget was spent.",
    registry=REGISTRY,
)
DB_UP = Gauge(
    "felund_relay_server_db_up",
    "1 while the last database call succeeded, 0 after one found the database unreachable.",
    registry=REGISTRY,
)
DB_POOL_SIZE = Gauge(
    "felund_relay_server_db_pool_size",
    "Database connections open (PostgreSQL pool; 0 on SQLite).",
    registry=REGISTRY,
)
DB_POOL_IN_USE = Gauge(
    "felund_relay_server_db_pool_in_use",
    "Database connections lent to a request now.",
    registry=REGISTRY,
)
DB_POOL_WAITING = Gauge(
    "felund_relay_server_db_pool_waiting",
    "Database calls waiting for a free connection.",
    registry=REGISTRY,
)
DB_ERRORS = Counter(
    "felund_relay_server_db_errors",
    "Database calls that failed, by kind (unavailable: the database could not be reached).",
    ["kind"],
    registry=REGISTRY,
)
DB_APPEND_GROUP = Histogram(
    "felund_relay_server_db_append_group_requests",
    "POSTs appended by one database call (concurrent POSTs go together, one transaction).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
ERRORS = Counter(
    "felund_relay_server_internal_errors",
    "Unexpected errors while answering (each is logged).",
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The text format of every metric of the relay."""
    return generate_latest(REGISTRY)
