"""PromQL, one named function per question; dashboards and alert rules share them.

Series names come from the catalog through :mod:`poolwatch.monitoring.names`. Label matchers
are put into a selector in exactly one place, :meth:`Scope.select`; a :class:`Scope` says which
matchers (the config's, plus Grafana's ``$service``/``$pool`` variables on dashboards) and which
rate window apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from poolwatch import catalog
from poolwatch.monitoring.config import HistogramMode, MonitoringConfig, seconds
from poolwatch.monitoring.names import INSTANCE_LABEL, SERVICE_LABEL, prometheus_label
from poolwatch.monitoring.names import prometheus_name as _name
from poolwatch.monitoring.names import prometheus_series as _series

POOL: str = prometheus_label(catalog.POOL_NAME)
STATE: str = prometheus_label(catalog.STATE)
LE: str = prometheus_label(catalog.LE)
CONFLICT_KIND: str = prometheus_label(catalog.CONFLICT_KIND)
DJANGO_ALIAS: str = prometheus_label(catalog.DJANGO_ALIAS)
DJANGO_STATE: str = prometheus_label(catalog.DJANGO_STATE)
CLOSE_REASON: str = prometheus_label(catalog.CLOSE_REASON)
PG_STATE: str = prometheus_label(catalog.PG_STATE)
PG_APPLICATION: str = prometheus_label(catalog.PG_APPLICATION)
PG_DATABASE: str = prometheus_label(catalog.PG_DATABASE)

#: How results are grouped: one line/alert per service and pool, per PostgreSQL server, ...
BY_POOL = f"{SERVICE_LABEL}, {POOL}"
BY_SERVICE = SERVICE_LABEL
BY_SERVER = f"{SERVICE_LABEL}, {INSTANCE_LABEL}"
BY_ALIAS = f"{SERVICE_LABEL}, {DJANGO_ALIAS}"


class Source(Enum):
    """Which series a selector is for: pool series, other app-side series, or PostgreSQL's."""

    POOL = "pool"
    APP = "app"
    POSTGRES = "postgres"


@dataclass(frozen=True, slots=True)
class Scope:
    """The matchers and windows queries are built with (one for alerts, one for dashboards)."""

    app: tuple[str, ...]
    pool: tuple[str, ...]
    postgres: tuple[str, ...]
    window: str
    histograms: HistogramMode
    forecast_window: str
    forecast_horizon: str
    missing_window: str

    def select(self, series: str, *matchers: str, source: Source = Source.POOL) -> str:
        """``series{matchers}``: the only place selectors are interpolated into PromQL."""
        common = {
            Source.POOL: self.app + self.pool,
            Source.APP: self.app,
            Source.POSTGRES: self.postgres,
        }[source]
        inside = ", ".join(m for m in (*common, *matchers) if m)
        return f"{series}{{{inside}}}" if inside else series


def eq(label: str, value: str) -> str:
    """An equality matcher with the value quoted for PromQL."""
    return f'{label}="{_quote(value)}"'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alert_scope(config: MonitoringConfig) -> Scope:
    """Matchers for alert rules: the config's selectors only, every service and pool."""
    return _scope(config, app=(), pool=(), postgres=(), window=config.rate_window)


def dashboard_scope(config: MonitoringConfig) -> Scope:
    """Matchers for dashboards: the config's selectors plus the ``service``/``pool`` variables."""
    return _scope(
        config,
        app=(f'{SERVICE_LABEL}=~"$service"',),
        pool=(f'{POOL}=~"$pool"',),
        postgres=(f'{INSTANCE_LABEL}=~"$server"',),
        window="$__rate_interval",
    )


