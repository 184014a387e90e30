"""Django connections opened, closed (by reason) and counted by state, alias by alias."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import close_old_connections, connections, transaction

from poolwatch import catalog
from poolwatch.testing import Capture
from tests.django.conftest import Instrument, http_get
from tests.django.project import views
from tests.support.postgres import PostgresCluster, wait_until
from tests.support.readings import (
    counts,
    django_closed,
    django_opened,
    django_states,
    wait_for,
)

pytestmark = pytest.mark.postgres


def backend_pid(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


def terminate(postgres: PostgresCluster, pid: int) -> None:
    with postgres.admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_until_gone(postgres, pid)


def wait_until_gone(postgres: PostgresCluster, pid: int) -> bool:
    return wait_until(
        lambda: pid not in {row.pid for row in postgres.server_connections()}, timeout=30
    )


IDLE = {
    catalog.DJANGO_IN_REQUEST: 0,
    catalog.DJANGO_IDLE: 1,
    catalog.DJANGO_IN_TRANSACTION: 0,
    catalog.DJANGO_ORPHANED: 0,
}


@pytest.fixture
def probe() -> Iterator[list[Any]]:
    """What ``views.pid`` hands the probe mid-request, collected in a list."""
    seen: list[Any] = []
    yield seen
    views.probe = None


def test_connection_in_a_request_counts_in_request_then_idle(
    instrument: Instrument,
    telemetry: Capture,
    probe: list[Any],
    wsgi_server: tuple[str, int],
    service: str,
) -> None:
    """Under CONN_MAX_AGE > 0 a request's connection is in_request, then idle once it ended."""
    instrument()
    views.probe = lambda: probe.append(django_states(telemetry, "persistent"))

    answer = http_get(wsgi_server, "/pid/persistent/")

    assert answer is not None
    assert answer[0] == 200
    assert probe == [{**IDLE, catalog.DJANGO_IDLE: 0, catalog.DJANGO_IN_REQUEST: 1}]
    # the server closes the response (ending the request) after the client has read it
    wait_for(lambda: django_states(telemetry, "persistent") == IDLE, timeout=30)
    assert django_opened(telemetry, "persistent") == 1
    assert counts(telemetry, f"{service}:persistent") == (0, 1)


def test_connection_inside_atomic_counts_in_transaction(
    instrument: Instrument, telemetry: Capture, service: str
) -> None:
    """A connection inside ``transaction.atomic()`` is in_transaction (used), then idle."""
    instrument()
    with transaction.atomic(using="persistent"):
        backend_pid("persistent")
        inside = django_states(telemetry, "persistent")
        used_idle = counts(telemetry, f"{service}:persistent")
    assert inside == {**IDLE, catalog.DJANGO_IDLE: 0, catalog.DJANGO_IN_TRANSACTION: 1}
    assert used_idle == (1, 0)
    assert django_states(telemetry, "persistent") == IDLE


def test_request_end_closes_with_reason_request_end_under_wsgi(
    instrument: Instrument, telemetry: Capture, wsgi_server: tuple[str, int]
) -> None:
    """CONN_MAX_AGE = 0 under a WSGI server: each request's connection closes at its end."""
    instrument()
    for _ in range(3):
        assert http_get(wsgi_server, "/pid/default/") is not None
    # closed when the server closes the response, after the client has read it
    wait_for(
        lambda: django_closed(telemetry, "default") == {catalog.CLOSE_REQUEST_END: 3}, timeout=30
    )
    assert django_opened(telemetry, "default") == 3
    assert django_states(telemetry, "default") == {**IDLE, catalog.DJANGO_IDLE: 0}
    assert telemetry.events(catalog.EVENT_ORPHANED) == []


