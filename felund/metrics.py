"""Every Prometheus metric a node exports, defined once.

Children of the supervisor run in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` is set before this module is imported), so
gauges declare how values of several processes combine. Labels take only
bounded values: service names, operation names, reason words; never a peer,
circle or message id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.metrics import Counter, Gauge, Histogram

from felund import metric_files

metric_files.install()  # before any metric makes its file (a full disk is not SIGBUS)

# --- processes (supervisor and every child) ---------------------------------
SERVICE_UP = Gauge(
    "felund_service_up",
    "1 while the service's process is running, 0 otherwise (set by the supervisor).",
    ["service"],
    multiprocess_mode="mostrecent",
)
SERVICE_FAILED = Gauge(
    "felund_service_failed",
    "1 while a flapping service is given up (tried again every supervisor.given_up_retry_s).",
    ["service"],
    multiprocess_mode="mostrecent",
)
SERVICE_NEXT_START = Gauge(
    "felund_service_next_start_timestamp_seconds",
    "Unix time at which the supervisor next starts a service that is down; 0 while it runs.",
    ["service"],
    multiprocess_mode="mostrecent",
)
SERVICE_RESTARTS = Counter(
    "felund_service_restarts",
    "Times the supervisor restarted a service after it exited or stopped answering.",
    ["service"],
)
HEARTBEATS_MISSED = Counter(
    "felund_service_heartbeats_missed",
    "Heartbeat intervals in which the supervisor heard nothing from a running service.",
    ["service"],
)
SERVICE_START_TIME = Gauge(
    "felund_service_start_time_seconds",
    "Unix time at which the service's current process started.",
    ["service"],
    multiprocess_mode="livemax",
)
PROCESS_RSS = Gauge(
    "felund_process_resident_memory_bytes",
    "Resident memory of the service's process.",
    ["service"],
    multiprocess_mode="livesum",
)
PROCESS_CPU = Counter(
    "felund_process_cpu_seconds",
    "User and system CPU time spent by the service's processes.",
    ["service"],
)

# --- bus --------------------------------------------------------------------
BUS_PUBLISHED = Counter("felund_bus_published", "Events published on the bus.", ["service"])
BUS_RECEIVED = Counter("felund_bus_received", "Events received from the bus.", ["service"])
BUS_DROPPED = Counter(
    "felund_bus_dropped",
    "Events known to be lost: gaps in a publisher's sequence, or full queues.",
    ["service", "reason"],
)
BUS_BAD_FRAMES = Counter(
    "felund_bus_bad_frames",
    "Frames dropped because they could not be decoded.",
    ["service", "kind"],
)
RPC_REQUESTS = Counter(
    "felund_rpc_requests",
    "RPC requests served, by operation and outcome.",
    ["service", "op", "outcome"],
)
RPC_RETRIES = Counter(
    "felund_rpc_client_retries",
    "RPC requests sent again after a timeout.",
    ["service", "op"],
)

# --- store ------------------------------------------------------------------
STORE_APPENDS = Counter(
    "felund_store_appends",
    "Messages newly stored, by where they came from.",
    ["origin"],
)
STORE_DUPLICATES = Counter(
    "felund_store_duplicates",
    "Messages offered to the store that it already held (idempotent retries, gossip overlap).",
)
STORE_REJECTED = Counter(
    "felund_store_rejected",
    "Messages refused by the store before storing, by reason.",
    ["reason"],
)
STORE_ROWS_READ = Counter(
    "felund_store_snapshot_rows",
    "Message rows read for store.snapshot pages, by scope (all circles, or one).",
    ["scope"],
)
STORE_ERRORS = Counter(
    "felund_store_errors",
    "Database errors met by the store.",
)
STORE_COMMIT_SECONDS = Histogram(
    "felund_store_commit_seconds",
    "Time to apply and commit one batch of writes.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_BATCH_SIZE = Histogram(
    "felund_store_batch_messages",
    "Messages written per committed batch.",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000),
)
STORE_DB_SIZE = Gauge(
    "felund_store_database_size_bytes",
    "Size of the SQLite database and its WAL.",
    multiprocess_mode="livemax",
)
STORE_LAST_SEQ = Gauge(
    "felund_store_last_seq",
    "Highest store_seq committed.",
    multiprocess_mode="livemax",
)
STORE_MESSAGES = Gauge(
    "felund_store_messages",
    "Messages held by the store.",
    multiprocess_mode="livemax",
)
STORE_DISK_FREE = Gauge(
    "felund_store_disk_free_bytes",
    "Free space on the file system holding the database.",
    multiprocess_mode="livemax",
)
STORE_DISK_FULL = Gauge(
    "felund_store_disk_full",
    "1 while the store refuses writes because the disk holding the database is full.",
    multiprocess_mode="livemax",
)
STORE_PRUNED = Counter(
    "felund_store_pruned",
    "Messages removed by retention (store.retain_days); their ids are kept.",
)

# --- gossip and relay-sync: the names the alert rules and dashboard rely on --
GOSSIP_PEERS_CONNECTED = Gauge(
    "felund_gossip_peers_connected",
    "Peers with an authenticated gossip connection right now.",
    multiprocess_mode="livesum",
)
GOSSIP_PEERS = Gauge(
    "felund_gossip_peers",
    "Distinct other nodes in touch right now: an open native session, or a v1 round"
    " that ended well within the last two round intervals.",
    multiprocess_mode="livesum",
)
GOSSIP_SESSIONS = Counter(
    "felund_gossip_sessions",
    "Gossip sessions ended, by protocol (v1, native) and outcome.",
    ["protocol", "outcome"],
)
GOSSIP_MESSAGES = Counter(
    "felund_gossip_messages",
    "Messages exchanged with peers, by direction (in, out).",
    ["direction"],
)
GOSSIP_BYTES = Counter(
    "felund_gossip_bytes",
    "Bytes exchanged with peers, by direction (in, out).",
    ["direction"],
)
GOSSIP_RECONCILE_ROUNDS = Counter(
    "felund_gossip_reconcile_rounds",
    "Anti-entropy reconciliation rounds run with peers.",
)
DELIVERY_LATENCY = Histogram(
    "felund_delivery_latency_seconds",
    "From a live message's creation on its author's node to its storage here "
    "(created within PUSH_FRESH_S; a catch-up's history is not observed).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RELAY_REQUESTS = Counter(
    "felund_relay_requests",
    "Requests to the relay, by operation and outcome.",
    ["op", "outcome"],
)
RELAY_LAST_SUCCESS = Gauge(
    "felund_relay_last_success_timestamp_seconds",
    "Unix time of the last successful exchange with the relay.",
    multiprocess_mode="livemax",
)
BAD_INPUT = Counter(
    "felund_bad_input",
    "Input from outside refused, by where it came from and why.",
    ["source", "kind"],
)


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` of each amount, in one write per bucket touched and one for the
    sum rather than two per amount: each write is to a metric file (a backlog's messages
    were 6 % of gossip's CPU one by one). Amounts are not NaN."""
    # prometheus-client has no bulk observe: its Histogram.observe is done here on the same
    # attributes (a unit test compares the two), with its rule: the first bucket whose upper
    # bound is >= the amount.
    bounds: list[float] = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
    if amounts:
        histogram._sum.inc(sum(amounts))
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)
