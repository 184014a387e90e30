"""Orphaned connections, reproduced for real and checked against PostgreSQL's own view."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from poolwatch import catalog
from poolwatch._integrations.django import ADAPTER
from poolwatch.testing import Capture
from tests.django.conftest import Instrument, http_get, idle_pids
from tests.support.postgres import PostgresCluster, wait_until
from tests.support.readings import django_closed, django_opened, django_states, wait_for

pytestmark = pytest.mark.postgres

VIEWS = "tests.django.project.views"


def orphan_events(telemetry: Capture) -> list[Any]:
    return telemetry.events(catalog.EVENT_ORPHANED)


@pytest.mark.usefixtures("gc_off")
def test_short_body_under_uvicorn_leaves_exactly_the_orphans_postgres_shows_idle(
    instrument: Instrument,
    telemetry: Capture,
    postgres: PostgresCluster,
    asgi_server: tuple[str, int],
    service: str,
) -> None:
    """A body shorter than its Content-Length under uvicorn (CONN_MAX_AGE = 0): request_finished
    never fires, and each request's connection is reported orphaned with its route and view."""
    instrument()
    requests = 3
    for _ in range(requests):
        assert http_get(asgi_server, "/short/") is None
    name = f"{service}:default"
    wait_for(lambda: len(orphan_events(telemetry)) == requests, timeout=30)

    events = orphan_events(telemetry)
    reported = {event.attributes[catalog.BACKEND_PID] for event in events}
    assert reported == idle_pids(postgres, name)
    assert len(reported) == requests
    for event in events:
        attributes = event.attributes
        assert attributes[catalog.ORPHAN_REASON] == catalog.ORPHAN_REQUEST_ENDED
        assert attributes[catalog.HTTP_METHOD] == "GET"
        assert attributes[catalog.HTTP_ROUTE] == "short/"
        assert attributes[catalog.DJANGO_VIEW] == f"{VIEWS}.short_body"
        assert attributes[catalog.DJANGO_ALIAS] == "default"
        assert attributes[catalog.BACKEND_APPLICATION] == name
        assert attributes[catalog.CODE_FUNCTION] == "_backend_pid"
        assert attributes[catalog.CODE_FILE].endswith("tests/django/project/views.py")
        assert attributes[catalog.LAST_QUERY_SITE].endswith(" in _backend_pid")
    assert django_states(telemetry, "default")[catalog.DJANGO_ORPHANED] == requests
    assert (
        telemetry.value(catalog.DJANGO_ORPHANS.name, attributes={catalog.DJANGO_ALIAS: "default"})
        == requests
    )


@pytest.mark.usefixtures("gc_off")
def test_background_thread_that_exits_without_closing_is_an_orphan(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """A thread that queries and ends without closing leaves an orphan named by its thread."""
    instrument()
    pids: list[int] = []

    def report_job() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])

    worker = threading.Thread(target=report_job, name="report-job")
    worker.start()
    worker.join()
    ADAPTER.tracker.check()  # type: ignore[union-attr]

    (event,) = orphan_events(telemetry)
    attributes = event.attributes
    assert attributes[catalog.ORPHAN_REASON] == catalog.ORPHAN_THREAD_DEAD
    assert attributes[catalog.THREAD_NAME] == "report-job"
    assert attributes[catalog.CODE_FUNCTION] == (
        "test_background_thread_that_exits_without_closing_is_an_orphan.<locals>.report_job"
    )
    assert catalog.HTTP_ROUTE not in attributes
    assert (
        {attributes[catalog.BACKEND_PID]} == set(pids) == idle_pids(postgres, f"{service}:default")
    )


