"""Samples each dashboard panel touches over 2 hours, with and without the recording rules.

Run: ``python benchmarks/panel_samples.py [--processes 30 60] [--hours 2] [--write-docs]``.
Needs Debian's Prometheus and promtool. For each fleet size, generated series of that many healthy processes
(one pool each, every bucket of the wait histogram, a sample every 15 s) are backfilled into a
Prometheus on 127.0.0.1 together with the shipped recording rules (tests/support/backfill.py);
then every Prometheus query of the *Connection pools* dashboard runs as a 2-hour range query
(step 30 s, ``$__rate_interval`` = 1m, every variable = All; stat and table panels as one
instant query at its end) with ``stats=all``, once as
generated (reading the recordings) and once with ``recording_rules: false`` (the same
questions asked of the raw series). ``totalQueryableSamples`` is reported per panel; a straight
line through the fleet sizes extrapolates it to 1,000 processes. Queries that read none of the
generated series (PgBouncer, hold and create times, ...) are named under the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The harness lives with the tests; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _docs

from poolwatch.monitoring import config, dashboards
from tests.support import backfill, fleet, pipeline

SCRAPE = 15
STEP = 30
VARIABLES = {
    "$__rate_interval": "1m",
    "$service": ".*",
    "$pool": ".*",
    "$instance": ".*",
}
TARGET = 1000


def panel_queries(settings: config.MonitoringConfig) -> dict[str, tuple[str, bool]]:
    """``panel title / ref`` -> (PromQL, instant?) of every Prometheus target of the pools
    dashboard."""
    board = dashboards.dashboards(settings)[0]
    found = {}
    for panel in dashboards._panels(board.model["panels"]):
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            found[f"{panel['title']} / {target['refId']}"] = (expr, bool(target.get("instant")))
    return found


def measure(size: int, hours: float, directory: Path) -> dict[str, tuple[int, int]]:
    """Panel -> (samples with recordings, samples without) for a fleet of ``size`` processes."""
    ticks = int(hours * 3600 / SCRAPE) + 1
    processes = fleet.fleet("shop", size, fleet.healthy(0.5))
    series = fleet.series(processes, ticks, bounds=fleet.ALL_BOUNDS)
    recorded = panel_queries(config.MonitoringConfig())
    raw = panel_queries(config.MonitoringConfig(recording_rules=False))
    directory.mkdir(parents=True)
    with (
        pipeline.running_processes(directory) as running,
        backfill.serve(
            series, minutes=ticks, directory=directory, processes=running,
            rules=fleet.RULES, now=int(time.time()), step=SCRAPE,
        ) as server,
    ):  # fmt: skip
        # the first hour of recordings is warm-up for 1h windows; measure the last 2 hours
        end = server.end
        start = end - int(hours * 3600) + 3600 if hours > 1 else server.start
        return {
            name: (
                _samples(server, recorded[name], start, end),
                _samples(server, raw[name], start, end),
            )
            for name in recorded
        }


def _samples(server: backfill.Server, query: tuple[str, bool], start: int, end: int) -> int:
    """Samples one query touches: over the range, or at its end for an instant (stat, table)."""
    expr, instant = query
    return backfill.samples_touched(server, expr, end if instant else start, end, STEP)


def _line(sizes: list[int], values: list[int], at: int) -> float:
    if len(sizes) == 1:
        return values[0] * at / sizes[0]
    (x0, x1), (y0, y1) = (sizes[0], sizes[-1]), (values[0], values[-1])
    return y0 + (y1 - y0) * (at - x0) / (x1 - x0)


def report(sizes: list[int], results: list[dict[str, tuple[int, int]]], hours: float) -> str:
    """A markdown table: samples per panel at the largest size and extrapolated to 1,000."""
    largest = sizes[-1]
    fleets = " and ".join(f"{size:,}" for size in sizes)
    lines = [
        f"Fleets of {fleets} processes; {hours:g} h range, step {STEP} s, scrape {SCRAPE} s, "
        f"`$__rate_interval` 1m; the last three columns extrapolated to {TARGET:,} processes.",
        "",
        f"| panel / query | recorded @{largest} | raw @{largest} | raw / recorded "
        f"| recorded @{TARGET} | raw @{TARGET} | raw / recorded @{TARGET} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows: list[tuple[float, str]] = []
    empty = []
    for name in results[-1]:
        rec = [r[name][0] for r in results]
        raw = [r[name][1] for r in results]
        if not any(rec + raw):
            empty.append(name)
            continue
        rec_k, raw_k = _line(sizes, rec, TARGET), _line(sizes, raw, TARGET)
        line = (
            f"| {name} | {rec[-1]:,} | {raw[-1]:,} | {raw[-1] / max(rec[-1], 1):.1f}x "
            f"| {rec_k:,.0f} | {raw_k:,.0f} | {raw_k / max(rec_k, 1):.1f}x |"
        )
        rows.append((raw[-1], line))
    lines += [line for _, line in sorted(rows, reverse=True)]
    if empty:
        lines += ["", "No samples (the generated fleet has none of their series): "]
        lines[-1] += ", ".join(sorted(empty)) + "."
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--hours", type=float, default=2.0)
    _docs.add_flag(parser)
    args = parser.parse_args(argv)
    sizes = sorted(args.processes)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="poolwatch-panels-") as tmp:
        for size in sizes:
            # one more hour before the measured range so 1h windows are full
            results.append(measure(size, args.hours + 1, Path(tmp) / str(size)))
    table = report(sizes, results, args.hours)
    print(table)
    if args.write_docs:
        _docs.write("panel_samples", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
