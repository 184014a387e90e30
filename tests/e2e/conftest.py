"""Fixtures for the end-to-end tests: the programs they need and the webhook."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import pipeline
from tests.support.fixtures import needed


@pytest.fixture(scope="session")
def otelcol() -> str:
    """The collector build, with Prometheus, Alertmanager and the launcher checked present.

    Without one of them the tests are skipped locally and fail under CI.
    """
    try:
        for candidates in (pipeline.PROMETHEUS, pipeline.ALERTMANAGER, (str(pipeline.LAUNCHER),)):
            pipeline.find_tool(*candidates)
        return pipeline.collector_binary()
    except pipeline.ToolMissing as missing:
        needed(str(missing))


@pytest.fixture
def webhook() -> Iterator[pipeline.Webhook]:
    """A webhook receiver on a free loopback port, shut down after the test."""
    with pipeline.serve_webhook() as served:
        yield served
