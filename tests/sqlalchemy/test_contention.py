"""Real contention, threads and asyncio, producing known waits and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.contention import (
    POOL,
    TIMEOUT,
    TimedOut,
    assert_served_and_timed_out,
    hold_from_threads,
)
from tests.support.readings import buckets, gauge

CALLERS = 6


def test_threads_on_an_exhausted_pool(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Six threads on a pool of two with a 0.3 s timeout: two are served, four time out."""
    engine = instrumented(pool_size=POOL, max_overflow=0, pool_timeout=TIMEOUT)
    engine.connect().close()
    engine.connect().close()  # open both connections up front, so creation is not in the race
    telemetry_before = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, "app")["+Inf"]
    assert telemetry_before == 2
    assert hold_from_threads(CALLERS, engine.connect, sa.exc.TimeoutError) == 4
    # the two warm-up checkouts sit in the fastest buckets too
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, "app")
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

    async def run() -> list[str]:
        others_timed_out = TimedOut(CALLERS - POOL)

        async def caller() -> str:
            try:
                async with engine.connect() as connection:
                    await connection.exec_driver_sql("SELECT 1")
                    await others_timed_out.wait()  # the hold
                return "served"
            except sa.exc.TimeoutError:
                others_timed_out.count()
                return "timeout"

        results = await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return sorted(results)

    assert asyncio.run(run()) == ["served"] * 2 + ["timeout"] * 4
    assert_served_and_timed_out(telemetry, "async", 4, waited_within="1.0")
    asyncio.run(engine.dispose())