def _scope(
    config: MonitoringConfig,
    *,
    app: tuple[str, ...],
    pool: tuple[str, ...],
    postgres: tuple[str, ...],
    window: str,
) -> Scope:
    return Scope(
        app=(config.selector, *app),
        pool=pool,
        postgres=(config.postgres_selector, *postgres),
        window=window,
        histograms=config.histograms,
        forecast_window=config.forecast_window,
        forecast_horizon=config.forecast_horizon,
        missing_window=config.missing_window,
    )


# --- histograms: aggregated le counters (default) or standard OpenTelemetry histograms -------------


@dataclass(frozen=True, slots=True)
class Histogram:
    """The two exports of one latency histogram in the catalog."""

    standard: catalog.Metric
    bucket: catalog.Metric
    total: catalog.Metric


WAIT = Histogram(catalog.CONNECTION_WAIT_TIME, catalog.WAIT_TIME_BUCKET, catalog.WAIT_TIME_SUM)
USE = Histogram(catalog.CONNECTION_USE_TIME, catalog.USE_TIME_BUCKET, catalog.USE_TIME_SUM)
CREATE = Histogram(
    catalog.CONNECTION_CREATE_TIME, catalog.CREATE_TIME_BUCKET, catalog.CREATE_TIME_SUM
)


def _buckets(scope: Scope, histogram: Histogram, *matchers: str) -> str:
    if scope.histograms == "standard":
        return scope.select(_series(histogram.standard)[0], *matchers)
    return scope.select(_name(histogram.bucket), *matchers)


def _count(scope: Scope, histogram: Histogram) -> str:
    if scope.histograms == "standard":
        return scope.select(_series(histogram.standard)[1])
    # Aggregated export: the count is the +Inf bucket.
    return scope.select(_name(histogram.bucket), eq(LE, "+Inf"))


def _sum(scope: Scope, histogram: Histogram) -> str:
    if scope.histograms == "standard":
        return scope.select(_series(histogram.standard)[2])
    return scope.select(_name(histogram.total))


def quantile(scope: Scope, histogram: Histogram, q: float, by: str = BY_POOL) -> str:
    """The ``q`` quantile of a latency histogram over the rate window."""
    buckets = _buckets(scope, histogram)
    return f"histogram_quantile({q}, sum by ({by}, {LE}) (rate({buckets}[{scope.window}])))"


def mean(scope: Scope, histogram: Histogram) -> str:
    """Average latency over the rate window."""
    total = f"sum by ({BY_POOL}) (rate({_sum(scope, histogram)}[{scope.window}]))"
    count = f"sum by ({BY_POOL}) (rate({_count(scope, histogram)}[{scope.window}]))"
    return f"{total} / {count}"


def heatmap(scope: Scope, histogram: Histogram) -> str:
    """Observations per bucket and interval, for a heatmap panel."""
    return f"sum by ({LE}) (increase({_buckets(scope, histogram)}[{scope.window}]))"


def checkout_rate(scope: Scope) -> str:
    """Checkouts per second (successful waits included, from the wait histogram's count)."""
    return f"sum by ({BY_POOL}) (rate({_count(scope, WAIT)}[{scope.window}]))"


# --- pool state ---------------------------------------------------------------------------------


def _in_state(scope: Scope, state: str) -> str:
    return scope.select(_name(catalog.CONNECTION_COUNT), eq(STATE, state))


def used(scope: Scope, by: str = BY_POOL) -> str:
    """Connections checked out right now."""
    return f"sum by ({by}) ({_in_state(scope, catalog.STATE_USED)})"


def idle(scope: Scope, by: str = BY_POOL) -> str:
    """Connections open and idle in the pool right now."""
    return f"sum by ({by}) ({_in_state(scope, catalog.STATE_IDLE)})"


def maximum(scope: Scope, by: str = BY_POOL) -> str:
    """The most connections the pools may open (pool size plus overflow)."""
    return f"sum by ({by}) ({scope.select(_name(catalog.CONNECTION_MAX))})"


