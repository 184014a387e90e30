"""Dashboard panels, one small function per panel, built with grafana-foundation-sdk.

Every query comes from :mod:`poolwatch.monitoring.promql`; panels only choose titles, units,
legends and thresholds. Datasources are the dashboards' variables (``${prometheus}`` ...).
"""

from __future__ import annotations

from typing import Any, Final

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import heatmap, logs, loki, prometheus, stat, table, tempo
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import prometheus as prom_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from poolwatch import catalog
from poolwatch.monitoring import promql
from poolwatch.monitoring.config import MonitoringConfig
from poolwatch.monitoring.names import INSTANCE_LABEL, SERVICE_LABEL
from poolwatch.monitoring.promql import Scope

PROMETHEUS: Final = DataSourceRef(type_val="prometheus", uid="${prometheus}")
LOKI: Final = DataSourceRef(type_val="loki", uid="${loki}")
TEMPO: Final = DataSourceRef(type_val="tempo", uid="${tempo}")


def _legend(*labels: str) -> str:
    """A legend showing each label's value: ``{{job}} {{pool}}``."""
    return " ".join("{{" + label + "}}" for label in labels)


POOL_LEGEND: Final = _legend(SERVICE_LABEL, promql.POOL)
PROCESS_LEGEND: Final = _legend(SERVICE_LABEL, INSTANCE_LABEL, promql.POOL)
ALIAS_LEGEND: Final = _legend(SERVICE_LABEL, promql.DJANGO_ALIAS)
SERVER_LEGEND: Final = _legend(INSTANCE_LABEL)
SESSION_LEGEND: Final = _legend(INSTANCE_LABEL, promql.PG_APPLICATION, promql.PG_DATABASE)


def _query(
    expr: str, legend: str, ref: str = "A", *, exemplar: bool = False
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()
    return query.exemplar(True) if exemplar else query


def _timeseries(title: str, description: str, unit: str) -> ts.Panel:
    return (
        ts.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .fill_opacity(10)
        .height(8)
        .span(12)
    )


def _thresholds(warning: float | None, critical: float | None) -> gd.ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if warning is not None:
        steps.append(Threshold(value=warning, color="orange"))
    if critical is not None:
        steps.append(Threshold(value=critical, color="red"))
    return gd.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _threshold_lines() -> common_builders.GraphThresholdsStyleConfig:
    return common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)


def _share_now(title: str, description: str, target: Any, bounds: Any) -> stat.Panel:
    """A stat panel of a 0..1 share, coloured at the warning and critical thresholds."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target)
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(_thresholds(bounds.warning, bounds.critical))
        .height(8)
        .span(6)
    )


def saturation_now(scope: Scope, config: MonitoringConfig) -> stat.Panel:
    """Mean saturation of each pool's live processes, now."""
    return _share_now(
        "Saturation now (fleet mean)",
        "Used / max connections, averaged over the pool's live processes.",
        _query(promql.saturation_mean(scope), POOL_LEGEND).instant(),
        config.threshold("fleet_saturation"),
    )


def saturation_over_time(scope: Scope, config: MonitoringConfig) -> ts.Panel:
    """Fleet mean and fullest process of each pool over time, with the alert thresholds."""
    bounds = config.threshold("pool_saturation")
    return (
        _timeseries(
            "Saturation (used / max)",
            "Mean over the pool's live processes and the fullest one; at 100% a process's "
            "callers queue and then time out.",
            "percentunit",
        )
        .with_target(_query(promql.saturation_mean(scope), "mean " + POOL_LEGEND))
        .with_target(_query(promql.saturation_max(scope), "fullest " + POOL_LEGEND, "B"))
        .max(1)
        .thresholds(_thresholds(bounds.warning, bounds.critical))
        .thresholds_style(_threshold_lines())
        .span(9)
    )


