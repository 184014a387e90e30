"""Shared fixtures for the monitoring tests: real binaries, free loopback ports, processes.

promtool, amtool, prometheus and alertmanager come from Debian's packages
(.ci/setup-system.sh). Without one of them a test is skipped locally and fails under CI.
Every process started here listens on 127.0.0.1 only and is killed in teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwatch.monitoring import config
from tests.support import pipeline
from tests.support.fixtures import needed

REPO = Path(__file__).resolve().parents[2]


def _tool(*candidates: str) -> str:
    try:
        return pipeline.find_tool(*candidates)
    except pipeline.ToolMissing as missing:
        needed(str(missing))


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool."""
    return _tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    """Path of amtool."""
    return _tool("amtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of the Prometheus server."""
    return _tool(*pipeline.PROMETHEUS)


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    """Path of the Alertmanager server."""
    return _tool(*pipeline.ALERTMANAGER)


@pytest.fixture(scope="session")
def default_config() -> config.MonitoringConfig:
    """The default monitoring config, as `poolwatch generate` uses it."""
    return config.MonitoringConfig()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[pipeline.Processes]:
    """Processes for the test (no collector needed), each stopped afterwards, pass or fail."""
    with pipeline.running_processes(tmp_path) as running:
        yield running
