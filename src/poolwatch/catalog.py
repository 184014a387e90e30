"""The one place that names what poolwatch emits: metrics, attributes, events, units, buckets.

The recorder, the dashboards, the alert rules, the docs and the tests all import names from here.
Standard names come from OpenTelemetry's semantic-convention constants; everything the
conventions do not define lives under the ``poolwatch.`` namespace.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from opentelemetry.semconv._incubating.attributes import code_attributes as _code
from opentelemetry.semconv._incubating.attributes import db_attributes as _db_attrs
from opentelemetry.semconv._incubating.attributes import service_attributes as _service
from opentelemetry.semconv._incubating.attributes import thread_attributes as _thread
from opentelemetry.semconv._incubating.metrics import db_metrics as _db
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server


class Kind(enum.Enum):
    """How an instrument is exported (what the OpenTelemetry API calls its type)."""

    COUNTER = "counter"
    UP_DOWN_COUNTER = "updowncounter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Metric:
    """One metric: its name, kind, unit and description, and whether a convention defines it."""

    name: str
    kind: Kind
    unit: str
    description: str
    standard: bool = False


def _standard(name: str, kind: Kind, unit: str, factory: object) -> Metric:
    doc = (getattr(factory, "__doc__", None) or "").strip()
    return Metric(name, kind, unit, doc.rstrip(".") + ".", standard=True)


# --- attributes -------------------------------------------------------------------------------

POOL_NAME: Final = _db_attrs.DB_CLIENT_CONNECTION_POOL_NAME
STATE: Final = _db_attrs.DB_CLIENT_CONNECTION_STATE
# A pool's identity: constant per pool, on every pool metric point and checkout span.
DB_SYSTEM: Final = _db_attrs.DB_SYSTEM_NAME
#: The resource attribute that tells one process from another (one series per process).
SERVICE_INSTANCE_ID: Final = _service.SERVICE_INSTANCE_ID
DB_NAMESPACE: Final = _db_attrs.DB_NAMESPACE
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT
STATE_IDLE: Final = "idle"
STATE_USED: Final = "used"

#: Bucket upper bound on the aggregated histogram series, as in Prometheus.
LE: Final = "le"
#: Which hook an internal error happened in.
HOOK: Final = "poolwatch.hook"

# Pool state when a checkout began (span attributes and event attributes).
POOL_USED: Final = "poolwatch.pool.used"
POOL_IDLE: Final = "poolwatch.pool.idle"
POOL_MAX: Final = "poolwatch.pool.max"
POOL_PENDING: Final = "poolwatch.pool.pending_requests"
#: Of the used connections, those being opened or pinged for a caller that has not got them yet.
POOL_OPENING: Final = "poolwatch.pool.opening"
POOL_PINGING: Final = "poolwatch.pool.pinging"
#: The pool's configured checkout timeout (seconds), on timeout events.
POOL_TIMEOUT: Final = "poolwatch.pool.timeout"
#: Seconds of a timed-out checkout the caller spent opening or pinging connections itself.
CHECKOUT_OPENING_TIME: Final = "poolwatch.checkout.opening_time"
CHECKOUT_PINGING_TIME: Final = "poolwatch.checkout.pinging_time"
WAIT_DURATION: Final = "poolwatch.checkout.wait_time"
ERROR_TYPE: Final = _error.ERROR_TYPE
DB_STATUS_CODE: Final = _db_attrs.DB_RESPONSE_STATUS_CODE

# Who holds a connection, and since when (leak, returned and never-returned events).
CONNECTION_AGE: Final = "poolwatch.connection.age"
CONNECTION_HELD: Final = "poolwatch.connection.held"
THREAD_ID: Final = _thread.THREAD_ID
THREAD_NAME: Final = _thread.THREAD_NAME
TASK_NAME: Final = "poolwatch.asyncio.task"
CODE_STACKTRACE: Final = _code.CODE_STACKTRACE
CODE_FUNCTION: Final = _code.CODE_FUNCTION_NAME
CODE_FILE: Final = _code.CODE_FILE_PATH
CODE_LINE: Final = _code.CODE_LINE_NUMBER
LEAK_THRESHOLD: Final = "poolwatch.leak.threshold"
#: How the ``code.*`` attributes were found: ``checkout`` (the borrower's stack at checkout) or
#: ``holder_sample`` (the holder's stack sampled while it held the connection, this many
#: seconds after checkout).
SITE_SOURCE: Final = "poolwatch.site.source"
SITE_CHECKOUT: Final = "checkout"
SITE_HOLDER_SAMPLE: Final = "holder_sample"
SITE_SAMPLED_AFTER: Final = "poolwatch.site.sampled_after"
#: On a pool timeout: who holds the pool's connections, most common borrow site first.
POOL_HOLDERS: Final = "poolwatch.pool.holders"

# Session conflicts.
CONFLICT_KIND: Final = "poolwatch.conflict.kind"
CONFLICT_ALREADY_ATTACHED: Final = "already_attached"
CONFLICT_CONCURRENT_USE: Final = "concurrent_use"
CONFLICT_DEADLOCK: Final = "deadlock"
CONFLICT_SERIALIZATION: Final = "serialization_failure"
CONFLICT_LOCK_TIMEOUT: Final = "lock_timeout"
CONFLICT_STALE_DATA: Final = "stale_data"
#: The probable cause of a conflict: ``pool_timeout`` when the same thread or task timed out
#: waiting for a connection shortly before.
CONFLICT_CAUSE: Final = "poolwatch.conflict.cause"
CAUSE_POOL_TIMEOUT: Final = "pool_timeout"
CONFLICT_CAUSE_POOL: Final = "poolwatch.conflict.cause.pool"
CONFLICT_CAUSE_AGE: Final = "poolwatch.conflict.cause.age"
CONFLICT_CAUSE_MESSAGE: Final = "poolwatch.conflict.cause.message"
OBJECT_CLASS: Final = "poolwatch.object.class"
SESSION_OWNER: Final = "poolwatch.session.owner"
SESSION_OWNER_SITE: Final = "poolwatch.session.owner.site"
SESSION_CURRENT: Final = "poolwatch.session.current"
SESSION_CURRENT_SITE: Final = "poolwatch.session.current.site"

# --- units ------------------------------------------------------------------------------------

UNIT_SECONDS: Final = "s"
UNIT_CONNECTION: Final = "{connection}"
UNIT_REQUEST: Final = "{request}"
UNIT_TIMEOUT: Final = "{timeout}"
UNIT_CHECKOUT: Final = "{checkout}"
UNIT_ERROR: Final = "{error}"

# --- standard pool metrics ----------------------------------------------------------------------

CONNECTION_COUNT: Final = _standard(
    _db.DB_CLIENT_CONNECTION_COUNT,
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    _db.create_db_client_connection_count,
)
CONNECTION_IDLE_MAX: Final = _standard(
    _db.DB_CLIENT_CONNECTION_IDLE_MAX,
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    _db.create_db_client_connection_idle_max,
)
CONNECTION_IDLE_MIN: Final = _standard(
    _db.DB_CLIENT_CONNECTION_IDLE_MIN,
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    _db.create_db_client_connection_idle_min,
)
CONNECTION_MAX: Final = _standard(
    _db.DB_CLIENT_CONNECTION_MAX,
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    _db.create_db_client_connection_max,
)
CONNECTION_PENDING_REQUESTS: Final = _standard(
    _db.DB_CLIENT_CONNECTION_PENDING_REQUESTS,
    Kind.UP_DOWN_COUNTER,
    UNIT_REQUEST,
    _db.create_db_client_connection_pending_requests,
)
CONNECTION_TIMEOUTS: Final = _standard(
    _db.DB_CLIENT_CONNECTION_TIMEOUTS,
    Kind.COUNTER,
    UNIT_TIMEOUT,
    _db.create_db_client_connection_timeouts,
)
CONNECTION_CREATE_TIME: Final = _standard(
    _db.DB_CLIENT_CONNECTION_CREATE_TIME,
    Kind.HISTOGRAM,
    UNIT_SECONDS,
    _db.create_db_client_connection_create_time,
)
CONNECTION_WAIT_TIME: Final = _standard(
    _db.DB_CLIENT_CONNECTION_WAIT_TIME,
    Kind.HISTOGRAM,
    UNIT_SECONDS,
    _db.create_db_client_connection_wait_time,
)
CONNECTION_USE_TIME: Final = _standard(
    _db.DB_CLIENT_CONNECTION_USE_TIME,
    Kind.HISTOGRAM,
    UNIT_SECONDS,
    _db.create_db_client_connection_use_time,
)

STANDARD_METRICS: Final = (
    CONNECTION_COUNT,
    CONNECTION_IDLE_MAX,
    CONNECTION_IDLE_MIN,
    CONNECTION_MAX,
    CONNECTION_PENDING_REQUESTS,
    CONNECTION_TIMEOUTS,
    CONNECTION_CREATE_TIME,
    CONNECTION_WAIT_TIME,
    CONNECTION_USE_TIME,
)

# --- bucket boundaries (seconds) ----------------------------------------------------------------
# Few bounds: every bound is a series per pool per process (see SERIES_PER_POOL). Each histogram
# can be given its own bounds (``wait_time_buckets`` ...), or exponential buckets instead.

#: From a checkout served at once (under a millisecond) to one that hit a 30 s pool timeout (which
#: lands above the 30 s bound, apart from a 10 s wait).
WAIT_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Hold times: a fast query, a request, a slow job, a connection held for minutes.
USE_BUCKETS: Final[tuple[float, ...]] = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
#: Opening a connection: a local socket, a remote one, a slow TLS handshake, a server in trouble.
CREATE_BUCKETS: Final[tuple[float, ...]] = (0.005, 0.05, 0.5, 5.0)
#: Scale of the exponential histograms (``histogram_aggregation=exponential``): buckets grow by
#: 2**(1/8), about 9 %; Prometheus native histograms accept scales up to 8.
EXPONENTIAL_SCALE: Final = 3

# --- series per pool per process ------------------------------------------------------------------

#: Per-pool series besides the histograms: connection.count (used, idle), idle.max, idle.min, max,
#: pending_requests, timeouts, leaked, leaks, never_returned.
GAUGE_SERIES_PER_POOL: Final = 10


def histogram_series(bounds: tuple[float, ...]) -> int:
    """Prometheus series of one explicit-bucket histogram: a bucket per bound, +Inf, sum, count."""
    return len(bounds) + 1 + 2


#: Series one pool costs in one process with the default settings:
#: 10 + (11 + 3) + (6 + 3) + (4 + 3) = 40 (before: 10 + 59 buckets + 3 sums = 72). With
#: ``histogram_aggregation=exponential`` a native-histogram backend stores one series per histogram:
#: 10 + 3 = 13.
SERIES_PER_POOL: Final = GAUGE_SERIES_PER_POOL + sum(
    histogram_series(bounds) for bounds in (WAIT_BUCKETS, USE_BUCKETS, CREATE_BUCKETS)
)
#: The same with exponential histograms stored as Prometheus native histograms.
SERIES_PER_POOL_NATIVE: Final = GAUGE_SERIES_PER_POOL + 3

# --- poolwatch's own metrics ----------------------------------------------------------------------


def _aggregated(standard: Metric, what: str) -> tuple[Metric, Metric]:
    """The Prometheus-shaped pair (cumulative ``le`` buckets and sum) for a standard histogram."""
    base = "poolwatch." + standard.name.removeprefix("db.client.")
    bucket = Metric(
        base + ".bucket",
        Kind.COUNTER,
        UNIT_CHECKOUT,
        f"Cumulative count of {what} at or below the `le` bound (same data as {standard.name}).",
    )
    total = Metric(
        base + ".sum",
        Kind.COUNTER,
        UNIT_SECONDS,
        f"Sum of {what} in seconds (same data as {standard.name}).",
    )
    return bucket, total


WAIT_TIME_BUCKET, WAIT_TIME_SUM = _aggregated(CONNECTION_WAIT_TIME, "checkout waits")
USE_TIME_BUCKET, USE_TIME_SUM = _aggregated(CONNECTION_USE_TIME, "connection hold times")
CREATE_TIME_BUCKET, CREATE_TIME_SUM = _aggregated(CONNECTION_CREATE_TIME, "connection opens")
#: The ``le``-gauge histogram series, exported only with ``histograms=aggregated`` (an opt-in
#: kept for dashboards and rules that still read these names).
AGGREGATED_HISTOGRAMS: Final = (
    WAIT_TIME_BUCKET,
    WAIT_TIME_SUM,
    USE_TIME_BUCKET,
    USE_TIME_SUM,
    CREATE_TIME_BUCKET,
    CREATE_TIME_SUM,
)

CONNECTION_LEAKED: Final = Metric(
    "poolwatch.connection.leaked",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Connections checked out longer than the leak threshold, right now.",
)
CONNECTION_LEAKS: Final = Metric(
    "poolwatch.connection.leaks",
    Kind.COUNTER,
    UNIT_CONNECTION,
    "Connections that have been held past the leak threshold (each counted once).",
)
CONNECTION_NEVER_RETURNED: Final = Metric(
    "poolwatch.connection.never_returned",
    Kind.COUNTER,
    UNIT_CONNECTION,
    "Connections garbage-collected while still checked out, never returned to the pool.",
)
CONNECTION_CREATE_ERRORS: Final = Metric(
    "poolwatch.connection.create_errors",
    Kind.COUNTER,
    UNIT_ERROR,
    "Attempts to open a database connection that failed (refused, rejected by the server, timed "
    "out), by pool, error.type and the database's code where it gives one.",
)
SESSION_CONFLICTS: Final = Metric(
    "poolwatch.session.conflicts",
    Kind.COUNTER,
    "{conflict}",
    "Session and transaction conflicts by kind (already attached, concurrent use, deadlock, ...).",
)

# --- Django connections (one per alias and thread) -----------------------------------------------

DJANGO_ALIAS: Final = "poolwatch.django.alias"
DJANGO_STATE: Final = "poolwatch.django.connection.state"
DJANGO_IN_REQUEST: Final = "in_request"
DJANGO_IDLE: Final = "idle"
DJANGO_IN_TRANSACTION: Final = "in_transaction"
DJANGO_ORPHANED: Final = "orphaned"
CLOSE_REASON: Final = "poolwatch.close.reason"
CLOSE_REQUEST_END: Final = "request_end"
CLOSE_MAX_AGE: Final = "conn_max_age"
CLOSE_HEALTH_CHECK: Final = "health_check"
CLOSE_ERROR: Final = "error"
CLOSE_GARBAGE_COLLECTED: Final = "garbage_collected"
CLOSE_ORPHAN_REAPED: Final = "orphan_closed"
#: Closed by the application itself (``connection.close()``, ``connections.close_all()``).
CLOSE_EXPLICIT: Final = "explicit"
#: Why a connection was found orphaned.
ORPHAN_REASON: Final = "poolwatch.orphan.reason"
ORPHAN_REQUEST_ENDED: Final = "request_ended"
ORPHAN_THREAD_DEAD: Final = "thread_dead"
ORPHAN_IDLE_IN_TRANSACTION: Final = "idle_in_transaction"
#: Opened outside any request (``sync_to_async`` outside a request, a background thread that
#: lives on) and left without a query: nothing will ever close it.
ORPHAN_IDLE_OUTSIDE_REQUEST: Final = "idle_outside_request"
#: Seconds since the connection's last query.
CONNECTION_IDLE: Final = "poolwatch.connection.idle"
#: ``path:line in function`` of the application code that ran the connection's last query.
LAST_QUERY_SITE: Final = "poolwatch.django.last_query.site"
#: The server process of the connection: ``pid`` in PostgreSQL's ``pg_stat_activity``.
BACKEND_PID: Final = "poolwatch.postgresql.backend_pid"
#: The connection's ``application_name`` as PostgreSQL reports it.
BACKEND_APPLICATION: Final = "poolwatch.postgresql.application_name"
HTTP_METHOD: Final = "http.request.method"
HTTP_ROUTE: Final = "http.route"
DJANGO_VIEW: Final = "poolwatch.django.view"

DJANGO_CONNECTIONS: Final = Metric(
    "poolwatch.django.connections",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Open Django database connections by alias and state (in a request, idle, in a transaction, "
    "orphaned).",
)
DJANGO_CONNECTION_AGE: Final = Metric(
    "poolwatch.django.connection.max_age",
    Kind.UP_DOWN_COUNTER,
    UNIT_SECONDS,
    "Age of the oldest open Django connection, by alias.",
)
DJANGO_CONNECTION_IDLE: Final = Metric(
    "poolwatch.django.connection.max_idle",
    Kind.UP_DOWN_COUNTER,
    UNIT_SECONDS,
    "Longest time an open Django connection has gone without a query, by alias.",
)
DJANGO_OPENED: Final = Metric(
    "poolwatch.django.connections.opened",
    Kind.COUNTER,
    UNIT_CONNECTION,
    "Django database connections opened, by alias.",
)
DJANGO_CLOSED: Final = Metric(
    "poolwatch.django.connections.closed",
    Kind.COUNTER,
    UNIT_CONNECTION,
    "Django database connections closed, by alias and reason.",
)
DJANGO_ORPHANS: Final = Metric(
    "poolwatch.django.orphans",
    Kind.COUNTER,
    UNIT_CONNECTION,
    "Django connections found orphaned (outlived their request or thread, or idle in a "
    "transaction past the threshold), each counted once.",
)

# --- PostgreSQL's own view, read by the collector's sqlquery receiver (collector/postgres.yaml) ---

PG_APPLICATION: Final = "application_name"
PG_STATE: Final = "state"
PG_USER: Final = "usename"
PG_DATABASE: Final = "datname"
PG_CONNECTIONS: Final = Metric(
    "poolwatch.postgresql.connections",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Server connections from pg_stat_activity by state, application_name, usename and datname.",
)
PG_OLDEST_IDLE: Final = Metric(
    "poolwatch.postgresql.oldest_idle_seconds",
    Kind.UP_DOWN_COUNTER,
    UNIT_SECONDS,
    "Age of the oldest idle server connection's last state change.",
)
PG_OLDEST_IDLE_IN_TRANSACTION: Final = Metric(
    "poolwatch.postgresql.oldest_idle_in_transaction_seconds",
    Kind.UP_DOWN_COUNTER,
    UNIT_SECONDS,
    "Age of the oldest idle-in-transaction server connection's last state change.",
)
PG_MAX_CONNECTIONS: Final = Metric(
    "poolwatch.postgresql.max_connections",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "The server's max_connections setting.",
)
PG_RESERVED_CONNECTIONS: Final = Metric(
    "poolwatch.postgresql.reserved_connections",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Connection slots reserved for superusers (superuser_reserved_connections).",
)

# --- PgBouncer's admin console, read by the collector's sqlquery receiver (collector/pgbouncer.yaml) --

PGB_DATABASE: Final = "database"
PGB_USER: Final = "user"
PGB_STATE: Final = "state"
PGB_LIST: Final = "list"
PGB_CLIENT_STATES: Final = ("active", "waiting")
PGB_SERVER_STATES: Final = ("active", "idle", "used", "tested", "login")
PGB_CLIENTS: Final = Metric(
    "poolwatch.pgbouncer.clients",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Client connections of a PgBouncer pool (SHOW POOLS) by database, user and state: "
    "active (linked to a server connection or idle) or waiting (for a server connection).",
)
PGB_SERVERS: Final = Metric(
    "poolwatch.pgbouncer.servers",
    Kind.UP_DOWN_COUNTER,
    UNIT_CONNECTION,
    "Server connections of a PgBouncer pool (SHOW POOLS) by database, user and state: "
    "active, idle, used, tested, login.",
)
PGB_MAX_WAIT: Final = Metric(
    "poolwatch.pgbouncer.max_wait",
    Kind.UP_DOWN_COUNTER,
    UNIT_SECONDS,
    "How long the oldest waiting client of a PgBouncer pool has waited, in whole seconds "
    "(SHOW POOLS maxwait).",
)
PGB_LIST_ITEMS: Final = Metric(
    "poolwatch.pgbouncer.list_items",
    Kind.UP_DOWN_COUNTER,
    "{item}",
    "PgBouncer's internal lists (SHOW LISTS) by list: used_clients (client connections, "
    "the number max_client_conn limits), used_servers, pools, databases, users, ...",
)

INTERNAL_ERRORS: Final = Metric(
    "poolwatch.internal.errors",
    Kind.COUNTER,
    UNIT_ERROR,
    "Errors raised inside poolwatch's own hooks, caught before they reached the application.",
)

# --- spans and events -------------------------------------------------------------------------------

SPAN_CHECKOUT: Final = "poolwatch.checkout"
EVENT_POOL_TIMEOUT: Final = "poolwatch.pool.timeout"
EVENT_LEAK: Final = "poolwatch.connection.leak"
EVENT_RETURNED: Final = "poolwatch.connection.returned"
EVENT_NEVER_RETURNED: Final = "poolwatch.connection.never_returned"
EVENT_CONFLICT: Final = "poolwatch.session.conflict"
EVENT_ORPHANED: Final = "poolwatch.connection.orphaned"
EVENT_CREATE_FAILED: Final = "poolwatch.connection.create_failed"
#: The server's message when opening a connection failed (passwords removed).
ERROR_MESSAGE: Final = "poolwatch.error.message"
#: Seconds without a failed open after which the next failure starts a new burst (and event).
CREATE_BURST_GAP: Final = 10.0

#: Every event poolwatch emits, for the Loki panel and the docs.
EVENTS: Final = (
    EVENT_POOL_TIMEOUT,
    EVENT_LEAK,
    EVENT_RETURNED,
    EVENT_NEVER_RETURNED,
    EVENT_CONFLICT,
    EVENT_ORPHANED,
    EVENT_CREATE_FAILED,
)

INSTRUMENTATION_SCOPE: Final = "poolwatch"
