"""Running ``poolwatch demo`` in a subprocess and reading back the OTLP/JSON it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poolwatch.demo import TELEMETRY_FILE

#: A short demo: every phase runs about 1.6 s (the leak phase at least 3 s).
DURATION = "11"
#: Generous: the machine is shared and the demo runs about 15 s.
DEMO_TIMEOUT_S = 180


def demo_command(*args: str) -> list[str]:
    """``poolwatch demo`` with ``args``, run by this interpreter."""
    return [sys.executable, "-m", "poolwatch.cli", "demo", *args]


def demo_env() -> dict[str, str]:
    """The environment without poolwatch settings that would change the demo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class DemoRun:
    """One finished demo: its exit status, what it printed and the directory it wrote."""

    returncode: int
    output: str
    directory: Path

    def requests(self) -> list[dict[str, Any]]:
        """Every OTLP/JSON request in the telemetry file, in order."""
        text = (self.directory / TELEMETRY_FILE).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]


def run_demo(directory: Path, *args: str) -> DemoRun:
    """Run the demo to completion in ``--no-live`` mode, writing into ``directory``."""
    result = subprocess.run(
        demo_command("--no-live", "--duration", DURATION, "--output", str(directory), *args),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        env=demo_env(),
        check=False,
    )
    return DemoRun(result.returncode, result.stdout + result.stderr, directory)


@pytest.fixture(scope="package")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One complete demo run shared by the tests that read its output and files."""
    run = run_demo(tmp_path_factory.mktemp("demo") / "out")
    assert run.returncode == 0, run.output
    return run


# --- OTLP/JSON readers -------------------------------------------------------------------------


def value(any_value: dict[str, Any]) -> Any:
    """The plain value of an OTLP/JSON ``AnyValue``."""
    if "arrayValue" in any_value:
        return [value(item) for item in any_value["arrayValue"].get("values", [])]
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in any_value:
            return any_value[kind]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    return None


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON item's attributes as a dict."""
    return {pair["key"]: value(pair["value"]) for pair in item.get("attributes", [])}


def log_records(requests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every log record in the requests."""
    for request in requests:
        for resource in request.get("resourceLogs", []):
            for scope in resource.get("scopeLogs", []):
                yield from scope.get("logRecords", [])


def spans(requests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every span in the requests."""
    for request in requests:
        for resource in request.get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                yield from scope.get("spans", [])


def metrics(requests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every metric in the requests (one per collection it appears in)."""
    for request in requests:
        for resource in request.get("resourceMetrics", []):
            for scope in resource.get("scopeMetrics", []):
                yield from scope.get("metrics", [])


def last_points(requests: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The data points of metric ``name`` in the last request that holds it."""
    found = [metric for metric in metrics(requests) if metric["name"] == name]
    assert found, f"no {name} in the telemetry"
    data = found[-1].get("sum") or found[-1].get("gauge") or found[-1].get("histogram")
    return list(data["dataPoints"])


def number(point: dict[str, Any]) -> float:
    """A sum or gauge point's value."""
    return float(point["asInt"]) if "asInt" in point else float(point["asDouble"])