def connections(scope: Scope) -> ts.Panel:
    """Used, idle and max connections per pool, and its live processes."""
    return (
        _timeseries("Connections: used, idle, max", "Summed over the pool's processes.", "short")
        .with_target(_query(promql.used(scope), "used " + POOL_LEGEND, "A"))
        .with_target(_query(promql.idle(scope), "idle " + POOL_LEGEND, "B"))
        .with_target(_query(promql.maximum(scope), "max " + POOL_LEGEND, "C"))
        .with_target(_query(promql.processes(scope), "processes " + POOL_LEGEND, "D"))
        .span(9)
    )


def wait_quantiles(scope: Scope) -> ts.Panel:
    """Checkout wait p50/p95/p99 per pool, from the recorded bucket rates."""
    panel = _timeseries(
        "Checkout wait p50 / p95 / p99",
        "Time callers waited for a connection, over all the pool's processes.",
        "s",
    ).span(8)
    for ref, q in zip("ABC", promql.QUANTILES, strict=True):
        legend = f"p{round(q * 100)} {POOL_LEGEND}"
        panel = panel.with_target(_query(promql.quantile(scope, promql.WAIT, q), legend, ref))
    return panel


def _top_table(title: str, description: str, expr: str, unit: str) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(_query(promql.top(expr), PROCESS_LEGEND).instant().format(
            prom_models.PromQueryFormat.TABLE))
        .unit(unit)
        .height(8)
        .span(8)
    )  # fmt: skip


def top_saturation(scope: Scope) -> table.Panel:
    """The ten fullest processes."""
    return _top_table(
        "Top processes by saturation",
        "Used / max averaged over the rate window; the instance is the process's "
        "service.instance.id.",
        promql.process_saturation(scope),
        "percentunit",
    )


def top_wait(scope: Scope) -> table.Panel:
    """The ten processes with the slowest checkouts."""
    return _top_table(
        "Top processes by checkout wait p99",
        "One slow process hides in the pooled percentiles; here it is on top.",
        promql.process_wait_p99(scope),
        "s",
    )


def top_timeouts(scope: Scope) -> table.Panel:
    """The ten processes with the most checkout timeouts."""
    return _top_table(
        "Top processes by timeouts",
        "Checkout timeouts per second, per process.",
        promql.process_timeouts(scope),
        "reqps",
    )


def process_detail(scope: Scope) -> ts.Panel:
    """Saturation and wait p99 of the processes picked in the instance variable."""
    return (
        _timeseries(
            "Selected processes: saturation and wait p99",
            "Pick processes in the instance variable (a process is one service.instance.id).",
            "percentunit",
        )
        .with_target(_query(promql.process_saturation_now(scope), "saturation " + PROCESS_LEGEND))
        .with_target(_query(promql.process_wait_p99(scope), "wait p99 " + PROCESS_LEGEND, "B"))
        .span(24)
    )


def wait_heatmap(scope: Scope) -> heatmap.Panel:
    """Distribution of checkout waits over time."""
    query = _query(promql.heatmap(scope, promql.WAIT), _legend(promql.LE)).format(
        prom_models.PromQueryFormat.HEATMAP
    )
    return (
        heatmap.Panel()
        .title("Checkout wait distribution")
        .description("Checkouts per second per wait-time bucket (all selected pools).")
        .datasource(PROMETHEUS)
        .with_target(query)
        .calculate(False)
        .unit("s")
        .height(8)
        .span(8)
    )


def pending_requests(scope: Scope) -> ts.Panel:
    """Callers waiting for a connection."""
    return (
        _timeseries(
            "Pending requests", "Callers waiting for a connection now, over all processes.", "short"
        )
        .with_target(_query(promql.pending(scope), POOL_LEGEND))
        .span(8)
    )


def timeouts(scope: Scope) -> ts.Panel:
    """Checkouts that gave up waiting, per second."""
    return (
        _timeseries(
            "Checkout timeouts", "Checkouts that waited the full pool timeout and failed.", "reqps"
        )
        .with_target(_query(promql.timeouts_rate(scope), POOL_LEGEND))
        .span(8)
    )