def test_conn_max_age_reuse_under_wsgi_is_not_an_orphan(
    instrument: Instrument,
    telemetry: Capture,
    postgres: PostgresCluster,
    wsgi_server: tuple[str, int],
    service: str,
) -> None:
    """CONN_MAX_AGE > 0 under a one-thread WSGI server: one connection serves every request,
    stays idle between them, and is never reported."""
    instrument()
    answers = [http_get(wsgi_server, "/pid/persistent/") for _ in range(3)]
    pids = {int(answer[1]) for answer in answers if answer is not None}
    idle = {
        catalog.DJANGO_IN_REQUEST: 0,
        catalog.DJANGO_IDLE: 1,
        catalog.DJANGO_IN_TRANSACTION: 0,
        catalog.DJANGO_ORPHANED: 0,
    }
    # the last request ends when the server closes its response, after the client read it
    wait_for(lambda: django_states(telemetry, "persistent") == idle, timeout=30)
    ADAPTER.tracker.check()  # type: ignore[union-attr]

    assert len(pids) == 1
    assert pids == {row.pid for row in postgres.server_connections(f"{service}:persistent")}
    assert orphan_events(telemetry) == []
    assert django_states(telemetry, "persistent") == idle
    assert django_opened(telemetry, "persistent") == 1


@pytest.mark.usefixtures("gc_off")
def test_conn_max_age_under_asgi_orphans_each_request_thread(
    instrument: Instrument,
    telemetry: Capture,
    postgres: PostgresCluster,
    asgi_server: tuple[str, int],
    service: str,
) -> None:
    """CONN_MAX_AGE > 0 under ASGI: every request runs on a thread of its own that ends with it,
    so every connection is left behind, and reported as such."""
    instrument()
    answers = [http_get(asgi_server, "/pid/persistent/") for _ in range(2)]
    pids = {int(answer[1]) for answer in answers if answer is not None}
    wait_for(lambda: len(orphan_events(telemetry)) == 2, timeout=30)

    events = orphan_events(telemetry)
    assert {event.attributes[catalog.BACKEND_PID] for event in events} == pids
    assert pids == idle_pids(postgres, f"{service}:persistent")
    assert {event.attributes[catalog.ORPHAN_REASON] for event in events} == {
        catalog.ORPHAN_THREAD_DEAD
    }
    assert {event.attributes[catalog.HTTP_ROUTE] for event in events} == {"pid/<str:alias>/"}


def test_transaction_left_idle_past_the_threshold_is_an_orphan(
    instrument: Instrument, telemetry: Capture
) -> None:
    """A transaction without a query for longer than the threshold is found by the checker, and
    is no longer an orphan once it runs a query again."""
    threshold = 1.0  # far longer than the few statements between the query and the reading
    instrument(django_idle_in_transaction=threshold)
    with transaction.atomic(using="persistent"):
        with connections["persistent"].cursor() as cursor:
            cursor.execute("SELECT 1")
        wait_for(lambda: len(orphan_events(telemetry)) == 1, timeout=30)
        orphaned = django_states(telemetry, "persistent")[catalog.DJANGO_ORPHANED]
        with connections["persistent"].cursor() as cursor:
            cursor.execute("SELECT 1")  # the owner is back: no longer an orphan
        back = django_states(telemetry, "persistent")[catalog.DJANGO_IN_TRANSACTION]
        (event,) = orphan_events(telemetry)
    assert (orphaned, back) == (1, 1)
    assert event.attributes[catalog.ORPHAN_REASON] == catalog.ORPHAN_IDLE_IN_TRANSACTION
    assert event.attributes[catalog.CONNECTION_IDLE] >= threshold
    assert event.attributes[catalog.LAST_QUERY_SITE].endswith(
        " in test_transaction_left_idle_past_the_threshold_is_an_orphan"
    )


