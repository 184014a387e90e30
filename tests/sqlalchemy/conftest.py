"""Helpers for SQLAlchemy tests: engines with known pool settings and readers of poolwatch's view."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import poolwatch
from poolwatch.testing import Capture

EngineFactory = Callable[..., sa.Engine]


@pytest.fixture
def make_engine(sqlite_url: str) -> Iterator[EngineFactory]:
    """Create QueuePool engines on the test's SQLite file (disposed at the end)."""
    engines: list[sa.Engine] = []

    def make(url: str | None = None, **kwargs: Any) -> sa.Engine:
        kwargs.setdefault("poolclass", sa.pool.QueuePool)
        engine = sa.create_engine(url or sqlite_url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def instrumented(make_engine: EngineFactory, telemetry: Capture) -> Callable[..., sa.Engine]:
    """An engine made by ``make_engine`` and instrumented into ``telemetry``."""

    def make(
        pool_name: str = "app", leak_threshold: float | None = None, **kwargs: Any
    ) -> sa.Engine:
        engine = make_engine(**kwargs)
        poolwatch.instrument_sqlalchemy(
            engine, pool_name=pool_name, leak_threshold=leak_threshold, **telemetry.providers
        )
        return engine

    return make
