"""PromQL, one named function per question; dashboards and alert rules share them.

Series names come from the catalog through :mod:`poolwatch.monitoring.names`. Label matchers
are put into a selector in exactly one place, :meth:`Scope.select`; a :class:`Scope` says which
matchers (the config's, plus Grafana's ``$service``/``$pool``/``$instance`` variables on
dashboards) and which windows apply. Heavy questions are :class:`Recorded` rules; alerts and
panels read their series through :func:`use`, which inlines the expression when recordings are off.
Labels: ``job`` is the service, ``instance`` the process (``service.instance.id``).
"""

from __future__ import annotations

from collections.abc import Callable
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
ERROR_TYPE: str = prometheus_label(catalog.ERROR_TYPE)
DJANGO_ALIAS: str = prometheus_label(catalog.DJANGO_ALIAS)
DJANGO_STATE: str = prometheus_label(catalog.DJANGO_STATE)
CLOSE_REASON: str = prometheus_label(catalog.CLOSE_REASON)
PG_STATE: str = prometheus_label(catalog.PG_STATE)
PG_APPLICATION: str = prometheus_label(catalog.PG_APPLICATION)
PG_DATABASE: str = prometheus_label(catalog.PG_DATABASE)
PGB_DATABASE: str = prometheus_label(catalog.PGB_DATABASE)
PGB_USER: str = prometheus_label(catalog.PGB_USER)
PGB_STATE: str = prometheus_label(catalog.PGB_STATE)
PGB_LIST: str = prometheus_label(catalog.PGB_LIST)

#: How results are grouped: one line/alert per service and pool, per process, per server, ...
BY_POOL = f"{SERVICE_LABEL}, {POOL}"
#: One process's pool: ``instance`` is the process's ``service.instance.id``.
BY_PROCESS = f"{SERVICE_LABEL}, {INSTANCE_LABEL}, {POOL}"
BY_SERVICE = SERVICE_LABEL
BY_SERVICE_PROCESS = f"{SERVICE_LABEL}, {INSTANCE_LABEL}"
BY_SERVER = f"{SERVICE_LABEL}, {INSTANCE_LABEL}"
BY_ALIAS = f"{SERVICE_LABEL}, {DJANGO_ALIAS}"
BY_PROCESS_ALIAS = f"{SERVICE_LABEL}, {INSTANCE_LABEL}, {DJANGO_ALIAS}"
#: One PgBouncer (``job``/``instance`` of its monitor) and one of its pools (database and user).
BY_PGBOUNCER = f"{SERVICE_LABEL}, {INSTANCE_LABEL}"
BY_PGBOUNCER_POOL = f"{SERVICE_LABEL}, {INSTANCE_LABEL}, {PGB_DATABASE}, {PGB_USER}"
#: Quantiles the per-pool wait panels draw from the recorded bucket rates.
QUANTILES = (0.5, 0.95, 0.99)


class Source(Enum):
    """Which series a selector is for: pool series, other app-side series, PostgreSQL's, or recorded."""

    POOL = "pool"
    APP = "app"
    POSTGRES = "postgres"
    PGBOUNCER = "pgbouncer"
    RECORDED = "recorded"


@dataclass(frozen=True, slots=True)
class Scope:
    """The matchers and windows queries are built with (one for alerts, one for dashboards)."""

    app: tuple[str, ...]
    pool: tuple[str, ...]
    postgres: tuple[str, ...]
    #: Matchers on recorded series (which keep only service, process and pool labels).
    recorded: tuple[str, ...]
    #: Matchers picking processes, on per-process recorded series.
    process: tuple[str, ...]
    window: str
    histograms: HistogramMode
    forecast_window: str
    forecast_horizon: str
    missing_window: str
    freshness: str
    processes_lookback: str
    #: Recorded samples a process needs in the forecast window before it is forecast.
    forecast_samples: int
    #: Read recording rules' series (True) or inline their expressions (False).
    use_recorded: bool = True
    #: Matchers for the PgBouncer monitor's series, and PgBouncer's max_client_conn if known.
    pgbouncer: tuple[str, ...] = ()
    pgbouncer_max_client_conn: int | None = None

    def select(self, series: str, *matchers: str, source: Source = Source.POOL) -> str:
        """``series{matchers}``: the only place selectors are interpolated into PromQL."""
        common = {
            Source.POOL: self.app + self.pool,
            Source.APP: self.app,
            Source.POSTGRES: self.postgres,
            Source.PGBOUNCER: self.pgbouncer,
            Source.RECORDED: self.recorded,
        }[source]
        inside = ", ".join(m for m in (*common, *matchers) if m)
        return f"{series}{{{inside}}}" if inside else series


