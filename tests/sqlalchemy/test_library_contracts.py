"""SQLAlchemy behaves as it does without poolwatch, as its own test suite checks it."""

from __future__ import annotations

import inspect
import sqlite3
from unittest import mock

import sqlalchemy as sa
from sqlalchemy.orm import Session

import poolwatch
from poolwatch.testing import Capture

SESSION_METHODS = ("__init__", "close", "commit", "rollback", "execute", "flush", "get")


def test_an_async_pool_without_an_engine_still_works_from_sync_code(telemetry: Capture) -> None:
    """An AsyncAdaptedQueuePool made without an engine checks out from sync code: poolwatch adds
    no ``connect`` listener, which would switch its first-connect lock to the asyncio one."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    pool = sa.pool.AsyncAdaptedQueuePool(lambda: sqlite3.connect(":memory:"))
    connection = pool.connect()
    assert connection.cursor().execute("SELECT 1").fetchone() == (1,)
    connection.close()
    assert not pool.dispatch.connect


def test_replaced_session_methods_keep_their_argument_specs(telemetry: Capture) -> None:
    """``inspect.getfullargspec`` of every replaced Session method is SQLAlchemy's own."""
    before = {name: inspect.getfullargspec(getattr(Session, name)) for name in SESSION_METHODS}
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    assert poolwatch.integrations.sqlalchemy.ADAPTER.installed
    after = {name: inspect.getfullargspec(getattr(Session, name)) for name in SESSION_METHODS}
    assert after == before
    assert after["close"].args == ["self"]


def test_a_session_on_a_mock_bind_calls_nothing_on_it(telemetry: Capture) -> None:
    """A bind that only looks like an engine (a mock) is not taken for an instrumented pool."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    bind = mock.MagicMock()
    session = Session(bind=bind)
    session.close()
    assert bind.engine.pool._poolwatch_recorder.mock_calls == []
