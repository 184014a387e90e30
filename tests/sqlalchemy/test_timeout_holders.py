"""A pool timeout lists its holders at a bounded cost: a few stacks sampled, every loan counted."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolwatch
from poolwatch import _holders, catalog
from poolwatch import _recorder as recorder
from poolwatch.testing import Capture

HELD = 200
#: Checkouts that record their borrow site themselves (see PoolRecorder): one in SITE_EVERY,
#: and every one once half the pool is out; the others are left for sampling.
WITH_SITE = sum(
    1
    for tick in range(HELD)
    if tick % recorder.SITE_EVERY == 0 or tick >= int(HELD * recorder.BUSY_SHARE)
)
WITHOUT_SITE = HELD - WITH_SITE


def borrow(engine: sa.Engine, held: list[Any]) -> None:
    """The application code that holds the pool."""
    held.append(engine.connect())


@pytest.fixture
def exhausted(instrumented: Callable[..., sa.Engine]) -> Iterator[tuple[sa.Engine, Any]]:
    """A pool of 200 (no leak watchdog, which would sample too) whose every connection is held."""
    engine = instrumented(pool_size=HELD, max_overflow=0, pool_timeout=0, leak_threshold=0)
    held: list[Any] = []
    for _ in range(HELD):
        borrow(engine, held)
    yield engine, engine.pool._poolwatch_recorder  # type: ignore[attr-defined]
    for connection in held:
        connection.close()


def time_out(engine: sa.Engine) -> None:
    with contextlib.suppress(sa.exc.TimeoutError):
        engine.connect()


def counted(entry: str) -> int:
    return int(entry.split(" x ", maxsplit=1)[0])


def test_a_timeout_samples_the_oldest_holders_up_to_the_limit_and_counts_the_rest(
    exhausted: tuple[sa.Engine, Any], telemetry: Capture
) -> None:
    """98 loans without a site: the 50 oldest sampled, 48 listed as not sampled, 200 counted."""
    engine, books = exhausted
    unsited = [key for key, entry in books.loans.out.items() if not entry[2]]
    assert len(unsited) == WITHOUT_SITE == 98
    time_out(engine)
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    holders = list(event.attributes[catalog.POOL_HOLDERS])
    assert [counted(entry) for entry in holders] == [102, 50, 48]
    assert " in borrow (line " in holders[0]
    # the holder is this very thread, sampled while it timed out
    assert " in time_out (line " in holders[1]
    assert holders[2].startswith("48 x borrow site not sampled (oldest ")
    assert holders[2].endswith(", MainThread)")
    assert set(books.loans.sampled) == set(unsited[: _holders.SAMPLE_LIMIT])
    assert "; 48 x borrow site not sampled (oldest " in str(event.body)


def test_timeouts_soon_after_a_sampling_one_reuse_its_samples(
    exhausted: tuple[sa.Engine, Any], telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within REUSE_FOR no holder is sampled again; after it, the next oldest are."""
    engine, books = exhausted
    monkeypatch.setattr(_holders, "REUSE_FOR", 3600.0)
    time_out(engine)
    time_out(engine)
    assert len(books.loans.sampled) == _holders.SAMPLE_LIMIT
    monkeypatch.setattr(_holders, "REUSE_FOR", 0.0)
    time_out(engine)
    assert len(books.loans.sampled) == WITHOUT_SITE
    first, second, third = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    for event in (first, second):
        assert [counted(e) for e in event.attributes[catalog.POOL_HOLDERS]] == [102, 50, 48]
    assert [counted(e) for e in third.attributes[catalog.POOL_HOLDERS]] == [102, 98]


