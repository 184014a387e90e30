"""The reference section: every metric, event and setting, generated from the code.

Written by ``poolwatch generate`` between two markers (in the README and the docs), so the
tables cannot drift from the catalog and the configuration object.
"""

from __future__ import annotations

from typing import Final

from poolwatch import _instrumentors, catalog
from poolwatch.config import documented

START: Final = "<!-- poolwatch:reference:start -->"
END: Final = "<!-- poolwatch:reference:end -->"
#: Markers of the metrics beyond the pools' (Django's; PostgreSQL's and PgBouncer's views), in the
#: docs' reference.
MORE_START: Final = "<!-- poolwatch:reference-more:start -->"
MORE_END: Final = "<!-- poolwatch:reference-more:end -->"
#: Markers of the support matrix (the README's front page).
SUPPORT_START: Final = "<!-- poolwatch:support:start -->"
SUPPORT_END: Final = "<!-- poolwatch:support:end -->"

#: (library, what of it is recorded, the call, the requirement each instrumentor checks, its guide)
SUPPORTED: Final = (
    (
        "SQLAlchemy",
        "every pool of sync and async engines",
        "instrument_sqlalchemy()",
        _instrumentors.SQLALCHEMY_REQUIREMENT,
        "guide/sqlalchemy.md",
    ),
    (
        "psycopg_pool",
        "`ConnectionPool`, `AsyncConnectionPool`",
        "instrument_psycopg_pool()",
        _instrumentors.PSYCOPG_POOL_REQUIREMENT,
        "guide/psycopg-pool.md",
    ),
    (
        "Django",
        "every database alias; its own pool (5.1+)",
        "instrument_django()",
        _instrumentors.DJANGO_REQUIREMENT,
        "guide/django.md",
    ),
)

#: What each event is for, and the attributes that tell its story.
EVENT_DOCS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    catalog.EVENT_POOL_TIMEOUT: (
        "A checkout waited the whole pool timeout and failed. Carries the pool's state when "
        "the wait began and who holds its connections, commonest borrow site first, then the "
        "connections being opened or pre-pinged for callers that have none yet; the configured "
        "timeout, and the time the caller spent opening or pinging itself (the body says where "
        "a wait longer than the timeout went).",
        (
            catalog.POOL_USED,
            catalog.POOL_IDLE,
            catalog.POOL_MAX,
            catalog.POOL_PENDING,
            catalog.POOL_OPENING,
            catalog.POOL_PINGING,
            catalog.WAIT_DURATION,
            catalog.POOL_TIMEOUT,
            catalog.CHECKOUT_OPENING_TIME,
            catalog.CHECKOUT_PINGING_TIME,
            catalog.POOL_HOLDERS,
        ),
    ),
    catalog.EVENT_LEAK: (
        "A connection has been checked out longer than the leak threshold (once per checkout). "
        "Tied to the borrower's trace.",
        (
            catalog.CONNECTION_AGE,
            catalog.LEAK_THRESHOLD,
            catalog.CODE_FUNCTION,
            catalog.CODE_FILE,
            catalog.CODE_LINE,
            catalog.CODE_STACKTRACE,
            catalog.SITE_SOURCE,
            catalog.SITE_SAMPLED_AFTER,
            catalog.THREAD_NAME,
            catalog.TASK_NAME,
        ),
    ),
    catalog.EVENT_CREATE_FAILED: (
        "Opening a connection failed, first of a burst (one event until the pool has gone "
        f"{catalog.CREATE_BURST_GAP:g}s without a failure): the server's message and what the pool held.",
        (
            catalog.ERROR_TYPE,
            catalog.DB_STATUS_CODE,
            catalog.ERROR_MESSAGE,
            catalog.POOL_USED,
            catalog.POOL_IDLE,
            catalog.POOL_MAX,
            catalog.POOL_PENDING,
        ),
    ),
    catalog.EVENT_RETURNED: (
        "A connection reported as leaked came back, with its total hold time.",
        (catalog.CONNECTION_HELD, catalog.CODE_FUNCTION, catalog.THREAD_NAME),
    ),
    catalog.EVENT_NEVER_RETURNED: (
        "A connection was garbage-collected while checked out (SQLAlchemy rolls it back "
        "silently for sync drivers and drops it for async ones).",
        (
            catalog.CONNECTION_HELD,
            catalog.CODE_FUNCTION,
            catalog.CODE_STACKTRACE,
            catalog.SITE_SOURCE,
            catalog.THREAD_NAME,
            catalog.TASK_NAME,
        ),
    ),
    catalog.EVENT_CONFLICT: (
        "A session or transaction conflict, by kind; names a pool timeout seen shortly before "
        "in the same thread or task as its probable cause.",
        (
            catalog.CONFLICT_KIND,
            catalog.OBJECT_CLASS,
            catalog.SESSION_OWNER,
            catalog.SESSION_OWNER_SITE,
            catalog.SESSION_CURRENT,
            catalog.SESSION_CURRENT_SITE,
            catalog.CONFLICT_CAUSE,
            catalog.CONFLICT_CAUSE_POOL,
            catalog.DB_STATUS_CODE,
        ),
    ),
    catalog.EVENT_ORPHANED: (
        "A Django connection outlived its request or thread, or sat idle in a transaction "
        "past the threshold.",
        (
            catalog.DJANGO_ALIAS,
            catalog.HTTP_METHOD,
            catalog.HTTP_ROUTE,
            catalog.DJANGO_VIEW,
            catalog.CODE_FUNCTION,
        ),
    ),
}