def checkouts(scope: Scope) -> ts.Panel:
    """Checkouts per second."""
    return (
        _timeseries("Checkouts per second", "Successful and failed checkouts.", "reqps")
        .with_target(_query(promql.checkout_rate(scope), POOL_LEGEND))
        .span(8)
    )


def exhaustion_forecast(scope: Scope, config: MonitoringConfig) -> ts.Panel:
    """Saturation extrapolated from its recent trend."""
    return (
        _timeseries(
            f"Saturation forecast ({config.forecast_horizon} ahead)",
            f"The process whose linear trend of the last {config.forecast_window} climbs "
            "highest; above 100% its pool runs dry.",
            "percentunit",
        )
        .with_target(_query(promql.forecast_max(scope), POOL_LEGEND))
        .thresholds(_thresholds(None, 1.0))
        .thresholds_style(_threshold_lines())
        .span(8)
    )


def create_time(scope: Scope) -> ts.Panel:
    """How long opening a new connection takes."""
    return (
        _timeseries("Connection create time", "Opening a new server connection.", "s")
        .with_target(_query(promql.quantile(scope, promql.CREATE, 0.5), "p50 " + POOL_LEGEND, "A"))
        .with_target(_query(promql.quantile(scope, promql.CREATE, 0.99), "p99 " + POOL_LEGEND, "B"))
    )


def use_time(scope: Scope) -> ts.Panel:
    """How long connections are held between checkout and checkin."""
    return (
        _timeseries("Connection use (hold) time", "From checkout to checkin.", "s")
        .with_target(_query(promql.quantile(scope, promql.USE, 0.5), "p50 " + POOL_LEGEND, "A"))
        .with_target(_query(promql.quantile(scope, promql.USE, 0.99), "p99 " + POOL_LEGEND, "B"))
        .with_target(_query(promql.mean(scope, promql.USE), "mean " + POOL_LEGEND, "C"))
    )


def leaked_connections(scope: Scope) -> ts.Panel:
    """Connections held past the leak threshold."""
    return (
        _timeseries(
            "Leaked connections", "Held longer than the leak threshold, right now.", "short"
        )
        .with_target(_query(promql.leaked(scope), POOL_LEGEND))
        .span(8)
    )


def never_returned(scope: Scope) -> ts.Panel:
    """Connections garbage-collected while checked out."""
    return (
        _timeseries(
            "Never-returned connections",
            "Garbage-collected while still checked out, per rate window.",
            "short",
        )
        .with_target(_query(promql.never_returned(scope), POOL_LEGEND))
        .span(8)
    )


def create_errors(scope: Scope) -> ts.Panel:
    """Failed connection opens by pool and error type."""
    return (
        _timeseries(
            "Failed connection opens",
            "Connection opens the server refused or that could not reach it, per rate window.",
            "short",
        )
        .with_target(
            _query(
                promql.create_errors(scope),
                POOL_LEGEND + " {{" + promql.ERROR_TYPE + "}}",
            )
        )
        .span(8)
    )


def conflicts(scope: Scope) -> ts.Panel:
    """Session conflicts by kind."""
    legend = _legend(SERVICE_LABEL, promql.CONFLICT_KIND)
    return (
        _timeseries(
            "Session conflicts by kind",
            "Already-attached objects, concurrent use, deadlocks, serialization failures.",
            "reqps",
        )
        .with_target(_query(promql.conflicts_by_kind(scope), legend))
        .span(8)
    )


def events(event_names: tuple[str, ...], title: str) -> logs.Panel:
    """poolwatch's events from Loki (the gateway copies the event name into ``event_name``)."""
    pattern = "|".join(name.replace(".", "\\.") for name in event_names)
    expr = '{service_name=~"$service"} | event_name=~`' + pattern + "`"
    return (
        logs.Panel()
        .title(title)
        .description("Log records with an event name, with code locations and holders.")
        .datasource(LOKI)
        .with_target(loki.Dataquery().expr(expr).ref_id("A"))
        .show_time(True)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .wrap_log_message(True)
        .height(10)
        .span(24)
    )


