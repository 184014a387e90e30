"""Runbooks: what each alert means, what to check and how to fix it, one markdown page each.

The header (expression, thresholds, ``for``) is generated from the alert rules so it cannot
drift; the advice below it is written here, per alert key.
"""

from __future__ import annotations

import re
from typing import Final

from poolwatch import catalog
from poolwatch.monitoring.alerts import Rule, definitions, rules
from poolwatch.monitoring.config import MonitoringConfig

SIZING: Final = """\
**Size pools against the server, across every process.** Each process has its own pool, so the
server sees `processes x hosts x (pool_size + max_overflow)` connections at peak. That sum, plus
the PostgreSQL monitor, migrations and admin sessions, must stay below `max_connections` less
the reserved slots (the *PostgreSQL server* dashboard shows the headroom). Raising a pool's size
only moves the queue to the server; when the sum does not fit, put PgBouncer (transaction
pooling) between the processes and PostgreSQL and keep each pool small."""

SCOPING: Final = """\
**Scope sessions to one unit of work.** A session (and its connection) should live for one
request or one task: `with Session() as session, session.begin(): ...`. Do not hold a session
open across slow I/O (HTTP calls, queue waits) or while fanning out to child tasks that each need
their own connection: with `pool_size` 5 and 10 children holding connections, the parent's next
query waits the full `pool_timeout`. Release the outer session before the fan-out, or give the
children a separate, bounded pool."""

CONN_MAX_AGE: Final = """\
**Django: set `CONN_MAX_AGE` deliberately.** `0` opens and closes a connection per request and
relies on `request_finished` to close it; if a response fails mid-send that signal never fires
and the connection stays open. A positive value (for example 60) reuses connections and closes
them when they are older; with `CONN_HEALTH_CHECKS = True` a broken one is replaced. Under ASGI
every request may run in a new thread: prefer Django 5.1+'s connection pool
(`OPTIONS: {"pool": True}`) or PgBouncer."""

IDLE_TIMEOUT: Final = """\
**Let PostgreSQL end abandoned sessions.** `idle_in_transaction_session_timeout` (for example
`'5min'`) terminates sessions left idle inside a transaction, and `idle_session_timeout`
(PostgreSQL 14+) idle ones; set them per role (`ALTER ROLE app SET ...`) rather than globally,
so migrations and admin sessions are not cut off."""

WHICH_POOL: Final = """\
**App pool or PgBouncer pool: which one is too small?** Two queues sit in front of PostgreSQL:
the application's own pool and PgBouncer's pool. Compare them over the same minutes. Callers
waiting in the application (`db_client_connection_pending_requests`, the
`db_client_connection_wait_time` histogram on the *Connection pools* dashboard) while PgBouncer
shows no clients waiting: the *app pool* is too small (or its connections are held too long).
PgBouncer clients waiting (`poolwatch_pgbouncer_clients{state="waiting"}`) while the app's
checkouts are quick: the *PgBouncer pool* (`default_pool_size`/`pool_size` of that database and
user) is too small for what the processes send, or its server connections are held by long
transactions. To see which application holds PgBouncer's server connections, read
`pg_stat_activity` on PostgreSQL: poolwatch names each pool's connections with
`application_name` = the pool's name, and PgBouncer forwards it to the server connection a
client is using (in transaction pooling, while the transaction runs) when `application_name` is
left out of `ignore_startup_parameters`:
`SELECT application_name, state, count(*) FROM pg_stat_activity WHERE datname = '<database>'
AND usename = '<user>' GROUP BY 1, 2;` (the *PostgreSQL server* dashboard's *Connections by
application_name* shows the same)."""

PGBOUNCER_SIZING: Final = """\
**Size PgBouncer's pools against both sides.** `default_pool_size` (or `pool_size` per database)
is the number of server connections per database and user pair; clients beyond it wait, up to
`query_wait_timeout`. Raise it only while the sum over all pairs stays below PostgreSQL's
`max_connections` less the reserved slots; `reserve_pool_size` with `reserve_pool_timeout`
absorbs short bursts. Long transactions are the usual reason a pool runs dry in transaction
pooling: find them with the *Oldest idle-in-transaction session* panel and keep transactions
short. `poolwatch doctor --pgbouncer-url` prints the sizes PgBouncer runs with."""