_POOL_METRICS: Final = (
    *catalog.STANDARD_METRICS,
    *catalog.AGGREGATED_HISTOGRAMS,
    catalog.CONNECTION_LEAKED,
    catalog.CONNECTION_LEAKS,
    catalog.CONNECTION_NEVER_RETURNED,
    catalog.CONNECTION_CREATE_ERRORS,
)
_OTHER_METRICS: Final = (catalog.SESSION_CONFLICTS, catalog.INTERNAL_ERRORS)
_DJANGO_METRICS: Final = (
    catalog.DJANGO_CONNECTIONS,
    catalog.DJANGO_CONNECTION_AGE,
    catalog.DJANGO_CONNECTION_IDLE,
    catalog.DJANGO_OPENED,
    catalog.DJANGO_CLOSED,
    catalog.DJANGO_ORPHANS,
)
_POSTGRESQL_METRICS: Final = (
    catalog.PG_CONNECTIONS,
    catalog.PG_OLDEST_IDLE,
    catalog.PG_OLDEST_IDLE_IN_TRANSACTION,
    catalog.PG_MAX_CONNECTIONS,
    catalog.PG_RESERVED_CONNECTIONS,
)
_PGBOUNCER_METRICS: Final = (
    catalog.PGB_CLIENTS,
    catalog.PGB_SERVERS,
    catalog.PGB_MAX_WAIT,
    catalog.PGB_LIST_ITEMS,
)


def section(level: int = 2) -> str:
    """The generated reference section, markers included; its heading at ``level``."""
    sub = "#" * (level + 1)
    return "\n".join(
        [
            START,
            f"{'#' * level} Reference",
            "",
            "Generated by `poolwatch generate` from `src/poolwatch/catalog.py` and "
            "`src/poolwatch/config.py`.",
            "",
            f"{sub} Metrics",
            *_metric_lines(),
            f"{sub} Events",
            *_event_lines(),
            f"{sub} Configuration",
            *_setting_lines(),
            END,
        ]
    )


def more(level: int = 2) -> str:
    """Django's metrics, PostgreSQL's and PgBouncer's views (from the collector), markers included."""
    heading = "#" * level
    return "\n".join(
        [
            MORE_START,
            f"{heading} Django metrics",
            "",
            f"Each carries `{catalog.DJANGO_ALIAS}`; `{catalog.DJANGO_CONNECTIONS.name}` also "
            f"`{catalog.DJANGO_STATE}`, `{catalog.DJANGO_CLOSED.name}` `{catalog.CLOSE_REASON}`. "
            "Each alias is also reported as pool `<service>:<alias>` (`django:<alias>` without a "
            "service name) in the pool metrics above.",
            "",
            *_metric_table(_DJANGO_METRICS),
            f"{heading} PostgreSQL's view",
            "",
            "Read from the server by the collector's PostgreSQL monitor (`collector/postgres.yaml`), "
            "not by the application.",
            "",
            *_metric_table(_POSTGRESQL_METRICS),
            f"{heading} PgBouncer's view",
            "",
            "Read from PgBouncer's admin console by the collector's PgBouncer monitor "
            f"(`collector/pgbouncer.yaml`), by `{catalog.PGB_DATABASE}` and `{catalog.PGB_USER}`.",
            "",
            *_metric_table(_PGBOUNCER_METRICS),
            MORE_END,
        ]
    )


