"""Real contention, threads and asyncio tasks, producing known waits and timeouts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.postgres import PostgresCluster
from tests.support.readings import buckets, counts, gauge

pytestmark = pytest.mark.postgres

HOLD = 0.8
TIMEOUT = 0.3
CALLERS = 5
POOL = 2


def assert_two_served_three_timed_out(telemetry: Capture, pool: str) -> None:
    """2 immediate checkouts held 0.8 s, 3 waits of 0.3 s that timed out."""
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, pool) == 3
    wait = buckets(telemetry, catalog.WAIT_TIME_BUCKET, pool)
    assert (wait["0.1"], wait["0.25"], wait["0.5"], wait["+Inf"]) == (2, 2, 5, 5)
    use = buckets(telemetry, catalog.USE_TIME_BUCKET, pool)
    assert (use["0.5"], use["2.5"], use["+Inf"]) == (0, 2, 2)  # the two 0.8 s holds (with slack)
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, pool) == 0
    assert counts(telemetry, pool) == (0, 2)
    assert len(telemetry.events(catalog.EVENT_POOL_TIMEOUT)) == 3


def test_threads_on_an_exhausted_pool(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """Five threads on a pool of two with a 0.3 s timeout: two are served, three time out."""
    pool = instrumented(min_size=POOL, max_size=POOL, timeout=TIMEOUT)
    start = threading.Barrier(CALLERS)
    errors: list[BaseException] = []

    def caller() -> None:
        start.wait()
        try:
            with pool.connection():
                threading.Event().wait(HOLD)
        except PoolTimeout as error:
            errors.append(error)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3
    assert_two_served_three_timed_out(telemetry, "app")


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

    async def caller() -> None:
        async with pool.connection():
            await asyncio.sleep(HOLD)

    try:
        results = await asyncio.gather(*(caller() for _ in range(CALLERS)), return_exceptions=True)
        assert [type(result) for result in results].count(PoolTimeout) == 3
        assert_two_served_three_timed_out(telemetry, "async-app")
    finally:
        await pool.close()
