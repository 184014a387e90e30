"""Session conflicts by kind, with the original exceptions passing through unchanged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture
from tests.sqlalchemy.models import Base, Job


@pytest.fixture
def engine(instrumented: Callable[..., sa.Engine]) -> sa.Engine:
    """A file SQLite engine with the jobs table and one job."""
    engine = instrumented(pool_size=3, max_overflow=0)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Job(id=1, name="first"))
        session.commit()
    return engine


def conflicts(telemetry: Capture) -> dict[str, int]:
    """Conflict counts by kind."""
    return {
        point.attributes[catalog.CONFLICT_KIND]: point.value
        for point in telemetry.metrics().get(catalog.SESSION_CONFLICTS.name, [])
    }


def open_session(engine: sa.Engine) -> Session:
    """Where the owning session is created."""
    return Session(engine)


def test_already_attached_names_both_sessions_and_where_they_were_created(
    engine: sa.Engine, telemetry: Capture
) -> None:
    """Adding another session's object: counted, with class, owner, current session and sites."""
    owner = open_session(engine)
    job = owner.get(Job, 1)
    other = Session(engine)
    with pytest.raises(
        sa.exc.InvalidRequestError, match="is already attached to session"
    ) as raised:
        other.add(job)
    assert type(raised.value) is sa.exc.InvalidRequestError
    assert conflicts(telemetry) == {catalog.CONFLICT_ALREADY_ATTACHED: 1}
    (event_,) = telemetry.events(catalog.EVENT_CONFLICT)
    attributes = event_.attributes
    assert attributes[catalog.CONFLICT_KIND] == catalog.CONFLICT_ALREADY_ATTACHED
    assert attributes[catalog.OBJECT_CLASS] == "tests.sqlalchemy.models.Job"
    assert attributes[catalog.SESSION_OWNER] == str(owner.hash_key)
    assert attributes[catalog.SESSION_CURRENT] == str(other.hash_key)
    assert attributes[catalog.SESSION_OWNER_SITE].endswith(" in open_session")
    assert attributes[catalog.SESSION_CURRENT_SITE].endswith(
        " in test_already_attached_names_both_sessions_and_where_they_were_created"
    )
    assert catalog.CONFLICT_CAUSE not in attributes
    owner.close()
    other.close()


def test_the_event_is_also_a_span_event_on_the_active_span(
    engine: sa.Engine, telemetry: Capture
) -> None:
    """Inside a trace the conflict shows on the request span."""
    owner = Session(engine)
    job = owner.get(Job, 1)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with (
        tracer.start_as_current_span("request"),
        Session(engine) as other,
        pytest.raises(sa.exc.InvalidRequestError),
    ):
        other.add(job)
    (request,) = telemetry.spans("request")
    assert [e.name for e in request.events] == [catalog.EVENT_CONFLICT]
    owner.close()


def test_flushing_inside_a_flush_is_concurrent_use(engine: sa.Engine, telemetry: Capture) -> None:
    """'Session is already flushing' is reported once as concurrent use and re-raised as is."""
    with Session(engine) as session:
        event.listen(session, "before_flush", lambda s, *_: s.flush())
        session.add(Job(id=2, name="second"))
        with pytest.raises(sa.exc.InvalidRequestError, match="already flushing"):
            session.commit()
    assert conflicts(telemetry) == {catalog.CONFLICT_CONCURRENT_USE: 1}


def test_an_illegal_state_change_is_concurrent_use(engine: sa.Engine, telemetry: Capture) -> None:
    """Closing a session while it is beginning (what two tasks sharing it do) is concurrent use."""
    with Session(engine) as session:
        event.listen(session, "after_begin", lambda s, *_: s.close())
        with pytest.raises(sa.exc.IllegalStateChangeError):
            session.get(Job, 1)
    assert conflicts(telemetry) == {catalog.CONFLICT_CONCURRENT_USE: 1}
    (event_,) = telemetry.events(catalog.EVENT_CONFLICT)
    assert event_.attributes[catalog.ERROR_TYPE] == "IllegalStateChangeError"


def test_an_optimistic_lock_failure_is_stale_data(engine: sa.Engine, telemetry: Capture) -> None:
    """A row changed behind the session's back raises StaleDataError, counted as stale data."""
    with Session(engine) as session:
        job = session.get(Job, 1)
        assert job is not None
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE jobs SET version = version + 1 WHERE id = 1")
        job.name = "renamed"
        with pytest.raises(sa.orm.exc.StaleDataError):
            session.commit()
    assert conflicts(telemetry) == {catalog.CONFLICT_STALE_DATA: 1}


