"""What a pool timeout costs the caller that met it, with poolwatch's event, by number of holders.

Run: ``python benchmarks/timeout_event.py [--holders 5,50,500,5000] [--depths 3,40]``. For each
count, that many holders (threads for the sync pool, asyncio tasks for the async one) each hold
one connection, parked ``depth`` calls deep; then timeouts follow at once (``pool_timeout=0``):

- ``first``: the first timeout, which samples the stacks of holders that have no borrow site;
- ``next``: the median of the timeouts after it (a burst of timeouts, one after another);
- ``storm``: ``--storm`` callers (threads, or tasks) timing out together, after the holders
  changed: how many holders' stacks were sampled in all, and the slowest caller's time.

Times are wall-clock microseconds spent inside poolwatch from the timeout to the raise (the
recorder's ``failed``, wrapped here; under asyncio the event loop is blocked for that long, and
``lag`` is the largest lateness of a 1 ms ticker task during the timeouts). ``bare`` is a timed-out
checkout without poolwatch (wall time of the whole ``connect()``). The event goes to an SDK logger
with a no-op exporter. Take the best of ``--rounds``: other load on the machine only adds time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import poolwatch
from poolwatch.integrations.sqlalchemy import ADAPTER

HOLDERS = (5, 50, 500, 5000)
DEPTHS = (3, 40)


class NoExport(LogRecordExporter):
    """Accepts every record and sends it nowhere."""

    def export(self, batch: Sequence[object]) -> object:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class Result:
    """One round of one case (microseconds, except ``sampled``)."""

    bare: float = 0.0
    first: float = 0.0
    next: float = 0.0
    storm: float = 0.0
    sampled: int = 0
    lag: float = 0.0
    calls: list[float] = field(default_factory=list)


@contextlib.contextmanager
def watched(recorder: Any, result: Result) -> Iterator[None]:
    """Time every ``failed`` of ``recorder`` and count the holders' stacks it samples."""
    failed, capture = recorder.failed, recorder._sites
    of_holder = capture.of_holder

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            failed(*args, **kwargs)
        finally:
            result.calls.append((time.perf_counter() - started) * 1e6)

    def counted(*args: Any) -> Any:
        result.sampled += 1
        return of_holder(*args)

    recorder.failed, capture.of_holder = timed, counted
    try:
        yield
    finally:
        del recorder.failed, capture.of_holder


def nested(depth: int, body: Callable[[], None]) -> None:
    """Run ``body`` ``depth`` application calls deep."""
    if depth <= 1:
        body()
    else:
        nested(depth - 1, body)


async def anested(depth: int, body: Callable[[], Awaitable[None]]) -> None:
    """Await ``body`` ``depth`` application coroutines deep."""
    if depth <= 1:
        await body()
    else:
        await anested(depth - 1, body)


def instrument(engine: sa.Engine | AsyncEngine, logs: LoggerProvider) -> Any:
    """Instrument ``engine`` without the leak watchdog (the timeouts do the sampling here)."""
    poolwatch.instrument_sqlalchemy(
        engine, meter_provider=MeterProvider(), logger_provider=logs, leak_threshold=0
    )
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    return sync.pool._poolwatch_recorder  # type: ignore[attr-defined]


# --- sync: holders are threads --------------------------------------------------------------


def sync_round(
    url: str, holders: int, depth: int, args: Any, logs: LoggerProvider | None
) -> Result:
    """Holders threads hold the pool; timeouts and a storm follow."""
    result = Result()
    engine = sa.create_engine(
        url, poolclass=sa.pool.QueuePool, pool_size=holders, max_overflow=0, pool_timeout=0
    )
    recorder = instrument(engine, logs) if logs is not None else None
    ready, release = threading.Barrier(holders + 1), threading.Event()

    def hold() -> None:
        def body() -> None:
            with engine.connect():
                ready.wait()
                release.wait()

        nested(depth, body)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(holders)]
    for thread in threads:
        thread.start()
    ready.wait()
    try:
        if recorder is None:
            result.bare = bare_sync(engine, args.timeouts)
        else:
            with watched(recorder, result):
                timeouts_sync(engine, args.timeouts)
                first, rest = result.calls[0], result.calls[1:]
                result.first, result.next = first, statistics.median(rest)
                recorder._sampled.clear()  # as if the holders had all changed meanwhile
                result.calls.clear()
                result.sampled = 0
                time.sleep(1.0)  # past any reuse of the sample just taken
                storm_sync(engine, args.storm)
                result.storm = max(result.calls)
    finally:
        release.set()
        for thread in threads:
            thread.join()
        ADAPTER.uninstrument_all()
        engine.dispose()
    return result


def bare_sync(engine: sa.Engine, count: int) -> float:
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        with contextlib.suppress(sa.exc.TimeoutError):
            engine.connect()
        spent.append((time.perf_counter() - started) * 1e6)
    return statistics.median(spent)


