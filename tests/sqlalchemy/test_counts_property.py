"""Counts stay exact under any mix of pool operations (property-based)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture


class PoolOperations(RuleBasedStateMachine):
    """Checkout, checkin, invalidate, soft-invalidate, detach, dispose, re-create, time out."""

    poolclass: type[sa.pool.Pool] = sa.pool.QueuePool

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.url = f"sqlite:///{Path(self.directory.name) / 'app.db'}"
        self.telemetry = Capture()
        self.held: list[Any] = []
        self.timeouts = 0
        self.engine = self._new_engine()

    def _new_engine(self) -> sa.Engine:
        kwargs: dict[str, Any] = {"poolclass": self.poolclass}
        if self.poolclass is sa.pool.QueuePool:
            kwargs.update(pool_size=2, max_overflow=1, pool_timeout=0.01)
        engine = sa.create_engine(self.url, **kwargs)
        poolwatch.instrument_sqlalchemy(engine, pool_name="app", **self.telemetry.providers)
        return engine

    def _full(self) -> bool:
        pool = self.engine.pool
        return isinstance(pool, sa.pool.QueuePool) and pool.checkedout() >= 3

    @precondition(lambda self: not self._full())
    @rule()
    def checkout(self) -> None:
        self.held.append(self.engine.raw_connection())

    @precondition(lambda self: self._full())
    @rule()
    def time_out(self) -> None:
        try:
            self.engine.raw_connection()
        except sa.exc.TimeoutError:
            self.timeouts += 1
        else:  # pragma: no cover - would mean the pool is not full
            raise AssertionError("checkout on a full pool succeeded")

    @precondition(lambda self: bool(self.held))
    @rule(
        index=st.integers(min_value=0),
        how=st.sampled_from(["close", "invalidate", "soft_invalidate", "detach"]),
    )
    def give_back(self, index: int, how: str) -> None:
        connection = self.held.pop(index % len(self.held))
        if how == "invalidate":
            connection.invalidate()
        elif how == "soft_invalidate":
            connection.invalidate(soft=True)
        elif how == "detach":
            connection.detach()
        connection.close()

    @rule()
    def dispose(self) -> None:
        self.engine.dispose()

    @rule()
    def recreate_engine(self) -> None:
        for connection in self.held:
            connection.close()
        self.held.clear()
        poolwatch.uninstrument_sqlalchemy(self.engine)
        self.engine.dispose()
        self.engine = self._new_engine()
        self.timeouts = 0

    @invariant()
    def reported_counts_equal_the_pools_own(self) -> None:
        pool = self.engine.pool
        if isinstance(pool, sa.pool.QueuePool):
            expected = (pool.checkedout(), pool.checkedin())
        else:
            expected = (len(self.held), 0)
        metrics = self.telemetry.metrics()
        by_state = {
            point.attributes[catalog.STATE]: point.value
            for point in metrics[catalog.CONNECTION_COUNT.name]
            if point.attributes[catalog.POOL_NAME] == "app"
        }
        assert (by_state[catalog.STATE_USED], by_state[catalog.STATE_IDLE]) == expected
        (timeouts,) = metrics[catalog.CONNECTION_TIMEOUTS.name]
        assert timeouts.value == self.timeouts
        (pending,) = metrics[catalog.CONNECTION_PENDING_REQUESTS.name]
        assert pending.value == 0

    def teardown(self) -> None:
        for connection in self.held:
            connection.close()
        poolwatch.uninstrument_sqlalchemy()
        self.engine.dispose()
        self.telemetry.shutdown()
        self.directory.cleanup()


class NullPoolOperations(PoolOperations):
    """The same operations on a NullPool, whose counts poolwatch keeps itself."""

    poolclass = sa.pool.NullPool


TestQueuePoolCounts = PoolOperations.TestCase
TestQueuePoolCounts.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestNullPoolCounts = NullPoolOperations.TestCase
TestNullPoolCounts.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