PROCESS: Final = """\
**This alert names one process.** Its `instance` label is the process's `service.instance.id`
(with the `opentelemetry-instrument` launcher or the SDK default, a UUID per process start; the
collector configs keep it as `instance`). On the *Connection pools* dashboard pick the service,
pool and that instance: *Selected processes* shows its saturation and wait, and the *Top
processes* tables rank it against the rest of the fleet. Logs and traces carry the same
`service.instance.id` resource attribute. Many processes of one pool firing at once is a fleet
condition: see *Fleet saturation*. An exited process stops counting once it has sent nothing for
the config's `freshness` window, so its alert resolves on its own."""

FLEET: Final = """\
**This is a fleet condition.** The value is a ratio over all live processes of the pool, so it
means the same for 3 processes as for 1,000: a share of checkouts or the mean saturation, not
one bad process. To see whether a few processes carry it, open the *Top processes* tables on the
*Connection pools* dashboard, or query
`topk(10, job_instance_pool:poolwatch_timeouts:rate{job="<job>"})` and
`topk(10, job_instance_pool:poolwatch_saturation:ratio{job="<job>"})`."""

#: Which alerts judge one process and which judge the fleet (the runbook says how to read it).
SCOPE: Final[dict[str, str]] = {
    "pool_saturation": PROCESS,
    "wait_time_p99": PROCESS,
    "pending_requests": PROCESS,
    "exhaustion_forecast": PROCESS,
    "connections_leaked": PROCESS,
    "never_returned": PROCESS,
    "connection_create_errors": PROCESS,
    "session_conflicts": PROCESS,
    "django_orphans": PROCESS,
    "internal_errors": PROCESS,
    "fleet_saturation": FLEET,
    "checkout_timeouts": FLEET,
}

