"""Shared fixtures for the monitoring tests: real binaries, free loopback ports, processes.

promtool, amtool, prometheus and alertmanager come from Debian's packages
(.ci/setup-system.sh). Without one of them a test is skipped locally and fails under CI.
Every process started here listens on 127.0.0.1 only and is killed in teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolwatch.monitoring import config

REPO = Path(__file__).resolve().parents[2]


def _binary(*candidates: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{candidates[0]} is not installed (run .ci/setup-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool."""
    return _binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    """Path of amtool."""
    return _binary("amtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of the Prometheus server."""
    return _binary("/usr/bin/prometheus", "prometheus")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    """Path of the Alertmanager server."""
    return _binary("/usr/bin/prometheus-alertmanager", "alertmanager")


@pytest.fixture(scope="session")
def default_config() -> config.MonitoringConfig:
    """The default monitoring config, as `poolwatch generate` uses it."""
    return config.MonitoringConfig()

def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:  # fmt: skip
    """Poll ``check`` until true; fail with the process log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(
                f"process exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)

@pytest.fixture
def start_process(
    tmp_path: Path,
) -> Iterator[Callable[[list[str], str], tuple[subprocess.Popen[bytes], Path]]]:
    """Start a process in its own session with output in a log file; killed in teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        started.append(proc)
        return proc, log

    yield start

    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
