"""The nine standard pool metrics, with exact values, for a psycopg_pool ``ConnectionPool``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.readings import buckets, counts, gauge, observed, total

pytestmark = pytest.mark.postgres


def test_nine_standard_metrics_are_reported_with_exact_values(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """Three checkouts of a 2..3 pool, a fourth that times out, then two checkins."""
    pool = instrumented(min_size=2, max_size=3)
    held = [pool.getconn() for _ in range(3)]
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    pool.putconn(held[0])
    pool.putconn(held[1])

    assert counts(telemetry, "app") == (1, 2)
    assert gauge(telemetry, catalog.CONNECTION_MAX, "app") == 3
    assert gauge(telemetry, catalog.CONNECTION_IDLE_MAX, "app") == 3
    assert gauge(telemetry, catalog.CONNECTION_IDLE_MIN, "app") == 2
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 1
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == 4
    assert observed(telemetry, catalog.CONNECTION_USE_TIME, "app") == 2
    assert observed(telemetry, catalog.CONNECTION_CREATE_TIME, "app") == 3
    pool.putconn(held[2])


def test_the_connection_context_manager_is_one_checkout_and_one_checkin(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """``pool.connection()`` goes through getconn and putconn: one wait, one use, nothing held."""
    pool = instrumented(min_size=1, max_size=1)
    with pool.connection() as connection:
        assert counts(telemetry, "app") == (1, 0)
        connection.execute("SELECT 1")
    assert counts(telemetry, "app") == (0, 1)
    assert observed(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == 1
    assert observed(telemetry, catalog.CONNECTION_USE_TIME, "app") == 1


def test_timed_out_wait_lands_in_the_bucket_of_the_pool_timeout(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """A 0.2 s pool timeout is recorded as a wait above 0.1 s (and well under a second)."""
    pool = instrumented(min_size=1, max_size=1)
    with pool.connection(), pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.2)
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, "app")
    assert (wait["0.1"], wait["0.5"]) == (1, 2)  # slack for a busy machine
    assert total(telemetry, catalog.CONNECTION_WAIT_TIME, "app") == pytest.approx(0.2, abs=0.05)
