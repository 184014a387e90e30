"""Alert definitions, and the Prometheus and Grafana rules each one yields.

One :class:`AlertDefinition` per problem; its warning and critical rules come from the config's
thresholds, and severity, common labels and the runbook link are added to every rule in one
pass (:func:`rules`). The same rules are then written as a Prometheus rule file and as Grafana
alert-rule provisioning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from poolwatch import catalog
from poolwatch.monitoring import promql
from poolwatch.monitoring.config import MonitoringConfig, seconds
from poolwatch.monitoring.names import INSTANCE_LABEL, SERVICE_LABEL
from poolwatch.monitoring.promql import Scope

Severity = Literal["warning", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("warning", "critical")
#: Every rule carries the definition's name here as well as in ``alertname``: Grafana needs a
#: unique title per severity, so Alertmanager inhibition matches on this label instead.
ALERT_LABEL: Final = "poolwatch_alert"
#: Placeholders in descriptions, filled per target (Prometheus ``$value``, Grafana ``$values``).
VALUE: Final = "$VALUE"
THRESHOLD: Final = "$THRESHOLD"
GRAFANA_QUERY_REF: Final = "A"
GRAFANA_CONDITION_REF: Final = "B"


def label(name: str) -> str:
    """A Go-template reference to a label of the alert."""
    return "{{ $labels." + name + " }}"


POOL: Final = label(promql.POOL)
SERVICE: Final = label(SERVICE_LABEL)
SERVER: Final = label(INSTANCE_LABEL)
#: The process (``service.instance.id``) a per-process alert is about.
PROCESS: Final = label(INSTANCE_LABEL)


@dataclass(frozen=True, slots=True)
class Format:
    """How an alert's value and threshold read in text: a template filter and a Python format."""

    template: str
    text: Callable[[float], str]


def _duration_text(value: float) -> str:
    if value < 1:
        return f"{value * 1000:g}ms"
    if value < 120:
        return f"{value:g}s"
    return f"{value / 60:g}m"


PERCENT: Final = Format("humanizePercentage", lambda v: f"{v * 100:g}%")
DURATION: Final = Format("humanizeDuration", _duration_text)
PER_SECOND: Final = Format("humanize", lambda v: f"{v:g}/s")
COUNT: Final = Format("humanize", lambda v: f"{v:g}")


