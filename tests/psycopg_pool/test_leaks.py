"""Leaked and never-returned psycopg_pool connections, traced to the code that borrowed them."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg_pool
import pytest
from psycopg_pool import ConnectionPool

from poolwatch import catalog
from poolwatch.testing import Capture, FakeClock
from tests.support.readings import assert_borrowed_by, counts, gauge, the_one_leak, wait_for

pytestmark = pytest.mark.postgres

THRESHOLD = 0.2


def borrow_and_forget(pool: ConnectionPool) -> Any:
    """Application code that takes a connection and keeps it."""
    return pool.getconn()


def test_a_connection_held_past_the_threshold_is_reported_once_with_its_borrow_site(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture, poolwatch_clock: FakeClock
) -> None:
    """One leak event naming the borrowing function, line and thread; then a returned event."""
    pool = instrumented(min_size=1, max_size=2, leak_threshold=THRESHOLD)
    connection = borrow_and_forget(pool)
    event = the_one_leak(telemetry, poolwatch_clock, THRESHOLD)
    attributes = event.attributes
    assert_borrowed_by(attributes, "app", borrow_and_forget)
    assert attributes[catalog.CONNECTION_AGE] == pytest.approx(THRESHOLD)
    assert attributes[catalog.LEAK_THRESHOLD] == THRESHOLD
    assert Path(psycopg_pool.__file__).parent.as_posix() not in attributes[catalog.CODE_STACKTRACE]
    assert gauge(telemetry, catalog.CONNECTION_LEAKED, "app") == 1

    poolwatch_clock.advance(0.1)
    pool.putconn(connection)
    (returned,) = telemetry.events(catalog.EVENT_RETURNED)
    assert returned.attributes[catalog.CODE_FUNCTION] == "borrow_and_forget"
    assert returned.attributes[catalog.CONNECTION_HELD] == pytest.approx(2 * THRESHOLD + 0.1)
    assert gauge(telemetry, catalog.CONNECTION_LEAKED, "app") == 0
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 1


def test_the_watchdog_thread_finds_a_leak_on_the_real_clock(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """The end-to-end proof for psycopg_pool: no fake clock, no check called by the test; the
    watchdog thread reports the connection held past the threshold by itself."""
    pool = instrumented(min_size=1, max_size=2, leak_threshold=THRESHOLD)
    connection = borrow_and_forget(pool)
    wait_for(lambda: bool(telemetry.events(catalog.EVENT_LEAK)))
    (event,) = telemetry.events(catalog.EVENT_LEAK)
    assert_borrowed_by(event.attributes, "app", borrow_and_forget)
    assert event.attributes[catalog.CONNECTION_AGE] >= THRESHOLD
    pool.putconn(connection)
    assert gauge(telemetry, catalog.CONNECTION_LEAKS, "app") == 1


def test_a_connection_dropped_without_putconn_is_reported_as_never_returned(
    instrumented: Callable[..., ConnectionPool], telemetry: Capture
) -> None:
    """The garbage-collected connection is counted once, and the pool still counts it used."""
    pool = instrumented(min_size=1, max_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        borrow_and_forget(pool)
        gc.collect()
    assert gauge(telemetry, catalog.CONNECTION_NEVER_RETURNED, "app") == 1
    (event,) = telemetry.events(catalog.EVENT_NEVER_RETURNED)
    assert event.attributes[catalog.CODE_FUNCTION] == "borrow_and_forget"
    assert counts(telemetry, "app") == (1, 0)  # psycopg_pool never gets it back
