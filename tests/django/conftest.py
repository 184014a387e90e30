"""Django connection tests: the test project on the test PostgreSQL, served for real.

Django is set up once per session with ``tests.django.project.settings`` pointing at the
session's PostgreSQL. Each test instruments Django under a service name of its own, so its
connections carry an ``application_name`` no other test uses, and ``pg_stat_activity`` rows can
be told apart.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import poolwatch
from poolwatch.testing import Capture
from tests.support.postgres import PostgresCluster, wait_until
from tests.support.wsgi import serving

SETTINGS = "tests.django.project.settings"


def database_environment(postgres: PostgresCluster) -> dict[str, str]:
    """The ``POOLWATCH_DJANGO_*`` variables that point the test project at ``postgres``."""
    return {
        "POOLWATCH_DJANGO_DB_HOST": postgres.host,
        "POOLWATCH_DJANGO_DB_PORT": str(postgres.port),
        "POOLWATCH_DJANGO_DB_NAME": postgres.database,
        "POOLWATCH_DJANGO_DB_USER": postgres.user,
        "POOLWATCH_DJANGO_DB_PASSWORD": postgres.password,
    }


@pytest.fixture(scope="session")
def django_project(postgres: PostgresCluster) -> None:
    """Django set up with the test project (once: Django cannot be set up twice)."""
    import django

    os.environ.update(database_environment(postgres))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> str:
    """A service name of this test's own (connections are named ``<service>:<alias>``)."""
    name = f"shop-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", name)
    return name


Instrument = Callable[..., None]


@pytest.fixture
def instrument(django_project: None, service: str, telemetry: Capture) -> Iterator[Instrument]:
    """``instrument(**settings)``: instrument Django into ``telemetry``; undone afterwards."""

    def instrument_now(**settings: Any) -> None:
        poolwatch.instrument_django(**telemetry.providers, **settings)

    yield instrument_now
    from django.db import connections

    poolwatch.uninstrument_django()
    connections.close_all()
    poolwatch.uninstrument_psycopg_pool()
    pooled = connections["pooled"]
    if pooled.alias in getattr(pooled, "_connection_pools", {}):  # a pool of its own per test
        pooled.close_pool()


@pytest.fixture
def gc_off() -> Iterator[None]:
    """No garbage collection during the test: an orphan stays until the collector runs, and in
    a busy process that is not soon enough; here it is never, so the test sees what it left."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def free_socket() -> socket.socket:
    """A listening-ready TCP socket bound to a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def asgi_server(django_project: None) -> Iterator[tuple[str, int]]:
    """The project's ASGI application served by uvicorn in a thread: ``(host, port)``."""
    import uvicorn

    from tests.django.project.asgi import application

    sock = free_socket()
    config = uvicorn.Config(application, lifespan="off", log_level="critical", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, timeout=30), "uvicorn did not start"
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def wsgi_server(django_project: None) -> Iterator[tuple[str, int]]:
    """The project's WSGI application served by waitress (one worker thread): ``(host, port)``."""
    from tests.django.project.wsgi import application

    with serving(application, threads=1) as server:
        yield "127.0.0.1", server.effective_port


def idle_pids(postgres: PostgresCluster, application_name: str) -> set[int]:
    """Backends PostgreSQL shows idle for ``application_name``."""
    rows = postgres.server_connections(application_name)
    return {row.pid for row in rows if row.state == "idle"}


def http_get(address: tuple[str, int], path: str) -> tuple[int, bytes] | None:
    """``GET path`` over a fresh connection: ``(status, body)``, or None when the server broke
    the response off (as it does for a body shorter than its Content-Length)."""
    import http.client

    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (http.client.HTTPException, ConnectionError):
        return None
    finally:
        connection.close()