def slow_checkouts(config: MonitoringConfig) -> table.Panel:
    """Checkout spans slower than ``slow_checkout``, from Tempo."""
    traceql = (
        '{ resource.service.name =~ "$service" && name = "'
        + catalog.SPAN_CHECKOUT
        + f'" && duration > {config.slow_checkout} }}'
    )
    return (
        table.Panel()
        .title(f"Slow checkouts (> {config.slow_checkout})")
        .description("Checkout spans from Tempo; open one to see who held the pool.")
        .datasource(TEMPO)
        .with_target(tempo.TempoQuery().query(traceql).query_type("traceql").limit(20).ref_id("A"))
        .height(8)
        .span(24)
    )


def django_by_state(scope: Scope) -> ts.Panel:
    """Open Django connections by alias and state."""
    legend = _legend(SERVICE_LABEL, promql.DJANGO_ALIAS, promql.DJANGO_STATE)
    return _timeseries(
        "Connections by state", "In a request, idle, in a transaction, orphaned.", "short"
    ).with_target(_query(promql.django_connections(scope), legend))


def django_orphaned(scope: Scope) -> ts.Panel:
    """Orphaned connections now and found per window."""
    return (
        _timeseries(
            "Orphaned connections",
            "Outlived their request or thread (request_finished never fired).",
            "short",
        )
        .with_target(_query(promql.django_orphaned(scope), "orphaned " + ALIAS_LEGEND, "A"))
        .with_target(_query(promql.django_orphans_found(scope), "found " + ALIAS_LEGEND, "B"))
    )


def django_closed(scope: Scope) -> ts.Panel:
    """Why connections were closed."""
    legend = _legend(SERVICE_LABEL, promql.DJANGO_ALIAS, promql.CLOSE_REASON)
    return _timeseries(
        "Closed by reason", "request_end, conn_max_age, health_check, error...", "ops"
    ).with_target(_query(promql.django_closed_by_reason(scope), legend))


def django_opened(scope: Scope) -> ts.Panel:
    """Connections opened per second."""
    return _timeseries(
        "Opened per second", "With CONN_MAX_AGE=0, one per request.", "ops"
    ).with_target(_query(promql.django_opened(scope), ALIAS_LEGEND))


def django_ages(scope: Scope) -> ts.Panel:
    """Oldest connection and longest idle connection."""
    return (
        _timeseries("Oldest and longest-idle connection", "Per alias, across threads.", "s")
        .with_target(_query(promql.django_oldest(scope), "oldest " + ALIAS_LEGEND, "A"))
        .with_target(_query(promql.django_longest_idle(scope), "idle " + ALIAS_LEGEND, "B"))
        .span(24)
    )


def pg_free_slots(scope: Scope) -> stat.Panel:
    """Connection slots still free for ordinary users."""
    return (
        stat.Panel()
        .title("Free connection slots")
        .description("max_connections less reserved slots less connections in use.")
        .datasource(PROMETHEUS)
        .with_target(_query(promql.pg_headroom(scope), SERVER_LEGEND).instant())
        .unit("short")
        .thresholds(
            gd.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="red"), Threshold(value=10, color="green")])
        )
        .height(8)
        .span(6)
    )


def pg_usage(scope: Scope, config: MonitoringConfig) -> stat.Panel:
    """Share of the usable slots in use."""
    return _share_now(
        "Slots in use",
        "Connections / (max_connections - reserved).",
        _query(promql.pg_usage(scope), SERVER_LEGEND).instant(),
        config.threshold("postgres_connections"),
    )


def pg_by_state(scope: Scope) -> ts.Panel:
    """Server connections by state."""
    legend = _legend(INSTANCE_LABEL, promql.PG_STATE)
    return _timeseries(
        "Connections by state", "From pg_stat_activity (client backends).", "short"
    ).with_target(_query(promql.pg_connections_by_state(scope), legend))


def pg_by_application(scope: Scope) -> ts.Panel:
    """Server connections by application_name."""
    legend = _legend(INSTANCE_LABEL, promql.PG_APPLICATION)
    return _timeseries(
        "Connections by application_name",
        "Set application_name per service to see who holds the slots.",
        "short",
    ).with_target(_query(promql.pg_connections_by_application(scope), legend))


