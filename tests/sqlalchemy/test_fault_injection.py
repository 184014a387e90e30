"""An error at any internal step leaves every exported count equal to the pool's truth."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import _guard, _leaks, _sites, catalog
from poolwatch import _recorder as recorder
from poolwatch._histogram import Buckets
from poolwatch._integrations import sqlalchemy as adapter
from poolwatch._leaks import Loans
from poolwatch._recorder import PoolRecorder
from poolwatch._telemetry import Telemetry
from poolwatch.testing import Capture, FakeClock, check_leaks
from tests.support.readings import counts

POOL = "faulty"
LEAK_THRESHOLD = 0.1
#: Large enough that the second checkout is no "busy pool" one: its site is sampled later.
SIZE = 4

#: Every internal step of a checkout, a timeout, a checkin, a leak and a collection.
STEPS: list[tuple[Any, str]] = [
    (adapter, "current_context"),
    (PoolRecorder, "trace"),
    (PoolRecorder, "state_now"),
    (PoolRecorder, "state_attributes"),
    (Loans, "holders"),
    (Loans, "sample_sites"),
    (PoolRecorder, "drain"),
    (PoolRecorder, "_busy_threshold"),
    (PoolRecorder, "_came_back"),
    (Loans, "view"),
    (recorder, "Loan"),
    (_leaks, "Loan"),
    (Telemetry, "checkout_span"),
    (Telemetry, "timed_out"),
    (Telemetry, "emit_event"),
    (_leaks.Watchdog, "watch"),
    (Telemetry, "leaked"),
    (Telemetry, "returned"),
    (Telemetry, "never_returned"),
    (_sites.SiteCapture, "capture"),
    (_sites.SiteCapture, "of_holder"),
    (_sites, "function_of"),
    (Buckets, "observe"),
    (Buckets, "observe_many"),
]


def _broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


def _workload(engine: sa.Engine, clock: FakeClock) -> None:
    """The pool emptied (only the first checkout records its site), a pool timeout, every
    connection leaked then returned, one handle dropped unreturned."""
    held = [engine.connect() for _ in range(SIZE)]
    assert held[0].exec_driver_sql("SELECT 1").scalar() == 1
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    clock.advance(LEAK_THRESHOLD * 2)
    check_leaks()
    for connection in held:
        connection.close()
    dropped = engine.connect()
    del dropped
    gc.collect()


@pytest.mark.parametrize(
    "step", [None, *STEPS], ids=["no-fault", *(f"{t.__name__}.{n}" for t, n in STEPS)]
)
def test_counts_equal_the_pool_after_an_error_at_any_step(
    step: tuple[Any, str] | None,
    make_engine: Callable[..., sa.Engine],
    telemetry: Capture,
    poolwatch_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one internal step raising, the app runs unchanged and pending, timeouts, used,
    idle, leaked now, leaks and never-returned still match what happened."""
    engine = make_engine(pool_size=SIZE, max_overflow=0, pool_timeout=0.05)
    poolwatch.instrument_sqlalchemy(
        engine,
        pool_name=POOL,
        spans=True,
        root_spans=True,
        leak_threshold=LEAK_THRESHOLD,
        **telemetry.providers,
    )
    if step is not None:
        monkeypatch.setattr(*step, _broken)
    _workload(engine, poolwatch_clock)
    read = telemetry.metrics  # collect once with the fault still in place
    read()
    monkeypatch.undo()
    pool = {catalog.POOL_NAME: POOL}
    assert engine.pool.checkedout() == 0
    assert counts(telemetry, POOL) == (0, engine.pool.checkedin())
    assert telemetry.value(catalog.CONNECTION_PENDING_REQUESTS.name, attributes=pool) == 0
    assert telemetry.value(catalog.CONNECTION_TIMEOUTS.name, attributes=pool) == 1
    assert telemetry.value(catalog.CONNECTION_LEAKED.name, attributes=pool) == 0
    assert telemetry.value(catalog.CONNECTION_LEAKS.name, attributes=pool) == SIZE
    assert telemetry.value(catalog.CONNECTION_NEVER_RETURNED.name, attributes=pool) == 1
    assert (step is None) == (not _guard.error_counts()), _guard.error_counts()


def test_a_missed_checkin_is_no_leak(
    make_engine: Callable[..., sa.Engine],
    telemetry: Capture,
    poolwatch_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection that came back while the checkin hook failed is dropped from the books
    when the watchdog finds it old, counted as a missed checkin, and never reported leaked."""
    engine = make_engine(pool_size=2, max_overflow=0)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name=POOL, leak_threshold=LEAK_THRESHOLD, **telemetry.providers
    )
    monkeypatch.setattr(PoolRecorder, "checked_in", _broken)
    engine.connect().close()
    monkeypatch.undo()
    poolwatch_clock.advance(LEAK_THRESHOLD * 2)
    check_leaks()
    pool = {catalog.POOL_NAME: POOL}
    assert telemetry.events(catalog.EVENT_LEAK) == []
    assert telemetry.value(catalog.CONNECTION_LEAKS.name, attributes=pool) == 0
    assert telemetry.value(catalog.CONNECTION_LEAKED.name, attributes=pool) == 0
    assert _guard.error_counts() == {"sqlalchemy.checkin": 1, "recorder.missed_checkin": 1}


def test_a_failure_wrapping_the_creator_costs_only_create_time(
    make_engine: Callable[..., sa.Engine], telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If poolwatch cannot time the pool's creator, the pool is still attached and recorded."""
    monkeypatch.setattr(adapter, "_time_creator", _broken)
    engine = make_engine(pool_size=2, max_overflow=0)
    poolwatch.instrument_sqlalchemy(engine, pool_name=POOL, **telemetry.providers)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        assert counts(telemetry, POOL) == (1, 0)
    assert _guard.error_counts() == {"sqlalchemy.attach": 1}