def test_max_age_explicit_health_check_and_error_closes_have_their_reason(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster
) -> None:
    """Each of Django's closing paths is counted under its own reason."""
    instrument()
    backend_pid("persistent")
    connections["persistent"].close_at = time.monotonic() - 1  # CONN_MAX_AGE has passed
    close_old_connections()

    backend_pid("persistent")
    connections["persistent"].close()

    terminate(postgres, backend_pid("checked"))
    close_old_connections()  # the next use runs a health check, which fails
    backend_pid("checked")

    terminate(postgres, backend_pid("persistent"))
    with pytest.raises(Exception, match="terminat"):
        backend_pid("persistent")
    close_old_connections()  # errors occurred and the connection is unusable

    assert django_closed(telemetry, "persistent") == {
        catalog.CLOSE_MAX_AGE: 1,
        catalog.CLOSE_EXPLICIT: 1,
        catalog.CLOSE_ERROR: 1,
    }
    assert django_closed(telemetry, "checked") == {catalog.CLOSE_HEALTH_CHECK: 1}
    assert django_opened(telemetry, "persistent") == 3
    assert django_opened(telemetry, "checked") == 2


def test_garbage_collected_connection_is_closed_with_that_reason(
    instrument: Instrument, telemetry: Capture
) -> None:
    """A dead thread's connection, once collected, counts as closed by garbage collection."""
    instrument()
    worker = threading.Thread(target=backend_pid, args=("default",))
    worker.start()
    worker.join()
    import gc

    gc.collect()
    assert django_closed(telemetry, "default") == {catalog.CLOSE_GARBAGE_COLLECTED: 1}
    assert django_states(telemetry, "default") == {**IDLE, catalog.DJANGO_IDLE: 0}


def test_age_and_idle_time_of_the_oldest_connection(
    instrument: Instrument, telemetry: Capture
) -> None:
    """max_age grows from the open; max_idle restarts at each query."""
    instrument()
    backend_pid("persistent")
    opened_by = time.monotonic()
    wait_for(lambda: time.monotonic() - opened_by > 0.3)
    queried_from = time.monotonic()
    backend_pid("persistent")
    persistent = {catalog.DJANGO_ALIAS: "persistent"}
    age = telemetry.value(catalog.DJANGO_CONNECTION_AGE.name, attributes=persistent)
    idle = telemetry.value(catalog.DJANGO_CONNECTION_IDLE.name, attributes=persistent)
    read_by = time.monotonic()
    assert age > 0.3
    assert 0 <= idle <= read_by - queried_from
    assert idle < age


def test_postgres_sees_the_pool_name_as_application_name(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """``pg_stat_activity.application_name`` is the pool name of the metrics,
    ``<service>:<alias>``, and the pool's points carry its identity."""
    instrument()
    pid = backend_pid("persistent")
    (row,) = [row for row in postgres.server_connections() if row.pid == pid]
    assert row.application_name == f"{service}:persistent"
    (point,) = [
        p
        for p in telemetry.metrics()[catalog.CONNECTION_COUNT.name]
        if p.attributes[catalog.POOL_NAME] == row.application_name
        and p.attributes[catalog.STATE] == catalog.STATE_USED
    ]
    assert {k: v for k, v in point.attributes.items() if k.startswith(("db.", "server."))} == {
        catalog.POOL_NAME: row.application_name,
        catalog.STATE: catalog.STATE_USED,
        catalog.DB_SYSTEM: "postgresql",
        catalog.DB_NAMESPACE: postgres.database,
        catalog.SERVER_ADDRESS: postgres.host,
        catalog.SERVER_PORT: postgres.port,
    }


def test_application_name_opt_out_leaves_it_unset(
    instrument: Instrument, postgres: PostgresCluster
) -> None:
    """With ``django_application_name=False`` poolwatch names nothing."""
    instrument(django_application_name=False)
    pid = backend_pid("persistent")
    (row,) = [row for row in postgres.server_connections() if row.pid == pid]
    assert row.application_name == ""


def test_application_name_the_user_chose_wins(
    instrument: Instrument, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``PGAPPNAME`` set by the user is left alone."""
    monkeypatch.setenv("PGAPPNAME", "billing-worker")
    instrument()
    pid = backend_pid("persistent")
    (row,) = [row for row in postgres.server_connections() if row.pid == pid]
    assert row.application_name == "billing-worker"
