"""1,000 processes: backfilled into a real Prometheus, the shipped rules evaluated over them.

``promtool test rules`` cannot load a 1,000-process histogram (it stops queries at 10,000
samples), so these fleets go through tests/support/backfill.py: blocks from generated series,
the shipped recording rules backfilled by ``promtool tsdb create-blocks-from rules``, every
shipped alert expression evaluated at each minute with its ``for:``. The first test checks that
evaluator against promtool on a fleet promtool can take.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import backfill, fleet, pipeline
from tests.support.fleet import Firing, Process, Scenario, process_alert

BIG = 1000
#: Long enough for the exhaustion forecast to have its 45 minutes of history.
BIG_MINUTES = 61
ONSET = 20


def _timeline(processes: list[Process], minutes: int, directory: Path) -> dict[int, set[Firing]]:
    """Backfill the fleet, evaluate the shipped alerts at every minute, stop Prometheus."""
    directory.mkdir(parents=True, exist_ok=True)
    series = fleet.series(processes, minutes)
    with (
        pipeline.running_processes(directory) as running,
        backfill.serve(
            series,
            minutes=minutes,
            directory=directory,
            processes=running,
            rules=fleet.RULES,
            now=int(time.time()),
        ) as server,
    ):
        return backfill.firing(server, fleet.RULES)


def test_the_evaluator_agrees_with_promtool(promtool: str, tmp_path: Path) -> None:
    """On 20 processes (one saturating, one leaking, one dying) the backfill evaluator's alert
    timeline, minute by minute, is exactly what promtool test rules finds."""
    processes = fleet.fleet(
        "shop", 20, fleet.healthy(0.5),
        **{"shop-3": fleet.saturated_from(15, 0.5), "shop-9": fleet.leaking_from(10, 0.3, 20)},
    )  # fmt: skip
    processes.append(Process("shop", "shop-dies", fleet.healthy(0.5), end=30))
    minutes = 61
    timeline = _timeline(processes, minutes, tmp_path / "backfill")
    names = {f.alertname for fs in timeline.values() for f in fs}
    assert {"PoolwatchPoolSaturation", "PoolwatchConnectionsLeaked",
            "PoolwatchTelemetryMissing"} <= names, backfill.dump(timeline)  # fmt: skip

    document = fleet.test_document([Scenario("agree", processes, minutes, timeline)])
    fleet.run_promtool(promtool, document, tmp_path / "agree.test.yaml")


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> dict[int, set[Firing]]:
    """Two services of 1,000 processes each at 50% load; in ``bad`` one goes bad at minute 20."""
    healthy = fleet.fleet("quiet", BIG, fleet.healthy(0.5))
    bad = fleet.fleet(
        "bad", BIG, fleet.healthy(0.5), **{"bad-613": fleet.saturated_from(ONSET, 0.5)}
    )
    return _timeline(healthy + bad, BIG_MINUTES, tmp_path_factory.mktemp("thousand"))


def _of(timeline: dict[int, set[Firing]], job: str) -> dict[int, set[Firing]]:
    return {m: {f for f in fs if ("job", job) in f.labels} for m, fs in timeline.items()}


@pytest.mark.slow
def test_a_healthy_thousand_process_fleet_fires_nothing(
    thousand: dict[int, set[Firing]],
) -> None:
    """1,000 healthy processes at 50% load for an hour: no alert fires at any minute."""
    assert _of(thousand, "quiet") == fleet.quiet(range(BIG_MINUTES))


@pytest.mark.slow
def test_one_bad_process_among_a_thousand_is_caught_and_named(
    thousand: dict[int, set[Firing]],
) -> None:
    """The bad process's critical wait alert (for: 5m) fires by its for: plus two evaluation
    intervals, naming it; no other process of the 1,000 ever alerts."""
    timeline = _of(thousand, "bad")
    named = Process("bad", "bad-613", fleet.healthy(0.5))
    caught = process_alert("PoolwatchCheckoutWaitHigh", "critical", named)
    assert all(not timeline[m] for m in range(ONSET)), backfill.dump(timeline)
    assert caught in timeline[ONSET + 5 + 2], backfill.dump(timeline)
    others = {f for fs in timeline.values() for f in fs if ("instance", "bad-613") not in f.labels}
    assert others == set(), backfill.dump(timeline)
