"""Instructions per SQLAlchemy cycle, bare and with poolwatch, counted by valgrind's callgrind.

Run: ``python benchmarks/instructions.py [--cycles N] [--repeat R]`` (needs ``valgrind``). CPU time
on a shared or virtual machine varies by tens of percent between rounds; instruction counts do not
depend on what else the machine is doing, so they show small changes in poolwatch's own cost that
timing cannot. Each variant runs twice in a child process under callgrind, once with no measured
cycles and once with ``N``; the difference divided by ``N`` is the cost of one cycle, warm-up,
imports and the final metric collection cancelling out. The hash seed is fixed so both runs take
the same paths, and the objects made by the warm-up are frozen out of the garbage collector so that
a full collection does not land in one run and not the other. Instructions are not time (a cache
miss costs many), so the CPU-time figures of ``checkout_overhead.py`` remain the ones the budget is
judged by. The cycles are ``checkout_overhead.py``'s: by default a bare checkout+checkin, ``SELECT 1``
through the driver and an ORM session reading one row by primary key (``--path`` picks any of
them). The child runs them from that file, so their frames are application frames to poolwatch, as
an application's are, and borrow-site walks stop where they would in an app. ``--path psycopg``
measures a psycopg_pool ``getconn``+``putconn`` cycle instead, on a one-connection pool of a
throwaway PostgreSQL started for the run. ``--repeat R`` measures each cycle R times and shows
every run's ratio next to the median (the ORM cycle's count moves between runs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _docs
from checkout_overhead import CYCLES, create_schema

WARM_UP = 2000

CHILD = """
import gc
import sys

variant, path, url, cycles, warm_up, benchmarks = sys.argv[1:7]
sys.path.insert(0, benchmarks)

import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import poolwatch
from checkout_overhead import CYCLES

reader = InMemoryMetricReader()
providers = {
    "meter_provider": MeterProvider(metric_readers=[reader]),
    "tracer_provider": TracerProvider(),
}
if path == "psycopg":
    from psycopg_pool import ConnectionPool

    engine = ConnectionPool(url, min_size=1, max_size=1, open=False)
    if variant == "poolwatch":
        poolwatch.instrument_psycopg_pool(engine, **providers)
    engine.open(wait=True)

    def cycle(pool):
        pool.putconn(pool.getconn())

else:
    engine = sa.create_engine(url, poolclass=sa.pool.QueuePool)
    if variant == "poolwatch":
        poolwatch.instrument_sqlalchemy(engine, **providers)
    _title, cycle, _share = CYCLES[path]
for _ in range(int(warm_up)):
    cycle(engine)
# what exists now is never collected again: a full collection then costs the same in both runs
gc.freeze()
for _ in range(int(cycles)):
    cycle(engine)
if variant == "poolwatch":
    reader.collect()
if path == "psycopg":
    engine.close()
"""


#: The cycles of ``checkout_overhead.py`` measured here, and the share of ``--cycles`` each runs
#: (an ORM cycle is far longer).
PATHS = {"bare": 1, "driver": 1, "statement": 1, "orm": 5, "psycopg": 1}
PSYCOPG_TITLE = "psycopg_pool getconn + putconn"


def instructions(script: Path, variant: str, path: str, url: str, cycles: int) -> int:
    """Instructions the child executed, all of them (callgrind's ``Collected`` total)."""
    result = subprocess.run(
        [
            # no address-space randomisation: object addresses (and so id()-keyed dicts and
            # caches, SQLAlchemy's among them) are the same from run to run
            *(["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []),
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(script),
            variant,
            path,
            url,
            str(cycles),
            str(WARM_UP),
            str(Path(__file__).resolve().parent),
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


def per_cycle(script: Path, variant: str, path: str, url: str, cycles: int) -> float:
    """Instructions of one cycle: the run with ``cycles`` cycles minus the run with none."""
    return (
        instructions(script, variant, path, url, cycles)
        - instructions(script, variant, path, url, 0)
    ) / cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument(
        "--path", action="append", choices=sorted(PATHS), help="only this cycle (repeatable)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure each cycle N times; show each run's ratio"
    )
    _docs.add_flag(parser)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package valgrind)")
    paths = args.path or ("bare", "driver", "orm")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        script = Path(tmp) / "app.py"
        script.write_text(CHILD)
        create_schema(url)  # here, not in a child: both runs of a pair must find it made
        dsn = ""
        if "psycopg" in paths:
            from _postgres import throwaway_postgres

            dsn = stack.enter_context(throwaway_postgres()).dsn
        print(f"{'cycle':50} {'bare':>10} {'poolwatch':>10} {'x bare':>7}  runs")
        rows = [
            "| cycle | bare | poolwatch | x bare (median) | x bare, each run |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for path in paths:
            cycles = max(args.cycles // PATHS[path], 1)
            target = dsn if path == "psycopg" else url
            runs = [
                (
                    per_cycle(script, "bare", path, target, cycles),
                    per_cycle(script, "poolwatch", path, target, cycles),
                )
                for _ in range(max(args.repeat, 1))
            ]
            ratios = [instrumented / bare for bare, instrumented in runs]
            ratio = statistics.median(ratios)
            bare = statistics.median(bare for bare, _ in runs)
            instrumented = statistics.median(instrumented for _, instrumented in runs)
            each = ", ".join(f"{r:.3f}" for r in ratios)
            title = PSYCOPG_TITLE if path == "psycopg" else CYCLES[path][0]
            print(f"{title:50} {bare:10.0f} {instrumented:10.0f} {ratio:7.3f}  {each}")
            rows.append(f"| {title} | {bare:,.0f} | {instrumented:,.0f} | {ratio:.3f} | {each} |")
    if args.write_docs:
        _docs.write("instructions", "\n".join(rows))


if __name__ == "__main__":
    main()