@dataclass(frozen=True, slots=True)
class AlertDefinition:
    """One problem worth paging or ticketing for, independent of thresholds and targets."""

    key: str
    name: str
    group: str
    query: Callable[[Scope], str]
    summary: str
    description: str
    value: Format
    #: What to look at first, for the README and the runbook header.
    headline: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule at one severity, ready for Prometheus or Grafana."""

    definition: AlertDefinition
    severity: Severity
    query: str
    threshold: float
    duration: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def expr(self) -> str:
        """The Prometheus expression: the query compared with the threshold."""
        query = self.query
        if any(f" {word} " in query for word in ("and", "or", "unless")):
            # comparisons bind tighter than set operators: compare the whole query
            query = f"({query})"
        return f"{query} > {self.threshold:g}"

    @property
    def uid(self) -> str:
        """Stable Grafana rule uid (at most 40 characters)."""
        return f"poolwatch-{self.definition.key.replace('_', '-')}-{self.severity}"[:40]

    @property
    def title(self) -> str:
        """Grafana rule title, unique per folder."""
        return f"{self.definition.name} ({self.severity})"


def definitions(config: MonitoringConfig) -> tuple[AlertDefinition, ...]:
    """Every alert poolwatch ships, in the order the README lists them."""
    window = config.rate_window
    return (
        *_pool_definitions(window, config),
        *_leak_definitions(window),
        *_django_definitions(window),
        *_postgres_definitions(),
        *_pgbouncer_definitions(config),
        *_telemetry_definitions(config),
    )


def _pool_definitions(window: str, config: MonitoringConfig) -> tuple[AlertDefinition, ...]:
    return (
        AlertDefinition(
            "pool_saturation", "PoolwatchPoolSaturation", "pool", promql.process_saturation,
            f"Connection pool {POOL} of {SERVICE} is nearly full in process {PROCESS}.",
            f"Process {PROCESS} of {SERVICE} had {VALUE} of pool {POOL}'s connections checked "
            f"out on average over the last {window} (threshold {THRESHOLD}). Once it is full, its "
            "callers wait and then time out.",
            PERCENT, f"used / max of one process's pool, averaged over {window}",
        ),
        AlertDefinition(
            "fleet_saturation", "PoolwatchFleetSaturation", "pool", promql.fleet_saturation,
            f"Connection pool {POOL} is nearly full across the processes of {SERVICE}.",
            f"Across the live processes of {SERVICE}, pool {POOL} is {VALUE} full on average over "
            f"the last {window} (threshold {THRESHOLD}): the whole fleet is short of connections, "
            "not one process.",
            PERCENT, f"mean over the pool's processes of their saturation over {window}",
        ),
        AlertDefinition(
            "checkout_timeouts", "PoolwatchCheckoutTimeouts", "pool", promql.timeout_share,
            f"Checkouts from pool {POOL} of {SERVICE} are timing out.",
            f"{VALUE} of the checkouts from pool {POOL} across the processes of {SERVICE} gave up "
            f"after waiting the full pool timeout over the last {window} (threshold {THRESHOLD}). "
            "Each is a failed request; the *Top processes* tables show which processes time out.",
            PERCENT, f"timeouts per checkout attempt across the pool's processes, over {window}",
        ),
        AlertDefinition(
            "wait_time_p99", "PoolwatchCheckoutWaitHigh", "pool", promql.process_wait_p99,
            f"Checkouts from pool {POOL} of {SERVICE} wait long in process {PROCESS}.",
            f"The 99th percentile wait for a connection from pool {POOL} in process {PROCESS} of "
            f"{SERVICE} is {VALUE} (threshold {THRESHOLD}, over {window}).",
            DURATION, f"99th percentile checkout wait of one process, over {window}",
        ),
        AlertDefinition(
            "pending_requests", "PoolwatchPendingRequests", "pool", promql.process_pending,
            f"Callers queue for connections from pool {POOL} of {SERVICE} in process {PROCESS}.",
            f"Process {PROCESS} of {SERVICE} had at least {VALUE} callers waiting for a "
            f"connection from pool {POOL} at every evaluation of the last {window} "
            f"(threshold {THRESHOLD}).",
            COUNT, f"fewest callers waiting in one process over {window}",
        ),
        AlertDefinition(
            "exhaustion_forecast", "PoolwatchPoolExhaustionForecast", "pool",
            promql.exhaustion_forecast,
            f"Connection pool {POOL} of {SERVICE} will be full within {config.forecast_horizon} "
            f"in process {PROCESS}.",
            f"At the trend of the last {config.forecast_window}, pool {POOL} in process {PROCESS} "
            f"of {SERVICE} reaches {VALUE} saturation {config.forecast_horizon} from now "
            f"(threshold {THRESHOLD}).",
            PERCENT, f"one process's saturation extrapolated {config.forecast_horizon} ahead",
        ),
    )  # fmt: skip


def _leak_definitions(window: str) -> tuple[AlertDefinition, ...]:
    return (
        AlertDefinition(
            "connections_leaked", "PoolwatchConnectionsLeaked", "pool", promql.process_leaked,
            f"Process {PROCESS} of {SERVICE} holds connections of pool {POOL} past the leak "
            "threshold.",
            f"Process {PROCESS} of {SERVICE} holds {VALUE} connections of pool {POOL} checked "
            f"out longer than the leak threshold (threshold {THRESHOLD}). The {catalog.EVENT_LEAK} "
            "events name the code that borrowed them.",
            COUNT, "connections one process holds past the leak threshold right now",
        ),
        AlertDefinition(
            "never_returned", "PoolwatchConnectionsNeverReturned", "pool",
            lambda scope: promql.never_returned(scope, promql.BY_PROCESS),
            f"Connections of pool {POOL} of {SERVICE} were garbage-collected, never returned.",
            f"{VALUE} connections of pool {POOL} in process {PROCESS} of {SERVICE} were dropped "
            f"while checked out in the last {window} (threshold {THRESHOLD}): code opened them "
            "and never closed them.",
            COUNT, f"connections one process garbage-collected while checked out, over {window}",
        ),
        AlertDefinition(
            "connection_create_errors", "PoolwatchConnectionOpensFailing", "pool",
            lambda scope: promql.create_errors(scope, promql.BY_PROCESS),
            f"Pool {POOL} of {SERVICE} cannot open database connections.",
            f"{VALUE} connection opens of pool {POOL} in process {PROCESS} of {SERVICE} failed "
            f"with {{{{ $labels.{promql.ERROR_TYPE} }}}} in the last {window} (threshold "
            f"{THRESHOLD}): the server refuses or cannot be reached, so callers fail or wait.",
            COUNT, f"failed connection opens of one process over {window}",
        ),
        AlertDefinition(
            "session_conflicts", "PoolwatchSessionConflicts", "pool",
            lambda scope: promql.conflicts_by_kind(scope, promql.BY_SERVICE_PROCESS),
            f"{SERVICE} sees {label(promql.CONFLICT_KIND)} session conflicts.",
            f"Process {PROCESS} of {SERVICE} raises {VALUE} {label(promql.CONFLICT_KIND)} "
            f"conflicts per second (threshold {THRESHOLD}, over {window}). After pool timeouts "
            "this is often an error handler reusing an object of another session.",
            PER_SECOND, "session and transaction conflicts per second of one process, by kind",
        ),
    )  # fmt: skip


def _django_definitions(window: str) -> tuple[AlertDefinition, ...]:
    alias = label(promql.DJANGO_ALIAS)
    return (
        AlertDefinition(
            "django_orphans", "PoolwatchDjangoOrphanedConnections", "django",
            lambda scope: promql.django_orphaned(scope, promql.BY_PROCESS_ALIAS),
            f"Django connections of {SERVICE} outlive their requests.",
            f"{VALUE} connections of database alias {alias} in process {PROCESS} of {SERVICE} "
            "are orphaned: their "
            f"request or thread ended without closing them (threshold {THRESHOLD}).",
            COUNT, "Django connections orphaned right now",
        ),
    )  # fmt: skip


def _postgres_definitions() -> tuple[AlertDefinition, ...]:
    application = label(promql.PG_APPLICATION)
    return (
        AlertDefinition(
            "postgres_connections", "PoolwatchPostgresConnectionsNearLimit", "postgresql",
            promql.pg_usage,
            f"PostgreSQL {SERVER} is running out of connection slots.",
            f"PostgreSQL {SERVER} has {VALUE} of its usable connection slots (max_connections "
            f"less reserved) taken (threshold {THRESHOLD}). New connections will be refused.",
            PERCENT, "server connections / (max_connections - reserved)",
        ),
        AlertDefinition(
            "idle_in_transaction", "PoolwatchPostgresIdleInTransaction", "postgresql",
            promql.pg_idle_in_transaction_age,
            f"A session of {application} on PostgreSQL {SERVER} sits idle in a transaction.",
            f"A connection of application {application} to database "
            f"{label(promql.PG_DATABASE)} on {SERVER} has been idle in a transaction for "
            f"{VALUE} (threshold {THRESHOLD}); it holds its locks and snapshot all that time.",
            DURATION, "age of the oldest idle-in-transaction session",
        ),
    )  # fmt: skip


def _pgbouncer_definitions(config: MonitoringConfig) -> tuple[AlertDefinition, ...]:
    """PgBouncer's pools; the client-connections alert only when max_client_conn is configured."""
    pool = f"{label(promql.PGB_DATABASE)}/{label(promql.PGB_USER)}"
    made = (
        AlertDefinition(
            "pgbouncer_clients_waiting", "PoolwatchPgBouncerClientsWaiting", "pgbouncer",
            promql.pgb_clients_waiting,
            f"Clients queue in PgBouncer {SERVER} for pool {pool}.",
            f"{VALUE} clients of database {label(promql.PGB_DATABASE)} as user "
            f"{label(promql.PGB_USER)} wait in PgBouncer {SERVER} for a server connection "
            f"(threshold {THRESHOLD}). Their queries wait too, however idle the application's "
            "own pools look.",
            COUNT, "clients of one PgBouncer pool waiting for a server connection",
        ),
        AlertDefinition(
            "pgbouncer_max_wait", "PoolwatchPgBouncerMaxWaitHigh", "pgbouncer",
            promql.pgb_max_wait,
            f"Clients of PgBouncer {SERVER} wait long for pool {pool}.",
            f"The oldest waiting client of database {label(promql.PGB_DATABASE)} as user "
            f"{label(promql.PGB_USER)} in PgBouncer {SERVER} has waited {VALUE} for a server "
            f"connection (threshold {THRESHOLD}).",
            DURATION, "how long the oldest waiting client of one PgBouncer pool has waited",
        ),
        AlertDefinition(
            "pgbouncer_pool_exhausted", "PoolwatchPgBouncerPoolExhausted", "pgbouncer",
            promql.pgb_pool_exhausted,
            f"PgBouncer {SERVER} has no server connection left for pool {pool}.",
            f"{VALUE} clients of database {label(promql.PGB_DATABASE)} as user "
            f"{label(promql.PGB_USER)} wait in PgBouncer {SERVER} while none of the pool's "
            f"server connections is idle or used (threshold {THRESHOLD}): every one is busy, "
            "and the pool is at its size.",
            COUNT, "waiting clients of a PgBouncer pool with no idle or used server connection",
        ),
    )  # fmt: skip
    if config.pgbouncer_max_client_conn is None:
        return made
    limit = config.pgbouncer_max_client_conn
    return (
        *made,
        AlertDefinition(
            "pgbouncer_client_connections", "PoolwatchPgBouncerClientConnectionsNearLimit",
            "pgbouncer", promql.pgb_client_connections_share,
            f"PgBouncer {SERVER} is running out of client connections.",
            f"PgBouncer {SERVER} holds {VALUE} of its max_client_conn ({limit}) client "
            f"connections (threshold {THRESHOLD}). Beyond it, new clients are refused.",
            PERCENT, f"PgBouncer's used_clients / max_client_conn ({limit})",
        ),
    )  # fmt: skip


