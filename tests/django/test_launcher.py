"""Zero-code: the test project under ``opentelemetry-instrument uvicorn``, exporting OTLP.

The project knows nothing of poolwatch and keeps its own ``DJANGO_SETTINGS_MODULE``; the launcher
loads poolwatch through its ``poolwatch_django`` entry point. The issue's failure is reproduced
against it and what arrives at an in-process OTLP receiver is compared with pg_stat_activity.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolwatch import catalog
from tests.django.conftest import database_environment, http_get, idle_pids
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.pipeline import free_port
from tests.support.postgres import PostgresCluster, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
SERVICE = "shop-launched"
REQUESTS = 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as otlp:
        yield otlp
    assert otlp.errors == []


#: The servers, as ``opentelemetry-instrument`` runs them (``{port}`` filled in).
SERVERS = {
    "uvicorn": [
        "uvicorn",
        "tests.django.project.asgi:application",
        "--host=127.0.0.1",
        "--port={port}",
        "--lifespan=off",
        "--log-level=critical",
    ],
    "waitress": [
        "waitress-serve",
        "--listen=127.0.0.1:{port}",
        "--threads=1",
        "tests.django.project.wsgi:application",
    ],
}

Launch = Callable[[str], tuple[str, int]]


@pytest.fixture
def launch(postgres: PostgresCluster, receiver: OtlpReceiver) -> Iterator[Launch]:
    """``launch(server)``: the project served under the launcher, ``(host, port)``; killed at the
    end of the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(server: str) -> tuple[str, int]:
        port = free_port()
        program, *arguments = SERVERS[server]
        command = [
            str(BIN / "opentelemetry-instrument"),
            str(BIN / program),
            *(argument.format(port=port) for argument in arguments),
        ]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=launcher_environment(postgres, receiver),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        processes.append(process)
        address = ("127.0.0.1", port)
        up = wait_until(lambda: _answers(address), timeout=60, interval=0.2)
        assert up, f"the launched server did not answer\n{_stop(process)}"
        return address

    try:
        yield start
    finally:
        for process in processes:
            _stop(process)


def launcher_environment(postgres: PostgresCluster, receiver: OtlpReceiver) -> dict[str, str]:
    """The app's settings and OTLP exports to ``receiver``, every 200 ms."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.django.project.settings",
        "POOLWATCH_TEST_GC": "off",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false",
        **database_environment(postgres),
    }


def _answers(address: tuple[str, int]) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(address) == 0


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    output, _ = process.communicate()
    return output or ""


def test_launched_app_reports_the_orphans_postgres_shows_idle(
    launch: Launch, receiver: OtlpReceiver, postgres: PostgresCluster
) -> None:
    """Short-body requests under uvicorn leave idle backends; the exported events name exactly
    those backends, with the request's route and view, and the gauge counts them."""
    launched = launch("uvicorn")
    for _ in range(REQUESTS):
        assert http_get(launched, "/short/") is None
    name = f"{SERVICE}:default"
    assert wait_until(
        lambda: len(receiver.log_records(catalog.EVENT_ORPHANED)) == REQUESTS, timeout=60
    )

    events = [record["attributes"] for record in receiver.log_records(catalog.EVENT_ORPHANED)]
    idle = idle_pids(postgres, name)
    assert {event[catalog.BACKEND_PID] for event in events} == idle
    assert len(idle) == REQUESTS
    for event in events:
        assert event[catalog.HTTP_ROUTE] == "short/"
        assert event[catalog.DJANGO_VIEW] == "tests.django.project.views.short_body"
        assert event[catalog.BACKEND_APPLICATION] == name

    def orphaned_now() -> object:
        points = receiver.metric_points(catalog.DJANGO_CONNECTIONS.name)
        return [
            value
            for attributes, value in points
            if attributes.get(catalog.DJANGO_STATE) == catalog.DJANGO_ORPHANED
        ] == [REQUESTS]

    assert wait_until(orphaned_now, timeout=60)


def test_launched_wsgi_app_reuses_its_connection_without_orphans(
    launch: Launch, receiver: OtlpReceiver, postgres: PostgresCluster
) -> None:
    """CONN_MAX_AGE > 0 under waitress (one worker thread): one connection, one backend, idle
    between requests, never reported; a job thread's leftover connection is."""
    launched = launch("waitress")
    answers = [http_get(launched, "/pid/persistent/") for _ in range(3)]
    pids = {int(answer[1]) for answer in answers if answer is not None}
    name = f"{SERVICE}:persistent"

    def exported(metric: str, **wanted: str) -> list[object]:
        return [
            value
            for attributes, value in receiver.metric_points(metric)
            if all(attributes.get(key) == want for key, want in wanted.items())
        ]

    idle = {catalog.DJANGO_ALIAS: "persistent", catalog.DJANGO_STATE: catalog.DJANGO_IDLE}
    assert wait_until(lambda: exported(catalog.DJANGO_CONNECTIONS.name, **idle) == [1], timeout=60)
    # A job thread that ends without closing is an orphan: once it is reported, orphan checks
    # have run after the requests above, and the reused connection was not among them.
    job = http_get(launched, "/background/default/")
    assert job is not None
    assert wait_until(lambda: receiver.log_records(catalog.EVENT_ORPHANED), timeout=60)

    (orphan,) = [record["attributes"] for record in receiver.log_records(catalog.EVENT_ORPHANED)]
    assert orphan[catalog.DJANGO_ALIAS] == "default"
    assert orphan[catalog.ORPHAN_REASON] == catalog.ORPHAN_THREAD_DEAD
    assert orphan[catalog.THREAD_NAME] == "report-job"
    assert orphan[catalog.BACKEND_PID] == int(job[1])
    assert len(pids) == 1
    assert pids == {row.pid for row in postgres.server_connections(name)}
    assert exported(catalog.DJANGO_OPENED.name, **{catalog.DJANGO_ALIAS: "persistent"}) == [1]
    orphaned = {catalog.DJANGO_ALIAS: "persistent", catalog.DJANGO_STATE: catalog.DJANGO_ORPHANED}
    assert exported(catalog.DJANGO_CONNECTIONS.name, **orphaned) == [0]
