"""Helpers for psycopg_pool tests: pools on the test PostgreSQL, instrumented into ``telemetry``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

import poolwatch
from poolwatch.testing import Capture
from tests.support.postgres import PostgresCluster

PoolFactory = Callable[..., ConnectionPool]


@pytest.fixture(autouse=True)
def _uninstrument_psycopg_pool() -> Iterator[None]:
    """Every test leaves psycopg_pool unpatched."""
    yield
    poolwatch.uninstrument_psycopg_pool()


@pytest.fixture
def make_pool(postgres: PostgresCluster) -> Iterator[PoolFactory]:
    """Create closed ``ConnectionPool`` objects on the test database (closed again at the end)."""
    pools: list[ConnectionPool] = []

    def make(**kwargs: Any) -> ConnectionPool:
        kwargs.setdefault("conninfo", postgres.dsn)
        kwargs.setdefault("open", False)
        pool: ConnectionPool = ConnectionPool(**kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def instrumented(make_pool: PoolFactory, telemetry: Capture) -> Callable[..., ConnectionPool]:
    """An open pool made by ``make_pool``, instrumented as ``app`` before its first connection."""

    def make(leak_threshold: float | None = None, **kwargs: Any) -> ConnectionPool:
        pool = make_pool(**kwargs)
        poolwatch.instrument_psycopg_pool(
            pool, pool_name="app", leak_threshold=leak_threshold, **telemetry.providers
        )
        pool.open(wait=True)
        return pool

    return make
