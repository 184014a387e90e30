"""A PostgreSQL of the doctor tests' own (known limits), and running ``poolwatch doctor``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fixtures import started_postgres
from tests.support.postgres import PostgresCluster

#: The doctor's cluster: 20 slots, PostgreSQL's default 3 reserved for superusers -> 17 usable.
MAX_CONNECTIONS = 20
USABLE = MAX_CONNECTIONS - 3


@pytest.fixture(scope="package")
def doctor_postgres() -> Iterator[PostgresCluster]:
    """A cluster with ``max_connections`` = 20, stopped at the end."""
    yield from started_postgres(max_connections=MAX_CONNECTIONS)


@dataclass(frozen=True)
class Diagnosis:
    """One ``poolwatch doctor`` run: exit status, text output, and the JSON report if asked."""

    status: int
    output: str
    report: dict[str, Any] | None

    def codes(self, level: str | None = None) -> list[str]:
        """Finding codes (of one level, if given), in report order."""
        assert self.report is not None, self.output
        return [f["code"] for f in self.report["findings"] if level in (None, f["level"])]


def doctor(*args: str, json_report: bool = True) -> Diagnosis:
    """Run ``poolwatch doctor`` in a subprocess, as a deploy check would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        [sys.executable, "-m", "poolwatch.cli", "doctor", *args, *(["--json"] if json_report else [])],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout) if json_report and result.stdout.strip() else None
    return Diagnosis(result.returncode, result.stdout + result.stderr, report)
