"""An asyncio server whose startup meets a pool timeout: how often it fails, with and without
poolwatch, idle and under CPU load, and how long poolwatch blocks its event loop meanwhile.

Run: ``python benchmarks/startup_timeout.py [--runs 8] [--load 4] [--holds 0.7,0.95,1.5]
[--catch-holds 1.5]``. Each run starts uvicorn on loopback with the ASGI app below (this file).
Its lifespan startup creates an async SQLAlchemy engine on aiosqlite (``pool_size=3,
max_overflow=0, pool_timeout=1``), starts three background jobs in a task group that each hold a
connection for ``HOLD`` seconds, then checks the database (``SELECT 1``) before declaring itself
started: the check waits for a job's connection, and times out when the jobs hold them past the
timeout. A pool timeout that escapes the startup makes uvicorn exit ("Application startup
failed"), status 3; at the ``--catch-holds`` the startup also runs catching the timeout. Runs
alternate bare and instrumented (in-process SDK providers, batch processors, exporters that send
nothing), ``--load`` busy processes next to them in the loaded half. The app reports the check's
wait, the timeouts, and the largest lateness of a 5 ms ticker task during startup (the event
loop's lag).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import _docs

HOLD = float(os.environ.get("STARTUP_HOLD", "0.7"))
JOBS = 3


# --- the application ---------------------------------------------------------------------------


def instrument(engine: Any) -> None:
    """poolwatch with SDK providers as an application sets them up, exporting nowhere."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        InMemoryMetricReader,
    )

    import poolwatch

    class NoExport(LogRecordExporter):
        def export(self, batch: Sequence[object]) -> Any:
            from opentelemetry.sdk._logs.export import LogRecordExportResult

            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    logs = LoggerProvider()
    logs.add_log_record_processor(BatchLogRecordProcessor(NoExport()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    poolwatch.instrument_sqlalchemy(engine, meter_provider=meters, logger_provider=logs)


async def startup(report: dict[str, Any], started: asyncio.Event, group: Any) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        f"sqlite+aiosqlite:///{os.environ['STARTUP_DB']}",
        poolclass=sa.pool.AsyncAdaptedQueuePool,
        pool_size=3,
        max_overflow=0,
        pool_timeout=1,
    )
    if os.environ.get("STARTUP_POOLWATCH") == "1":
        instrument(engine)

    async def job() -> None:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
            started.set()
            await asyncio.sleep(HOLD)

    for _ in range(JOBS):
        group.start_soon(job)
    await started.wait()
    began = time.perf_counter()
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    except sa.exc.TimeoutError:
        report["timeouts"] = report.get("timeouts", 0) + 1
        if os.environ.get("STARTUP_CATCH") != "1":
            raise
    finally:
        report["check_wait"] = time.perf_counter() - began


async def ticker(report: dict[str, Any]) -> None:
    while True:
        due = time.perf_counter() + 0.005
        await asyncio.sleep(0.005)
        report["lag"] = max(report.get("lag", 0.0), time.perf_counter() - due)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def lifespan(receive: Any, send: Any) -> None:
    import anyio

    await receive()  # lifespan.startup
    report: dict[str, Any] = {}
    began = time.perf_counter()
    try:
        async with anyio.create_task_group() as group:
            probe = asyncio.create_task(ticker(report))
            await startup(report, asyncio.Event(), group)
            report["startup"] = time.perf_counter() - began
            probe.cancel()
            write(report)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            group.cancel_scope.cancel()
    except BaseException as error:
        report["error"] = type(error).__name__
        report["startup"] = time.perf_counter() - began
        write(report)
        await send({"type": "lifespan.startup.failed", "message": repr(error)})
        return
    await send({"type": "lifespan.shutdown.complete"})


def write(report: dict[str, Any]) -> None:
    Path(os.environ["STARTUP_REPORT"]).write_text(json.dumps(report))


# --- the runner --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_run(directory: Path, instrumented: bool, hold: float, catch: bool) -> dict[str, Any]:
    """Start the server, wait until it serves or exits, stop it; what happened."""
    report = directory / "report.json"
    report.unlink(missing_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "STARTUP_DB": str(directory / "app.db"),
        "STARTUP_REPORT": str(report),
        "STARTUP_POOLWATCH": "1" if instrumented else "0",
        "STARTUP_HOLD": str(hold),
        "STARTUP_CATCH": "1" if catch else "0",
    }
    command = [sys.executable, "-m", "uvicorn", "startup_timeout:app", "--app-dir"]
    command += [str(Path(__file__).parent), "--port", str(port), "--host", "127.0.0.1"]
    command += ["--lifespan", "on", "--log-level", "critical"]
    server = subprocess.Popen(command, env=env)
    serving = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None and not serving:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            serving = True
        time.sleep(0.05)
    if server.poll() is None:
        server.terminate()
    status = server.wait(30)
    found = json.loads(report.read_text()) if report.exists() else {}
    return {**found, "serving": serving, "status": status}


@contextlib.contextmanager
def load(processes: int) -> Iterator[None]:
    """``processes`` busy loops for the duration of the block."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def row(
    hold: float, catch: bool, processes: int, variant: str, runs: list[dict[str, Any]]
) -> list[str]:
    """One line of the table: the case, then what its runs did."""
    failed = sum(1 for run in runs if not run["serving"])
    waits = [run["check_wait"] for run in runs if "check_wait" in run] or [float("nan")]
    lags = [run.get("lag", 0.0) * 1e3 for run in runs]
    statuses = ", ".join(str(status) for status in sorted({run["status"] for run in runs}))
    return [
        f"{hold:g} s" + (", caught" if catch else ""),
        str(processes),
        variant,
        f"{failed}/{len(runs)}",
        str(sum(run.get("timeouts", 0) for run in runs)),
        f"{statistics.median(waits):.3f}",
        f"{max(waits):.3f}",
        f"{statistics.median(lags):.1f}",
        f"{max(lags):.1f}",
        statuses,
    ]


COLUMNS = (
    "jobs hold",
    "busy",
    "variant",
    "failed",
    "pool timeouts",
    "check wait median (s)",
    "max (s)",
    "loop lag median (ms)",
    "max (ms)",
    "exit statuses",
)


def printed(cells: Sequence[str]) -> str:
    """A line of the printed table: the first three columns to the left, the figures right."""
    widths = [max(len(COLUMNS[i]), {0: 13, 2: 9}.get(i, 0)) for i in range(len(COLUMNS))]
    return "  ".join(
        cell.ljust(width) if i < 3 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    )


def markdown(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def cases(args: argparse.Namespace) -> list[tuple[float, bool]]:
    """(hold, the startup catches the timeout) for each group of lines, in order."""
    holds = [(hold, False) for hold in map(float, args.holds.split(","))]
    return holds + [(hold, True) for hold in map(float, filter(None, args.catch_holds.split(",")))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--load", type=int, default=4)
    parser.add_argument("--holds", default="0.7,0.95,1.5", help="seconds the jobs hold")
    parser.add_argument(
        "--catch-holds",
        default="1.5",
        help="holds at which the startup also runs catching the timeout ('' for none)",
    )
    _docs.add_flag(parser)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp())
    print(f"pool 3, timeout 1 s, {JOBS} jobs; {args.runs} runs per line")
    print(printed(COLUMNS))
    rows = [
        markdown(COLUMNS),
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for hold, catch in cases(args):
        for processes in (0, args.load):
            results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            with load(processes):
                for _ in range(args.runs):
                    for instrumented in (False, True):
                        run = one_run(directory, instrumented, hold, catch)
                        results[instrumented].append(run)
            for instrumented in (False, True):
                variant = "poolwatch" if instrumented else "bare"
                cells = row(hold, catch, processes, variant, results[instrumented])
                print(printed(cells), flush=True)
                rows.append(markdown(cells))
    if args.write_docs:
        _docs.write("startup_timeout", "\n".join(rows))


if __name__ == "__main__":
    main()