def test_a_locked_sqlite_database_is_a_lock_timeout(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """SQLite's 'database is locked', on the path of execution errors, counts as a lock timeout."""
    engine = instrumented(connect_args={"timeout": 0.05})
    Base.metadata.create_all(engine)
    with engine.connect() as writer:
        writer.exec_driver_sql("BEGIN IMMEDIATE")
        with engine.connect() as other, pytest.raises(sa.exc.OperationalError, match="locked"):
            other.exec_driver_sql("INSERT INTO jobs (id, name, version) VALUES (5, 'x', 1)")
        writer.rollback()
    assert conflicts(telemetry) == {catalog.CONFLICT_LOCK_TIMEOUT: 1}
    (event_,) = telemetry.events(catalog.EVENT_CONFLICT)
    assert event_.attributes[catalog.POOL_NAME] == "app"
    assert event_.attributes[catalog.DB_STATUS_CODE] == "SQLITE_BUSY"


@pytest.fixture
def pg_engine(postgres_url: str, telemetry: Capture) -> Iterator[sa.Engine]:
    """An instrumented engine on the test PostgreSQL server with a fresh jobs table."""
    engine = sa.create_engine(postgres_url, pool_size=4, max_overflow=0)
    poolwatch.instrument_sqlalchemy(engine, pool_name="pg", **telemetry.providers)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Job(id=1, name="a"), Job(id=2, name="b")])
        session.commit()
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.postgres
def test_a_postgresql_deadlock_is_counted_with_its_sqlstate(
    pg_engine: sa.Engine, telemetry: Capture
) -> None:
    """Two transactions locking rows in opposite order: PostgreSQL aborts one with 40P01."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def transfer(first: int, second: int) -> None:
        try:
            with pg_engine.begin() as connection:
                connection.exec_driver_sql(f"UPDATE jobs SET name = 'x' WHERE id = {first}")
                barrier.wait(5)
                connection.exec_driver_sql(f"UPDATE jobs SET name = 'y' WHERE id = {second}")
        except sa.exc.DBAPIError as error:
            errors.append(error)

    threads = [threading.Thread(target=transfer, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(errors) == 1
    assert conflicts(telemetry) == {catalog.CONFLICT_DEADLOCK: 1}
    (event_,) = telemetry.events(catalog.EVENT_CONFLICT)
    assert event_.attributes[catalog.DB_STATUS_CODE] == "40P01"
    assert event_.attributes[catalog.POOL_NAME] == "pg"


@pytest.mark.postgres
def test_a_postgresql_serialization_failure_is_counted(
    pg_engine: sa.Engine, telemetry: Capture
) -> None:
    """A repeatable-read transaction updating a row changed since it began fails with 40001."""
    reader = pg_engine.connect().execution_options(isolation_level="REPEATABLE READ")
    reader.exec_driver_sql("SELECT name FROM jobs WHERE id = 1").all()
    with pg_engine.begin() as writer:
        writer.exec_driver_sql("UPDATE jobs SET name = 'changed' WHERE id = 1")
    with pytest.raises(sa.exc.OperationalError, match="could not serialize"):
        reader.exec_driver_sql("UPDATE jobs SET name = 'mine' WHERE id = 1")
    reader.rollback()
    reader.close()
    assert conflicts(telemetry) == {catalog.CONFLICT_SERIALIZATION: 1}
    (event_,) = telemetry.events(catalog.EVENT_CONFLICT)
    assert event_.attributes[catalog.DB_STATUS_CODE] == "40001"


def test_the_original_exception_survives_a_failing_reporter(
    engine: sa.Engine, telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If reporting the conflict fails, the app still gets SQLAlchemy's own exception."""
    from poolwatch._telemetry import Telemetry

    def broken(*_args: Any) -> None:
        raise RuntimeError("reporter down")

    monkeypatch.setattr(Telemetry, "conflict", broken)
    owner = Session(engine)
    job = owner.get(Job, 1)
    with (
        Session(engine) as other,
        pytest.raises(sa.exc.InvalidRequestError, match="already attached"),
    ):
        other.add(job)
    owner.close()
