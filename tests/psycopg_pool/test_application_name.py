"""``application_name`` on the connections poolwatch sees, to match ``pg_stat_activity`` rows."""

from __future__ import annotations

import pytest

import poolwatch
from poolwatch.testing import Capture
from tests.psycopg_pool.conftest import PoolFactory
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


def test_connections_are_named_after_the_pool_by_default(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """Both connections of a pool named ``orders`` show as ``orders`` in pg_stat_activity."""
    pool = make_pool(min_size=2)
    poolwatch.instrument_psycopg_pool(pool, pool_name="orders", **telemetry.providers)
    pool.open(wait=True)
    assert len(postgres.server_connections("orders")) == 2


def test_a_template_puts_the_pool_name_where_asked(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """``billing/{pool}`` becomes ``billing/orders``."""
    pool = make_pool(min_size=1)
    poolwatch.instrument_psycopg_pool(
        pool, pool_name="orders", application_name="billing/{pool}", **telemetry.providers
    )
    pool.open(wait=True)
    assert len(postgres.server_connections("billing/orders")) == 1


def test_a_name_the_user_set_is_kept(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """An ``application_name`` in the conninfo wins over poolwatch's."""
    pool = make_pool(min_size=1, conninfo=f"{postgres.dsn} application_name=mine")
    poolwatch.instrument_psycopg_pool(pool, pool_name="orders", **telemetry.providers)
    pool.open(wait=True)
    assert len(postgres.server_connections("mine")) == 1
    assert postgres.server_connections("orders") == []


def test_none_leaves_application_name_alone_and_uninstrument_restores_kwargs(
    make_pool: PoolFactory, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """With None no name is set; after uninstrument the pool's kwargs are the user's again."""
    kwargs = {"autocommit": True}
    silent, named = make_pool(min_size=1), make_pool(min_size=1, kwargs=kwargs)
    poolwatch.instrument_psycopg_pool(
        silent, pool_name="silent", application_name=None, **telemetry.providers
    )
    poolwatch.instrument_psycopg_pool(named, pool_name="named", **telemetry.providers)
    silent.open(wait=True)
    assert postgres.server_connections("silent") == []
    assert named.kwargs == {"autocommit": True, "application_name": "named"}
    poolwatch.uninstrument_psycopg_pool(named)
    assert named.kwargs is kwargs
