"""The exhaustion incident, reproduced for real: a conflict that names the pool timeout as its cause.

A scheduler holds one outer session (and its connection) while children, each with a session of
its own, hold connections across slow I/O. The pool runs dry, a child's first query times out,
and its error handler re-saves an object that belongs to the outer session. Without poolwatch
the log shows only "already attached to session"; with it, the telemetry tells the true story.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture, FakeClock
from tests.sqlalchemy.models import Base, Job
from tests.support.readings import buckets, gauge

CHILDREN = 5
POOL_SIZE, OVERFLOW, TIMEOUT = 2, 1, 0.3
#: How long a holder's slow I/O may last at most: it ends once the others have timed out.
SLOW_IO = 20.0
#: The outer session holds one connection, two children get the other two; three time out.
EXPECTED_TIMEOUTS = CHILDREN - (POOL_SIZE + OVERFLOW - 1)
#: Wait bounds either side of the 0.3 s timeout.
WAIT_BOUNDS = (0.25, 1.0)


def assert_the_true_story(telemetry: Capture, outer_key: str) -> None:
    """Timeouts counted, waits at the timeout, conflicts caused by them, holders named."""
    assert gauge(telemetry, catalog.CONNECTION_TIMEOUTS, "jobs") == EXPECTED_TIMEOUTS
    wait = buckets(telemetry, catalog.CONNECTION_WAIT_TIME, "jobs")
    # every timed-out wait was ~0.3 s (up to 1 s when the machine is busy); every other was fast
    assert wait["1.0"] - wait["0.25"] == EXPECTED_TIMEOUTS
    assert wait["0.25"] == wait["+Inf"] - EXPECTED_TIMEOUTS

    conflicts = telemetry.events(catalog.EVENT_CONFLICT)
    assert len(conflicts) == EXPECTED_TIMEOUTS
    for event in conflicts:
        attributes = event.attributes
        assert attributes[catalog.CONFLICT_KIND] == catalog.CONFLICT_ALREADY_ATTACHED
        assert attributes[catalog.OBJECT_CLASS] == "tests.sqlalchemy.models.Job"
        assert attributes[catalog.SESSION_OWNER] == outer_key
        assert attributes[catalog.SESSION_OWNER_SITE].endswith("scheduler")
        assert attributes[catalog.SESSION_CURRENT_SITE].endswith("scheduler.<locals>.child")
        assert attributes[catalog.CONFLICT_CAUSE] == catalog.CAUSE_POOL_TIMEOUT
        assert attributes[catalog.CONFLICT_CAUSE_POOL] == "jobs"
        assert 0 <= attributes[catalog.CONFLICT_CAUSE_AGE] < 5.0
        assert (
            "QueuePool limit of size 2 overflow 1 reached"
            in attributes[catalog.CONFLICT_CAUSE_MESSAGE]
        )
        assert "probable cause: pool jobs timed out" in str(event.body)

    (first_timeout, *_) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    holders = list(first_timeout.attributes[catalog.POOL_HOLDERS])
    assert holders[0].startswith("2 x ") and "scheduler.<locals>.child (" in holders[0]
    assert holders[1].startswith("1 x ") and "scheduler (" in holders[1]
    counts = {
        point.attributes[catalog.CONFLICT_KIND]: point.value
        for point in telemetry.metrics()[catalog.SESSION_CONFLICTS.name]
    }
    assert counts == {catalog.CONFLICT_ALREADY_ATTACHED: EXPECTED_TIMEOUTS}


# --- asyncio ------------------------------------------------------------------------------------


async def scheduler(engine: Any) -> tuple[str, list[str]]:
    """The outer scheduler: one session held open while the children run."""
    async with AsyncSession(engine, expire_on_commit=False) as outer:
        job = Job(id=1, name="outer")
        outer.add(job)
        await outer.flush()  # takes and holds a connection
        timed_out = 0
        others_timed_out = asyncio.Event()

        async def child(number: int) -> str:
            nonlocal timed_out
            async with AsyncSession(engine) as session:
                try:
                    await session.get(Job, 100 + number)
                    # slow I/O while holding the connection, until the others have timed out
                    await asyncio.wait_for(others_timed_out.wait(), SLOW_IO)
                    return "done"
                except sa.exc.TimeoutError:
                    timed_out += 1
                    if timed_out == EXPECTED_TIMEOUTS:
                        others_timed_out.set()
                    try:
                        session.add(job)  # the error handler re-saves the outer object
                    except sa.exc.InvalidRequestError as conflict:
                        return str(conflict)
                    return "saved"

        results = await asyncio.gather(*(child(n) for n in range(CHILDREN)))
        return str(outer.sync_session.hash_key), results


def run_async_incident(url: str, telemetry: Capture) -> tuple[str, AsyncEngine]:
    """Run the scheduler on an async engine; returns the outer session's key and the engine.

    The caller keeps the engine alive while it reads metrics: a garbage-collected engine's pool
    is no longer reported.
    """
    engine = create_async_engine(
        url, pool_size=POOL_SIZE, max_overflow=OVERFLOW, pool_timeout=TIMEOUT
    )
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="jobs", wait_time_buckets=WAIT_BOUNDS, **telemetry.providers
    )

    async def main() -> tuple[str, list[str]]:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.run_sync(Base.metadata.create_all)
        try:
            return await scheduler(engine)
        finally:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.drop_all)
            await engine.dispose()

    outer_key, results = asyncio.run(main())
    attached = [r for r in results if "is already attached to session" in r]
    assert len(attached) == EXPECTED_TIMEOUTS
    assert results.count("done") == CHILDREN - EXPECTED_TIMEOUTS
    return outer_key, engine


def test_async_incident_on_sqlite(telemetry: Capture, tmp_path: Path) -> None:
    """Async engine on SQLite: the conflict is attributed to the pool timeout before it."""
    outer_key, _engine = run_async_incident(
        f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", telemetry
    )
    assert_the_true_story(telemetry, outer_key)


@pytest.mark.postgres
def test_async_incident_on_postgresql(telemetry: Capture, postgres_url: str) -> None:
    """Async engine on PostgreSQL (psycopg): the same story."""
    outer_key, _engine = run_async_incident(postgres_url, telemetry)
    assert_the_true_story(telemetry, outer_key)


# --- threads --------------------------------------------------------------------------------------


def run_threaded_incident(engine: sa.Engine) -> tuple[str, list[str]]:
    """The same scheduler with threads and a sync engine."""
    results: list[str] = []
    lock = threading.Lock()
    outer_key: list[str] = []

    def scheduler() -> None:
        with Session(engine, expire_on_commit=False) as outer:
            job = Job(id=1, name="outer")
            outer.add(job)
            outer.flush()
            outer_key.append(str(outer.hash_key))
            timed_out: list[int] = []
            others_timed_out = threading.Event()

            def child(number: int) -> None:
                with Session(engine) as session:
                    try:
                        session.get(Job, 100 + number)
                        others_timed_out.wait(SLOW_IO)  # slow I/O until the others time out
                        outcome = "done"
                    except sa.exc.TimeoutError:
                        with lock:
                            timed_out.append(number)
                            if len(timed_out) == EXPECTED_TIMEOUTS:
                                others_timed_out.set()
                        try:
                            session.add(job)
                            outcome = "saved"
                        except sa.exc.InvalidRequestError as conflict:
                            outcome = str(conflict)
                with lock:
                    results.append(outcome)

            threads = [threading.Thread(target=child, args=(n,)) for n in range(CHILDREN)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)

    scheduler()
    return outer_key[0], results


@pytest.fixture
def threaded_engine(
    request: pytest.FixtureRequest, telemetry: Capture, tmp_path: Path
) -> Iterator[sa.Engine]:
    """A sync engine on SQLite or PostgreSQL, instrumented as pool "jobs"."""
    url: str = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'jobs.db'}"
    )
    engine = sa.create_engine(
        url,
        poolclass=sa.pool.QueuePool,
        pool_size=POOL_SIZE,
        max_overflow=OVERFLOW,
        pool_timeout=TIMEOUT,
    )
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="jobs", wait_time_buckets=WAIT_BOUNDS, **telemetry.providers
    )
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize(
    "threaded_engine",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_threaded_incident(threaded_engine: sa.Engine, telemetry: Capture) -> None:
    """Threads and a sync engine, on SQLite and PostgreSQL: the same story."""
    outer_key, results = run_threaded_incident(threaded_engine)
    assert sum("is already attached" in r for r in results) == EXPECTED_TIMEOUTS
    assert_the_true_story(telemetry, outer_key)


def test_the_cause_s_age_is_measured_on_poolwatch_s_clock(
    telemetry: Capture, tmp_path: Path, poolwatch_clock: FakeClock
) -> None:
    """A conflict 2.5 s after the timeout that caused it gives the cause's age as exactly 2.5 s;
    60 s on, past the conflict window, the timeout is too old to be named."""
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'age.db'}",
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
    )
    poolwatch.instrument_sqlalchemy(engine, pool_name="jobs", **telemetry.providers)
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as outer:
        job = Job(id=1, name="outer")
        outer.add(job)
        outer.flush()  # holds the only connection
        with Session(engine) as session:
            with pytest.raises(sa.exc.TimeoutError):
                session.get(Job, 2)
            poolwatch_clock.advance(2.5)
            with pytest.raises(sa.exc.InvalidRequestError):
                session.add(job)
            poolwatch_clock.advance(60)
            with pytest.raises(sa.exc.InvalidRequestError):
                session.add(job)
    first, second = telemetry.events(catalog.EVENT_CONFLICT)
    assert first.attributes[catalog.CONFLICT_CAUSE] == catalog.CAUSE_POOL_TIMEOUT
    assert first.attributes[catalog.CONFLICT_CAUSE_AGE] == 2.5
    assert catalog.CONFLICT_CAUSE not in second.attributes
    engine.dispose()