_ADVICE: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "pool_saturation": (
        "Most of the pool's connections are checked out. When none is left, callers wait up to "
        "the pool timeout and then fail.",
        "On the *Connection pools* dashboard compare *Connections: used, idle, max* with "
        "*Checkouts per second* and *Connection use (hold) time*: more traffic, or connections "
        "held longer? Long hold times with few checkouts point at code holding a session across "
        "slow work; the *poolwatch events* panel and the slow-checkout traces name the code.",
        (SCOPING, SIZING),
    ),
    "fleet_saturation": (
        "The pool's processes are, on average, mostly full: the service as a whole has too few "
        "connections for its load (or holds them too long), not one stuck process.",
        "Compare *Checkouts per second* and *Connection use (hold) time* with a day ago: more "
        "traffic, or longer holds? Check the *PostgreSQL server* dashboard before raising pool "
        "sizes: every process's pool adds up on the server.",
        (SIZING, SCOPING),
    ),
    "checkout_timeouts": (
        "Callers waited the full pool timeout without getting a connection and raised "
        "(SQLAlchemy: `QueuePool limit of size N overflow M reached`).",
        f"Open a `{catalog.EVENT_POOL_TIMEOUT}` event: `{catalog.POOL_HOLDERS}` lists who held the "
        "pool's connections, most common borrow site first. Check whether session conflicts "
        "follow the timeouts (error handlers that reuse objects of another session).",
        (SCOPING, SIZING),
    ),
    "wait_time_p99": (
        "Getting a connection takes long even when it succeeds: the pool is at its limit at peaks.",
        "Look at the wait heatmap for a second band near the pool timeout, and at pending "
        "requests. If connection create time is high, new connections are slow to open (TLS, "
        "DNS, an overloaded server) and a larger idle minimum helps.",
        (SCOPING, SIZING),
    ),
    "pending_requests": (
        "Callers have been queueing for connections for the whole alert period.",
        "A permanent queue means demand exceeds the pool. Check use time (held longer than "
        "before?) and leaked connections (held and forgotten?).",
        (SCOPING, SIZING),
    ),
    "exhaustion_forecast": (
        "Saturation has been rising steadily and, at that rate, reaches 100% within the "
        "forecast horizon.",
        "A slow climb with flat traffic is the signature of a leak: check *Leaked connections* "
        "and the PostgreSQL dashboard's oldest idle connection. A climb with traffic is growth: "
        "plan capacity before it pages.",
        (SCOPING, SIZING),
    ),
    "connections_leaked": (
        "Connections have been checked out longer than the leak threshold and are still held.",
        f"Each leak emits a `{catalog.EVENT_LEAK}` event with the borrow site (file, line, "
        "function), the thread or task, and how long it has been held; when it is finally "
        f"returned a `{catalog.EVENT_RETURNED}` event says for how long.",
        (SCOPING, IDLE_TIMEOUT),
    ),
    "never_returned": (
        "Connections were garbage-collected while still checked out: code opened them and lost "
        "the reference without closing them.",
        f"The `{catalog.EVENT_NEVER_RETURNED}` events name the borrow site. Look for "
        "sessions or connections created outside `with` blocks, and for exceptions that skip a "
        "`close()`.",
        (SCOPING,),
    ),
    "connection_create_errors": (
        "The pool tried to open database connections and the attempts failed: the server "
        "refused them (`too many connections for role`, `sorry, too many clients already`, "
        "`remaining connection slots are reserved`), or it is down, unreachable, or rejects the "
        "credentials.",
        f"The `{catalog.EVENT_CREATE_FAILED}` event (one per burst) carries the server's message "
        "and what the pool held at that moment. Too many clients: count the server's connections "
        "by `application_name` (`poolwatch doctor`, or `pg_stat_activity`) against "
        "`max_connections` and the role's `CONNECTION LIMIT`; pools times processes may exceed "
        "them, or idle connections pile up (leaks, Django orphans).",
        (SIZING,),
    ),
    "session_conflicts": (
        "The application raises session or transaction conflicts (object already attached to "
        "another session, concurrent use of a session, deadlocks, serialization failures).",
        f"Open a `{catalog.EVENT_CONFLICT}` event: `{catalog.CONFLICT_CAUSE}` is "
        f"`{catalog.CAUSE_POOL_TIMEOUT}` "
        "when the same thread or task timed out waiting for a connection just before, which "
        "makes the conflict a symptom of pool exhaustion; fix that first.",
        (SCOPING,),
    ),
    "django_orphans": (
        "Django connections outlived the request or thread that opened them.",
        f"Check the `{catalog.EVENT_ORPHANED}` events for the view and route. A response "
        "that fails while being sent (a body shorter than its Content-Length) skips "
        "`request_finished`, so Django never closes the connection; on PostgreSQL it then sits "
        "`idle` in `pg_stat_activity` until `max_connections` is reached.",
        (CONN_MAX_AGE, IDLE_TIMEOUT),
    ),
    "postgres_connections": (
        "PostgreSQL is close to `max_connections` (less the reserved slots); new connections "
        "will fail with `too many clients already`.",
        "On the *PostgreSQL server* dashboard, *Connections by application_name* shows who holds "
        "the slots and *Connections by state* whether they are working (`active`) or parked "
        "(`idle`, `idle in transaction`). Many old `idle` sessions of one application are "
        "leaked or orphaned connections, not load.",
        (SIZING, IDLE_TIMEOUT, CONN_MAX_AGE),
    ),
    "idle_in_transaction": (
        "A session opened a transaction and stopped sending queries. It keeps its locks and "
        "holds back vacuum until it ends.",
        "Find it: `SELECT pid, application_name, state_change, query FROM pg_stat_activity "
        "WHERE state LIKE 'idle in transaction%' ORDER BY state_change;` The last query shows "
        "where the code stopped. End it with `SELECT pg_terminate_backend(pid);` if needed.",
        (IDLE_TIMEOUT, SCOPING),
    ),
    "telemetry_missing": (
        "Fewer processes of a pool report than usually do (the median live count over the "
        "lookback), a pool or service stopped reporting altogether, or no pool metrics arrived "
        "at all. Rolling restarts do not fire it: old and new processes overlap. An intended "
        "scale-down fires it until the median catches up (half the lookback).",
        "`job_pool:poolwatch_processes:count` over the last hours shows when the count dropped; "
        'compare the `instance` values of `db_client_connection_max{job="<job>"}` before and '
        "after to name the processes that went away, then look at their exit in the process "
        "manager's log. Check that the service runs and is instrumented (`poolwatch.instrument_*` or the "
        "`opentelemetry-instrument` launcher), that it exports OTLP to the agent, and the "
        "collector's own metrics (`otelcol_exporter_send_failed_metric_points`, "
        "`otelcol_receiver_refused_metric_points`).",
        (),
    ),
    "pgbouncer_clients_waiting": (
        "Clients of one PgBouncer pool (a database and user pair) have been queueing for a "
        "server connection: every server connection of the pool is busy and the pool is at its "
        "size. Their queries wait inside PgBouncer, where the application's own pool metrics do "
        "not see it (a checkout succeeds; the query is slow).",
        "On the *Connection pools* dashboard's *PgBouncer* row compare *PgBouncer clients* "
        "(waiting) with *PgBouncer server connections by state*: `active` at the pool size and "
        "no `idle` ones means the pool is full. *PgBouncer max wait* shows how long the oldest "
        "client has waited.",
        (WHICH_POOL, PGBOUNCER_SIZING),
    ),
    "pgbouncer_max_wait": (
        "The oldest client waiting in this PgBouncer pool has waited this long for a server "
        "connection (PgBouncer's `maxwait`, whole seconds). Every query of the waiting clients "
        "is that much slower; at `query_wait_timeout` PgBouncer disconnects them.",
        "Look for long transactions holding the pool's server connections (`pg_stat_activity` "
        "rows of the database and user with an old `xact_start`) and for a burst of clients "
        "(*PgBouncer clients* on the *PgBouncer* row).",
        (WHICH_POOL, PGBOUNCER_SIZING),
    ),
    "pgbouncer_pool_exhausted": (
        "Clients wait while the PgBouncer pool has no idle or used server connection left: "
        "every server connection is running a transaction for someone else, and PgBouncer "
        "cannot open another one (the pool is at `pool_size`, or PostgreSQL refuses).",
        "If `active` server connections are below the pool size, PgBouncer cannot connect: "
        "check PgBouncer's log and PostgreSQL's free connection slots. Otherwise the pool is "
        "too small for the load or its transactions are too long.",
        (WHICH_POOL, PGBOUNCER_SIZING),
    ),
    "pgbouncer_client_connections": (
        "PgBouncer holds most of the client connections its `max_client_conn` allows; beyond "
        "it, new client connections are refused with `no more connections allowed`.",
        "Client connections are the applications' pool connections, summed over every "
        "process: `processes x (pool_size + max_overflow)`. A jump after a deploy is more "
        "processes or bigger app pools; a slow climb is connections left open (leaks). "
        "The limit in the alert comes from the monitoring config's `pgbouncer_max_client_conn`: "
        "keep it equal to PgBouncer's setting.",
        (WHICH_POOL, SIZING),
    ),
    "internal_errors": (
        "poolwatch caught errors in its own hooks. The application is unaffected, but some "
        "metrics or events may be missing.",
        "The application log has one warning per hook and error type, from the `poolwatch` "
        "logger. Report it with the library versions in use.",
        (),
    ),
}


