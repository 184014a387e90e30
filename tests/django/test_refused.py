"""A role's CONNECTION LIMIT under concurrent requests: every refused connect counted, once each."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from django.db import connections

from poolwatch import catalog
from poolwatch._integrations.django_tracking import pool_name
from poolwatch.testing import Capture
from tests.django.conftest import Instrument
from tests.support.postgres import PostgresCluster
from tests.support.refused import REFUSAL, limited_role
from tests.support.wsgi import serving

pytestmark = pytest.mark.postgres

LIMIT = 6
REQUESTS = 16
ALIAS = "limited"


@pytest.fixture
def limited_alias(postgres: PostgresCluster) -> Iterator[str]:
    """A database alias (CONN_MAX_AGE = 0) whose role may hold LIMIT connections."""
    with limited_role(postgres, LIMIT) as role:
        connections.settings[ALIAS] = {**connections.settings["default"], "USER": role}
        try:
            yield ALIAS
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]


def serve_concurrently(path: str, requests: int) -> list[int]:
    """``requests`` GETs at once against the project served by waitress; their statuses."""
    from tests.django.project.wsgi import application

    statuses: list[int] = []
    start = threading.Barrier(requests)

    with serving(application, threads=requests) as server:

        def get() -> None:
            start.wait()
            url = f"http://127.0.0.1:{server.effective_port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)

        clients = [threading.Thread(target=get) for _ in range(requests)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
    return statuses


def test_refused_connects_are_counted_exactly_as_the_requests_that_failed(
    instrument: Instrument, telemetry: Capture, limited_alias: str
) -> None:
    """16 concurrent requests against a role limited to 6 connections: the HTTP 500s equal
    poolwatch's failed-open count for the alias, and one event carries the server's message."""
    instrument()
    statuses = serve_concurrently(f"/hold/{limited_alias}/", REQUESTS)
    failed = statuses.count(500)
    assert len(statuses) == REQUESTS
    assert failed > 0
    assert statuses.count(200) == REQUESTS - failed
    points = telemetry.metrics()[catalog.CONNECTION_CREATE_ERRORS.name]
    assert [(_counted_by(p.attributes), p.value) for p in points] == [
        (
            {catalog.POOL_NAME: pool_name(limited_alias), catalog.ERROR_TYPE: "OperationalError"},
            failed,
        )
    ]
    (event,) = telemetry.events(catalog.EVENT_CREATE_FAILED)
    assert REFUSAL in event.attributes[catalog.ERROR_MESSAGE]


def _counted_by(attributes: Mapping[str, object]) -> dict[str, object]:
    """The attributes a failed open is counted by; the pool's identity must be PostgreSQL's."""
    assert attributes[catalog.DB_SYSTEM] == "postgresql"
    return {key: attributes[key] for key in (catalog.POOL_NAME, catalog.ERROR_TYPE)}
