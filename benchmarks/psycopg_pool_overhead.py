"""Whole-process CPU per psycopg_pool getconn+putconn cycle: bare and with poolwatch, in one run.

Run: ``python benchmarks/psycopg_pool_overhead.py [--dsn CONNINFO] [--cycles N] [--rounds R]``.
Without ``--dsn`` a throwaway PostgreSQL is started (as the tests do). Every variant runs in each
round on its own one-connection pool; a round ends with a metric collection so its cost is
counted. CPU time is ``time.process_time()`` (all threads, the pool's workers included). Figures
are medians over rounds, reported as ratios against the bare cycle measured in the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

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


def run(dsn: str, cycles: int, rounds: int) -> dict[str, float]:
    """Median CPU microseconds per cycle for each variant."""
    results: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    for _ in range(rounds):
        for name, setup in VARIANTS:
            results[name].append(measure(setup, dsn, cycles))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="libpq conninfo; default: start a throwaway server")
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(throwaway_postgres()).dsn
        medians = run(dsn, args.cycles, args.rounds)
    bare = medians["bare"]
    print(f"\n{'getconn + putconn':34} {'us/cycle':>9} {'x bare':>7}")
    for name, value in medians.items():
        print(f"{name:34} {value:9.2f} {value / bare:7.2f}")


if __name__ == "__main__":
    main()
