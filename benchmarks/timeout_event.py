"""CPU cost of a pool timeout with poolwatch (its event, with every holder's stack sampled),
against the same timeout without poolwatch, in one run.

Run: ``python benchmarks/timeout_event.py [--timeouts N] [--rounds R]``. For each pool size,
that many threads each hold one connection, parked a few calls deep; the main thread then makes
N checkouts that time out at once (``pool_timeout=0``). CPU time is ``time.process_time()`` (all
threads), so the event's export (an SDK logger with a no-op exporter) is counted. The table
gives per-timeout CPU for both variants and their ratio, best round of each (other load on the
machine only ever adds time).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider

import poolwatch
from poolwatch.integrations.sqlalchemy import ADAPTER

HOLDERS = (4, 16, 64)


class NoExport(LogRecordExporter):
    """Accepts every record and sends it nowhere."""

    def export(self, batch: Sequence[object]) -> object:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def hold(engine: sa.Engine, ready: threading.Barrier, release: threading.Event) -> None:
    """Check a connection out, then wait a few calls deep (a stack worth sampling)."""

    def handler() -> None:
        def service() -> None:
            with engine.connect():
                ready.wait()
                release.wait()

        service()

    handler()


def timeouts(engine: sa.Engine, holders: int, count: int) -> float:
    """CPU seconds per timed-out checkout while ``holders`` threads hold the whole pool."""
    ready, release = threading.Barrier(holders + 1), threading.Event()
    threads = [
        threading.Thread(target=hold, args=(engine, ready, release), daemon=True)
        for _ in range(holders)
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.process_time()
    for _ in range(count):
        with contextlib.suppress(sa.exc.TimeoutError):
            engine.connect()
    spent = time.process_time() - started
    release.set()
    for thread in threads:
        thread.join()
    return spent / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeouts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(NoExport()))
    print(f"{'holders':>8} {'bare us':>9} {'poolwatch us':>13} {'ratio':>7}")
    for holders in HOLDERS:
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for variant in ("bare", "poolwatch"):
                engine = sa.create_engine(url, pool_size=holders, max_overflow=0, pool_timeout=0)
                if variant == "poolwatch":
                    poolwatch.instrument_sqlalchemy(
                        engine, meter_provider=MeterProvider(), logger_provider=logs
                    )
                cost = timeouts(engine, holders, args.timeouts)
                best[variant] = min(best.get(variant, cost), cost)
                ADAPTER.uninstrument_all()
                engine.dispose()
        bare, watched = best["bare"] * 1e6, best["poolwatch"] * 1e6
        print(f"{holders:>8} {bare:>9.1f} {watched:>13.1f} {watched / bare:>7.1f}")


if __name__ == "__main__":
    main()
