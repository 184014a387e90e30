"""Telemetry never breaks the app: poolwatch's own failures are caught, counted and logged once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import _guard, catalog
from poolwatch._integrations import sqlalchemy_orm
from poolwatch._recorder import PoolRecorder
from poolwatch.testing import Capture
from tests.support.failing import ExplodingLoggerProvider, ExplodingTracerProvider
from tests.support.readings import gauge


def test_a_failing_recorder_does_not_break_checkouts(
    instrumented: Callable[..., sa.Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Errors inside the checkout hook are counted per hook and logged once with a traceback."""
    engine = instrumented()

    def broken(*_args: Any) -> None:
        raise ValueError("bookkeeping bug")

    monkeypatch.setattr(PoolRecorder, "succeeded", broken)
    monkeypatch.setattr(PoolRecorder, "checked_in", broken)
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert _guard.error_counts() == {"sqlalchemy.checkout": 3, "sqlalchemy.checkin": 3}
    logged = [record for record in caplog.records if record.name == "poolwatch"]
    assert len(logged) == 2
    assert all(record.exc_info for record in logged)


def test_internal_errors_are_exported_as_a_counter(
    instrumented: Callable[..., sa.Engine], telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """poolwatch.internal.errors counts caught errors by hook."""
    engine = instrumented()

    def broken(*_args: Any) -> None:
        raise ValueError("bookkeeping bug")

    monkeypatch.setattr(PoolRecorder, "checked_in", broken)
    engine.connect().close()
    engine.connect().close()
    assert (
        telemetry.value(
            catalog.INTERNAL_ERRORS.name, attributes={catalog.HOOK: "sqlalchemy.checkin"}
        )
        == 2
    )


def test_a_broken_tracer_does_not_break_checkouts(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A tracer that raises when starting spans: checkouts still work and are still measured."""
    engine = make_engine()
    tracer_provider = ExplodingTracerProvider()
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name="app",
        meter_provider=telemetry.meter_provider,
        tracer_provider=tracer_provider,
        root_spans=True,
    )
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert _guard.error_counts() == {"sqlalchemy.checkout": 1}
    pending = gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, "app")
    assert pending == 0


def test_the_pool_timeout_reaches_the_app_unchanged_when_the_event_exporter_raises(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """The app gets SQLAlchemy's own TimeoutError (code 3o7r) even if emitting the event fails."""
    engine = make_engine(pool_size=1, max_overflow=0, pool_timeout=0.05)
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name="app",
        meter_provider=telemetry.meter_provider,
        logger_provider=ExplodingLoggerProvider(),  # type: ignore[arg-type]
    )
    with engine.connect(), pytest.raises(sa.exc.TimeoutError) as raised:
        engine.connect()
    assert type(raised.value) is sa.exc.TimeoutError
    assert raised.value.code == "3o7r"
    assert "QueuePool limit of size 1 overflow 0 reached" in str(raised.value)
    assert _guard.error_counts() == {"sqlalchemy.checkout": 1}
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 1


def test_connection_errors_pass_through_and_are_not_counted_as_timeouts(
    instrumented: Callable[..., sa.Engine], telemetry: Capture, tmp_path: Any
) -> None:
    """A database that cannot be opened raises the driver's error, counted as a failed open,
    not a timeout."""
    engine = instrumented(url=f"sqlite:///{tmp_path}/missing/dir/app.db")
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "app") == 0
    assert _guard.error_counts() == {}
    assert [event.event_name for event in telemetry.events()] == [catalog.EVENT_CREATE_FAILED]
    assert (
        telemetry.value(
            catalog.CONNECTION_CREATE_ERRORS.name,
            attributes={catalog.POOL_NAME: "app", catalog.ERROR_TYPE: "OperationalError"},
        )
        == 1
    )


def test_a_failing_metric_callback_does_not_break_collection(
    instrumented: Callable[..., sa.Engine], telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool whose state cannot be read is skipped; the other metrics are still collected."""
    engine = instrumented()
    engine.connect().close()
    monkeypatch.setattr(PoolRecorder, "read_state", lambda *_: 1 / 0, raising=False)
    recorder = engine.pool._poolwatch_recorder  # type: ignore[attr-defined]
    monkeypatch.setattr(recorder, "read_state", lambda: 1 / 0)
    metrics = telemetry.metrics()
    assert metrics[catalog.CONNECTION_TIMEOUTS.name][0].value == 0
    assert _guard.error_counts()["collect"] >= 1


def test_the_database_error_reaches_the_app_unchanged_when_its_hooks_fail(
    instrumented: Callable[..., sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failing conflict checks, on the execution-error path and around session methods, leave the
    app's own exceptions as they were; each failure is counted under its hook."""
    engine = instrumented()

    def broken(*_args: Any) -> None:
        raise ValueError("classification bug")

    monkeypatch.setattr(sqlalchemy_orm, "_database_kind", broken)
    monkeypatch.setattr(sqlalchemy_orm, "_session_kind", broken)
    with engine.connect() as connection, pytest.raises(sa.exc.OperationalError) as raised:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    assert "no such table: no_such_table" in str(raised.value.orig)
    with sa.orm.Session(engine) as session, pytest.raises(sa.exc.NoInspectionAvailable):
        session.get(object, 1)  # not a mapped class: SQLAlchemy's own InvalidRequestError
    assert _guard.error_counts() == {
        "sqlalchemy.execution_error": 1,
        "sqlalchemy.session": 1,
    }