def eq(label: str, value: str) -> str:
    """An equality matcher with the value quoted for PromQL."""
    return f'{label}="{_quote(value)}"'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alert_scope(config: MonitoringConfig) -> Scope:
    """Matchers for rules: the config's selectors only, every service, pool and process."""
    return _scope(
        config, app=(), pool=(), postgres=(), recorded=(), process=(),
        window=config.rate_window, use_recorded=True,
    )  # fmt: skip


#: Dashboard variables: which services, pools and processes are shown.
SERVICE_MATCHER = f'{SERVICE_LABEL}=~"$service"'
POOL_MATCHER = f'{POOL}=~"$pool"'
INSTANCE_MATCHER = f'{INSTANCE_LABEL}=~"$instance"'


def dashboard_scope(config: MonitoringConfig, *, use_recorded: bool = True) -> Scope:
    """Matchers for dashboards: the config's selectors plus the service/pool/instance variables."""
    return _scope(
        config,
        app=(SERVICE_MATCHER,),
        pool=(POOL_MATCHER, INSTANCE_MATCHER),
        postgres=(f'{INSTANCE_LABEL}=~"$server"',),
        recorded=(SERVICE_MATCHER, POOL_MATCHER),
        process=(INSTANCE_MATCHER,),
        window="$__rate_interval",
        use_recorded=use_recorded,
    )


def _scope(
    config: MonitoringConfig,
    *,
    app: tuple[str, ...],
    pool: tuple[str, ...],
    postgres: tuple[str, ...],
    recorded: tuple[str, ...],
    process: tuple[str, ...],
    window: str,
    use_recorded: bool,
) -> Scope:
    return Scope(
        app=(config.selector, *app),
        pool=pool,
        postgres=(config.postgres_selector, *postgres),
        recorded=recorded,
        process=process,
        window=window,
        histograms=config.histograms,
        forecast_window=config.forecast_window,
        forecast_horizon=config.forecast_horizon,
        missing_window=config.missing_window,
        freshness=config.freshness,
        processes_lookback=config.processes_lookback,
        forecast_samples=_forecast_samples(config),
        use_recorded=use_recorded and config.recording_rules,
        pgbouncer=(config.pgbouncer_selector,),
        pgbouncer_max_client_conn=config.pgbouncer_max_client_conn,
    )


