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

from poolwatch.monitoring import alerts, config
from poolwatch.monitoring.generate import PROMETHEUS_RULES
from tests.monitoring.conftest import REPO

RULES = REPO / PROMETHEUS_RULES
RUNBOOKS = "alerts/runbooks/"

SHOP = 'job="shop", instance="web-1"'
POOL = SHOP + ', db_client_connection_pool_name="main"'
PG = 'job="postgresql", instance="db:5432"'


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

CASES = [
    Case(
        "PoolwatchPoolSaturation",
        {
            f'db_client_connection_count{{{POOL}, db_client_connection_state="used"}}': "10x40",
            f'db_client_connection_count{{{POOL}, db_client_connection_state="idle"}}': "0x40",
            f"db_client_connection_max{{{POOL}}}": "10x40",
        },
        0,
        POOL_LABELS,
        "Connection pool main of shop is nearly full.",
        "The fullest process of pool main in shop has 100% of its connections checked out "
        "(threshold {threshold}). Once it is full, callers wait and then time out.",
        {"warning": "80%", "critical": "95%"},
    ),
    Case(
        "PoolwatchCheckoutTimeouts",
        # A jump to 10 timeouts/s: rate() over 5m crosses both thresholds at once, then climbs.
        {f"db_client_connection_timeouts_total{{{POOL}}}": "0+600x40"},
        1,
        POOL_LABELS,
        "Checkouts from pool main of shop are timing out.",
        "Pool main in shop refuses {value} checkouts per second after waiting the full pool "
        "timeout (threshold {threshold}, over 5m). Each is a failed request.",
        {"warning": "0/s", "critical": "0.5/s"},
        values_at={1: "2", 2: "4", 5: "10", 6: "10"},
    ),
    Case(
        "PoolwatchCheckoutWaitHigh",
        {
            f'poolwatch_connection_wait_time_bucket_total{{{POOL}, le="2.5"}}': "0x40",
            f'poolwatch_connection_wait_time_bucket_total{{{POOL}, le="5.0"}}': "0+60x40",
            f'poolwatch_connection_wait_time_bucket_total{{{POOL}, le="+Inf"}}': "0+60x40",
        },
        1,
        POOL_LABELS,
        "Checkouts from pool main of shop wait long for a connection.",
        "The 99th percentile wait for a connection from pool main in shop is 4.975s "
        "(threshold {threshold}, over 5m).",
        {"warning": "250ms", "critical": "2s"},
    ),
    Case(
        "PoolwatchPendingRequests",
        {f"db_client_connection_pending_requests{{{POOL}}}": "8x40"},
        0,
        POOL_LABELS,
        "Callers queue for connections from pool main of shop.",
        "8 callers are waiting for a connection from pool main in shop (threshold {threshold}); "
        "the pool has had a queue for the whole alert period.",
        {"warning": "0", "critical": "5"},
    ),
    Case(
        "PoolwatchPoolExhaustionForecast",
        {
            f'db_client_connection_count{{{POOL}, db_client_connection_state="used"}}': "50+1x40",
            f"db_client_connection_max{{{POOL}}}": "100x40",
        },
        1,
        POOL_LABELS,
        "Connection pool main of shop will be full within 1h.",
        "At the trend of the last 1h, pool main in shop reaches 126% saturation 1h from now "
        "(threshold {threshold}).",
        {"warning": "100%"},
    ),
    Case(
        "PoolwatchConnectionsLeaked",
        {f"poolwatch_connection_leaked{{{POOL}}}": "7x40"},
        0,
        POOL_LABELS,
        "Connections of pool main of shop are held past the leak threshold.",
        "7 connections of pool main in shop have been checked out longer than the leak "
        "threshold (threshold {threshold}). The poolwatch.connection.leak events name the code "
        "that borrowed them.",
        {"warning": "0", "critical": "5"},
    ),
    Case(
        "PoolwatchConnectionsNeverReturned",
        {f"poolwatch_connection_never_returned_total{{{POOL}}}": "0+1x40"},
        1,
        POOL_LABELS,
        "Connections of pool main of shop were garbage-collected, never returned.",
        "2 connections of pool main in shop were dropped while checked out in the last 5m "
        "(threshold {threshold}): code opened them and never closed them.",
        {"warning": "0"},
    ),
    Case(
        "PoolwatchSessionConflicts",
        {
            f"poolwatch_session_conflicts_total{{{SHOP}, "
            'poolwatch_conflict_kind="already_attached"}': "0+60x40"
        },
        1,
        {"job": "shop", "poolwatch_conflict_kind": "already_attached"},
        "shop sees already_attached session conflicts.",
        "shop raises 1 already_attached conflicts per second (threshold {threshold}, over 5m). "
        "After pool timeouts this is often an error handler reusing an object of another "
        "session.",
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
        {"job": "shop", "poolwatch_django_alias": "default"},
        "Django connections of shop outlive their requests.",
        "12 connections of database alias default in shop are orphaned: their request or "
        "thread ended without closing them (threshold {threshold}).",
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
        "PoolwatchTelemetryMissing",
        {
            f'db_client_connection_count{{{POOL}, db_client_connection_state="used"}}': "1x20",
            'db_client_connection_count{job="other", instance="w", '
            'db_client_connection_pool_name="p", db_client_connection_state="used"}': "1x60",
        },
        # Last sample at 20m; the 10m window still holds it at 30m (ranges are closed).
        31,
        {"job": "shop"},
        "No connection-pool metrics from shop.",
        "No poolwatch pool metrics from shop arrived for 10m. Either the service is down, "
        "poolwatch is not instrumenting it, or the collector pipeline drops them; every other "
        "poolwatch alert is blind meanwhile.",
        {"warning": ""},
    ),
    Case(
        "PoolwatchInternalErrors",
        {f'poolwatch_internal_errors_total{{{SHOP}, poolwatch_hook="checkout"}}': "0+1x40"},
        1,
        {"job": "shop"},
        "poolwatch hit internal errors in shop.",
        "poolwatch caught 5 errors in its own hooks in shop over 5m (threshold {threshold}). "
        "The application is unaffected, but pool metrics may be incomplete; the log names the "
        "hook once per error type.",
        {"warning": "0"},
    ),
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
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=4096))
    return path


def test_rule_file_passes_promtool_check(promtool: str) -> None:
    """promtool accepts the committed rule file."""
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 21 rules found" in result.stdout


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
        "No connection-pool metrics.",
        "No poolwatch pool metrics arrived for 10m. Either the service is down, poolwatch is "
        "not instrumenting it, or the collector pipeline drops them; every other poolwatch "
        "alert is blind meanwhile.",
        {"warning": ""},
    )
    test_file = _test_file(case, tmp_path / "test.yaml")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
