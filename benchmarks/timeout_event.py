"""What a pool timeout costs the caller that met it, with poolwatch's event, by number of holders.

Run: ``python benchmarks/timeout_event.py [--holders 5,50,500,5000] [--depths 3,40] [--pools
sync,async,psycopg]``. Pools: SQLAlchemy on SQLite (``sync``), SQLAlchemy async on aiosqlite
(``async``), psycopg_pool's async pool on a throwaway PostgreSQL (``psycopg``, up to 500 holders).
For each count, that many holders (threads for the sync pool, asyncio tasks for the async ones)
each hold one connection, parked ``depth`` calls deep; then timeouts follow at once (no wait):

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

import _docs
import sqlalchemy as sa
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import poolwatch
from poolwatch._integrations.psycopg_pool import ADAPTER as PSYCOPG
from poolwatch._integrations.sqlalchemy import ADAPTER

HOLDERS = (5, 50, 500, 5000)
DEPTHS = (3, 40)
#: The most holders on PostgreSQL (a connection each).
PSYCOPG_MAX = 500


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
                recorder.loans.sampled.clear()  # as if the holders had all changed meanwhile
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


class AsyncPool:
    """An async pool as the rounds use it: checkouts, the error a timeout raises, closing."""

    def __init__(self, kind: str, target: str, size: int, logs: LoggerProvider | None) -> None:
        self.recorder: Any = None
        if kind == "psycopg":
            from psycopg_pool import AsyncConnectionPool, PoolTimeout

            self.pool = AsyncConnectionPool(
                target, min_size=size, max_size=size, timeout=0.000001, open=False
            )
            self.error: type[BaseException] = PoolTimeout
            if logs is not None:
                poolwatch.instrument_psycopg_pool(
                    self.pool,
                    meter_provider=MeterProvider(),
                    logger_provider=logs,
                    leak_threshold=0,
                )
                self.recorder = vars(self.pool)["_poolwatch_binding"].recorder
        else:
            self.engine = create_async_engine(
                target,
                poolclass=sa.pool.AsyncAdaptedQueuePool,
                pool_size=size,
                max_overflow=0,
                pool_timeout=0,
            )
            self.error = sa.exc.TimeoutError
            if logs is not None:
                self.recorder = instrument(self.engine, logs)

    async def open(self) -> None:
        if hasattr(self, "pool"):
            await self.pool.open(wait=True, timeout=120)

    def connect(self, holder: bool = False) -> Any:
        """A checkout; a holder's may wait (psycopg_pool can be slow to hand out a connection
        it has just opened), the others time out at once."""
        if hasattr(self, "pool"):
            return self.pool.connection(timeout=30 if holder else None)
        return self.engine.connect()

    async def time_out(self) -> None:
        with contextlib.suppress(self.error):
            async with self.connect():
                pass

    async def close(self) -> None:
        if hasattr(self, "pool"):
            await self.pool.close()
        else:
            await self.engine.dispose()


def async_round(  # noqa: PLR0917 - the same arguments as sync_round, and the pool's kind
    kind: str, target: str, holders: int, depth: int, args: Any, logs: LoggerProvider | None
) -> Result:
    return asyncio.run(_async_round(AsyncPool(kind, target, holders, logs), holders, depth, args))


async def _async_round(pool: AsyncPool, holders: int, depth: int, args: Any) -> Result:
    result = Result()
    await pool.open()
    recorder = pool.recorder
    held, release = asyncio.Semaphore(0), asyncio.Event()

    async def hold() -> None:
        async def body() -> None:
            async with pool.connect(holder=True):
                held.release()
                await release.wait()

        await anested(depth, body)

    tasks = [asyncio.create_task(hold()) for _ in range(holders)]
    for _ in tasks:
        await held.acquire()
    try:
        if recorder is None:
            result.bare = await bare_async(pool, args.timeouts)
            result.lag = await lagging(timeouts_async(pool, args.timeouts))
        else:
            with watched(recorder, result):
                result.lag = await lagging(timeouts_async(pool, args.timeouts))
                first, rest = result.calls[0], result.calls[1:]
                result.first, result.next = first, statistics.median(rest)
                recorder.loans.sampled.clear()
                result.calls.clear()
                result.sampled = 0
                await asyncio.sleep(1.0)
                await asyncio.gather(*(pool.time_out() for _ in range(args.storm)))
                result.storm = max(result.calls)
    finally:
        release.set()
        await asyncio.gather(*tasks)
        ADAPTER.uninstrument_all()
        PSYCOPG.uninstrument_all()
        await pool.close()
    return result


async def bare_async(pool: AsyncPool, count: int) -> float:
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        await pool.time_out()
        spent.append((time.perf_counter() - started) * 1e6)
    return statistics.median(spent)


async def timeouts_async(pool: AsyncPool, count: int) -> None:
    for _ in range(count):
        await pool.time_out()
        await asyncio.sleep(0.002)  # the ticker gets its turns between timeouts


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


def table(pool: str, target: str, args: Any, logs: LoggerProvider) -> list[str]:
    """One line per holders x depth for ``pool`` (sync, async or psycopg) on ``target``; printed,
    and returned as markdown table rows."""
    rows = []
    for holders in map(int, args.holders.split(",")):
        if pool == "psycopg" and holders > PSYCOPG_MAX:
            continue
        for depth in map(int, args.depths.split(",")):
            rounds = max(1, args.rounds if holders < 5000 else 1)
            if pool == "sync":
                bare = [sync_round(target, holders, depth, args, None) for _ in range(rounds)]
                seen = [sync_round(target, holders, depth, args, logs) for _ in range(rounds)]
            else:
                bare = [
                    async_round(pool, target, holders, depth, args, None) for _ in range(rounds)
                ]
                seen = [
                    async_round(pool, target, holders, depth, args, logs) for _ in range(rounds)
                ]
            figures = Figures(pool, holders, depth, rounds, bare, seen)
            print(figures.line(), flush=True)
            rows.append(figures.row())
    return rows


@dataclass
class Figures:
    """The best of the rounds of one case, as a printed line and as a markdown row."""

    pool: str
    holders: int
    depth: int
    rounds: int
    bare: list[Result]
    seen: list[Result]

    def values(self) -> tuple[float, float, float, float, float, int]:
        """bare, first, first / bare, next, storm (us) and the stacks the storm sampled."""
        bare, first = best(self.bare, "bare"), best(self.seen, "first")
        sampled = max(result.sampled for result in self.seen)
        return bare, first, first / bare, best(self.seen, "next"), best(self.seen, "storm"), sampled

    def lags(self) -> tuple[float, float] | None:
        """The event loop's largest lag with poolwatch and bare (us); none for threads."""
        if self.pool == "sync":
            return None
        return best(self.seen, "lag"), best(self.bare, "lag")

    def line(self) -> str:
        bare, first, times, following, storm, sampled = self.values()
        lag, bare_lag = self.lags() or (0.0, 0.0)
        return (
            f"{self.pool:>7} {self.holders:>7} {self.depth:>5} {self.rounds:>6} {bare:>8.0f}"
            f" {first:>9.0f} {times:>7.1f} {following:>8.0f} {storm:>9.0f}"
            f" {sampled:>7} {lag:>8.0f} {bare_lag:>8.0f}"
        )

    def row(self) -> str:
        bare, first, times, following, storm, sampled = self.values()
        lags = self.lags()
        lag = "— | —" if lags is None else f"{lags[0]:,.0f} | {lags[1]:,.0f}"
        return (
            f"| {self.pool} | {self.holders:,} | {self.depth} | {self.rounds} | {bare:,.0f}"
            f" | {first:,.0f} | {times:,.1f} | {following:,.0f} | {storm:,.0f} | {sampled:,}"
            f" | {lag} |"
        )


