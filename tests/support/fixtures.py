"""pytest fixtures for a throwaway PostgreSQL server, the collector build and its processes.

Load with ``pytest_plugins = ["tests.support.fixtures"]`` in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import pipeline
from tests.support.pgbouncer import PgBouncer, PgBouncerNotAvailable, start_pgbouncer
from tests.support.postgres import PostgresCluster, PostgresNotAvailable, start_postgres

__all__ = [
    "needed",
    "otelcol",
    "pgbouncer",
    "postgres",
    "postgres_url",
    "processes",
    "started_postgres",
]


def needed(missing: str) -> NoReturn:
    """Something a test needs is missing: skip it locally, fail it under CI (``CI`` set), so a
    broken CI setup cannot pass silently."""
    if os.environ.get("CI"):
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing)


def started_postgres(max_connections: int = 50) -> Iterator[PostgresCluster]:
    """A throwaway cluster, stopped afterwards (``yield from`` it in a fixture)."""
    try:
        cluster = start_postgres(max_connections=max_connections)
    except PostgresNotAvailable as exc:
        needed(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def otelcol() -> Path:
    """The poolwatch-otelcol binary (built once per machine by collector/build.sh)."""
    try:
        return Path(pipeline.collector_binary())
    except pipeline.ToolMissing as missing:
        needed(str(missing))


@pytest.fixture
def processes(otelcol: object, tmp_path: Path) -> Iterator[pipeline.Processes]:
    """Start processes for the test (skipped without ``otelcol``); every one is stopped
    afterwards, pass or fail."""
    with pipeline.running_processes(tmp_path) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One cluster for the whole test session, stopped and deleted at the end.

    Without PostgreSQL installed the dependent tests are skipped locally but
    fail under CI (``CI`` set), so a broken CI setup cannot pass silently.
    """
    yield from started_postgres()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """SQLAlchemy URL for the ``poolwatch`` database: ``postgresql+psycopg://...``."""
    return postgres.sqlalchemy_url("psycopg")


@pytest.fixture
def pgbouncer(
    postgres: PostgresCluster,
) -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers in front of ``postgres``: ``pgbouncer(pool_mode="session", ...)`` takes
    pgbouncer.ini settings over the defaults (transaction pooling, default_pool_size 5). Every
    one is stopped afterwards."""
    started: list[PgBouncer] = []

    def start(**settings: str | int) -> PgBouncer:
        try:
            bouncer = start_pgbouncer(postgres, settings)
        except PgBouncerNotAvailable as missing:
            needed(str(missing))
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