def _metric_table(metrics: tuple[catalog.Metric, ...]) -> list[str]:
    lines = ["| metric | type | unit | meaning |", "| --- | --- | --- | --- |"]
    for metric in metrics:
        lines.append(
            f"| `{metric.name}` | {metric.kind.value} | `{metric.unit}` | {metric.description} |"
        )
    return [*lines, ""]


def _metric_lines() -> list[str]:
    lines = [
        "",
        f"Every pool metric carries `{catalog.POOL_NAME}` and the pool's identity, "
        f"`{catalog.DB_SYSTEM}`, `{catalog.DB_NAMESPACE}`, `{catalog.SERVER_ADDRESS}` and "
        f"`{catalog.SERVER_PORT}` (when known; constant per pool, so no extra series); "
        f"`{catalog.CONNECTION_COUNT.name}` "
        f"also `{catalog.STATE}` (`{catalog.STATE_USED}`/`{catalog.STATE_IDLE}`), the "
        f"`.bucket` series `{catalog.LE}`. Standard names are OpenTelemetry's database "
        "connection-pool conventions. The three standard histograms are OTLP histograms in the "
        "default `otlp` and in `standard` histogram mode; their `le`-gauge twins "
        "(`poolwatch.connection.*_time.bucket`/`.sum`) are exported only with "
        "`histograms=aggregated`.",
        "",
    ]
    return [*lines, *_metric_table((*_POOL_METRICS, *_OTHER_METRICS))]


def _event_lines() -> list[str]:
    lines = [
        "",
        "Log records with an `event_name`, emitted through the OpenTelemetry Logs API, and span "
        "events on the active span when one is recording.",
        "",
        "| event | when | main attributes |",
        "| --- | --- | --- |",
    ]
    for name, (when, attributes) in EVENT_DOCS.items():
        listed = ", ".join(f"`{attribute}`" for attribute in attributes)
        lines.append(f"| `{name}` | {when} | {listed} |")
    return [*lines, ""]


def _setting_lines() -> list[str]:
    lines = [
        "",
        "Every `instrument_*()` (and every instrumentor's `instrument()`) takes the same "
        "settings: `config=` (a `poolwatch.Config`) and one keyword argument per setting below "
        "(`leak_threshold=10`), typed by `poolwatch.config.ConfigKeywords`. Keyword arguments win over "
        "the fields of `config`; without `config`, they win over environment variables, which "
        "win over defaults. Keyword arguments are checked as strictly as variables (strings such "
        'as `spans="false"` are read as a variable would be): a value that cannot be used logs '
        "one warning naming the setting and the value used instead, never an exception. A "
        "keyword argument of `instrument_*()` that is no setting is a `TypeError`.",
        "",
        "| environment variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for variable, default, doc in documented():
        lines.append(f"| `{variable}` | `{default}` | {doc} |")
    return [*lines, ""]


def support(docs: str = "docs/") -> str:
    """The support matrix, markers included: each library's supported releases, as its
    instrumentor checks them (and as the ``instruments-any`` extra declares them)."""
    rows = [
        f"| {library} | `{requirement.replace(' ', '')}` | {what} | `poolwatch.{call}` | "
        f"[guide]({docs}{guide}) |"
        for library, what, call, requirement, guide in SUPPORTED
    ]
    return "\n".join(
        [
            SUPPORT_START,
            "| library | releases | recorded | one call | |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Generated by `poolwatch generate` from `src/poolwatch/_instrumentors.py`; Python 3.11+, "
            "OpenTelemetry API/SDK 1.35+.",
            SUPPORT_END,
        ]
    )