def runbooks(config: MonitoringConfig) -> dict[str, str]:
    """File name -> markdown, one page per alert definition."""
    by_key: dict[str, list[Rule]] = {}
    for rule in rules(config):
        by_key.setdefault(rule.definition.key, []).append(rule)
    pages = {}
    for definition in definitions(config):
        pages[f"{definition.name}.md"] = _page(definition.key, by_key[definition.key])
    return pages


def _plain(template: str) -> str:
    """A rule template as prose: ``{{ $labels.job }}`` -> `` `<job>` ``, conditionals dropped.

    The placeholder is a code span: a bare ``<job>`` is an unknown HTML tag to Markdown renderers,
    which drop it.
    """
    text = re.sub(r"\{\{ if .*?\{\{ end \}\}", "", template)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", r"`<\1>`", text)


def _page(key: str, key_rules: list[Rule]) -> str:
    meaning, check, fixes = _ADVICE[key]
    definition = key_rules[0].definition
    lines = [
        f"# {definition.name}",
        "",
        "<!-- generated by `poolwatch generate`; edit src/poolwatch/monitoring/runbooks.py -->",
        "",
        _plain(definition.summary),
        "",
        "| severity | fires when | for |",
        "| --- | --- | --- |",
        *(f"| {r.severity} | `{r.expr}` | {r.duration} |" for r in key_rules),
        "",
        "## What it means",
        "",
        meaning,
        "",
        *([SCOPE[key], ""] if key in SCOPE else []),
        "## What to check",
        "",
        check,
        "",
    ]
    if fixes:
        lines += ["## How to fix it", "", *(part for fix in fixes for part in (fix, ""))]
    return "\n".join(lines)
