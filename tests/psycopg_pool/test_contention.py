"""Real contention, threads and asyncio tasks, producing known waits and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

import poolwatch
from poolwatch.testing import Capture
from tests.support.contention import (
    POOL,
    TIMEOUT,
    TimedOut,
    assert_served_and_timed_out,
    hold_from_threads,
)
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

CALLERS = 5


def test_threads_on_an_exhausted_pool(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """Five threads on a pool of two with a 0.3 s timeout: two are served, three time out."""
    pool = instrumented(min_size=POOL, max_size=POOL, timeout=TIMEOUT)
    assert hold_from_threads(CALLERS, pool.connection, PoolTimeout) == 3
    assert_served_and_timed_out(telemetry, "app", 3, waited_within="0.5")


@pytest.mark.asyncio
async def test_asyncio_tasks_on_an_exhausted_async_pool(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """Five tasks on an async pool of two with a 0.3 s timeout: two are served, three time out."""
    pool = AsyncConnectionPool(
        postgres.dsn, min_size=POOL, max_size=POOL, timeout=TIMEOUT, open=False
    )
    poolwatch.instrument_psycopg_pool(pool, pool_name="async-app", **telemetry.providers)
    await pool.open(wait=True)

    others_timed_out = TimedOut(CALLERS - POOL)

    async def caller() -> None:
        try:
            async with pool.connection():
                await others_timed_out.wait()  # the hold
        except PoolTimeout:
            others_timed_out.count()
            raise

    try:
        results = await asyncio.gather(*(caller() for _ in range(CALLERS)), return_exceptions=True)
        assert [type(result) for result in results].count(PoolTimeout) == 3
        assert_served_and_timed_out(telemetry, "async-app", 3, waited_within="0.5")
    finally:
        await pool.close()
