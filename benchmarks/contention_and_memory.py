"""Throughput under contention and memory over a million checkouts, bare against poolwatch.

Run: ``python benchmarks/contention_and_memory.py [--threads 64] [--cycles 200] [--rounds 5]
[--million 1000000]``.

* Contention: ``--threads`` threads share one QueuePool of 5 + 10 on a SQLite file; each checks
  out, holds the connection for 1 ms, and checks in, ``--cycles`` times. Throughput is checkouts
  per wall-clock second; rounds alternate bare and instrumented engines; the medians are compared,
  and so is each round's instrumented run with the bare run just before it.
* Memory: ``--million`` checkout+checkin cycles on an instrumented engine with a metric
  collection every tenth of them; the peak resident set size and the number of objects the garbage
  collector tracks are printed at each step, so growth would show as a rising column.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import _docs
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolwatch


def engine_for(url: str) -> sa.Engine:
    """The contended pool: 5 + 10 connections, a generous timeout so nothing fails."""
    return sa.create_engine(
        url, poolclass=sa.pool.QueuePool, pool_size=5, max_overflow=10, pool_timeout=60
    )


def contended_throughput(engine: sa.Engine, threads: int, cycles: int) -> float:
    """Checkouts per second with ``threads`` threads each doing ``cycles`` brief holds."""
    start_line = threading.Barrier(threads + 1)

    def worker() -> None:
        start_line.wait()
        for _ in range(cycles):
            with engine.connect():
                time.sleep(0.001)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join()
    return threads * cycles / (time.perf_counter() - began)


def contention(url: str, threads: int, cycles: int, rounds: int) -> str:
    """Print median throughput, bare and instrumented, and their ratios; return the table."""
    bare: list[float] = []
    watched: list[float] = []
    for _ in range(rounds):
        engine = engine_for(url)
        bare.append(contended_throughput(engine, threads, cycles))
        engine.dispose()
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        engine = engine_for(url)
        poolwatch.instrument_sqlalchemy(engine, pool_name="bench", meter_provider=provider)
        watched.append(contended_throughput(engine, threads, cycles))
        reader.collect()
        poolwatch.uninstrument_sqlalchemy(engine)
        engine.dispose()
        provider.shutdown()
    print(f"\ncontention: {threads} threads, pool 5+10, 1 ms holds, {rounds} rounds")
    return contention_table(bare, watched)


def contention_table(bare: list[float], watched: list[float]) -> str:
    """Print and return the throughputs, the ratio of their medians, and each round's ratio
    (instrumented against the bare run just before it): the median and range of those."""
    base = statistics.median(bare)
    print(
        f"{'variant':10} {'checkouts/s':>12} {'slowest':>8} {'fastest':>8} {'x bare':>7} "
        f"{'x bare: rounds':>15} {'range':>11}"
    )
    rows = [
        "| variant | checkouts/s: median | slowest round | fastest round | x bare (medians) "
        "| x bare: median of rounds | range |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, values in (("bare", bare), ("poolwatch", watched)):
        median = statistics.median(values)
        ratios = sorted(value / before for value, before in zip(values, bare, strict=True))
        ratio = statistics.median(ratios)
        print(
            f"{name:10} {median:12.0f} {min(values):8.0f} {max(values):8.0f} "
            f"{median / base:7.3f} {ratio:15.3f} {ratios[0]:5.2f}-{ratios[-1]:<5.2f}"
        )
        rows.append(
            f"| {name} | {median:,.0f} | {min(values):,.0f} | {max(values):,.0f} "
            f"| {median / base:.3f} | {ratio:.3f} | {ratios[0]:.2f} to {ratios[-1]:.2f} |"
        )
    return "\n".join(rows)


def memory(url: str, total: int) -> str:
    """Print RSS and tracked objects every tenth of ``total`` checkouts; return the table."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    engine = engine_for(url)
    poolwatch.instrument_sqlalchemy(engine, pool_name="bench", meter_provider=provider)
    step = max(total // 10, 1)
    print(f"\nmemory over {total:,} checkouts (collection every {step:,})")
    print(f"{'checkouts':>10} {'max RSS MiB':>12} {'gc objects':>11} {'loans':>6}")
    rows = [
        "| checkouts | max RSS (MiB) | objects tracked by the GC | loans open |",
        "| ---: | ---: | ---: | ---: |",
    ]
    recorder = engine.pool._poolwatch_recorder  # type: ignore[attr-defined]
    done = 0
    while done < total:
        for _ in range(step):
            engine.pool.connect().close()
        done += step
        reader.collect()
        gc.collect()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        objects, loans = len(gc.get_objects()), len(recorder.loans)
        print(f"{done:>10,} {rss:12.1f} {objects:11,} {loans:6}")
        rows.append(f"| {done:,} | {rss:.1f} | {objects:,} | {loans} |")
    poolwatch.uninstrument_sqlalchemy(engine)
    engine.dispose()
    provider.shutdown()
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--million", type=int, default=1_000_000)
    _docs.add_flag(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        throughput = contention(url, args.threads, args.cycles, args.rounds)
        growth = memory(url, args.million)
    if args.write_docs:
        _docs.write("contention", throughput)
        _docs.write("memory", growth)


if __name__ == "__main__":
    main()