@pytest.mark.usefixtures("gc_off")
def test_sync_to_async_outside_a_request_leaves_an_orphan_on_a_live_thread(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """``sync_to_async`` outside any request runs on asgiref's long-lived executor thread: the
    connection it opens is never closed, and is reported once idle past the threshold; a query
    from its owner makes it an ordinary connection again."""
    threshold = 1.0
    instrument(django_idle_outside_request=threshold)

    def backend_pid() -> int:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid: int = cursor.fetchone()[0]
            return pid

    pid = asyncio.run(sync_to_async(backend_pid)())
    try:
        wait_for(lambda: len(orphan_events(telemetry)) == 1, timeout=30)
        (event,) = orphan_events(telemetry)
        attributes = event.attributes
        assert attributes[catalog.ORPHAN_REASON] == catalog.ORPHAN_IDLE_OUTSIDE_REQUEST
        assert attributes[catalog.BACKEND_PID] == pid
        assert pid in idle_pids(postgres, f"{service}:default")
        assert attributes[catalog.CONNECTION_IDLE] >= threshold
        assert attributes[catalog.THREAD_NAME] != threading.current_thread().name
        assert catalog.HTTP_ROUTE not in attributes
        assert django_states(telemetry, "default")[catalog.DJANGO_ORPHANED] == 1
        assert asyncio.run(sync_to_async(backend_pid)()) == pid  # its owner is back
        assert django_states(telemetry, "default")[catalog.DJANGO_ORPHANED] == 0
    finally:
        asyncio.run(sync_to_async(connections.close_all)())


@pytest.mark.usefixtures("gc_off")
def test_close_orphans_closes_a_dead_threads_connection(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """With ``close_orphans`` the connection of a thread that ended is closed by poolwatch."""
    instrument(close_orphans=True)

    def connect_and_end() -> None:
        connections["default"].ensure_connection()  # this thread's own wrapper

    worker = threading.Thread(target=connect_and_end)
    worker.start()
    worker.join()
    name = f"{service}:default"
    assert len(postgres.server_connections(name)) == 1
    ADAPTER.tracker.check()  # type: ignore[union-attr]

    assert len(orphan_events(telemetry)) == 1
    assert wait_until(lambda: postgres.server_connections(name) == [], timeout=30)
    assert django_closed(telemetry, "default").get(catalog.CLOSE_ORPHAN_REAPED) == 1


def test_requests_that_finish_under_uvicorn_leave_no_orphan(
    instrument: Instrument,
    telemetry: Capture,
    postgres: PostgresCluster,
    asgi_server: tuple[str, int],
    service: str,
) -> None:
    """CONN_MAX_AGE = 0 under ASGI with responses that are sent: closed at request end, nothing
    reported, nothing left in PostgreSQL."""
    instrument()
    for _ in range(3):
        answer = http_get(asgi_server, "/pid/default/")
        assert answer is not None
        assert answer[0] == 200

    def closed_at_request_end() -> object:
        return sum(
            point.value
            for point in telemetry.metrics().get(catalog.DJANGO_CLOSED.name, [])
            if point.attributes[catalog.CLOSE_REASON] == catalog.CLOSE_REQUEST_END
        )

    # Django closes the connection once the response is sent, after the client has read it
    wait_for(lambda: closed_at_request_end() == 3, timeout=30)
    ADAPTER.tracker.check()  # type: ignore[union-attr]

    assert orphan_events(telemetry) == []
    assert wait_until(lambda: postgres.server_connections(f"{service}:default") == [], timeout=30)


@pytest.mark.usefixtures("gc_off")
def test_a_closed_connection_among_orphans_costs_only_its_backend_pid(
    instrument: Instrument, telemetry: Capture, postgres: PostgresCluster, service: str
) -> None:
    """Three threads end without closing; the middle one's driver connection was closed behind
    Django's back. One orphan pass reports all three, the closed one without a backend pid."""
    instrument()
    pids: dict[str, int] = {}

    def job(close_driver_connection: bool) -> None:
        wrapper = connections["default"]
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids[threading.current_thread().name] = cursor.fetchone()[0]
        if close_driver_connection:
            wrapper.connection.close()

    for name, closing in (("job-1", False), ("job-closed", True), ("job-3", False)):
        worker = threading.Thread(target=job, args=(closing,), name=name)
        worker.start()
        worker.join()
    ADAPTER.tracker.check()  # type: ignore[union-attr]

    events = {event.attributes[catalog.THREAD_NAME]: event for event in orphan_events(telemetry)}
    assert sorted(events) == ["job-1", "job-3", "job-closed"]
    assert catalog.BACKEND_PID not in events["job-closed"].attributes
    reported = {events[name].attributes[catalog.BACKEND_PID] for name in ("job-1", "job-3")}
    assert reported == {pids["job-1"], pids["job-3"]} == idle_pids(postgres, f"{service}:default")