def saturation(scope: Scope) -> str:
    """Used / max of the fullest process of each pool (0..1); one full process is enough to wait."""
    count = _in_state(scope, catalog.STATE_USED)
    limit = scope.select(_name(catalog.CONNECTION_MAX))
    return f"max by ({BY_POOL}) ({count} / ignoring ({STATE}) {limit})"


def pending(scope: Scope) -> str:
    """Callers waiting for a connection right now, summed over the pool's processes."""
    series = scope.select(_name(catalog.CONNECTION_PENDING_REQUESTS))
    return f"sum by ({BY_POOL}) ({series})"


def timeouts_rate(scope: Scope) -> str:
    """Checkouts that gave up waiting, per second."""
    series = scope.select(_name(catalog.CONNECTION_TIMEOUTS))
    return f"sum by ({BY_POOL}) (rate({series}[{scope.window}]))"


def exhaustion_forecast(scope: Scope) -> str:
    """Saturation extrapolated ``forecast_horizon`` ahead from its trend over ``forecast_window``."""
    inner = f"({saturation(scope)})[{scope.forecast_window}:1m]"
    return f"predict_linear({inner}, {seconds(scope.forecast_horizon)})"


# --- leaks and conflicts ------------------------------------------------------------------------------


def leaked(scope: Scope) -> str:
    """Connections held longer than the leak threshold right now."""
    return f"sum by ({BY_POOL}) ({scope.select(_name(catalog.CONNECTION_LEAKED))})"


def leaks_rate(scope: Scope) -> str:
    """New leaks per second (each connection counted once)."""
    series = scope.select(_name(catalog.CONNECTION_LEAKS))
    return f"sum by ({BY_POOL}) (rate({series}[{scope.window}]))"


def never_returned(scope: Scope) -> str:
    """Connections garbage-collected while checked out, over the rate window."""
    series = scope.select(_name(catalog.CONNECTION_NEVER_RETURNED))
    return f"sum by ({BY_POOL}) (increase({series}[{scope.window}]))"


def _app(scope: Scope, metric: catalog.Metric, *matchers: str) -> str:
    """A selector for app-side series that are not per pool (Django, conflicts, poolwatch's own)."""
    return scope.select(_name(metric), *matchers, source=Source.APP)


def conflicts_by_kind(scope: Scope) -> str:
    """Session and transaction conflicts per second, by kind (not per pool: sessions span pools)."""
    series = _app(scope, catalog.SESSION_CONFLICTS)
    return f"sum by ({BY_SERVICE}, {CONFLICT_KIND}) (rate({series}[{scope.window}]))"


def internal_errors(scope: Scope) -> str:
    """poolwatch's own errors (caught, never raised into the app) over the rate window."""
    series = _app(scope, catalog.INTERNAL_ERRORS)
    return f"sum by ({BY_SERVICE}) (increase({series}[{scope.window}]))"


def telemetry_missing(scope: Scope) -> str:
    """1 when no pool metrics arrived for ``missing_window``, or a service that sent them stopped.

    ``absent_over_time`` catches "nothing at all" (it cannot name a service that never reported);
    the second half names each service that reported within the last hour and is silent now.
    """
    series = _app(scope, catalog.CONNECTION_COUNT)
    nothing = f"absent_over_time({series}[{scope.missing_window}])"
    recent = f"group by ({BY_SERVICE}) (max_over_time({series}[1h]))"
    now = f"group by ({BY_SERVICE}) (max_over_time({series}[{scope.missing_window}]))"
    return f"{nothing} or ({recent} unless {now})"


# --- Django ---------------------------------------------------------------------------------------------


def django_connections(scope: Scope) -> str:
    """Open Django connections by alias and state."""
    series = _app(scope, catalog.DJANGO_CONNECTIONS)
    return f"sum by ({BY_ALIAS}, {DJANGO_STATE}) ({series})"


