"""What one metric collection costs with N pools after M checkouts each, per histogram mode.

Run: ``python benchmarks/collection.py [--pools N] [--checkouts M] [--rounds R]``. Each mode gets
its own process: N SQLAlchemy engines (SQLite, QueuePool) instrumented with one in-memory reader;
every round makes M checkout+checkin cycles on each engine, then times ``reader.collect()``
(which folds the buffered waits into the buckets and builds every point). ``otlp`` with explicit
and with exponential buckets and ``standard`` (the SDK's own histograms, fed per checkout) are
compared; the checkout cycles are timed too, so what a mode moves from checkouts to collection
shows. Figures are medians over the rounds, in CPU time of the process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import _docs

MODES = {
    "otlp explicit": {"histograms": "otlp", "histogram_aggregation": "explicit"},
    "otlp exponential": {"histograms": "otlp", "histogram_aggregation": "exponential"},
    "standard (record per checkout)": {"histograms": "standard"},
}


def child(settings: dict[str, str], pools: int, checkouts: int, rounds: int) -> dict[str, float]:
    """Run one mode in this process; medians of (collection ms, checkout cycles µs each)."""
    import sqlalchemy as sa
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import poolwatch

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    engines = [sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool) for _ in range(pools)]
    for index, engine in enumerate(engines):
        poolwatch.instrument_sqlalchemy(
            engine, pool_name=f"pool-{index}", meter_provider=provider, **settings
        )
    collect_ms, cycle_us = [], []
    for _ in range(rounds + 1):
        started = time.process_time()
        for engine in engines:
            for _ in range(checkouts):
                engine.connect().close()
        cycle_us.append((time.process_time() - started) / (pools * checkouts) * 1e6)
        started = time.process_time()
        reader.collect()
        collect_ms.append((time.process_time() - started) * 1e3)
    # the first round creates the connections and the SDK's streams
    return {
        "collect_ms": statistics.median(collect_ms[1:]),
        "cycle_us": statistics.median(cycle_us[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--checkouts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _docs.add_flag(parser)
    args = parser.parse_args()
    if args.child:
        result = child(json.loads(args.child), args.pools, args.checkouts, args.rounds)
        print(json.dumps(result))
        return
    print(f"{args.pools} pools, {args.checkouts} checkouts per pool between collections")
    print(f"{'mode':34} {'collect (ms)':>13} {'per pool (µs)':>14} {'checkout+checkin (µs)':>22}")
    rows = [
        "| mode | one collection | per pool | checkout+checkin |",
        "| --- | ---: | ---: | ---: |",
    ]
    for title, settings in MODES.items():
        output = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(settings),
             "--pools", str(args.pools), "--checkouts", str(args.checkouts),
             "--rounds", str(args.rounds)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        result = json.loads(output.strip().splitlines()[-1])
        per_pool = result["collect_ms"] * 1e3 / args.pools
        print(
            f"{title:34} {result['collect_ms']:13.2f} {per_pool:14.0f} {result['cycle_us']:22.2f}"
        )
        rows.append(
            f"| {title} | {result['collect_ms']:.2f} ms | {per_pool:.0f} us "
            f"| {result['cycle_us']:.2f} us |"
        )
    if args.write_docs:
        _docs.write("collection", "\n".join(rows))


if __name__ == "__main__":
    main()
