"""application_name set by poolwatch survives PgBouncer: pg_stat_activity still names the pool.

A psycopg_pool pool instrumented by poolwatch gives its connections ``application_name`` = the
pool's name. PgBouncer passes it on: in session pooling with the server connection it opens for
the client; in transaction pooling it tracks the parameter per client and sets it on whichever
server connection the client's transaction gets. Both are checked against a real PgBouncer in
front of the test PostgreSQL, where the server's own pg_stat_activity is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from psycopg_pool import ConnectionPool

import poolwatch
from poolwatch.testing import Capture
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _uninstrument() -> Iterator[None]:
    """psycopg_pool is left unpatched."""
    yield
    poolwatch.uninstrument_psycopg_pool()


def _pool(bouncer: PgBouncer, name: str, telemetry: Capture) -> ConnectionPool:
    pool: ConnectionPool = ConnectionPool(
        bouncer.url(), min_size=1, max_size=1, name=name, open=False
    )
    poolwatch.instrument_psycopg_pool(pool, meter_provider=telemetry.meter_provider)
    pool.open(wait=True)
    return pool


def _server_names(postgres: PostgresCluster, bouncer: PgBouncer) -> list[str]:
    """application_name of PgBouncer's server connections (SHOW SERVERS remote_pid), as
    PostgreSQL's pg_stat_activity shows them (other tests' connections left out)."""
    pids = {row["remote_pid"] for row in bouncer.show("SERVERS")}
    return sorted(row.application_name for row in postgres.server_connections() if row.pid in pids)


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_the_pools_name_reaches_pg_stat_activity_through_pgbouncer(
    pgbouncer: Callable[..., PgBouncer],
    postgres: PostgresCluster,
    telemetry: Capture,
    pool_mode: str,
) -> None:
    """Inside a transaction, the server connection PgBouncer lent carries the pool's name."""
    bouncer = pgbouncer(pool_mode=pool_mode, default_pool_size=1)
    orders = _pool(bouncer, "orders", telemetry)
    try:
        with orders.connection() as conn:
            conn.execute("SELECT 1")
            assert _server_names(postgres, bouncer) == ["orders"]
    finally:
        orders.close()


def test_transaction_pooling_renames_a_shared_server_connection(
    pgbouncer: Callable[..., PgBouncer],
    postgres: PostgresCluster,
    telemetry: Capture,
) -> None:
    """One server connection, two pools in turn: each transaction shows its own pool's name."""
    bouncer = pgbouncer(pool_mode="transaction", default_pool_size=1)
    orders, billing = _pool(bouncer, "orders", telemetry), _pool(bouncer, "billing", telemetry)
    seen = []
    try:
        for pool in (orders, billing, orders):
            with pool.connection() as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()
                seen.append((backend, _server_names(postgres, bouncer)))
    finally:
        orders.close()
        billing.close()
    assert [names for _, names in seen] == [["orders"], ["billing"], ["orders"]]
    assert len({backend for backend, _ in seen}) == 1, "PgBouncer used one server connection"