def django_orphaned(scope: Scope) -> str:
    """Django connections orphaned right now (outlived their request or thread)."""
    series = _app(scope, catalog.DJANGO_CONNECTIONS, eq(DJANGO_STATE, catalog.DJANGO_ORPHANED))
    return f"sum by ({BY_ALIAS}) ({series})"


def django_orphans_found(scope: Scope) -> str:
    """Django connections found orphaned over the rate window."""
    series = _app(scope, catalog.DJANGO_ORPHANS)
    return f"sum by ({BY_ALIAS}) (increase({series}[{scope.window}]))"


def django_closed_by_reason(scope: Scope) -> str:
    """Django connections closed per second, by reason."""
    series = _app(scope, catalog.DJANGO_CLOSED)
    return f"sum by ({BY_ALIAS}, {CLOSE_REASON}) (rate({series}[{scope.window}]))"


def django_opened(scope: Scope) -> str:
    """Django connections opened per second."""
    series = _app(scope, catalog.DJANGO_OPENED)
    return f"sum by ({BY_ALIAS}) (rate({series}[{scope.window}]))"


def django_oldest(scope: Scope) -> str:
    """Age of the oldest open Django connection."""
    series = _app(scope, catalog.DJANGO_CONNECTION_AGE)
    return f"max by ({BY_ALIAS}) ({series})"


def django_longest_idle(scope: Scope) -> str:
    """Longest time an open Django connection has gone without a query."""
    series = _app(scope, catalog.DJANGO_CONNECTION_IDLE)
    return f"max by ({BY_ALIAS}) ({series})"


# --- PostgreSQL's side (collector/postgres.yaml) ----------------------------------------------


def _pg(scope: Scope, metric: catalog.Metric, *matchers: str) -> str:
    return scope.select(_name(metric), *matchers, source=Source.POSTGRES)


def pg_connections_by_state(scope: Scope) -> str:
    """Server connections by state (active, idle, idle in transaction, ...)."""
    return f"sum by ({BY_SERVER}, {PG_STATE}) ({_pg(scope, catalog.PG_CONNECTIONS)})"


def pg_connections_by_application(scope: Scope) -> str:
    """Server connections by application_name (set it per service to see who holds what)."""
    return f"sum by ({BY_SERVER}, {PG_APPLICATION}) ({_pg(scope, catalog.PG_CONNECTIONS)})"


def pg_usable(scope: Scope) -> str:
    """Connection slots ordinary users can take: max_connections less the reserved ones."""
    limit = f"max by ({BY_SERVER}) ({_pg(scope, catalog.PG_MAX_CONNECTIONS)})"
    reserved = f"max by ({BY_SERVER}) ({_pg(scope, catalog.PG_RESERVED_CONNECTIONS)})"
    return f"{limit} - {reserved}"


def _pg_in_use(scope: Scope) -> str:
    return f"sum by ({BY_SERVER}) ({_pg(scope, catalog.PG_CONNECTIONS)})"


def pg_usage(scope: Scope) -> str:
    """Server connections in use as a share of the usable slots (0..1)."""
    return f"{_pg_in_use(scope)} / ({pg_usable(scope)})"


def pg_headroom(scope: Scope) -> str:
    """Connection slots still free for ordinary users."""
    return f"{pg_usable(scope)} - {_pg_in_use(scope)}"


def pg_oldest_idle(scope: Scope) -> str:
    """Seconds since the longest-idle server connection last changed state, per application."""
    series = _pg(scope, catalog.PG_OLDEST_IDLE)
    return f"max by ({BY_SERVER}, {PG_APPLICATION}, {PG_DATABASE}) ({series})"


def pg_idle_in_transaction_age(scope: Scope) -> str:
    """Seconds the oldest idle-in-transaction connection has sat, per application."""
    series = _pg(scope, catalog.PG_OLDEST_IDLE_IN_TRANSACTION)
    return f"max by ({BY_SERVER}, {PG_APPLICATION}, {PG_DATABASE}) ({series})"
