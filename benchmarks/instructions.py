"""Instructions per SQLAlchemy cycle, bare and with poolwatch, counted by valgrind's callgrind.

Run: ``python benchmarks/instructions.py [--cycles N]`` (needs ``valgrind``). CPU time on a shared
or virtual machine varies by tens of percent between rounds; instruction counts do not depend on
what else the machine is doing, so they show small changes in poolwatch's own cost that timing
cannot. Each variant runs twice in a child process under callgrind, once with no measured cycles
and once with ``N``; the difference divided by ``N`` is the cost of one cycle, warm-up, imports and
the final metric collection cancelling out. The hash seed is fixed so both runs take the same
paths. Instructions are not time (a cache miss costs many), so the CPU-time figures of
``checkout_overhead.py`` remain the ones the budget is judged by.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WARM_UP = 2000

CHILD = """
import sys
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
import poolwatch

variant, path, url, cycles, warm_up = sys.argv[1:6]
engine = sa.create_engine(url, poolclass=sa.pool.QueuePool)
reader = InMemoryMetricReader()
if variant == "poolwatch":
    poolwatch.instrument_sqlalchemy(
        engine,
        meter_provider=MeterProvider(metric_readers=[reader]),
        tracer_provider=TracerProvider(),
    )


def bare():
    engine.pool.connect().close()


def query():
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1").scalar()


cycle = bare if path == "bare" else query
for _ in range(int(warm_up) + int(cycles)):
    cycle()
if variant == "poolwatch":
    reader.collect()
"""


def instructions(variant: str, path: str, url: str, cycles: int) -> int:
    """Instructions the child executed, all of them (callgrind's ``Collected`` total)."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            variant,
            path,
            url,
            str(cycles),
            str(WARM_UP),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_cycle(variant: str, path: str, url: str, cycles: int) -> float:
    """Instructions of one cycle: the run with ``cycles`` cycles minus the run with none."""
    return (instructions(variant, path, url, cycles) - instructions(variant, path, url, 0)) / cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        print(f"{'cycle':32} {'bare':>10} {'poolwatch':>10} {'x bare':>7}")
        for path, title in (
            ("bare", "checkout + checkin"),
            ("query", "checkout + SELECT 1 + checkin"),
        ):
            bare = per_cycle("bare", path, url, args.cycles)
            instrumented = per_cycle("poolwatch", path, url, args.cycles)
            print(f"{title:32} {bare:10.0f} {instrumented:10.0f} {instrumented / bare:7.3f}")


if __name__ == "__main__":
    main()
