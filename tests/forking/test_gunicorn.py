"""Pre-fork servers: every gunicorn worker detects leaks and counts only its own work."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import poll

APPS = Path(__file__).parent / "apps"
WORKERS = 3
POOL = "forked"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def booted_workers(log: Path) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log.read_text())}


@pytest.fixture(params=[True, False], ids=["preload", "no-preload"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Path, bool]]:
    """gunicorn with sync workers serving the app on a loopback port, and its log."""
    port, log = free_port(), tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--timeout", "120",
        "--config", str(APPS / "gunicorn_conf.py"), "--error-logfile", str(log),
        *(["--preload"] if request.param else []), "gunicorn_app:app",
    ]  # fmt: skip
    environment = {"POOLWATCH_TEST_DB": f"sqlite:///{tmp_path / 'app.db'}", "PYTHONPATH": str(APPS)}
    with subprocess.Popen(command, env=environment, cwd=tmp_path) as process:
        try:

            def booted() -> bool:
                assert process.poll() is None, log.read_text() if log.exists() else "no log"
                return len(booted_workers(log) if log.exists() else ()) >= WORKERS

            assert poll(booted, 60, 0.1), log.read_text() if log.exists() else "no log"
            yield port, log, request.param
        finally:
            process.terminate()
            process.wait(30)


def hold(port: int, results: list[dict[str, Any]]) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hold", timeout=90) as response:
        results.append(json.loads(response.read()))


def test_every_worker_reports_its_own_leak_and_counts_only_its_own_work(
    server: tuple[int, Path, bool],
) -> None:
    """One held connection per worker at once: each worker reports one leak of its own, and
    its counts start from its own work: one connection opened, and the pool timeout at import
    counted only where the import ran (the worker, unless ``--preload`` ran it in the master)."""
    port, log, preload = server
    results: list[dict[str, Any]] = []
    clients = [threading.Thread(target=hold, args=(port, results)) for _ in range(WORKERS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(120)
    assert {result["pid"] for result in results} == booted_workers(log)
    for result in results:
        assert result["leak_events"] == [POOL], result
        assert result["leaks"] == 1, result
        assert result["creates"] == 1, result
        assert result["timeouts"] == (0 if preload else 1), result
        assert result["pending"] == 0, result
        assert "poolwatch-leaks" in result["threads"], result
