"""End to end under the real launcher: ``opentelemetry-instrument python app.py``.

Each test runs one of the scripts in ``apps/`` in a subprocess with the launcher from this
virtualenv, exporting OTLP/HTTP (protobuf) to an in-process receiver on the loopback interface,
then checks what arrived. The apps know nothing of poolwatch: the launcher finds it through its
``opentelemetry_instrumentor`` entry point.

``python -m opentelemetry.instrumentation.auto_instrumentation`` does not work (the package has
no ``__main__``), so the ``opentelemetry-instrument`` script next to ``sys.executable`` is used.

Pool state is read from the exports made while the app sat idle after its work (the app prints
that wall-clock window), so those checks do not depend on the SDK's final export at exit; a
separate test checks that final export on its own. The app stays idle until the receiver holds
such an export (it says when it went idle; the test closes its stdin to let it go on), so no
check depends on how the machine's load schedules the export thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

from poolwatch import catalog
from poolwatch.config import ENV_PREFIX, Config
from poolwatch.monitoring import names
from tests.support.fixtures import needed
from tests.support.otlp_receiver import OtlpReceiver, Points, attributes_of
from tests.support.pipeline import LAUNCHER
from tests.support.polling import poll

APPS = Path(__file__).parent / "apps"
#: The name poolwatch registers its instrumentor under (pyproject.toml entry point).
ENTRY_POINT = "poolwatch_sqlalchemy"

#: Seconds before a launched app is killed.
TIMEOUT = 60
#: OTEL_METRIC_EXPORT_INTERVAL for the apps, in milliseconds.
EXPORT_INTERVAL_MS = 200
#: Seconds an app stays idle after its work: several export intervals.
SETTLE = 1.0

#: The metrics the tests read from an export made while the app was idle (see :func:`at_rest`).
AT_REST = (
    catalog.CONNECTION_TIMEOUTS.name,
    catalog.CONNECTION_COUNT.name,
    catalog.CONNECTION_MAX.name,
    catalog.CONNECTION_PENDING_REQUESTS.name,
    catalog.CONNECTION_WAIT_TIME.name,
)

#: The app's pool settings (see apps/*.py).
POOL = "orders"
POOL_MAX = 2
#: Checkouts each app makes: two it holds, one that times out, three afterwards.
CHECKOUTS = 6

#: The pool's identity, on every one of its points (checked once, then left out of the keys).
IDENTITY = frozenset(
    {catalog.DB_SYSTEM, catalog.DB_NAMESPACE, catalog.SERVER_ADDRESS, catalog.SERVER_PORT}
)
#: Every metric name poolwatch can export.
POOLWATCH_METRICS = frozenset(metric.name for metric in names.all_metrics())


@dataclass(frozen=True)
class Run:
    """A finished app: its exit status, output, and the ``RESULT`` it printed."""

    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]


@dataclass(frozen=True)
class Reference:
    """How SQLAlchemy reports a pool timeout with no instrumentation at all."""

    error_type: str
    message: str


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A fresh OTLP/HTTP receiver on a free loopback port."""
    with OtlpReceiver() as otlp:
        yield otlp
    assert otlp.errors == [], "requests the receiver could not decode"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reference]:
    """The timeout error SQLAlchemy raises for the apps' pool settings, sync and async."""
    directory = tmp_path_factory.mktemp("reference")
    settings: dict[str, Any] = {
        "pool_size": 2,
        "max_overflow": 0,
        "pool_timeout": 0.2,
        "pool_logging_name": POOL,
    }
    engine = sqlalchemy.create_engine(
        f"sqlite:///{directory / 'sync.db'}", poolclass=QueuePool, **settings
    )
    held = [engine.connect(), engine.connect()]
    with pytest.raises(exc.TimeoutError) as sync_error:
        engine.connect()
    for connection in held:
        connection.close()
    engine.dispose()

    async def async_timeout() -> exc.TimeoutError:
        async_engine = create_async_engine(
            f"sqlite+aiosqlite:///{directory / 'async.db'}",
            poolclass=AsyncAdaptedQueuePool,
            **settings,
        )
        try:
            async with async_engine.connect(), async_engine.connect():
                try:
                    async with async_engine.connect():
                        pass
                except exc.TimeoutError as error:
                    return error
            raise AssertionError("the reference checkout did not time out")
        finally:
            await async_engine.dispose()

    async_error = asyncio.run(async_timeout())
    return {
        "sync": _reference(sync_error.value),
        "async": _reference(async_error),
    }


