"""pytest fixtures for a throwaway PostgreSQL server.

Load with ``pytest_plugins = ["tests.support.fixtures"]`` in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster, PostgresNotAvailable, start_postgres

__all__ = ["postgres", "postgres_url"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One cluster for the whole test session, stopped and deleted at the end.

    Without PostgreSQL installed the dependent tests are skipped locally but
    fail under CI (``CI`` set), so a broken CI setup cannot pass silently.
    """
    try:
        cluster = start_postgres()
    except PostgresNotAvailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """SQLAlchemy URL for the ``poolwatch`` database: ``postgresql+psycopg://...``."""
    return postgres.sqlalchemy_url("psycopg")