def _telemetry_definitions(config: MonitoringConfig) -> tuple[AlertDefinition, ...]:
    pool = "{{ if $labels." + promql.POOL + " }} of pool " + POOL + "{{ end }}"
    service = "{{ if $labels." + SERVICE_LABEL + " }} in " + SERVICE + "{{ end }}"
    return (
        AlertDefinition(
            "telemetry_missing", "PoolwatchTelemetryMissing", "telemetry",
            promql.telemetry_missing,
            f"Processes{pool}{service} stopped sending connection-pool metrics.",
            f"Processes{pool}{service} stopped reporting: {VALUE} fewer than usual (the median "
            f"live count over {config.processes_lookback}; a process is live while it sent pool "
            f"metrics within {config.freshness}), or no pool metrics arrived at all for "
            f"{config.missing_window}. A process died, the service stopped, or the collector "
            "pipeline drops them; other poolwatch alerts are blind for them meanwhile.",
            COUNT, f"processes fewer than the pool's median live count over "
            f"{config.processes_lookback}",
        ),
        AlertDefinition(
            "internal_errors", "PoolwatchInternalErrors", "telemetry", promql.internal_errors,
            f"poolwatch hit internal errors in {SERVICE}.",
            f"poolwatch caught {VALUE} errors in its own hooks in process {PROCESS} of {SERVICE} "
            f"over {config.rate_window} (threshold {THRESHOLD}). The application is unaffected, "
            "but pool metrics may be incomplete; the log names the hook once per error type.",
            COUNT, f"poolwatch's own caught errors in one process over {config.rate_window}",
        ),
    )  # fmt: skip


