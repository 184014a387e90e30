"""``poolwatch doctor`` reading a real Prometheus that holds known pool series (backfilled).

Two services: ``shop`` runs pool ``orders`` in two processes (max 10 each), ``batch`` runs pool
``reports`` in one (max 5). Counters grow at exact rates, so Little's law has an exact answer:

- orders: 6 + 4 = 10 checkouts/s, holding connections 6 x 0.3 + 4 x 0.2 = 2.6 s per second,
  so 2.6 connections busy on average (3 needed) out of 20;
- reports: 20 checkouts/s x 0.3 s = 6 connections busy, more than its max of 5.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwatch import catalog
from poolwatch.doctor import EXIT_PROBLEMS
from poolwatch.monitoring.names import prometheus_label, prometheus_name, prometheus_series
from tests.doctor.conftest import doctor
from tests.support import pipeline
from tests.support.fixtures import needed
from tests.support.postgres import PostgresCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STEP = 15  # seconds between samples
HISTORY = 3600  # seconds of samples, ending at the evaluation time
POOL = prometheus_label(catalog.POOL_NAME)
STATE = prometheus_label(catalog.STATE)
LE = prometheus_label(catalog.LE)
#: The standard histograms as Prometheus receives them from the collector.
WAIT_BUCKET, WAIT_COUNT, WAIT_SUM = prometheus_series(catalog.CONNECTION_WAIT_TIME)
USE_BUCKET, USE_COUNT, USE_SUM = prometheus_series(catalog.CONNECTION_USE_TIME)

#: (service, instance, pool, max, checkouts/s, mean wait s, mean use s, used normally, at peak)
PROCESSES = (
    ("shop", "web-1", "orders", 10, 6.0, 0.01, 0.3, 4, 9),
    ("shop", "web-2", "orders", 10, 4.0, 0.02, 0.2, 3, 5),
    ("batch", "worker-1", "reports", 5, 20.0, 0.05, 0.3, 5, 5),
)


def openmetrics(end: int) -> str:
    """Every series, one sample per STEP over HISTORY seconds ending at ``end``."""
    times = range(end - HISTORY, end + 1, STEP)
    families: dict[str, list[str]] = {}

    def add(metric: catalog.Metric | str, labels: dict[str, str], value_at: object) -> None:
        name = metric if isinstance(metric, str) else prometheus_name(metric)
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        families.setdefault(name, []).extend(
            f"{name}{{{text}}} {value_at(t)} {t}"
            for t in times  # type: ignore[operator]
        )

    for service, instance, pool, limit, rate, wait, use, normal, peak in PROCESSES:
        base = {"job": service, "instance": instance, POOL: pool}
        start = end - HISTORY

        def grown(per_second: float, start: int = start) -> object:
            return lambda t: round(1000 + per_second * (t - start), 6)

        add(catalog.CONNECTION_MAX, base, lambda t, limit=limit: limit)
        add(catalog.CONNECTION_COUNT, base | {STATE: catalog.STATE_USED},
            lambda t, n=normal, p=peak: p if end - 1260 <= t <= end - 1080 else n)  # fmt: skip
        add(WAIT_BUCKET, base | {LE: "+Inf"}, grown(rate))
        add(WAIT_COUNT, base, grown(rate))
        add(WAIT_SUM, base, grown(rate * wait))
        add(USE_BUCKET, base | {LE: "+Inf"}, grown(rate))
        add(USE_COUNT, base, grown(rate))
        add(USE_SUM, base, grown(rate * use))
        add(catalog.CONNECTION_TIMEOUTS, base, lambda t: 0)
    lines = []
    for name, samples in families.items():
        lines += [f"# TYPE {name} gauge", *samples]
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """Debian's Prometheus over a TSDB backfilled with promtool; yields (URL, evaluation time)."""
    try:
        server, promtool = pipeline.find_tool(*pipeline.PROMETHEUS), pipeline.find_tool("promtool")
    except pipeline.ToolMissing as missing:
        needed(str(missing))
    end = int(time.time()) // STEP * STEP
    source = tmp_path / "series.om"
    source.write_text(openmetrics(end))
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source),
                    str(tmp_path / "tsdb")], check=True, capture_output=True, timeout=300)  # fmt: skip
    (tmp_path / "prometheus.yml").write_text("global:\n  evaluation_interval: 1m\n")
    address = pipeline.loopback(pipeline.free_port())
    url = f"http://{address}"
    with pipeline.running_processes(tmp_path) as processes:
        processes.start("prometheus", [server, f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address={address}"])  # fmt: skip
        pipeline.wait_for("Prometheus", lambda: pipeline.http_ok(f"{url}/-/ready"), processes, 120)
        yield url, end


def test_littles_law_and_observed_pools_from_prometheus(
    doctor_postgres: PostgresCluster, prometheus: tuple[str, int]
) -> None:
    """Exact checkout rates, mean waits and hold times, peaks, and the connections the load needs."""
    url, end = prometheus
    found = doctor("--database-url", doctor_postgres.url, "--prometheus-url", url,
                   "--window", "30m", "--at", str(end))  # fmt: skip
    assert found.report is not None, found.output
    pools = {(p["service"], p["pool"]): p for p in found.report["pools"]}
    assert set(pools) == {("shop", "orders"), ("batch", "reports")}
    orders, reports = pools["shop", "orders"], pools["batch", "reports"]
    assert (orders["processes"], orders["max"], orders["peak_used"]) == (2, 20, 14)
    assert orders["checkouts_per_second"] == pytest.approx(10.0, rel=1e-9)
    assert orders["mean_use"] == pytest.approx(0.26, rel=1e-9)
    assert orders["mean_wait"] == pytest.approx(0.014, rel=1e-9)
    assert orders["littles_law"] == pytest.approx(2.6, rel=1e-9)
    assert orders["needed"] == 3
    assert reports["littles_law"] == pytest.approx(6.0, rel=1e-9)
    assert (reports["needed"], reports["max"]) == (6, 5)
    # no pool flags: the possible total is the observed max of every process
    assert found.report["capacity"]["possible"] == 25
    assert found.report["capacity"]["source"] == "prometheus"
    assert found.status == EXIT_PROBLEMS
    assert found.codes("problem") == ["capacity.exceeds_server", "pool.undersized"]
    (undersized,) = [f for f in found.report["findings"] if f["code"] == "pool.undersized"]
    assert undersized["message"].startswith("pool reports of batch: the load keeps 6.00")
    assert "pool.reached_max" in found.codes("warning")  # reports ran at 5 of 5


def test_an_unreachable_prometheus_cannot_be_checked(doctor_postgres: PostgresCluster) -> None:
    """A Prometheus URL that does not answer: exit 3, naming it."""
    nobody = f"http://{pipeline.loopback(pipeline.free_port())}"
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "1", "--max-overflow",
                   "0", "--prometheus-url", nobody, "--timeout", "2")  # fmt: skip
    assert found.status == 3, found.output
    assert "prometheus.unreachable" in found.codes("unchecked")
