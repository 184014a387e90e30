"""Connections the server refuses: counted exactly as the application saw them, one event."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.postgres import PostgresCluster
from tests.support.refused import REFUSAL, limited_role, role_url

pytestmark = pytest.mark.postgres

LIMIT = 2
REFUSED = 5


def test_refused_opens_are_counted_exactly_and_reported_once(
    postgres: PostgresCluster, telemetry: Capture
) -> None:
    """With the role's limit held, every further connect fails in the app; the count by pool,
    error.type equals those failures (libpq gives no SQLSTATE for a refused connection, so
    none is claimed), and one event names the server's message and what the pool held."""
    with limited_role(postgres, LIMIT) as role:
        engine = sa.create_engine(role_url(postgres, role), poolclass=sa.pool.NullPool)
        poolwatch.instrument_sqlalchemy(engine, pool_name="limited", **telemetry.providers)
        held = [engine.connect() for _ in range(LIMIT)]
        seen = 0
        for _ in range(REFUSED):
            with pytest.raises(sa.exc.OperationalError, match=REFUSAL):
                engine.connect()
            seen += 1
        for connection in held:
            connection.close()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        engine.dispose()

    points = telemetry.metrics()[catalog.CONNECTION_CREATE_ERRORS.name]
    assert [(_counted_by(p.attributes), p.value) for p in points] == [
        (
            {catalog.POOL_NAME: "limited", catalog.ERROR_TYPE: "OperationalError"},
            seen,
        )
    ]
    (event,) = telemetry.events(catalog.EVENT_CREATE_FAILED)
    attributes = event.attributes
    assert REFUSAL in attributes[catalog.ERROR_MESSAGE]
    assert attributes[catalog.POOL_NAME] == "limited"
    assert attributes[catalog.POOL_USED] == LIMIT
    assert attributes[catalog.POOL_PENDING] == 1
    assert str(postgres.password) not in str(event.body)


def _counted_by(attributes: Mapping[str, object]) -> dict[str, object]:
    """The attributes a failed open is counted by; the pool's identity must be PostgreSQL's."""
    assert attributes[catalog.DB_SYSTEM] == "postgresql"
    return {key: attributes[key] for key in (catalog.POOL_NAME, catalog.ERROR_TYPE)}
