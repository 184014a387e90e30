"""Real contention, threads and asyncio, producing known waits and timeouts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.readings import buckets, counts, gauge

HOLD = 0.8
TIMEOUT = 0.3
CALLERS = 6
POOL = 2


def assert_two_served_four_timed_out(telemetry: Capture, pool: str) -> None:
    """The shape both tests expect: 2 immediate checkouts held 0.8 s, 4 waits of 0.3 s that failed."""
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, pool) == 4
    wait = buckets(telemetry, catalog.WAIT_TIME_BUCKET, pool)
    assert wait["0.1"] == 2  # served at once
    assert wait["0.25"] == 2  # nobody gave up before the 0.3 s timeout
    assert wait["1.0"] == 6  # the four 0.3 s waits (slack for a busy machine)
    assert wait["+Inf"] == 6
    use = buckets(telemetry, catalog.USE_TIME_BUCKET, pool)
    assert (use["0.5"], use["2.5"], use["+Inf"]) == (0, 2, 2)  # the two 0.8 s holds
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, pool) == 0
    assert counts(telemetry, pool) == (0, 2)
    assert len(telemetry.events(catalog.EVENT_POOL_TIMEOUT)) == 4


def test_threads_on_an_exhausted_pool(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Six threads on a pool of two with a 0.3 s timeout: two are served, four time out."""
    engine = instrumented(pool_size=POOL, max_overflow=0, pool_timeout=TIMEOUT)
    engine.connect().close()
    engine.connect().close()  # open both connections up front, so creation is not in the race
    telemetry_before = buckets(telemetry, catalog.WAIT_TIME_BUCKET, "app")["+Inf"]
    assert telemetry_before == 2
    start = threading.Barrier(CALLERS)
    errors: list[BaseException] = []

    def caller() -> None:
        start.wait()
        try:
            with engine.connect():
                threading.Event().wait(HOLD)
        except sa.exc.TimeoutError as error:
            errors.append(error)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 4
    # the two warm-up checkouts sit in the fastest buckets too
    wait = buckets(telemetry, catalog.WAIT_TIME_BUCKET, "app")
    assert wait["+Inf"] == 8
    assert wait["0.1"] == 4
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 4
    assert len(telemetry.events(catalog.EVENT_POOL_TIMEOUT)) == 4


def test_asyncio_tasks_on_an_exhausted_pool(telemetry: Capture, tmp_path: Path) -> None:
    """Six tasks on an async pool of two with a 0.3 s timeout: two are served, four time out."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'async.db'}",
        pool_size=POOL,
        max_overflow=0,
        pool_timeout=TIMEOUT,
    )
    poolwatch.instrument_sqlalchemy(engine, pool_name="async", **telemetry.providers)

    async def caller() -> str:
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
                await asyncio.sleep(HOLD)
            return "served"
        except sa.exc.TimeoutError:
            return "timeout"

    async def run() -> list[str]:
        results = await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return sorted(results)

    assert asyncio.run(run()) == ["served"] * 2 + ["timeout"] * 4
    assert_two_served_four_timed_out(telemetry, "async")
    asyncio.run(engine.dispose())