HEADER = (
    f"{'pool':>7} {'holders':>7} {'depth':>5} {'rounds':>6} {'bare us':>8} {'first us':>9}"
    f" {'x bare':>7} {'next us':>8} {'storm us':>9} {'sampled':>7} {'lag us':>8} {'bare lag':>8}"
)
MARKDOWN = [
    "| pool | holders | depth | rounds | bare (us) | first (us) | first x bare | next (us)"
    " | storm (us) | sampled | lag (us) | bare lag (us) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holders", default=",".join(map(str, HOLDERS)))
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    parser.add_argument("--timeouts", type=int, default=20)
    parser.add_argument("--storm", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="sync,async", help="sync, async and/or psycopg")
    _docs.add_flag(parser)
    args = parser.parse_args()
    threading.stack_size(256 * 1024)  # thousands of holder threads
    directory = Path(tempfile.mkdtemp())
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(NoExport()))
    print(HEADER)
    rows = list(MARKDOWN)
    for pool in args.pools.split(","):
        if pool == "psycopg":
            from _postgres import throwaway_postgres

            with throwaway_postgres(max_connections=PSYCOPG_MAX + 10) as cluster:
                rows += table(pool, cluster.dsn, args, logs)
        else:
            driver = "+aiosqlite" if pool == "async" else ""
            rows += table(pool, f"sqlite{driver}:///{directory / 'bench.db'}", args, logs)
    if args.write_docs:
        _docs.write("timeout_event", "\n".join(rows))


if __name__ == "__main__":
    main()
