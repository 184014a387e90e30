"""Connections the server refuses a psycopg pool: every failed attempt counted, one event."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from psycopg_pool import ConnectionPool

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.postgres import PostgresCluster, wait_until
from tests.support.refused import REFUSAL, limited_role, role_dsn

pytestmark = pytest.mark.postgres

LIMIT = 2


def test_refused_opens_are_counted_as_the_pool_counts_them(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """A pool asked to keep more connections than its role may hold retries in the background;
    poolwatch counts each refused attempt, as the pool's own ``connections_errors`` does, and
    reports the burst once."""
    with limited_role(postgres, LIMIT) as role:
        pool = ConnectionPool(
            role_dsn(postgres, role), min_size=LIMIT + 1, max_size=LIMIT + 1, open=False
        )
        poolwatch.instrument_psycopg_pool(pool, pool_name="limited", **telemetry.providers)
        pool.open()
        try:
            # retries back off (1 s, 2 s, ...): read both counts between two attempts
            assert wait_until(lambda: pool.get_stats().get("connections_errors", 0) >= 2, 30)
            refused = pool.get_stats()["connections_errors"]
            points = telemetry.metrics()[catalog.CONNECTION_CREATE_ERRORS.name]
        finally:
            pool.close()

    assert [(_counted_by(p.attributes), p.value) for p in points] == [
        ({catalog.POOL_NAME: "limited", catalog.ERROR_TYPE: "OperationalError"}, refused)
    ]
    (event,) = telemetry.events(catalog.EVENT_CREATE_FAILED)
    assert REFUSAL in event.attributes[catalog.ERROR_MESSAGE]
    assert event.attributes[catalog.POOL_MAX] == LIMIT + 1


def _counted_by(attributes: Mapping[str, object]) -> dict[str, object]:
    """The attributes a failed open is counted by; the pool's identity must be PostgreSQL's."""
    assert attributes[catalog.DB_SYSTEM] == "postgresql"
    return {key: attributes[key] for key in (catalog.POOL_NAME, catalog.ERROR_TYPE)}
