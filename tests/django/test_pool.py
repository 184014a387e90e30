"""Django's own PostgreSQL pool (5.1+), recorded as the psycopg pool ``<service>:<alias>``."""

from __future__ import annotations

import threading

import django
import pytest
from django.db import connections

from poolwatch import catalog
from poolwatch._integrations.django import ADAPTER
from poolwatch.testing import Capture
from tests.django.conftest import Instrument
from tests.support.postgres import PostgresCluster
from tests.support.readings import counts, django_closed, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(django.VERSION < (5, 1), reason="Django's pool arrived in 5.1"),
]


@pytest.fixture
def pool(service: str) -> str:
    """The pool's name: ``<service>:<alias>``, as its connections' ``application_name``."""
    return f"{service}:pooled"


def pooled_pid() -> int:
    with connections["pooled"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


def die_holding_a_connection() -> int:
    """Run a thread that takes a pooled connection, queries, and ends without closing it."""
    pids: list[int] = []
    worker = threading.Thread(target=lambda: pids.append(pooled_pid()), name="import-job")
    worker.start()
    worker.join()
    return pids[0]


def test_pool_is_recorded_under_its_alias_and_named_in_postgres(
    pool: str, instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """The pool's metrics and its connections' ``application_name`` carry ``<service>:pooled``."""
    instrument()
    pid = pooled_pid()
    wait_for(lambda: counts(telemetry, pool) == (1, 1), timeout=30)
    assert telemetry.value(catalog.CONNECTION_MAX.name, attributes={catalog.POOL_NAME: pool}) == 2
    (row,) = [row for row in postgres.server_connections() if row.pid == pid]
    assert row.application_name == f"{service}:pooled"
    connections["pooled"].close()
    wait_for(lambda: counts(telemetry, pool) == (0, 2), timeout=30)
    assert django_closed(telemetry, "pooled").get(catalog.CLOSE_EXPLICIT) == 1


@pytest.mark.usefixtures("gc_off")
def test_thread_dying_with_a_pooled_connection_is_an_orphan_and_a_leak(
    pool: str, instrument: Instrument, telemetry: Capture
) -> None:
    """The pool shrinks for good: poolwatch reports the orphan and, past the threshold, the leak."""
    instrument(leak_threshold=0.3)
    pid = die_holding_a_connection()
    ADAPTER.tracker.check()  # type: ignore[union-attr]
    wait_for(lambda: len(telemetry.events(catalog.EVENT_LEAK)) == 1, timeout=30)

    (orphan,) = telemetry.events(catalog.EVENT_ORPHANED)
    assert orphan.attributes[catalog.ORPHAN_REASON] == catalog.ORPHAN_THREAD_DEAD
    assert orphan.attributes[catalog.THREAD_NAME] == "import-job"
    assert orphan.attributes[catalog.BACKEND_PID] == pid
    (leak,) = telemetry.events(catalog.EVENT_LEAK)
    assert leak.attributes[catalog.POOL_NAME] == pool
    assert leak.attributes[catalog.THREAD_NAME] == "import-job"
    assert leak.attributes[catalog.CODE_FUNCTION] == "pooled_pid"
    wait_for(lambda: counts(telemetry, pool) == (1, 1), timeout=30)


@pytest.mark.usefixtures("gc_off")
def test_close_orphans_hands_a_dead_threads_connection_back_to_the_pool(
    pool: str, instrument: Instrument, telemetry: Capture
) -> None:
    """With ``close_orphans`` the pool gets the connection back instead of shrinking."""
    instrument(close_orphans=True)
    die_holding_a_connection()
    wait_for(lambda: counts(telemetry, pool) == (1, 1), timeout=30)
    ADAPTER.tracker.check()  # type: ignore[union-attr]
    wait_for(lambda: counts(telemetry, pool) == (0, 2), timeout=30)
    assert django_closed(telemetry, "pooled").get(catalog.CLOSE_ORPHAN_REAPED) == 1