def _reference(error: BaseException) -> Reference:
    return Reference(f"{type(error).__module__}.{type(error).__qualname__}", str(error))


# --- running an app -------------------------------------------------------------------------------


def run_app(
    app: str,
    receiver: OtlpReceiver,
    workdir: Path,
    *,
    settle: float = SETTLE,
    rest: bool = False,
    export_interval_ms: int = EXPORT_INTERVAL_MS,
    extra_env: dict[str, str] | None = None,
) -> Run:
    """Run ``apps/<app>.py`` under ``opentelemetry-instrument``; kill it if it overruns.

    With ``rest``, the app stays idle after its work until the receiver holds an export of
    every metric in :data:`AT_REST` collected after the app said it was idle, whatever the
    machine's load; otherwise it stays idle ``settle`` seconds.
    """
    if not LAUNCHER.exists():
        needed(f"{LAUNCHER} not found (is opentelemetry-instrumentation installed?)")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "OTEL_SERVICE_NAME": f"poolwatch-test-{app}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": str(export_interval_ms),
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false",
        "POOLWATCH_APP_DB": str(workdir / f"{app}.db"),
        "POOLWATCH_APP_SETTLE": str(settle),
        **({"POOLWATCH_APP_REST": "stdin"} if rest else {}),
        **(extra_env or {}),
    }
    command = [str(LAUNCHER), sys.executable, str(APPS / f"{app}.py")]
    stderr_file = workdir / f"{app}.stderr"
    with stderr_file.open("w") as stderr_sink:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_sink,
            text=True,
            start_new_session=True,
        )
    overrun = threading.Timer(TIMEOUT, _kill, (process,))
    overrun.start()
    try:
        assert process.stdin is not None and process.stdout is not None
        lines = _rest_then_resume(process.stdout, receiver) if rest else []
        process.stdin.close()
        lines += process.stdout.read().splitlines()
        process.wait()
    finally:
        overrun.cancel()
        _kill(process)
    stdout, stderr = "\n".join(lines), stderr_file.read_text()
    if process.returncode == -signal.SIGKILL:
        pytest.fail(f"{app} ran over {TIMEOUT}s and was killed\n{stdout}\n{stderr}")
    assert process.returncode == 0, f"{app} exited {process.returncode}\n{stdout}\n{stderr}"
    results = [line for line in lines if line.startswith("RESULT ")]
    assert len(results) == 1, f"{app} printed no RESULT line\n{stdout}\n{stderr}"
    return Run(process.returncode, stdout, stderr, json.loads(results[0].removeprefix("RESULT ")))


def _rest_then_resume(stdout: IO[str], receiver: OtlpReceiver) -> list[str]:
    """Read the app's output up to its ``RESTING <ns>`` line, wait until every metric in
    :data:`AT_REST` was exported from a collection made after that instant, and return the
    lines read; closing the app's stdin then lets it go on."""
    lines = []
    for line in stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("RESTING "):
            idle_since = int(line.split()[1])
            break
    else:
        return lines  # the app ended early: run_app reports its exit

    def exported_at_rest() -> bool:
        return all(
            any(when >= idle_since for when, _ in receiver.metric_snapshots(name))
            for name in AT_REST
        )

    assert poll(exported_at_rest, TIMEOUT, EXPORT_INTERVAL_MS / 1000 / 4), (
        f"no export of {AT_REST} after the app went idle; "
        f"metrics received: {sorted(receiver.metric_names())}"
    )
    return lines