def pg_headroom(scope: Scope) -> ts.Panel:
    """Free slots over time."""
    return (
        _timeseries("Headroom to max_connections", "Free slots for ordinary users.", "short")
        .with_target(_query(promql.pg_headroom(scope), SERVER_LEGEND))
        .span(12)
    )


def pg_oldest_idle(scope: Scope) -> ts.Panel:
    """Age of the longest-idle connection per application."""
    return (
        _timeseries(
            "Oldest idle connection", "Days-old idle sessions are usually leaked ones.", "s"
        )
        .with_target(_query(promql.pg_oldest_idle(scope), SESSION_LEGEND))
        .span(12)
    )


def pg_idle_in_transaction(scope: Scope, config: MonitoringConfig) -> ts.Panel:
    """Age of the oldest idle-in-transaction session per application."""
    bounds = config.threshold("idle_in_transaction")
    return (
        _timeseries("Oldest idle-in-transaction session", "Holds locks and the xmin horizon.", "s")
        .with_target(_query(promql.pg_idle_in_transaction_age(scope), SESSION_LEGEND))
        .thresholds(_thresholds(bounds.warning, bounds.critical))
        .thresholds_style(_threshold_lines())
        .span(12)
    )


PGBOUNCER_POOL_LEGEND: Final = _legend(INSTANCE_LABEL, promql.PGB_DATABASE, promql.PGB_USER)


def pgb_clients(scope: Scope) -> ts.Panel:
    """PgBouncer's clients per pool: active and waiting for a server connection."""
    legend = f"{PGBOUNCER_POOL_LEGEND} {_legend(promql.PGB_STATE)}"
    return _timeseries(
        "PgBouncer clients",
        "Client connections per PgBouncer pool (database/user): active, or waiting for a "
        "server connection. Waiting clients mean the PgBouncer pool is full.",
        "short",
    ).with_target(_query(promql.pgb_clients_by_state(scope), legend))


def pgb_servers(scope: Scope) -> ts.Panel:
    """PgBouncer's server connections per pool by state."""
    legend = f"{PGBOUNCER_POOL_LEGEND} {_legend(promql.PGB_STATE)}"
    return _timeseries(
        "PgBouncer server connections by state",
        "active (linked to a client), idle (free), used, tested, login. No idle ones while "
        "clients wait: the pool is exhausted.",
        "short",
    ).with_target(_query(promql.pgb_servers_by_state(scope), legend))


def pgb_max_wait(scope: Scope, config: MonitoringConfig) -> ts.Panel:
    """How long the oldest waiting client of each PgBouncer pool has waited."""
    bounds = config.threshold("pgbouncer_max_wait")
    return (
        _timeseries(
            "PgBouncer max wait",
            "Seconds the oldest waiting client of each pool has waited (whole seconds).",
            "s",
        )
        .with_target(_query(promql.pgb_max_wait(scope), PGBOUNCER_POOL_LEGEND))
        .thresholds(_thresholds(bounds.warning, bounds.critical))
        .thresholds_style(_threshold_lines())
    )


def pgb_client_connections(scope: Scope, config: MonitoringConfig) -> ts.Panel:
    """PgBouncer's client connections, against max_client_conn when the config knows it."""
    used = promql.pgb_used_clients(scope)
    panel = _timeseries(
        "PgBouncer client connections",
        "used_clients (SHOW LISTS) per PgBouncer: the connections max_client_conn limits "
        "(pgbouncer_max_client_conn in the monitoring config draws the limit).",
        "short",
    ).with_target(_query(used, _legend(INSTANCE_LABEL) + " used_clients"))
    limit = config.pgbouncer_max_client_conn
    if limit is None:
        return panel
    return panel.with_target(
        _query(f"{used} * 0 + {limit}", _legend(INSTANCE_LABEL) + " max_client_conn", "B")
    )
