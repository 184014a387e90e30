"""SQLAlchemy behaves as it does without poolwatch, as its own test suite checks it."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.util.compat import inspect_getfullargspec

import poolwatch
from poolwatch import _guard, catalog
from poolwatch._integrations.sqlalchemy import ADAPTER
from poolwatch.testing import Capture
from tests.support.readings import counts

SESSION_METHODS = ("__init__", "close", "commit", "rollback", "execute", "flush", "get")


def test_an_async_pool_without_an_engine_still_works_from_sync_code(telemetry: Capture) -> None:
    """An AsyncAdaptedQueuePool made without an engine checks out from sync code: poolwatch adds
    no ``connect`` listener, which would switch its first-connect lock to the asyncio one."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    pool = sa.pool.AsyncAdaptedQueuePool(lambda: sqlite3.connect(":memory:"), logging_name="bare")
    connection = pool.connect()
    assert connection.cursor().execute("SELECT 1").fetchone() == (1,)
    connection.close()
    assert not pool.dispatch.connect
    assert _guard.error_counts() == {}
    assert counts(telemetry, "bare") == (0, 1)
    opened = telemetry.value(
        catalog.CONNECTION_CREATE_TIME.name, attributes={catalog.POOL_NAME: "bare"}
    )
    assert opened["count"] == 1


@pytest.mark.parametrize(
    "argspec", [inspect.getfullargspec, inspect_getfullargspec], ids=["inspect", "sqlalchemy"]
)
def test_replaced_methods_keep_their_argument_specs(
    argspec: Callable[[Any], Any], telemetry: Capture
) -> None:
    """Every replaced Session and Connection method has SQLAlchemy's own argument spec, read by
    ``inspect`` or from the code object as SQLAlchemy's test suite reads it."""
    methods = [(Session, name) for name in SESSION_METHODS]
    methods.append((sa.engine.Connection, "_handle_dbapi_exception"))
    before = [argspec(getattr(cls, name)) for cls, name in methods]
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    assert ADAPTER.installed
    assert [argspec(getattr(cls, name)) for cls, name in methods] == before
    assert argspec(Session.close).args == ["self"]


def test_a_session_on_a_mock_bind_calls_nothing_on_it(telemetry: Capture) -> None:
    """A bind that only looks like an engine (a mock) is not taken for an instrumented pool."""
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    bind = mock.MagicMock()
    session = Session(bind=bind)
    session.close()
    assert bind.engine.pool._poolwatch_recorder.mock_calls == []