def _kill(process: subprocess.Popen[str]) -> None:
    """Kill the app's process group (its own session) if the app is still running."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- reading what arrived ---------------------------------------------------------------------------


def at_rest(receiver: OtlpReceiver, run: Run, name: str) -> Points:
    """``name``'s points from the last export collected while the app sat idle after its work."""
    start, end = run.result["rest_from_ns"], run.result["rest_until_ns"]
    snapshots = [points for when, points in receiver.metric_snapshots(name) if start <= when <= end]
    assert snapshots, f"no export of {name} while the app was idle ({start}..{end})"
    return snapshots[-1]


def for_pool(points: Points, **attributes: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """The values of ``points`` for pool ``POOL``, keyed by their other attributes."""
    wanted = {catalog.POOL_NAME: POOL, **attributes}
    found: dict[tuple[tuple[str, Any], ...], Any] = {}
    for point_attributes, value in points:
        if all(point_attributes.get(key) == want for key, want in wanted.items()):
            rest = {
                k: v for k, v in point_attributes.items() if k not in wanted and k not in IDENTITY
            }
            found[tuple(sorted(rest.items()))] = value
    return found


def single(points: Points, **attributes: str) -> Any:
    """The one value of ``points`` for pool ``POOL`` (with ``attributes``)."""
    values = for_pool(points, **attributes)
    assert list(values) == [()], f"expected one point for {POOL} {attributes}, got {points}"
    return values[()]


def assert_pool_story(receiver: OtlpReceiver, run: Run, points: Callable[[str], Points]) -> None:
    """The pool's metrics and timeout event tell what the app did; ``points(name)`` reads one."""
    assert run.result["attempts"] == CHECKOUTS
    assert single(points(catalog.CONNECTION_TIMEOUTS.name)) == 1
    identities = {
        point_attributes.get(catalog.DB_SYSTEM)
        for point_attributes, _ in points(catalog.CONNECTION_COUNT.name)
    }
    assert identities == {"sqlite"}
    assert single(points(catalog.CONNECTION_MAX.name)) == POOL_MAX
    assert single(points(catalog.CONNECTION_PENDING_REQUESTS.name)) == 0
    count = points(catalog.CONNECTION_COUNT.name)
    assert single(count, **{catalog.STATE: catalog.STATE_USED}) == 0
    assert single(count, **{catalog.STATE: catalog.STATE_IDLE}) == POOL_MAX
    # an OTLP histogram: its value here is the count
    assert single(points(catalog.CONNECTION_WAIT_TIME.name)) == run.result["attempts"]

    events = receiver.log_records(catalog.EVENT_POOL_TIMEOUT)
    assert len(events) == 1, events
    assert events[0]["attributes"][catalog.POOL_NAME] == POOL


def assert_app_saw(run: Run, reference: Reference) -> None:
    """The app caught SQLAlchemy's own TimeoutError, message unchanged, and printed it."""
    assert run.result["error_type"] == reference.error_type
    assert run.result["message"] == reference.message
    assert f"timed out: {reference.message}" in run.stdout.splitlines()


# --- tests --------------------------------------------------------------------------------------------


def test_sync_app(receiver: OtlpReceiver, tmp_path: Path, reference: dict[str, Reference]) -> None:
    """An app that imports SQLAlchemy first gets its pool's counts, timeout and event exported."""
    run = run_app("sync_app", receiver, tmp_path, rest=True)

    assert_app_saw(run, reference["sync"])
    assert_pool_story(receiver, run, lambda name: at_rest(receiver, run, name))


def test_late_import_app(
    receiver: OtlpReceiver, tmp_path: Path, reference: dict[str, Reference]
) -> None:
    """An app that imports SQLAlchemy late, inside a function, is recorded just the same."""
    run = run_app("late_import_app", receiver, tmp_path, rest=True)

    assert_app_saw(run, reference["sync"])
    assert_pool_story(receiver, run, lambda name: at_rest(receiver, run, name))


def test_async_app(receiver: OtlpReceiver, tmp_path: Path, reference: dict[str, Reference]) -> None:
    """An asyncio app's AsyncAdaptedQueuePool is recorded with the same counts as a sync one."""
    run = run_app("async_app", receiver, tmp_path, rest=True)

    assert_app_saw(run, reference["async"])
    assert_pool_story(receiver, run, lambda name: at_rest(receiver, run, name))


def test_final_state_is_exported_at_exit(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """The SDK's export at exit carries the pool's final state when no periodic export ran."""
    run = run_app("sync_app", receiver, tmp_path, settle=0, export_interval_ms=600_000)

    assert_pool_story(receiver, run, receiver.metric_points)


def test_disabled_instrumentation_exports_nothing(
    receiver: OtlpReceiver, tmp_path: Path, reference: dict[str, Reference]
) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS naming poolwatch's entry point turns poolwatch off."""
    run = run_app(
        "sync_app",
        receiver,
        tmp_path,
        extra_env={
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ENTRY_POINT,
            "POOLWATCH_APP_HEARTBEAT": "1",
        },
    )

    assert_app_saw(run, reference["sync"])
    assert "app.heartbeat" in receiver.metric_names(), "the SDK pipeline itself was not live"
    assert receiver.metric_names() & POOLWATCH_METRICS == set()
    assert catalog.INSTRUMENTATION_SCOPE not in receiver.metric_scopes()
    assert receiver.log_records(catalog.EVENT_POOL_TIMEOUT) == []
    assert receiver.spans(catalog.SPAN_CHECKOUT) == []


def test_bad_setting_warns_once_and_still_records(
    receiver: OtlpReceiver, tmp_path: Path, reference: dict[str, Reference]
) -> None:
    """An unparseable OTEL_PYTHON_POOLWATCH_SPANS prints one warning naming it and its default."""
    variable = ENV_PREFIX + "SPANS"
    default = {field.name: field.default for field in dataclasses.fields(Config)}["spans"]

    run = run_app("sync_app", receiver, tmp_path, rest=True, extra_env={variable: "maybe"})

    mentions = [line for line in run.stderr.splitlines() if variable in line]
    assert len(mentions) == 1, run.stderr
    assert "default" in mentions[0]
    assert repr(default) in mentions[0]
    poolwatch_lines = [line for line in run.stderr.splitlines() if line.startswith("poolwatch")]
    assert poolwatch_lines == mentions, run.stderr
    assert_app_saw(run, reference["sync"])
    assert_pool_story(receiver, run, lambda name: at_rest(receiver, run, name))


def instance_ids(receiver: OtlpReceiver, metric: str, since: int = 0) -> set[str]:
    """The ``service.instance.id`` of every resource that exported ``metric`` (in the exports
    received after the first ``since``)."""
    found = set()
    for export in receiver.metric_exports()[since:]:
        for resource in export.resource_metrics:
            names = {m.name for scope in resource.scope_metrics for m in scope.metrics}
            if metric in names:
                attributes = attributes_of(resource.resource.attributes)
                found.add(attributes.get("service.instance.id") or "")
    return found


def test_prefork_workers_export_under_their_own_instance_ids(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A parent and two forked workers export pool metrics under three distinct instance ids.

    A worker forked while its parent was exporting once inherited the SDK's export lock held
    and never exported (one run in twenty under load); each process's ``EXPORTS`` line (its
    id and its export counts) is shown if an id is missing.
    """
    run = run_app("prefork_app", receiver, tmp_path, extra_env={"POOLWATCH_APP_WORKERS": "2"})

    assert run.result["codes"] == [0, 0]
    exits = [line for line in run.stderr.splitlines() if line.startswith("EXPORTS ")]
    ids = instance_ids(receiver, catalog.CONNECTION_COUNT.name)
    assert "" not in ids
    assert len(ids) == 3, (ids, exits)
    logged = [json.loads(line.removeprefix("EXPORTS ")) for line in exits]
    assert {line["id"] for line in logged} == ids
    assert all(line["failed"] == 0 and line["ok"] > 0 for line in logged), logged
