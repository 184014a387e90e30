"""One naming authority on real PostgreSQL: an SQLAlchemy engine and a psycopg pool on one
database keep separate series, every pool point carries the pool's identity, and
``application_name`` in ``pg_stat_activity`` is the pool name of the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.psycopg_pool.conftest import PoolFactory
from tests.support.postgres import PostgresCluster


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    """A QueuePool engine on the test database, disposed afterwards."""
    made = sa.create_engine(postgres_url, pool_size=3, max_overflow=0)
    yield made
    made.dispose()


def identity(postgres: PostgresCluster) -> dict[str, object]:
    return {
        catalog.DB_SYSTEM: "postgresql",
        catalog.DB_NAMESPACE: postgres.database,
        catalog.SERVER_ADDRESS: "127.0.0.1",
        catalog.SERVER_PORT: postgres.port,
    }


def application_names(postgres: PostgresCluster, *connections: Any) -> list[str]:
    """``pg_stat_activity.application_name`` of these connections (SQLAlchemy connections or
    psycopg ones), in order: other tests' connections on the shared cluster are left out."""
    pids = [
        c.info.backend_pid
        if hasattr(c, "info") and hasattr(c.info, "backend_pid")
        else c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        for c in connections
    ]
    by_pid = {row.pid: row.application_name for row in postgres.server_connections()}
    return [by_pid[pid] for pid in pids]


def used(telemetry: Capture, pool: str) -> int:
    value: int = telemetry.value(
        catalog.CONNECTION_COUNT.name,
        attributes={catalog.POOL_NAME: pool, catalog.STATE: catalog.STATE_USED},
    )
    return value


def test_an_engine_and_a_psycopg_pool_on_one_database_never_merge(
    engine: sa.Engine, make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """Same database, two libraries: two names, two series, each with its own count."""
    poolwatch.instrument_sqlalchemy(engine, **telemetry.providers)
    pool = make_pool(min_size=2, max_size=2)
    poolwatch.instrument_psycopg_pool(pool, **telemetry.providers)
    pool.open(wait=True)
    with engine.connect(), pool.connection(), pool.connection():
        assert used(telemetry, "poolwatch") == 1
        assert used(telemetry, "poolwatch#psycopg_pool") == 2


def test_every_pool_point_and_checkout_span_carries_the_pool_identity(
    engine: sa.Engine, make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """``db.system.name``, ``db.namespace``, ``server.address`` and ``server.port`` on 100% of
    the points that carry a pool name, and on the checkout span."""
    poolwatch.instrument_sqlalchemy(engine, root_spans=True, **telemetry.providers)
    pool = make_pool(min_size=1, max_size=1)
    poolwatch.instrument_psycopg_pool(pool, root_spans=True, **telemetry.providers)
    pool.open(wait=True)
    with engine.connect(), pool.connection():
        pass
    points = [
        point
        for name, found in telemetry.metrics().items()
        if name.startswith(("db.client.connection.", "poolwatch.connection."))
        for point in found
        if catalog.POOL_NAME in point.attributes
    ]
    assert len(points) > 20
    wanted = identity(postgres)
    assert [p.attributes for p in points if not wanted.items() <= p.attributes.items()] == []
    spans = telemetry.spans(catalog.SPAN_CHECKOUT)
    assert len(spans) == 2
    assert all(wanted.items() <= dict(span.attributes or {}).items() for span in spans)


def test_application_name_is_the_pool_name_for_both_libraries(
    engine: sa.Engine, make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """``pg_stat_activity.application_name`` joins to ``db.client.connection.pool.name``."""
    poolwatch.instrument_sqlalchemy(engine, **telemetry.providers)
    pool = make_pool(min_size=1, max_size=1)
    poolwatch.instrument_psycopg_pool(pool, **telemetry.providers)
    pool.open(wait=True)
    with engine.connect() as connection, pool.connection() as pooled:
        names = application_names(postgres, connection, pooled)
    assert names == ["poolwatch", "poolwatch#psycopg_pool"]


def test_a_user_set_application_name_is_left_alone(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """``application_name`` in the URL wins; ``application_name=None`` leaves it unset."""
    chosen = sa.create_engine(postgres.sqlalchemy_url() + "?application_name=mine")
    unset = sa.create_engine(postgres.sqlalchemy_url(), pool_logging_name="unset")
    try:
        poolwatch.instrument_sqlalchemy(chosen, **telemetry.providers)
        poolwatch.instrument_sqlalchemy(unset, application_name=None, **telemetry.providers)
        with chosen.connect() as first, unset.connect() as second:
            names = application_names(postgres, first, second)
        assert names == ["mine", ""]
    finally:
        chosen.dispose()
        unset.dispose()


def test_uninstrumenting_stops_naming_new_connections(
    engine: sa.Engine, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """The shadowed ``Dialect.connect`` is removed again; SQLAlchemy is as it was."""
    poolwatch.instrument_sqlalchemy(engine, **telemetry.providers)
    assert "connect" in vars(engine.dialect)
    poolwatch.uninstrument_sqlalchemy(engine)
    assert "connect" not in vars(engine.dialect)
    with engine.connect() as connection:
        assert application_names(postgres, connection) == [""]


def test_a_closed_pool_hands_its_name_to_the_next_one(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """A pool opened and closed at startup (a migration, say) does not push the pool the app
    serves with to ``#2``; the new pool's connections carry the plain name too."""
    startup = make_pool(min_size=1, max_size=1)
    poolwatch.instrument_psycopg_pool(startup, **telemetry.providers)
    startup.open(wait=True)
    with startup.connection():
        pass
    startup.close()
    serving = make_pool(min_size=1, max_size=1)
    poolwatch.instrument_psycopg_pool(serving, **telemetry.providers)
    serving.open(wait=True)
    with serving.connection() as connection:
        assert application_names(postgres, connection) == ["poolwatch"]
    names = {
        point.attributes[catalog.POOL_NAME]
        for point in telemetry.metrics()[catalog.CONNECTION_MAX.name]
    }
    assert names == {"poolwatch"}


def test_an_async_engine_names_its_connections_too(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """``create_async_engine`` with psycopg: the pool name reaches ``pg_stat_activity``."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres.sqlalchemy_url(), pool_logging_name="async-orders")
    poolwatch.instrument_sqlalchemy(engine, **telemetry.providers)

    async def main() -> list[str]:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            pid = raw.driver_connection.info.backend_pid
            names = [
                row.application_name for row in postgres.server_connections() if row.pid == pid
            ]
        await engine.dispose()
        return names

    assert asyncio.run(main()) == ["async-orders"]
