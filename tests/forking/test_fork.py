"""A forked child: fresh locks, books from zero, and the leak watchdog back on first use."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch import _state, catalog
from poolwatch.testing import Capture

POOL = "app"


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child; its result, as JSON through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(result)  # type: ignore[no-any-return]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_poolwatch_locks_are_held_starts_clean(
    sqlite_url: str, telemetry: Capture
) -> None:
    """Forked while another thread holds every lock poolwatch takes, the child checks out,
    collects and reports a leak: its counts are its own, the parent's loan is not its leak."""
    engine = sa.create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.01)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name=POOL, leak_threshold=0.05, **telemetry.providers
    )
    held = engine.connect()  # the parent's loan, out across the fork
    with pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    (shared,) = _state.live()
    (recorder,) = shared.pools()
    locks = [
        shared._lock,
        shared.signals._lock,
        recorder._lock,
        recorder.loans._lock,
        _state.lock,
        _state._shared_lock,
    ]
    taken, release = threading.Event(), threading.Event()

    def hog() -> None:
        for lock in locks:
            lock.acquire()
        taken.set()
        release.wait()
        for lock in locks:
            lock.release()

    hogger = threading.Thread(target=hog)
    hogger.start()
    taken.wait()

    def child() -> dict[str, Any]:
        engine.dispose(close=False)
        pool = {catalog.POOL_NAME: POOL}
        before = telemetry.value(catalog.CONNECTION_TIMEOUTS.name, attributes=pool)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            deadline = time.monotonic() + 30
            while not telemetry.events(catalog.EVENT_LEAK) and time.monotonic() < deadline:
                time.sleep(0.02)
        return {
            "timeouts_before": before,
            "leaks": telemetry.value(catalog.CONNECTION_LEAKS.name, attributes=pool),
            "events": len(telemetry.events(catalog.EVENT_LEAK)),
            "threads": sorted(t.name for t in threading.enumerate()),
        }

    try:
        telemetry.clear()
        result = in_child(child)
    finally:
        release.set()
        hogger.join()
        held.close()
        engine.dispose()
    assert result == {
        "timeouts_before": 0,
        "leaks": 1,
        "events": 1,
        "threads": ["MainThread", "poolwatch-leaks"],
    }
