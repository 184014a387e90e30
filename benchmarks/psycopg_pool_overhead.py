"""Whole-process CPU per psycopg_pool getconn+putconn cycle: bare and with poolwatch, in one run.

Run: ``python benchmarks/psycopg_pool_overhead.py [--dsn CONNINFO] [--cycles N] [--rounds R]``.
Without ``--dsn`` a throwaway PostgreSQL is started (as the tests do). Every variant runs in each
round on its own one-connection pool; a round ends with a metric collection so its cost is
counted. CPU time is ``time.process_time()`` (all threads, the pool's workers included). Each
variant's ratio is taken against the bare cycle of the same round; the table gives the median
microseconds, the median ratio and its range over the rounds, and the ratio of the best rounds
(other load only adds time, so the best rounds are the least disturbed).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import _docs
from _postgres import throwaway_postgres
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from psycopg_pool import ConnectionPool

import poolwatch

Setup = Callable[[ConnectionPool, dict[str, Any]], None]


def _nothing(*_args: Any) -> None:
    return None


def _poolwatch(**settings: Any) -> Setup:
    def setup(pool: ConnectionPool, providers: dict[str, Any]) -> None:
        poolwatch.instrument_psycopg_pool(pool, **settings, **providers)

    return setup


VARIANTS: tuple[tuple[str, Setup], ...] = (
    ("bare", _nothing),
    ("poolwatch", _poolwatch()),
    ("poolwatch capture_stacks", _poolwatch(capture_stacks=True)),
    ("poolwatch standard histograms", _poolwatch(histograms="standard")),
)


def measure(setup: Setup, dsn: str, cycles: int) -> float:
    """CPU microseconds per getconn+putconn cycle for one variant, collection included."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    pool: ConnectionPool = ConnectionPool(dsn, min_size=1, max_size=1, open=False)
    setup(pool, {"meter_provider": meter_provider})
    pool.open(wait=True)
    try:
        getconn, putconn = pool.getconn, pool.putconn
        start = time.process_time()
        for _ in range(cycles):
            putconn(getconn())
        reader.collect()
        spent = time.process_time() - start
    finally:
        poolwatch.uninstrument_psycopg_pool(pool)
        pool.close()
        meter_provider.shutdown()
    return spent / cycles * 1e6


def run(dsn: str, cycles: int, rounds: int) -> dict[str, list[float]]:
    """CPU microseconds per cycle for each variant, one value per round."""
    results: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    for _ in range(rounds):
        for name, setup in VARIANTS:
            results[name].append(measure(setup, dsn, cycles))
    return results


def report(results: dict[str, list[float]]) -> str:
    """Print the table and return it in markdown: each ratio is taken within its round."""
    bare = results["bare"]
    rows = ["| getconn + putconn | us/cycle | x bare: median | range | best x |"]
    rows.append("| --- | ---: | ---: | ---: | ---: |")
    print(f"\n{'getconn + putconn':34} {'us/cycle':>9} {'x bare':>7} {'range':>11} {'best x':>7}")
    for name, values in results.items():
        ratios = sorted(value / before for value, before in zip(values, bare, strict=True))
        median, best = statistics.median(values), min(values) / min(bare)
        ratio = statistics.median(ratios)
        print(
            f"{name:34} {median:9.2f} {ratio:7.2f} {ratios[0]:5.2f}-{ratios[-1]:<5.2f} {best:7.2f}"
        )
        rows.append(
            f"| {name} | {median:.2f} | {ratio:.2f} | {ratios[0]:.2f} to {ratios[-1]:.2f} "
            f"| {best:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="libpq conninfo; default: start a throwaway server")
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    _docs.add_flag(parser)
    args = parser.parse_args()
    if args.write_docs and args.dsn:
        # the page names the exact command: no conninfo of this machine (or its password) in it
        parser.error("--write-docs measures on the throwaway server: leave out --dsn")
    with contextlib.ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(throwaway_postgres()).dsn
        table = report(run(dsn, args.cycles, args.rounds))
    if args.write_docs:
        _docs.write("psycopg_pool_overhead", table)


if __name__ == "__main__":
    main()
