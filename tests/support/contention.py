"""Real contention on a pool of two: callers that hold a connection 0.8 s, or give up after 0.3 s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from poolwatch import catalog
from poolwatch.testing import Capture
from tests.support.readings import buckets, counts, gauge, total

HOLD = 0.8
TIMEOUT = 0.3
POOL = 2


def hold_from_threads(
    callers: int,
    connection: Callable[[], AbstractContextManager[object]],
    timeout_error: type[BaseException],
) -> int:
    """Start ``callers`` threads at once, each holding a ``connection()`` for HOLD seconds; how
    many of them got ``timeout_error`` instead."""
    start = threading.Barrier(callers)
    errors: list[BaseException] = []

    def caller() -> None:
        start.wait()
        try:
            with connection():
                threading.Event().wait(HOLD)
        except timeout_error as error:
            errors.append(error)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return len(errors)


def assert_served_and_timed_out(
    telemetry: Capture, pool: str, timed_out: int, waited_within: str
) -> None:
    """POOL immediate checkouts held HOLD s, ``timed_out`` waits of TIMEOUT s that gave up, all
    of them in the wait bucket ``waited_within`` (its bound leaves slack for a busy machine)."""
    callers = POOL + timed_out
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, pool) == timed_out
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, pool)
    assert (wait["0.1"], wait[waited_within], wait["+Inf"]) == (
        POOL,  # served at once
        callers,
        callers,
    )
    # nobody gave up before the timeout
    assert total(telemetry, catalog.CONNECTION_WAIT_TIME, pool) >= timed_out * TIMEOUT
    use = buckets(telemetry, catalog.CONNECTION_USE_TIME, pool)
    assert (use["0.1"], use["10.0"], use["+Inf"]) == (0, POOL, POOL)  # the holds
    assert gauge(telemetry, catalog.CONNECTION_PENDING_REQUESTS, pool) == 0
    assert counts(telemetry, pool) == (0, POOL)
    assert len(telemetry.events(catalog.EVENT_POOL_TIMEOUT)) == timed_out
