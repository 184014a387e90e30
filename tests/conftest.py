"""Shared fixtures: in-memory telemetry, a SQLite file, and a clean slate after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwatch.testing import Capture, reset

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def telemetry() -> Iterator[Capture]:
    """In-memory providers to pass to ``instrument_*``."""
    sink = Capture()
    yield sink
    sink.shutdown()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of the test's own."""
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(autouse=True)
def _clean_slate() -> Iterator[None]:
    """Every test starts uninstrumented with no counted internal errors, and leaves it so."""
    reset()
    yield
    reset()
