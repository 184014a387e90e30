"""The shipped rules judge fleets, not instants: generated series for many processes, promtool.

Each scenario is a fleet of simulated processes (tests/support/fleet.py) fed to
``promtool test rules`` with ``alerts/poolwatch-rules.yaml`` as shipped (recording rules and
alerts, ``for:`` honoured), checking the exact set of firing alerts at the given minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fleet
from tests.support.fleet import Process, Scenario, pool_alert, process_alert

MINUTES = 91
SIZE = 60


def _run(promtool: str, tmp_path: Path, *scenarios: Scenario) -> None:
    fleet.run_promtool(promtool, fleet.test_document(scenarios), tmp_path / "fleet.test.yaml")


@pytest.mark.parametrize("load", [0.4, 0.5])
def test_a_healthy_fleet_fires_nothing(promtool: str, tmp_path: Path, load: float) -> None:
    """60 processes at 40% or 50% load for 90 minutes: no alert fires at any minute."""
    processes = fleet.fleet("shop", SIZE, fleet.healthy(load))
    _run(promtool, tmp_path, Scenario("healthy", processes, MINUTES, fleet.quiet(range(MINUTES))))


def test_one_saturated_process_is_named(promtool: str, tmp_path: Path) -> None:
    """One full process among 60 fires the per-process alerts naming it, and nothing else."""
    bad = "shop-17"
    processes = fleet.fleet(
        "shop", SIZE, fleet.healthy(0.4), **{bad: fleet.saturated_from(30, 0.4)}
    )
    named = next(p for p in processes if p.instance == bad)
    expected = {
        process_alert("PoolwatchPoolSaturation", "warning", named),
        process_alert("PoolwatchPoolSaturation", "critical", named),
        process_alert("PoolwatchCheckoutWaitHigh", "warning", named),
        process_alert("PoolwatchCheckoutWaitHigh", "critical", named),
        process_alert("PoolwatchPendingRequests", "warning", named),
        process_alert("PoolwatchPoolExhaustionForecast", "warning", named),
    }
    checks = {**fleet.quiet(range(30)), 85: expected}
    _run(promtool, tmp_path, Scenario("saturated", processes, MINUTES, checks))


def test_a_slow_leak_on_a_few_processes_fires_the_leak_alert(promtool: str, tmp_path: Path) -> None:
    """Three processes leaking one connection every 25 minutes from minute 20: each is named."""
    leaking = {f"shop-{n}": fleet.leaking_from(20, 0.2, every=25) for n in (3, 30, 59)}
    processes = fleet.fleet("shop", SIZE, fleet.healthy(0.4), **leaking)
    named = [p for p in processes if p.instance in leaking]
    expected = {process_alert("PoolwatchConnectionsLeaked", "warning", p) for p in named}
    checks = {**fleet.quiet(range(25)), 25: expected, 85: expected}
    _run(promtool, tmp_path, Scenario("leak", processes, MINUTES, checks))


def test_a_rolling_restart_fires_nothing(promtool: str, tmp_path: Path) -> None:
    """Every process replaced by a new instance, three a minute from minute 40: all quiet."""
    processes = []
    for n in range(SIZE):
        swap = 40 + n // 3
        processes.append(Process("shop", f"shop-{n}", fleet.healthy(0.5), end=swap))
        processes.append(Process("shop", f"shop-{n}-b", fleet.healthy(0.5), start=swap))
    _run(promtool, tmp_path, Scenario("restart", processes, MINUTES, fleet.quiet(range(MINUTES))))


def test_a_process_that_dies_is_noticed(promtool: str, tmp_path: Path) -> None:
    """One of 60 processes stops at minute 40 (last sample 39, stale after 41): the pool fires
    TelemetryMissing once that has lasted its 10m ``for:``, and nothing lingers for the dead one."""
    processes = [
        Process("shop", f"shop-{n}", fleet.healthy(0.5), end=40 if n == 7 else None)
        for n in range(SIZE)
    ]
    missing = {pool_alert("PoolwatchTelemetryMissing", "warning", "shop")}
    checks = {**fleet.quiet(range(52)), 52: missing, 60: missing}
    _run(promtool, tmp_path, Scenario("dies", processes, MINUTES, checks))


def test_an_exited_process_stops_alerting_once_its_values_are_stale(
    promtool: str, tmp_path: Path
) -> None:
    """A saturated process exits at minute 50 (last sample 49, as remote write leaves it: no
    staleness marker): its alerts end at 52, when its values leave the 2m freshness window,
    and its pool is reported one process short from 62."""
    processes = fleet.fleet("shop", SIZE, fleet.healthy(0.4))
    bad = Process("shop", "shop-bad", fleet.saturated_from(20, 0.4), end=50)
    expected = {
        process_alert("PoolwatchPoolSaturation", "warning", bad),
        process_alert("PoolwatchPoolSaturation", "critical", bad),
        process_alert("PoolwatchCheckoutWaitHigh", "warning", bad),
        process_alert("PoolwatchCheckoutWaitHigh", "critical", bad),
        process_alert("PoolwatchPendingRequests", "warning", bad),
    }
    missing = {pool_alert("PoolwatchTelemetryMissing", "warning", "shop")}
    checks = {45: expected, 51: expected, **fleet.quiet(range(52, 62)), 62: missing}
    _run(promtool, tmp_path, Scenario("exits", [*processes, bad], MINUTES, checks))


def test_a_job_that_stops_is_noticed(promtool: str, tmp_path: Path) -> None:
    """Every process of the service stops at minute 40: its pool is reported missing at 52."""
    processes = [Process("shop", f"shop-{n}", fleet.healthy(0.5), end=40) for n in range(SIZE)]
    missing = {pool_alert("PoolwatchTelemetryMissing", "warning", "shop")}
    checks = {**fleet.quiet(range(52)), 52: missing, 70: missing}
    _run(promtool, tmp_path, Scenario("stops", processes, MINUTES, checks))


def test_per_pool_recordings_survive_restarts_and_counter_resets(
    promtool: str, tmp_path: Path
) -> None:
    """The job_pool:* recordings kept for long-term storage take each process's rate before
    summing: a process replaced by a new instance and one whose counters reset in place both
    keep counting 10 checkouts/s (also across the reset), so the pool's recorded rate is 20/s."""
    replaced = [
        Process("shop", "shop-a", fleet.healthy(0.5), end=30),
        Process("shop", "shop-a2", fleet.healthy(0.5), start=30),
    ]
    data = fleet.series([*replaced, Process("shop", "shop-b", fleet.healthy(0.5))], 41)
    for selector, values in data.items():
        counter = "_total{" in selector or "_count{" in selector or "_bucket{" in selector
        if counter and 'instance="shop-b"' in selector:
            # shop-b restarts in place between minutes 29 and 30: its counters start again
            at_restart = int(values[29])
            values[30:] = [str(int(v) - at_restart) for v in values[30:]]
    pool = 'job="shop", db_client_connection_pool_name="main"'
    b = 'job="shop", instance="shop-b", db_client_connection_pool_name="main"'
    checks = [
        {"expr": f"job_instance_pool:poolwatch_checkouts:rate{{{b}}}", "eval_time": "32m",
         "exp_samples": [{"labels": f"job_instance_pool:poolwatch_checkouts:rate{{{b}}}",
                          "value": 10}]},
        {"expr": f"job_pool:poolwatch_checkouts:rate{{{pool}}}", "eval_time": "40m",
         "exp_samples": [{"labels": f"job_pool:poolwatch_checkouts:rate{{{pool}}}", "value": 20}]},
        {"expr": f'job_pool_le:poolwatch_wait_seconds_bucket:rate{{{pool}, le="+Inf"}}',
         "eval_time": "40m",
         "exp_samples": [{"labels": "job_pool_le:poolwatch_wait_seconds_bucket:rate"
                          f'{{{pool}, le="+Inf"}}', "value": 20}]},
    ]  # fmt: skip
    document = {
        "rule_files": [str(fleet.RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": " ".join(v)} for k, v in data.items()],
                "promql_expr_test": checks,
            }
        ],
    }
    fleet.run_promtool(promtool, document, tmp_path / "long-term.test.yaml")
