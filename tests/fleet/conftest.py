"""Fixtures for the fleet tests: promtool from Debian's Prometheus packages."""

from __future__ import annotations

import pytest

from tests.support import pipeline
from tests.support.fixtures import needed


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (skipped locally, failed under CI, when missing)."""
    try:
        return pipeline.find_tool("promtool")
    except pipeline.ToolMissing as missing:
        needed(str(missing))