def rules(config: MonitoringConfig) -> list[Rule]:
    """Every rule: each definition at each severity it has a threshold for, finished in one pass."""
    scope = promql.alert_scope(config)
    made: list[Rule] = []
    for definition in definitions(config):
        threshold = config.threshold(definition.key)
        query = definition.query(scope)
        for severity in SEVERITIES:
            bound = threshold.warning if severity == "warning" else threshold.critical
            duration = threshold.warning_for if severity == "warning" else threshold.critical_for
            if bound is not None:
                made.append(Rule(definition, severity, query, bound, duration))
    return [_finish(rule, config) for rule in made]


def _finish(rule: Rule, config: MonitoringConfig) -> Rule:
    """Severity, the alert label, the config's common labels and the runbook link."""
    definition = rule.definition
    labels = {**config.alert_labels, ALERT_LABEL: definition.name, "severity": rule.severity}
    annotations = {
        "summary": definition.summary,
        "description": definition.description.replace(
            THRESHOLD, definition.value.text(rule.threshold)
        ),
        "runbook_url": runbook_url(config, definition),
    }
    return replace(rule, labels=labels, annotations=annotations)


def runbook_url(config: MonitoringConfig, definition: AlertDefinition) -> str:
    """Where this alert's runbook is published."""
    return f"{config.runbook_base_url.rstrip('/')}/{definition.name}.md"