def _forecast_samples(config: MonitoringConfig) -> int:
    """Three quarters of the evaluations in the forecast window: a trend fitted to a few minutes
    of a new process's noisy saturation would extrapolate wildly."""
    return max(2, 3 * seconds(config.forecast_window) // (4 * seconds(config.rule_interval)))


# --- histograms: the standard OpenTelemetry histograms, classic or native ------------------------


@dataclass(frozen=True, slots=True)
class Histogram:
    """One standard latency histogram of the catalog and the short name its recordings use."""

    metric: catalog.Metric
    short: str


WAIT = Histogram(catalog.CONNECTION_WAIT_TIME, "wait")
USE = Histogram(catalog.CONNECTION_USE_TIME, "use")
CREATE = Histogram(catalog.CONNECTION_CREATE_TIME, "create")


def _classic(histogram: Histogram, part: str) -> str:
    bucket, count, total = _series(histogram.metric)
    return {"bucket": bucket, "count": count, "sum": total}[part]


def _native(scope: Scope, histogram: Histogram, *matchers: str) -> str:
    return scope.select(_name(histogram.metric), *matchers)


def _buckets_rate(scope: Scope, histogram: Histogram, by: str) -> str:
    """Per-bucket rates (classic) or the rate of the native histogram, summed ``by``."""
    if scope.histograms == "native":
        return f"sum by ({by}) (rate({_native(scope, histogram)}[{scope.window}]))"
    buckets = scope.select(_classic(histogram, "bucket"))
    return f"sum by ({by}, {LE}) (rate({buckets}[{scope.window}]))"


def _count_rate(scope: Scope, histogram: Histogram, by: str) -> str:
    if scope.histograms == "native":
        return f"sum by ({by}) (histogram_count(rate({_native(scope, histogram)}[{scope.window}])))"
    series = scope.select(_classic(histogram, "count"))
    return f"sum by ({by}) (rate({series}[{scope.window}]))"


def _sum_rate(scope: Scope, histogram: Histogram, by: str) -> str:
    if scope.histograms == "native":
        return f"sum by ({by}) (histogram_sum(rate({_native(scope, histogram)}[{scope.window}])))"
    series = scope.select(_classic(histogram, "sum"))
    return f"sum by ({by}) (rate({series}[{scope.window}]))"


# --- recording rules: the heavy questions, answered once per evaluation ----------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recording rule: the series name it writes and the expression it evaluates."""

    name: str
    expression: Callable[[Scope], str]
    #: What one series of it says, for the README.
    description: str
    #: One series per process (``instance`` kept) rather than per pool.
    per_process: bool = False


def use(scope: Scope, rule: Recorded) -> str:
    """The rule's recorded series, or its expression inlined when recordings are off."""
    if scope.use_recorded:
        matchers = scope.process if rule.per_process else ()
        return scope.select(rule.name, *matchers, source=Source.RECORDED)
    return f"({rule.expression(scope)})"


def over_time(
    scope: Scope, function: str, rule: Recorded, window: str, *args: str, after: str = ""
) -> str:
    """``function(args, rule[window], after)``: a recording's range (a subquery when recordings
    are off)."""
    colon = "" if scope.use_recorded else ":"
    before = "".join(arg + ", " for arg in args)
    tail = f", {after}" if after else ""
    return f"{function}({before}{use(scope, rule)}[{window}{colon}]{tail})"


def _fresh(scope: Scope, metric: catalog.Metric, *matchers: str) -> str:
    """The last value of each series that had a sample within ``freshness``."""
    return f"last_over_time({scope.select(_name(metric), *matchers)}[{scope.freshness}])"


def _live(scope: Scope, expr: str) -> str:
    """``expr`` for processes that reported within ``freshness`` only."""
    alive = f"group by ({BY_PROCESS}) ({_fresh(scope, catalog.CONNECTION_MAX)})"
    return f"{expr} and on ({BY_PROCESS}) {alive}"


_USED = eq(STATE, catalog.STATE_USED)
_IDLE = eq(STATE, catalog.STATE_IDLE)


def _process_saturation(scope: Scope) -> str:
    used_now = _fresh(scope, catalog.CONNECTION_COUNT, _USED)
    limit = _fresh(scope, catalog.CONNECTION_MAX)
    return f"sum by ({BY_PROCESS}) ({used_now}) / (sum by ({BY_PROCESS}) ({limit}) > 0)"


PROCESS_SATURATION = Recorded(
    "job_instance_pool:poolwatch_saturation:ratio", _process_saturation,
    "used / max of one process's pool, now (fresh processes only)",
    per_process=True,
)  # fmt: skip
PROCESS_PENDING = Recorded(
    "job_instance_pool:poolwatch_pending_requests:last",
    lambda s: f"sum by ({BY_PROCESS}) ({_fresh(s, catalog.CONNECTION_PENDING_REQUESTS)})",
    "callers waiting for a connection in one process, now",
    per_process=True,
)
PROCESS_LEAKED = Recorded(
    "job_instance_pool:poolwatch_connections_leaked:last",
    lambda s: f"sum by ({BY_PROCESS}) ({_fresh(s, catalog.CONNECTION_LEAKED)})",
    "connections one process holds past the leak threshold, now",
    per_process=True,
)
PROCESS_WAIT_P99 = Recorded(
    "job_instance_pool:poolwatch_wait_seconds:p99",
    lambda s: _live(s, f"histogram_quantile(0.99, {_buckets_rate(s, WAIT, BY_PROCESS)})"),
    "99th percentile checkout wait of one process over the rate window",
    per_process=True,
)
PROCESS_CHECKOUTS = Recorded(
    "job_instance_pool:poolwatch_checkouts:rate",
    lambda s: _live(s, _count_rate(s, WAIT, BY_PROCESS)),
    "checkout attempts per second of one process (the wait histogram's count)",
    per_process=True,
)
PROCESS_TIMEOUTS = Recorded(
    "job_instance_pool:poolwatch_timeouts:rate",
    lambda s: _live(
        s,
        f"sum by ({BY_PROCESS}) (rate({s.select(_name(catalog.CONNECTION_TIMEOUTS))}[{s.window}]))",
    ),
    "checkouts per second of one process that gave up waiting",
    per_process=True,
)
POOL_PROCESSES = Recorded(
    "job_pool:poolwatch_processes:count",
    lambda s: f"count by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_MAX)})",
    "processes of the pool that reported within the freshness window",
)
POOL_USED = Recorded(
    "job_pool:poolwatch_connections_used:sum",
    lambda s: f"sum by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_COUNT, _USED)})",
    "connections checked out, summed over the pool's processes",
)
POOL_IDLE = Recorded(
    "job_pool:poolwatch_connections_idle:sum",
    lambda s: f"sum by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_COUNT, _IDLE)})",
    "idle connections, summed over the pool's processes",
)
POOL_MAX = Recorded(
    "job_pool:poolwatch_connections_max:sum",
    lambda s: f"sum by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_MAX)})",
    "the pool's connection limit, summed over its processes",
)
POOL_PENDING = Recorded(
    "job_pool:poolwatch_pending_requests:sum",
    lambda s: f"sum by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_PENDING_REQUESTS)})",
    "callers waiting, summed over the pool's processes",
)
POOL_LEAKED = Recorded(
    "job_pool:poolwatch_connections_leaked:sum",
    lambda s: f"sum by ({BY_POOL}) ({_fresh(s, catalog.CONNECTION_LEAKED)})",
    "connections held past the leak threshold, summed over the pool's processes",
)
POOL_CHECKOUTS = Recorded(
    "job_pool:poolwatch_checkouts:rate",
    lambda s: _count_rate(s, WAIT, BY_POOL),
    "checkout attempts per second of the pool: each process's rate, then summed",
)
POOL_TIMEOUTS = Recorded(
    "job_pool:poolwatch_timeouts:rate",
    lambda s: (
        f"sum by ({BY_POOL}) (rate({s.select(_name(catalog.CONNECTION_TIMEOUTS))}[{s.window}]))"
    ),
    "checkout timeouts per second of the pool: each process's rate, then summed",
)


def _bucket_rule(histogram: Histogram) -> Recorded:
    return Recorded(
        f"job_pool_le:poolwatch_{histogram.short}_seconds_bucket:rate",
        lambda s: _buckets_rate(s, histogram, BY_POOL),
        f"{histogram.short} time observations per second by bucket (classic) or as one native "
        "histogram, summed over the pool's processes",
    )


def _sum_rule(histogram: Histogram) -> Recorded:
    return Recorded(
        f"job_pool:poolwatch_{histogram.short}_seconds_sum:rate",
        lambda s: _sum_rate(s, histogram, BY_POOL),
        f"seconds of {histogram.short} time per second, summed over the pool's processes",
    )


POOL_BUCKETS = {h.short: _bucket_rule(h) for h in (WAIT, USE, CREATE)}
POOL_SUMS = {h.short: _sum_rule(h) for h in (WAIT, USE, CREATE)}
USE_COUNT = Recorded(
    "job_pool:poolwatch_use_seconds_count:rate",
    lambda s: _count_rate(s, USE, BY_POOL),
    "checkins per second (the use histogram's count), summed over the pool's processes",
)
CREATE_COUNT = Recorded(
    "job_pool:poolwatch_create_seconds_count:rate",
    lambda s: _count_rate(s, CREATE, BY_POOL),
    "connections opened per second (the create histogram's count), summed over the processes",
)


def _forecast(scope: Scope) -> str:
    ahead = over_time(
        scope, "predict_linear", PROCESS_SATURATION, scope.forecast_window,
        after=str(seconds(scope.forecast_horizon)),
    )  # fmt: skip
    history = over_time(scope, "count_over_time", PROCESS_SATURATION, scope.forecast_window)
    # the range outlives the process: only live processes (a saturation now) are forecast
    live = use(scope, PROCESS_SATURATION)
    return f"{ahead} and {history} >= {scope.forecast_samples} and {live}"


# These read PROCESS_SATURATION: they come after it in the group, whose rules run in order.
PROCESS_FORECAST = Recorded(
    "job_instance_pool:poolwatch_saturation:forecast", _forecast,
    "one process's saturation extrapolated forecast_horizon ahead (once it has most of "
    "forecast_window of history)",
    per_process=True,
)  # fmt: skip
POOL_SATURATION_MEAN = Recorded(
    "job_pool:poolwatch_saturation:avg",
    lambda s: f"avg by ({BY_POOL}) ({use(s, PROCESS_SATURATION)})",
    "mean saturation of the pool's live processes, now",
)
POOL_SATURATION_MAX = Recorded(
    "job_pool:poolwatch_saturation:max",
    lambda s: f"max by ({BY_POOL}) ({use(s, PROCESS_SATURATION)})",
    "saturation of the pool's fullest live process, now",
)

#: Per-process recordings (alerts, drill-down) and per-pool ones (dashboards, long-term storage).
PROCESS_RULES = (PROCESS_SATURATION, PROCESS_PENDING, PROCESS_LEAKED, PROCESS_WAIT_P99,
                 PROCESS_CHECKOUTS, PROCESS_TIMEOUTS)  # fmt: skip
#: Recordings of recordings, evaluated last.
DERIVED_RULES = (PROCESS_FORECAST, POOL_SATURATION_MEAN, POOL_SATURATION_MAX)
POOL_RULES = (POOL_PROCESSES, POOL_USED, POOL_IDLE, POOL_MAX, POOL_PENDING, POOL_LEAKED,
              POOL_CHECKOUTS, POOL_TIMEOUTS, *POOL_BUCKETS.values(), *POOL_SUMS.values(),
              USE_COUNT, CREATE_COUNT)  # fmt: skip
#: Each histogram's count rate per pool (the wait histogram's is the checkout rate).
POOL_COUNTS = {WAIT.short: POOL_CHECKOUTS, USE.short: USE_COUNT, CREATE.short: CREATE_COUNT}


def recording_rules(scope: Scope) -> list[tuple[str, str, str]]:
    """``(record, expr, description)`` of every recording rule, per-process ones first."""
    every = (*PROCESS_RULES, *POOL_RULES, *DERIVED_RULES)
    return [(r.name, r.expression(scope), r.description) for r in every]


# --- latency ------------------------------------------------------------------------------------


def quantile(scope: Scope, histogram: Histogram, q: float) -> str:
    """The ``q`` quantile of a latency histogram per pool, from the recorded bucket rates."""
    rates = use(scope, POOL_BUCKETS[histogram.short])
    if scope.histograms == "native":
        return f"histogram_quantile({q}, sum by ({BY_POOL}) ({rates}))"
    return f"histogram_quantile({q}, sum by ({BY_POOL}, {LE}) ({rates}))"


def mean(scope: Scope, histogram: Histogram) -> str:
    """Average latency over the rate window (seconds per observation of the histogram)."""
    return f"{use(scope, POOL_SUMS[histogram.short])} / {use(scope, POOL_COUNTS[histogram.short])}"


def heatmap(scope: Scope, histogram: Histogram) -> str:
    """Observations per bucket per second, for a heatmap panel (classic buckets or native)."""
    rates = use(scope, POOL_BUCKETS[histogram.short])
    if scope.histograms == "native":
        return f"sum({rates})"
    return f"sum by ({LE}) ({rates})"


def checkout_rate(scope: Scope) -> str:
    """Checkout attempts per second per pool (the wait histogram's count)."""
    return use(scope, POOL_CHECKOUTS)


# --- pool state ---------------------------------------------------------------------------------


def used(scope: Scope) -> str:
    """Connections checked out right now, summed over the pool's processes."""
    return use(scope, POOL_USED)


def idle(scope: Scope) -> str:
    """Connections open and idle in the pool right now, summed over the pool's processes."""
    return use(scope, POOL_IDLE)


def maximum(scope: Scope) -> str:
    """The most connections the pool's processes may open together."""
    return use(scope, POOL_MAX)


def process_saturation(scope: Scope) -> str:
    """Used / max of each live process's pool, averaged over the rate window."""
    now = use(scope, PROCESS_SATURATION)
    return f"{over_time(scope, 'avg_over_time', PROCESS_SATURATION, scope.window)} and {now}"


def fleet_saturation(scope: Scope) -> str:
    """The mean over a pool's live processes of their average saturation (0..1)."""
    return f"avg by ({BY_POOL}) ({process_saturation(scope)})"


def pending(scope: Scope) -> str:
    """Callers waiting for a connection now, summed over the pool's processes."""
    return use(scope, POOL_PENDING)


def process_pending(scope: Scope) -> str:
    """The fewest callers each live process had waiting at any evaluation of the rate window."""
    now = use(scope, PROCESS_PENDING)
    return f"{over_time(scope, 'min_over_time', PROCESS_PENDING, scope.window)} and {now}"


def timeouts_rate(scope: Scope) -> str:
    """Checkouts that gave up waiting, per second per pool."""
    return use(scope, POOL_TIMEOUTS)


def timeout_share(scope: Scope) -> str:
    """Timeouts per checkout attempt of each pool, across its processes (0..1)."""
    return f"{use(scope, POOL_TIMEOUTS)} / {use(scope, POOL_CHECKOUTS)}"


def process_wait_p99(scope: Scope) -> str:
    """The 99th percentile checkout wait of each live process over the rate window."""
    return use(scope, PROCESS_WAIT_P99)


def exhaustion_forecast(scope: Scope) -> str:
    """Each live process's saturation extrapolated ``forecast_horizon`` ahead from its trend."""
    return use(scope, PROCESS_FORECAST)


def forecast_max(scope: Scope) -> str:
    """The highest forecast among each pool's live processes."""
    return f"max by ({BY_POOL}) ({exhaustion_forecast(scope)})"


def saturation_mean(scope: Scope) -> str:
    """Mean saturation of each pool's live processes, now."""
    return use(scope, POOL_SATURATION_MEAN)


def saturation_max(scope: Scope) -> str:
    """Saturation of each pool's fullest live process, now."""
    return use(scope, POOL_SATURATION_MAX)


def process_saturation_now(scope: Scope) -> str:
    """Saturation of each live process, now."""
    return use(scope, PROCESS_SATURATION)


def process_leaked(scope: Scope) -> str:
    """Connections each live process holds past the leak threshold, now."""
    return use(scope, PROCESS_LEAKED)


def top(expr: str, k: int = 10) -> str:
    """The ``k`` series with the highest ``expr`` (the drill-down tables)."""
    return f"topk({k}, {expr})"


def process_timeouts(scope: Scope) -> str:
    """Checkout timeouts per second of each live process."""
    return use(scope, PROCESS_TIMEOUTS)


def process_checkouts(scope: Scope) -> str:
    """Checkout attempts per second of each live process."""
    return use(scope, PROCESS_CHECKOUTS)


def processes(scope: Scope) -> str:
    """Live processes per pool."""
    return use(scope, POOL_PROCESSES)


def telemetry_missing(scope: Scope) -> str:
    """Processes a pool has fewer than usual, or the usual count when a pool sent nothing at all.

    "Usual" is the median of the pool's live-process count over ``processes_lookback``: a
    rolling restart briefly raises the count (old and new processes both fresh) and never lowers
    it for long, so it stays quiet; a process that dies lowers it until the median catches up; a
    pool or service that stops reporting has no count at all. ``absent_over_time`` covers the
    case where no pool metrics ever arrived.
    """
    count = use(scope, POOL_PROCESSES)
    usual = over_time(scope, "quantile_over_time", POOL_PROCESSES, scope.processes_lookback, "0.5")
    nothing = f"absent_over_time({_app(scope, catalog.CONNECTION_MAX)}[{scope.missing_window}])"
    return f"({usual} - {count} > 0) or ({usual} unless {count}) or {nothing}"


# --- leaks and conflicts ------------------------------------------------------------------------------


def leaked(scope: Scope) -> str:
    """Connections held longer than the leak threshold right now, summed over the processes."""
    return use(scope, POOL_LEAKED)


def leaks_rate(scope: Scope) -> str:
    """New leaks per second (each connection counted once)."""
    series = scope.select(_name(catalog.CONNECTION_LEAKS))
    return f"sum by ({BY_POOL}) (rate({series}[{scope.window}]))"


def never_returned(scope: Scope, by: str = BY_POOL) -> str:
    """Connections garbage-collected while checked out, over the rate window."""
    series = scope.select(_name(catalog.CONNECTION_NEVER_RETURNED))
    return f"sum by ({by}) (increase({series}[{scope.window}]))"


def create_errors(scope: Scope, by: str = BY_POOL) -> str:
    """Connection opens that failed (refused, unreachable, bad credentials) over the rate
    window, by error type."""
    series = scope.select(_name(catalog.CONNECTION_CREATE_ERRORS))
    return f"sum by ({by}, {ERROR_TYPE}) (increase({series}[{scope.window}]))"


def _app(scope: Scope, metric: catalog.Metric, *matchers: str) -> str:
    """A selector for app-side series that are not per pool (Django, conflicts, poolwatch's own)."""
    return scope.select(_name(metric), *matchers, source=Source.APP)


def conflicts_by_kind(scope: Scope, by: str = BY_SERVICE) -> str:
    """Session and transaction conflicts per second, by kind (not per pool: sessions span pools)."""
    series = _app(scope, catalog.SESSION_CONFLICTS)
    return f"sum by ({by}, {CONFLICT_KIND}) (rate({series}[{scope.window}]))"


def internal_errors(scope: Scope, by: str = BY_SERVICE_PROCESS) -> str:
    """poolwatch's own errors (caught, never raised into the app) over the rate window."""
    series = _app(scope, catalog.INTERNAL_ERRORS)
    return f"sum by ({by}) (increase({series}[{scope.window}]))"


# --- Django ---------------------------------------------------------------------------------------------


def django_connections(scope: Scope) -> str:
    """Open Django connections by alias and state."""
    series = _app(scope, catalog.DJANGO_CONNECTIONS)
    return f"sum by ({BY_ALIAS}, {DJANGO_STATE}) ({series})"


def django_orphaned(scope: Scope, by: str = BY_ALIAS) -> str:
    """Django connections orphaned right now (outlived their request or thread), fresh only."""
    series = _app(scope, catalog.DJANGO_CONNECTIONS, eq(DJANGO_STATE, catalog.DJANGO_ORPHANED))
    return f"sum by ({by}) (last_over_time({series}[{scope.freshness}]))"


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


# --- PgBouncer's side (collector/pgbouncer.yaml) ----------------------------------------------


def _pgb(scope: Scope, metric: catalog.Metric, *matchers: str) -> str:
    return scope.select(_name(metric), *matchers, source=Source.PGBOUNCER)


def pgb_clients_waiting(scope: Scope) -> str:
    """Clients of each PgBouncer pool (database, user) queued for a server connection."""
    series = _pgb(scope, catalog.PGB_CLIENTS, eq(PGB_STATE, "waiting"))
    return f"sum by ({BY_PGBOUNCER_POOL}) ({series})"


def pgb_clients_by_state(scope: Scope) -> str:
    """Clients of each PgBouncer pool by state: active or waiting."""
    series = _pgb(scope, catalog.PGB_CLIENTS)
    return f"sum by ({BY_PGBOUNCER_POOL}, {PGB_STATE}) ({series})"


def pgb_servers_by_state(scope: Scope) -> str:
    """Server connections of each PgBouncer pool by state: active, idle, used, tested, login."""
    series = _pgb(scope, catalog.PGB_SERVERS)
    return f"sum by ({BY_PGBOUNCER_POOL}, {PGB_STATE}) ({series})"


def pgb_max_wait(scope: Scope) -> str:
    """Seconds the oldest waiting client of each PgBouncer pool has waited."""
    return f"max by ({BY_PGBOUNCER_POOL}) ({_pgb(scope, catalog.PGB_MAX_WAIT)})"


def pgb_pool_exhausted(scope: Scope) -> str:
    """Waiting clients of the PgBouncer pools that have no idle or used server connection left."""
    spare = _pgb(scope, catalog.PGB_SERVERS, f'{PGB_STATE}=~"idle|used"')
    none_spare = f"sum by ({BY_PGBOUNCER_POOL}) ({spare}) == 0"
    return f"{pgb_clients_waiting(scope)} and on ({BY_PGBOUNCER_POOL}) ({none_spare})"


def pgb_used_clients(scope: Scope) -> str:
    """Client connections of each PgBouncer: the number its max_client_conn limits."""
    series = _pgb(scope, catalog.PGB_LIST_ITEMS, eq(PGB_LIST, "used_clients"))
    return f"max by ({BY_PGBOUNCER}) ({series})"


def pgb_client_connections_share(scope: Scope) -> str:
    """Client connections of each PgBouncer as a share of ``pgbouncer_max_client_conn``."""
    if scope.pgbouncer_max_client_conn is None:
        raise ValueError("pgbouncer_max_client_conn is not set in the monitoring config")
    return f"{pgb_used_clients(scope)} / {scope.pgbouncer_max_client_conn}"