def test_a_storm_of_callers_timing_out_together_samples_the_holders_once(
    exhausted: tuple[sa.Engine, Any], telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 threads time out at once: 50 stacks sampled in all, 20 events each counting 200."""
    engine, books = exhausted
    monkeypatch.setattr(_holders, "REUSE_FOR", 3600.0)
    capture = books._sites
    of_holder = capture.of_holder
    calls: list[object] = []

    def sampling(*args: Any) -> Any:
        calls.append(args[0])
        return of_holder(*args)

    monkeypatch.setattr(capture, "of_holder", sampling)
    start = threading.Barrier(20)

    def caller() -> None:
        start.wait()
        time_out(engine)

    callers = [threading.Thread(target=caller) for _ in range(20)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    assert len(calls) == _holders.SAMPLE_LIMIT
    events = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    assert len(events) == 20
    for event in events:
        assert sum(counted(e) for e in event.attributes[catalog.POOL_HOLDERS]) == HELD


def first(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def second(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def third(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def fourth(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def fifth(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def sixth(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def seventh(engine: sa.Engine, held: list[Any]) -> None:
    held.append(engine.connect())


def test_functions_past_the_listed_five_are_counted_together(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Seven borrowing functions: the five oldest named, the last two as one entry."""
    engine = make_engine(pool_size=8, max_overflow=0, pool_timeout=0)
    poolwatch.instrument_sqlalchemy(engine, capture_stacks=True, **telemetry.providers)
    held: list[Any] = []
    for borrower in (first, first, second, third, fourth, fifth, sixth, seventh):
        borrower(engine, held)
    time_out(engine)
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    holders = list(event.attributes[catalog.POOL_HOLDERS])
    named = [entry.split(" (")[0].rsplit(" in ", 1)[1] for entry in holders[:5]]
    assert named == ["first", "second", "third", "fourth", "fifth"]
    assert [counted(entry) for entry in holders] == [2, 1, 1, 1, 1, 2]
    assert holders[5].startswith("2 x in 2 other functions (oldest ")
    assert holders[5].endswith(", MainThread)")
    for connection in held:
        connection.close()


def test_asyncio_callers_timing_out_together_sample_the_holder_tasks_once(
    telemetry: Capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 tasks hold an async pool, 10 tasks time out together: 50 task stacks sampled in all."""
    monkeypatch.setattr(_holders, "REUSE_FOR", 3600.0)
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=120, max_overflow=0, pool_timeout=0
    )
    poolwatch.instrument_sqlalchemy(engine, leak_threshold=0, **telemetry.providers)
    books = engine.sync_engine.pool._poolwatch_recorder  # type: ignore[attr-defined]
    calls: list[object] = []
    of_holder = books._sites.of_holder
    monkeypatch.setattr(books._sites, "of_holder", lambda *a: calls.append(a[1]) or of_holder(*a))

    async def time_out() -> None:
        with contextlib.suppress(sa.exc.TimeoutError):
            await engine.connect()

    async def main() -> None:
        held, release = asyncio.Semaphore(0), asyncio.Event()

        async def hold() -> None:
            async with engine.connect():
                held.release()
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(120)]
        for _ in holders:
            await held.acquire()
        await asyncio.gather(*(time_out() for _ in range(10)))
        release.set()
        await asyncio.gather(*holders)
        await engine.dispose()

    asyncio.run(main())
    assert len(calls) == _holders.SAMPLE_LIMIT
    assert all(task is not None for task in calls)  # sampled as tasks, not as the loop's thread
    events = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    assert len(events) == 10
    unsited = sum(
        1
        for tick in range(120)
        if tick % recorder.SITE_EVERY and tick < int(120 * recorder.BUSY_SHARE)
    )
    for event in events:
        holders = list(event.attributes[catalog.POOL_HOLDERS])
        assert sum(counted(entry) for entry in holders) == 120
        assert holders[-1].startswith(
            f"{unsited - _holders.SAMPLE_LIMIT} x borrow site not sampled (oldest "
        )


def test_the_frames_snapshot_runs_with_the_collector_off_where_a_collection_can_deadlock() -> None:
    """On CPython 3.11 no garbage collection can start inside the snapshot; it is on again after."""
    seen: list[bool] = []

    def snapshot() -> dict[int, Any]:
        seen.append(gc.isenabled())
        return {}

    assert gc.isenabled()
    assert _holders.current_frames(snapshot) == {}
    assert seen == [not _holders.GC_OFF_FOR_SNAPSHOT]
    assert gc.isenabled()


def test_the_frames_snapshot_leaves_a_disabled_collector_disabled() -> None:
    """An application that turned the collector off finds it off after a sample, even a failed one."""

    def failing() -> dict[int, Any]:
        raise RuntimeError("no frames")

    gc.disable()
    try:
        assert _holders.current_frames(dict) == {}
        with pytest.raises(RuntimeError, match="no frames"):
            _holders.current_frames(failing)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failed_frames_snapshot_turns_the_collector_back_on() -> None:
    """The collector comes back on when the snapshot raises."""

    def failing() -> dict[int, Any]:
        raise RuntimeError("no frames")

    with pytest.raises(RuntimeError, match="no frames"):
        _holders.current_frames(failing)
    assert gc.isenabled()
