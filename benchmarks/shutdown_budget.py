"""How much longer an instrumented process takes to exit when its collector is down.

Run: ``python benchmarks/shutdown_budget.py [--runs 3] [--write-docs]``. A small SQLAlchemy app (a few
checkouts, then a normal exit) runs under ``opentelemetry-instrument`` with metrics, traces and
logs exported over OTLP/HTTP to a closed loopback port, with the default export timeout and with
``OTEL_EXPORTER_OTLP_TIMEOUT=2``; the baseline exports nothing (``none`` exporters). The table gives
the wall time from start to exit (median and each run) and the median's excess over the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _docs

APP = """
import sqlalchemy, sys
engine = sqlalchemy.create_engine(
    "sqlite:///" + sys.argv[1], poolclass=sqlalchemy.pool.QueuePool, pool_logging_name="app"
)
for _ in range(10):
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
"""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exit_time(env: dict[str, str], database: Path) -> float:
    launcher = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert launcher is not None, "opentelemetry-instrument is not installed next to python"
    started = time.perf_counter()
    subprocess.run(
        [launcher, sys.executable, "-c", APP, str(database)],
        env=env,
        check=True,
        timeout=120,
        stderr=subprocess.DEVNULL,  # the exporters' retry warnings
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    _docs.add_flag(parser)
    args = parser.parse_args()
    database = Path(tempfile.mkdtemp()) / "app.db"
    base = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_EXPORTER_")}
    base |= {"OTEL_SERVICE_NAME": "shutdown-budget", "OTEL_PYTHON_LOG_LEVEL": "error"}
    down = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
    }
    variants = {
        "no exporter": {
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
        "collector down, default timeout": down,
        "collector down, OTEL_EXPORTER_OTLP_TIMEOUT=2": {**down, "OTEL_EXPORTER_OTLP_TIMEOUT": "2"},
    }
    print(f"{'variant':<46} {'exit s (median)':>16} {'more':>6} {'runs':>22}")
    rows = [
        "| variant | start to exit (median) | more than no exporter | each run |",
        "| --- | ---: | ---: | ---: |",
    ]
    baseline = None
    for name, extra in variants.items():
        times = [exit_time(base | extra, database) for _ in range(args.runs)]
        median = statistics.median(times)
        baseline = median if baseline is None else baseline
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"{name:<46} {median:>16.1f} {median - baseline:>6.1f} {shown:>22}", flush=True)
        rows.append(f"| {name} | {median:.1f} s | {median - baseline:.1f} s | {shown} |")
    if args.write_docs:
        _docs.write("shutdown_budget", "\n".join(rows))


if __name__ == "__main__":
    main()