def _render(text: str, rule: Rule, value_ref: str) -> str:
    return text.replace(VALUE, "{{ " + value_ref + " | " + rule.definition.value.template + " }}")


# --- Prometheus ------------------------------------------------------------------------------------


#: The group of recording rules the alert groups and dashboards read.
RECORDING_GROUP: Final = "poolwatch-recording"


def recording_group(config: MonitoringConfig) -> dict[str, Any]:
    """The recording rules: per-process series for alerts and drill-down, per-pool ones to keep."""
    scope = promql.alert_scope(config)
    items = [{"record": name, "expr": expr} for name, expr, _ in promql.recording_rules(scope)]
    return {"name": RECORDING_GROUP, "interval": config.rule_interval, "rules": items}


def prometheus_rule_groups(config: MonitoringConfig) -> dict[str, Any]:
    """The Prometheus rule file: the recording group, then one alert group per area."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules(config):
        groups.setdefault(rule.definition.group, []).append(_prometheus_rule(rule))
    recording = [recording_group(config)] if config.recording_rules else []
    return {
        "groups": recording
        + [
            {"name": f"poolwatch-{group}", "interval": config.rule_interval, "rules": items}
            for group, items in groups.items()
        ]
    }


def _prometheus_rule(rule: Rule) -> dict[str, Any]:
    return {
        "alert": rule.definition.name,
        "expr": rule.expr,
        "for": rule.duration,
        "labels": rule.labels,
        "annotations": {k: _render(v, rule, "$value") for k, v in rule.annotations.items()},
    }


# --- Grafana-managed ---------------------------------------------------------------------------------


def grafana_rule(rule: Rule, config: MonitoringConfig) -> dict[str, Any]:
    """One rule in the shape of Grafana's provisioning API (``/api/v1/provisioning/alert-rules``)."""
    value_ref = f"$values.{GRAFANA_QUERY_REF}.Value"
    return {
        "uid": rule.uid,
        "title": rule.title,
        "ruleGroup": f"poolwatch-{rule.definition.group}",
        "folderUID": config.grafana_folder_uid,
        "condition": GRAFANA_CONDITION_REF,
        "data": _grafana_data(rule, config),
        "noDataState": "OK",
        "execErrState": "Error",
        "for": rule.duration,
        "labels": rule.labels,
        "annotations": {k: _render(v, rule, value_ref) for k, v in rule.annotations.items()},
        "isPaused": False,
    }


def _grafana_data(rule: Rule, config: MonitoringConfig) -> list[dict[str, Any]]:
    lookback = max(600, 2 * seconds(config.rate_window))
    query = {
        "refId": GRAFANA_QUERY_REF,
        "relativeTimeRange": {"from": lookback, "to": 0},
        "datasourceUid": config.prometheus_datasource_uid,
        "model": {
            "refId": GRAFANA_QUERY_REF,
            "expr": rule.query,
            "instant": True,
            "range": False,
            "datasource": {"type": "prometheus", "uid": config.prometheus_datasource_uid},
        },
    }
    condition = {
        "refId": GRAFANA_CONDITION_REF,
        "datasourceUid": "__expr__",
        "model": {
            "refId": GRAFANA_CONDITION_REF,
            "type": "threshold",
            "expression": GRAFANA_QUERY_REF,
            "conditions": [{"evaluator": {"type": "gt", "params": [rule.threshold]}}],
            "datasource": {"type": "__expr__", "uid": "__expr__"},
        },
    }
    return [query, condition]


def grafana_provisioning(config: MonitoringConfig) -> dict[str, Any]:
    """Grafana's file-provisioning format for the same rules (``provisioning/alerting/``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules(config):
        body = grafana_rule(rule, config)
        group = body.pop("ruleGroup")
        body.pop("folderUID")
        groups.setdefault(group, []).append(body)
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": name,
                "folder": config.grafana_folder_title,
                "interval": config.rule_interval,
                "rules": items,
            }
            for name, items in groups.items()
        ],
    }