def timeouts_sync(engine: sa.Engine, count: int) -> None:
    for _ in range(count):
        with contextlib.suppress(sa.exc.TimeoutError):
            engine.connect()


def storm_sync(engine: sa.Engine, callers: int) -> None:
    start = threading.Barrier(callers)

    def caller() -> None:
        start.wait()
        with contextlib.suppress(sa.exc.TimeoutError):
            engine.connect()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- async: holders are tasks ---------------------------------------------------------------


def async_round(
    url: str, holders: int, depth: int, args: Any, logs: LoggerProvider | None
) -> Result:
    return asyncio.run(_async_round(url, holders, depth, args, logs))


async def _async_round(
    url: str, holders: int, depth: int, args: Any, logs: LoggerProvider | None
) -> Result:
    result = Result()
    engine = create_async_engine(
        url,
        poolclass=sa.pool.AsyncAdaptedQueuePool,
        pool_size=holders,
        max_overflow=0,
        pool_timeout=0,
    )
    recorder = instrument(engine, logs) if logs is not None else None
    held, release = asyncio.Semaphore(0), asyncio.Event()

    async def hold() -> None:
        async def body() -> None:
            async with engine.connect():
                held.release()
                await release.wait()

        await anested(depth, body)

    tasks = [asyncio.create_task(hold()) for _ in range(holders)]
    for _ in tasks:
        await held.acquire()
    try:
        if recorder is None:
            result.bare = await bare_async(engine, args.timeouts)
            result.lag = await lagging(timeouts_async(engine, args.timeouts))
        else:
            with watched(recorder, result):
                result.lag = await lagging(timeouts_async(engine, args.timeouts))
                first, rest = result.calls[0], result.calls[1:]
                result.first, result.next = first, statistics.median(rest)
                recorder._sampled.clear()
                result.calls.clear()
                result.sampled = 0
                await asyncio.sleep(1.0)
                await storm_async(engine, args.storm)
                result.storm = max(result.calls)
    finally:
        release.set()
        await asyncio.gather(*tasks)
        ADAPTER.uninstrument_all()
        await engine.dispose()
    return result


async def bare_async(engine: AsyncEngine, count: int) -> float:
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        with contextlib.suppress(sa.exc.TimeoutError):
            await engine.connect()
        spent.append((time.perf_counter() - started) * 1e6)
    return statistics.median(spent)


async def timeouts_async(engine: AsyncEngine, count: int) -> None:
    for _ in range(count):
        with contextlib.suppress(sa.exc.TimeoutError):
            await engine.connect()
        await asyncio.sleep(0.002)  # the ticker gets its turns between timeouts


async def storm_async(engine: AsyncEngine, callers: int) -> None:
    async def caller() -> None:
        with contextlib.suppress(sa.exc.TimeoutError):
            await engine.connect()

    await asyncio.gather(*(caller() for _ in range(callers)))


async def lagging(work: Awaitable[None]) -> float:
    """Run ``work`` beside a 1 ms ticker; the ticker's largest lateness, in microseconds."""
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - due)

    probe = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)
    try:
        await work
    finally:
        done.set()
        await probe
    return worst * 1e6


# --- the table --------------------------------------------------------------------------------


def best(rounds: list[Result], name: str) -> float:
    return min(getattr(result, name) for result in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holders", default=",".join(map(str, HOLDERS)))
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    parser.add_argument("--timeouts", type=int, default=20)
    parser.add_argument("--storm", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="sync,async")
    args = parser.parse_args()
    threading.stack_size(256 * 1024)  # thousands of holder threads
    directory = Path(tempfile.mkdtemp())
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(NoExport()))
    print(
        f"{'pool':>5} {'holders':>7} {'depth':>5} {'bare us':>8} {'first us':>9} {'x bare':>7}"
        f" {'next us':>8} {'storm us':>9} {'sampled':>7} {'lag us':>8} {'bare lag':>8}"
    )
    for pool in args.pools.split(","):
        run = sync_round if pool == "sync" else async_round
        url = f"sqlite{'+aiosqlite' if pool == 'async' else ''}:///{directory / 'bench.db'}"
        for holders in map(int, args.holders.split(",")):
            for depth in map(int, args.depths.split(",")):
                rounds = max(1, args.rounds if holders < 5000 else 1)
                bare = [run(url, holders, depth, args, None) for _ in range(rounds)]
                watched_ = [run(url, holders, depth, args, logs) for _ in range(rounds)]
                first = best(watched_, "first")
                print(
                    f"{pool:>5} {holders:>7} {depth:>5} {best(bare, 'bare'):>8.0f}"
                    f" {first:>9.0f} {first / best(bare, 'bare'):>7.1f}"
                    f" {best(watched_, 'next'):>8.0f} {best(watched_, 'storm'):>9.0f}"
                    f" {max(r.sampled for r in watched_):>7}"
                    f" {best(watched_, 'lag') if pool == 'async' else 0:>8.0f}"
                    f" {best(bare, 'lag') if pool == 'async' else 0:>8.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
