"""The committed Prometheus rules, checked and unit-tested with the real promtool.

Every alert gets input series that make it true from a known minute; promtool then evaluates it
one minute before and exactly at the ``for:`` boundary of each of its severities, expecting the
exact labels and annotations below (written out here as the specification).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch.monitoring import alerts, config, generate, promql, runbooks
from poolwatch.monitoring.generate import PROMETHEUS_RULES
from tests.monitoring.conftest import REPO

RULES = REPO / PROMETHEUS_RULES
RUNBOOKS = "alerts/runbooks/"
MISSING = (
    "Processes{where} stopped reporting: {value} fewer than usual (the median live count over "
    "1h; a process is live while it sent pool metrics within 2m), or no pool metrics arrived at "
    "all for 10m. A process died, the service stopped, or the collector pipeline drops them; "
    "other poolwatch alerts are blind for them meanwhile."
)

SHOP = 'job="shop", instance="web-1"'
POOL = SHOP + ', db_client_connection_pool_name="main"'
PG = 'job="postgresql", instance="db:5432"'
PGB = 'job="pgbouncer", instance="bouncer:6432"'
PGB_POOL = PGB + ', database="shop", user="app"'
PGB_POOL_LABELS = {
    "job": "pgbouncer",
    "instance": "bouncer:6432",
    "database": "shop",
    "user": "app",
}
#: Three clients wait while both server connections of the pool run transactions.
PGB_EXHAUSTED = {
    f'poolwatch_pgbouncer_clients{{{PGB_POOL}, state="waiting"}}': "3x40",
    f'poolwatch_pgbouncer_clients{{{PGB_POOL}, state="active"}}': "2x40",
    f'poolwatch_pgbouncer_servers{{{PGB_POOL}, state="active"}}': "2x40",
    f'poolwatch_pgbouncer_servers{{{PGB_POOL}, state="idle"}}': "0x40",
    f'poolwatch_pgbouncer_servers{{{PGB_POOL}, state="used"}}': "0x40",
}


@dataclass(frozen=True)
class Case:
    """Input that makes one alert true from minute ``start``, and what it must say then."""

    name: str
    series: dict[str, str]
    start: int
    labels: dict[str, str]
    summary: str
    description: str
    #: Severity -> threshold as the description prints it.
    thresholds: dict[str, str]
    #: The value as the description prints it, by evaluation minute when it changes over time.
    value: str = ""
    values_at: dict[int, str] = field(default_factory=dict)


POOL_LABELS = {"job": "shop", "db_client_connection_pool_name": "main"}
PROCESS_LABELS = {**POOL_LABELS, "instance": "web-1"}
FULL = {
    f'db_client_connection_count{{{POOL}, db_client_connection_state="used"}}': "10x40",
    f'db_client_connection_count{{{POOL}, db_client_connection_state="idle"}}': "0x40",
    f"db_client_connection_max{{{POOL}}}": "10x40",
}
LIVE = {f"db_client_connection_max{{{POOL}}}": "10x40"}

CASES = [
    Case(
        "PoolwatchPoolSaturation",
        FULL,
        0,
        PROCESS_LABELS,
        "Connection pool main of shop is nearly full in process web-1.",
        "Process web-1 of shop had 100% of pool main's connections checked out on average over "
        "the last 5m (threshold {threshold}). Once it is full, its callers wait and then time out.",
        {"warning": "80%", "critical": "95%"},
        "100%",
    ),
    Case(
        "PoolwatchFleetSaturation",
        FULL,
        0,
        POOL_LABELS,
        "Connection pool main is nearly full across the processes of shop.",
        "Across the live processes of shop, pool main is 100% full on average over the last 5m "
        "(threshold {threshold}): the whole fleet is short of connections, not one process.",
        {"warning": "70%", "critical": "85%"},
    ),
    Case(
        "PoolwatchCheckoutTimeouts",
        # 10 timeouts/s out of 20 checkout attempts/s: half the checkouts time out.
        {
            f"db_client_connection_timeouts_total{{{POOL}}}": "0+600x40",
            f"db_client_connection_wait_time_seconds_count{{{POOL}}}": "0+1200x40",
        },
        1,
        POOL_LABELS,
        "Checkouts from pool main of shop are timing out.",
        "50% of the checkouts from pool main across the processes of shop gave up after waiting "
        "the full pool timeout over the last 5m (threshold {threshold}). Each is a failed "
        "request; the *Top processes* tables show which processes time out.",
        {"warning": "0.1%", "critical": "1%"},
    ),
    Case(
        "PoolwatchCheckoutWaitHigh",
        {
            **LIVE,
            f'db_client_connection_wait_time_seconds_bucket{{{POOL}, le="2.5"}}': "0x40",
            f'db_client_connection_wait_time_seconds_bucket{{{POOL}, le="5"}}': "0+60x40",
            f'db_client_connection_wait_time_seconds_bucket{{{POOL}, le="+Inf"}}': "0+60x40",
        },
        1,
        PROCESS_LABELS,
        "Checkouts from pool main of shop wait long in process web-1.",
        "The 99th percentile wait for a connection from pool main in process web-1 of shop is "
        "4.975s (threshold {threshold}, over 5m).",
        {"warning": "250ms", "critical": "2s"},
    ),
    Case(
        "PoolwatchPendingRequests",
        {f"db_client_connection_pending_requests{{{POOL}}}": "8x40"},
        0,
        PROCESS_LABELS,
        "Callers queue for connections from pool main of shop in process web-1.",
        "Process web-1 of shop had at least 8 callers waiting for a connection from pool main "
        "at every evaluation of the last 5m (threshold {threshold}).",
        {"warning": "0", "critical": "5"},
    ),
    Case(
        "PoolwatchPoolExhaustionForecast",
        # +0.5% a minute; forecast only once 45 of the hour's 60 evaluations are there (44m)
        {
            f'db_client_connection_count{{{POOL}, db_client_connection_state="used"}}': "100+1x80",
            f"db_client_connection_max{{{POOL}}}": "200x80",
        },
        44,
        PROCESS_LABELS,
        "Connection pool main of shop will be full within 1h in process web-1.",
        "At the trend of the last 1h, pool main in process web-1 of shop reaches 109.5% "
        "saturation 1h from now (threshold {threshold}).",
        {"warning": "100%"},
    ),
    Case(
        "PoolwatchConnectionsLeaked",
        {f"poolwatch_connection_leaked{{{POOL}}}": "7x40"},
        0,
        PROCESS_LABELS,
        "Process web-1 of shop holds connections of pool main past the leak threshold.",
        "Process web-1 of shop holds 7 connections of pool main checked out longer than the "
        "leak threshold (threshold {threshold}). The poolwatch.connection.leak events name the "
        "code that borrowed them.",
        {"warning": "0", "critical": "5"},
    ),
    Case(
        "PoolwatchConnectionsNeverReturned",
        {f"poolwatch_connection_never_returned_total{{{POOL}}}": "0+1x40"},
        1,
        PROCESS_LABELS,
        "Connections of pool main of shop were garbage-collected, never returned.",
        "2 connections of pool main in process web-1 of shop were dropped while checked out in "
        "the last 5m (threshold {threshold}): code opened them and never closed them.",
        {"warning": "0"},
    ),
    Case(
        "PoolwatchConnectionOpensFailing",
        {
            f'poolwatch_connection_create_errors_total{{{POOL}, error_type="OperationalError"}}': (
                "0+20x40"
            )
        },
        1,
        {**PROCESS_LABELS, "error_type": "OperationalError"},
        "Pool main of shop cannot open database connections.",
        "60 connection opens of pool main in process web-1 of shop failed with OperationalError "
        "in the last 5m (threshold {threshold}): the server refuses or cannot be reached, so "
        "callers fail or wait.",
        {"warning": "0", "critical": "10"},
    ),
    Case(
        "PoolwatchSessionConflicts",
        {
            f"poolwatch_session_conflicts_total{{{SHOP}, "
            'poolwatch_conflict_kind="already_attached"}': "0+60x40"
        },
        1,
        {"job": "shop", "instance": "web-1", "poolwatch_conflict_kind": "already_attached"},
        "shop sees already_attached session conflicts.",
        "Process web-1 of shop raises 1 already_attached conflicts per second (threshold "
        "{threshold}, over 5m). After pool timeouts this is often an error handler reusing an "
        "object of another session.",
        {"warning": "0/s"},
    ),
    Case(
        "PoolwatchDjangoOrphanedConnections",
        {
            f'poolwatch_django_connections{{{SHOP}, poolwatch_django_alias="default", '
            'poolwatch_django_connection_state="orphaned"}': "12x40",
            f'poolwatch_django_connections{{{SHOP}, poolwatch_django_alias="default", '
            'poolwatch_django_connection_state="idle"}': "3x40",
        },
        0,
        {"job": "shop", "instance": "web-1", "poolwatch_django_alias": "default"},
        "Django connections of shop outlive their requests.",
        "12 connections of database alias default in process web-1 of shop are orphaned: their "
        "request or thread ended without closing them (threshold {threshold}).",
        {"warning": "0", "critical": "10"},
    ),
    Case(
        "PoolwatchPostgresConnectionsNearLimit",
        {
            f'poolwatch_postgresql_connections{{{PG}, state="idle", application_name="shop", '
            'usename="app", datname="shop"}': "90x40",
            f'poolwatch_postgresql_connections{{{PG}, state="active", application_name="shop", '
            'usename="app", datname="shop"}': "5x40",
            f"poolwatch_postgresql_max_connections{{{PG}}}": "100x40",
            f"poolwatch_postgresql_reserved_connections{{{PG}}}": "3x40",
        },
        0,
        {"job": "postgresql", "instance": "db:5432"},
        "PostgreSQL db:5432 is running out of connection slots.",
        "PostgreSQL db:5432 has 97.94% of its usable connection slots (max_connections less "
        "reserved) taken (threshold {threshold}). New connections will be refused.",
        {"warning": "80%", "critical": "90%"},
    ),
    Case(
        "PoolwatchPostgresIdleInTransaction",
        {
            f"poolwatch_postgresql_oldest_idle_in_transaction_seconds{{{PG}, "
            'application_name="shop", usename="app", datname="shop"}': "3600x40"
        },
        0,
        {
            "job": "postgresql",
            "instance": "db:5432",
            "application_name": "shop",
            "datname": "shop",
        },
        "A session of shop on PostgreSQL db:5432 sits idle in a transaction.",
        "A connection of application shop to database shop on db:5432 has been idle in a "
        "transaction for 1h 0m 0s (threshold {threshold}); it holds its locks and snapshot all "
        "that time.",
        {"warning": "5m", "critical": "30m"},
    ),
    Case(
        "PoolwatchPgBouncerClientsWaiting",
        PGB_EXHAUSTED,
        0,
        PGB_POOL_LABELS,
        "Clients queue in PgBouncer bouncer:6432 for pool shop/app.",
        "3 clients of database shop as user app wait in PgBouncer bouncer:6432 for a server "
        "connection (threshold {threshold}). Their queries wait too, however idle the "
        "application's own pools look.",
        {"warning": "0"},
    ),
    Case(
        "PoolwatchPgBouncerMaxWaitHigh",
        {f"poolwatch_pgbouncer_max_wait_seconds{{{PGB_POOL}}}": "7x40"},
        0,
        PGB_POOL_LABELS,
        "Clients of PgBouncer bouncer:6432 wait long for pool shop/app.",
        "The oldest waiting client of database shop as user app in PgBouncer bouncer:6432 has "
        "waited 7s for a server connection (threshold {threshold}).",
        {"warning": "1s", "critical": "5s"},
    ),
    Case(
        "PoolwatchPgBouncerPoolExhausted",
        PGB_EXHAUSTED,
        0,
        PGB_POOL_LABELS,
        "PgBouncer bouncer:6432 has no server connection left for pool shop/app.",
        "3 clients of database shop as user app wait in PgBouncer bouncer:6432 while none of "
        "the pool's server connections is idle or used (threshold {threshold}): every one is "
        "busy, and the pool is at its size.",
        {"critical": "0"},
    ),
    Case(
        "PoolwatchTelemetryMissing",
        {
            f"db_client_connection_max{{{POOL}}}": "10x20",
            'db_client_connection_max{job="other", instance="w", '
            'db_client_connection_pool_name="p"}': "10x60",
        },
        # Last sample at 20m; fresh for 2m more (ranges are closed), so the pool is gone at 23m.
        23,
        POOL_LABELS,
        "Processes of pool main in shop stopped sending connection-pool metrics.",
        MISSING.format(where=" of pool main in shop", value="1"),
        {"warning": ""},
    ),
    Case(
        "PoolwatchInternalErrors",
        {f'poolwatch_internal_errors_total{{{SHOP}, poolwatch_hook="checkout"}}': "0+1x40"},
        1,
        {"job": "shop", "instance": "web-1"},
        "poolwatch hit internal errors in shop.",
        "poolwatch caught 5 errors in its own hooks in process web-1 of shop over 5m (threshold "
        "{threshold}). The application is unaffected, but pool metrics may be incomplete; the "
        "log names the hook once per error type.",
        {"warning": "0"},
    ),
]


#: Every group of the rule file, recordings first (promtool orders unlisted groups first).
GROUP_ORDER = [
    group["name"] for group in alerts.prometheus_rule_groups(config.MonitoringConfig())["groups"]
]


def _rules_by_severity(name: str) -> dict[str, alerts.Rule]:
    made = alerts.rules(config.MonitoringConfig())
    return {rule.severity: rule for rule in made if rule.definition.name == name}


def _expected(case: Case, minute: int) -> list[dict[str, Any]]:
    firing = []
    for severity, rule in _rules_by_severity(case.name).items():
        if minute - case.start >= config.seconds(rule.duration) // 60:
            firing.append(
                {
                    "exp_labels": {
                        **case.labels,
                        "poolwatch_alert": case.name,
                        "severity": severity,
                    },
                    "exp_annotations": {
                        "summary": case.summary,
                        "description": case.description.format(
                            threshold=case.thresholds[severity],
                            value=case.values_at.get(minute, case.value),
                        ),
                        "runbook_url": RUNBOOKS + case.name + ".md",
                    },
                }
            )
    return firing


def _boundaries(case: Case) -> list[int]:
    """One minute before and at the ``for:`` boundary of each severity."""
    minutes = set()
    for rule in _rules_by_severity(case.name).values():
        boundary = case.start + config.seconds(rule.duration) // 60
        minutes |= {boundary - 1, boundary}
    return sorted(minutes)


def _test_file(case: Case, path: Path) -> Path:
    series = [{"series": name, "values": values} for name, values in case.series.items()]
    checks = [
        {"eval_time": f"{minute}m", "alertname": case.name, "exp_alerts": _expected(case, minute)}
        for minute in _boundaries(case)
    ]
    document = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        # Prometheus runs groups concurrently; the tests pin the recordings first so that the
        # boundaries are exact (in production an alert may see a recording one interval late).
        "group_eval_order": GROUP_ORDER,
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=4096))
    return path


def test_rule_file_passes_promtool_check(promtool: str) -> None:
    """promtool accepts the committed rule file."""
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    settings = config.MonitoringConfig()
    expected = len(alerts.rules(settings)) + len(alerts.recording_group(settings)["rules"])
    assert f"SUCCESS: {expected} rules found" in result.stdout


def test_every_alert_has_a_promtool_case() -> None:
    """Each alert definition is covered by a case below, at every severity it has."""
    names = {d.name for d in alerts.definitions(config.MonitoringConfig())}
    assert {case.name for case in CASES} == names
    for case in CASES:
        assert set(case.thresholds) == set(_rules_by_severity(case.name))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_alert_fires_exactly_at_its_for_boundary(case: Case, promtool: str, tmp_path: Path) -> None:
    """The alert is pending one minute before its ``for:`` and firing, exactly labelled, at it."""
    test_file = _test_file(case, tmp_path / "test.yaml")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_telemetry_missing_fires_when_nothing_ever_arrived(promtool: str, tmp_path: Path) -> None:
    """With no pool metrics at all, absent_over_time fires the alert without a job label."""
    case = Case(
        "PoolwatchTelemetryMissing",
        {'unrelated_metric{job="x"}': "1x20"},
        0,
        {},
        "Processes stopped sending connection-pool metrics.",
        MISSING.format(where="", value="1"),
        {"warning": ""},
    )
    test_file = _test_file(case, tmp_path / "test.yaml")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_telemetry_missing_names_the_pool_that_lost_a_process(
    promtool: str, tmp_path: Path
) -> None:
    """One of two processes stops at 20m: the pool is one process short once it is stale."""
    case = Case(
        "PoolwatchTelemetryMissing",
        {
            f"db_client_connection_max{{{POOL}}}": "10x60",
            'db_client_connection_max{job="shop", instance="web-2", '
            'db_client_connection_pool_name="main"}': "10x20",
        },
        23,
        POOL_LABELS,
        "Processes of pool main in shop stopped sending connection-pool metrics.",
        MISSING.format(where=" of pool main in shop", value="1"),
        {"warning": ""},
    )
    test_file = _test_file(case, tmp_path / "test.yaml")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_runbook_says_whether_it_names_a_process_or_judges_the_fleet() -> None:
    """Per-process alerts keep the instance label and say how to find the process; fleet
    alerts are ratios over the pool and say what that means."""
    settings = config.MonitoringConfig()
    pages = runbooks.runbooks(settings)
    for definition in alerts.definitions(settings):
        scope = runbooks.SCOPE.get(definition.key)
        page = pages[f"{definition.name}.md"]
        query = definition.query(promql.alert_scope(settings))
        by_process = "job_instance_pool:" in query or "by (job, instance" in query
        if scope is runbooks.PROCESS:
            assert "**This alert names one process.**" in page
            assert by_process and not query.startswith("avg by"), definition.key
        elif scope is runbooks.FLEET:
            assert "**This is a fleet condition.**" in page
            assert query.startswith(("avg by (job, db_", "job_pool:")), definition.key


def _promtool_test(
    promtool: str, path: Path, series: dict[str, str], checks: list[dict[str, Any]],
    rules: Path = RULES,
) -> None:  # fmt: skip
    document = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "group_eval_order": GROUP_ORDER,
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "alert_rule_test": checks,
            }
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=4096))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_pgbouncer_alerts_stay_quiet_while_no_client_waits(promtool: str, tmp_path: Path) -> None:
    """Busy server connections but nobody waiting: neither waiting nor exhausted fires."""
    series = {
        **PGB_EXHAUSTED,
        f'poolwatch_pgbouncer_clients{{{PGB_POOL}, state="waiting"}}': "0x40",
        f"poolwatch_pgbouncer_max_wait_seconds{{{PGB_POOL}}}": "0x40",
    }
    names = ("PoolwatchPgBouncerClientsWaiting", "PoolwatchPgBouncerPoolExhausted",
             "PoolwatchPgBouncerMaxWaitHigh")  # fmt: skip
    checks = [{"eval_time": "30m", "alertname": name, "exp_alerts": []} for name in names]
    _promtool_test(promtool, tmp_path / "test.yaml", series, checks)


def test_pgbouncer_pool_is_not_exhausted_while_a_server_connection_is_idle(
    promtool: str, tmp_path: Path
) -> None:
    """Clients wait, but one server connection is idle: only the waiting alert fires."""
    series = {
        **PGB_EXHAUSTED,
        f'poolwatch_pgbouncer_servers{{{PGB_POOL}, state="idle"}}': "1x40",
    }
    checks = [
        {"eval_time": "30m", "alertname": "PoolwatchPgBouncerPoolExhausted", "exp_alerts": []},
    ]
    _promtool_test(promtool, tmp_path / "test.yaml", series, checks)
    fired = _expected(CASES_BY_NAME["PoolwatchPgBouncerClientsWaiting"], 30)
    checks = [{"eval_time": "30m", "alertname": "PoolwatchPgBouncerClientsWaiting",
               "exp_alerts": fired}]  # fmt: skip
    _promtool_test(promtool, tmp_path / "test2.yaml", series, checks)


CASES_BY_NAME = {case.name: case for case in CASES}
CLIENT_CONNECTIONS = "PoolwatchPgBouncerClientConnectionsNearLimit"


def test_pgbouncer_client_connections_alert_needs_max_client_conn() -> None:
    """Without pgbouncer_max_client_conn the alert is left out; with it, it divides by it."""
    unset = {d.name for d in alerts.definitions(config.MonitoringConfig())}
    assert CLIENT_CONNECTIONS not in unset
    made = alerts.rules(config.MonitoringConfig(pgbouncer_max_client_conn=200))
    exprs = {r.severity: r.expr for r in made if r.definition.name == CLIENT_CONNECTIONS}
    used = 'max by (job, instance) (poolwatch_pgbouncer_list_items{job="pgbouncer", ' \
        'list="used_clients"}) / 200'  # fmt: skip
    assert exprs == {"warning": f"{used} > 0.8", "critical": f"{used} > 0.95"}


def test_pgbouncer_client_connections_fires_at_its_for_boundary(
    promtool: str, tmp_path: Path
) -> None:
    """196 of max_client_conn 200 clients: warning (80%) and critical (95%) after 5m, not 4m."""
    settings = config.MonitoringConfig(pgbouncer_max_client_conn=200)
    rules = tmp_path / "rules.yaml"
    rules.write_text(generate.to_yaml(alerts.prometheus_rule_groups(settings)))
    series = {
        f'poolwatch_pgbouncer_list_items{{{PGB}, list="used_clients"}}': "196x40",
        f'poolwatch_pgbouncer_list_items{{{PGB}, list="used_servers"}}': "20x40",
    }
    description = (
        "PgBouncer bouncer:6432 holds 98% of its max_client_conn (200) client connections "
        "(threshold {}). Beyond it, new clients are refused."
    )
    fired = [
        {
            "exp_labels": {"job": "pgbouncer", "instance": "bouncer:6432",
                           "poolwatch_alert": CLIENT_CONNECTIONS, "severity": severity},
            "exp_annotations": {
                "summary": "PgBouncer bouncer:6432 is running out of client connections.",
                "description": description.format(threshold),
                "runbook_url": RUNBOOKS + CLIENT_CONNECTIONS + ".md",
            },
        }
        for severity, threshold in (("warning", "80%"), ("critical", "95%"))
    ]  # fmt: skip
    checks = [
        {"eval_time": "4m", "alertname": CLIENT_CONNECTIONS, "exp_alerts": []},
        {"eval_time": "5m", "alertname": CLIENT_CONNECTIONS, "exp_alerts": fired},
    ]
    _promtool_test(promtool, tmp_path / "test.yaml", series, checks, rules)
