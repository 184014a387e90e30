"""Whole-process CPU per SQLAlchemy checkout+checkin: bare, poolwatch, and upstream, in one run.

Run: ``python benchmarks/checkout_overhead.py [--cycles N] [--rounds R]``. Every variant runs in
each round on its own engine over one SQLite file; a round ends with a metric collection so its
cost is counted. CPU time is ``time.process_time()`` (all threads). Each variant's ratio is taken
against the bare cycle of the same round; the table gives the median ratio and its range over
rounds (many short rounds resist a machine whose load changes better than a few long ones), and
the ratio of the variant's best round to bare's best round: other load on the machine only ever
adds time, so the best rounds are the least disturbed ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _docs
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import poolwatch

Cycle = Callable[[sa.Engine], None]


def bare_cycle(engine: sa.Engine) -> None:
    """Check a raw connection out of the pool and back in."""
    engine.pool.connect().close()


def query_cycle(engine: sa.Engine) -> None:
    """Check out, run ``SELECT 1`` straight through the driver, check in: the cheapest query."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1").scalar()


SELECT_1 = sa.text("SELECT 1")


def statement_cycle(engine: sa.Engine) -> None:
    """Check out, execute ``text("SELECT 1")`` (SQLAlchemy's statement path), check in."""
    with engine.connect() as connection:
        connection.execute(SELECT_1).scalar()


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One row, read by primary key: the smallest ORM request."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def orm_cycle(engine: sa.Engine) -> None:
    """A session that loads one row by primary key and closes: an ORM request at its smallest.

    Besides the checkout, this pays for poolwatch's session hooks (the session's creation site,
    and the conflict checks around its methods).
    """
    with Session(engine) as session:
        session.get(Item, 1)


def create_schema(url: str) -> None:
    """The table and row :func:`orm_cycle` reads (made once per database file)."""
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.get(Item, 1) is None:
            session.add(Item(id=1, name="one"))
            session.commit()
    engine.dispose()


#: What each table measures, by the name ``--cycle`` takes, and the share of ``--cycles`` it runs.
CYCLES: dict[str, tuple[str, Cycle, int]] = {
    "bare": ("checkout + checkin", bare_cycle, 1),
    "driver": ("checkout + exec_driver_sql('SELECT 1') + checkin", query_cycle, 2),
    "statement": ("checkout + execute(text('SELECT 1')) + checkin", statement_cycle, 3),
    "orm": ("Session(): get(Item, 1) + close", orm_cycle, 4),
}


class Variant:
    """One way of instrumenting an engine, set up and torn down around each measurement."""

    def __init__(
        self,
        name: str,
        setup: Callable[[sa.Engine, dict[str, Any]], None],
        teardown: Callable[[sa.Engine], None],
        traced: bool = False,
        span_per_cycle: bool = False,
    ) -> None:
        self.name = name
        self.setup = setup
        self.teardown = teardown
        self.traced = traced
        #: Wrap each cycle in an SDK span with no attributes: what any span per checkout costs.
        self.span_per_cycle = span_per_cycle


class DiscardSpans(SpanExporter):
    """An exporter that drops spans: the batch processor's thread still does all its work."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _poolwatch(**settings: Any) -> Callable[[sa.Engine, dict[str, Any]], None]:
    def setup(engine: sa.Engine, providers: dict[str, Any]) -> None:
        poolwatch.instrument_sqlalchemy(engine, **settings, **providers)

    return setup


def _upstream_setup(engine: sa.Engine, providers: dict[str, Any]) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # skip_dep_check: the upstream package declares < 2.1 and would otherwise do nothing here
    SQLAlchemyInstrumentor().instrument(
        engine=engine,
        skip_dep_check=True,
        meter_provider=providers["meter_provider"],
        tracer_provider=providers["tracer_provider"],
    )


def _upstream_teardown(_engine: sa.Engine) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().uninstrument()


def _nothing(*_args: Any) -> None:
    return None


_off = poolwatch.uninstrument_sqlalchemy

VARIANTS = (
    Variant("bare", _nothing, _nothing),
    Variant("poolwatch", _poolwatch(), _off),
    Variant("poolwatch capture_stacks", _poolwatch(capture_stacks=True), _off),
    Variant("poolwatch standard histograms", _poolwatch(histograms="standard"), _off),
    Variant("bare, in a sampled trace", _nothing, _nothing, traced=True),
    Variant("poolwatch, span per checkout", _poolwatch(), _off, traced=True),
    Variant("bare + an empty SDK span", _nothing, _nothing, traced=True, span_per_cycle=True),
    Variant("upstream otel-sqlalchemy", _upstream_setup, _upstream_teardown),
)


def measure(variant: Variant, url: str, cycle: Cycle, cycles: int) -> float:
    """CPU microseconds per cycle for one variant, collection included."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(DiscardSpans(), max_queue_size=max(cycles * 2, 2048))
    )
    engine = sa.create_engine(url, poolclass=sa.pool.QueuePool, pool_size=5, max_overflow=10)
    cycle(engine)  # open the first connection outside the measurement
    variant.setup(engine, {"meter_provider": meter_provider, "tracer_provider": tracer_provider})
    try:
        tracer = tracer_provider.get_tracer("benchmark")
        start = time.process_time()
        if variant.span_per_cycle:
            with tracer.start_as_current_span("request"):
                for _ in range(cycles):
                    span = tracer.start_span("checkout")
                    cycle(engine)
                    span.end()
        elif variant.traced:
            with tracer.start_as_current_span("request"):
                for _ in range(cycles):
                    cycle(engine)
        else:
            for _ in range(cycles):
                cycle(engine)
        reader.collect()
        tracer_provider.force_flush()
        spent = time.process_time() - start
    finally:
        variant.teardown(engine)
        engine.dispose()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    return spent / cycles * 1e6


def run(cycle: Cycle, cycles: int, rounds: int, url: str) -> dict[str, list[float]]:
    """CPU microseconds per cycle for each variant, one value per round."""
    results: dict[str, list[float]] = {variant.name: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            results[variant.name].append(measure(variant, url, cycle, cycles))
    return results


def report(title: str, results: dict[str, list[float]]) -> list[str]:
    """Print median microseconds, the median of each round's ratio against that round's bare
    and its range, and the ratio of best rounds.

    Ratios are taken round by round (each variant against the bare run just before it), so a
    machine that slows down for a while slows both sides of a ratio.
    """
    bare = results["bare"]
    rows = [f"**{title}**", "", "| variant | us/cycle | x bare: median | range | best x |"]
    rows.append("| --- | ---: | ---: | ---: | ---: |")
    print(f"\n{title}")
    print(f"{'variant':34} {'us/cycle':>9} {'x bare':>7} {'range':>11} {'best x':>7}")
    for name, values in results.items():
        ratios = sorted(value / base for value, base in zip(values, bare, strict=True))
        print(
            f"{name:34} {statistics.median(values):9.2f} {statistics.median(ratios):7.2f} "
            f"{ratios[0]:5.2f}-{ratios[-1]:<5.2f} {min(values) / min(bare):7.2f}"
        )
        rows.append(
            f"| {name} | {statistics.median(values):.2f} | {statistics.median(ratios):.2f} "
            f"| {ratios[0]:.2f} to {ratios[-1]:.2f} | {min(values) / min(bare):.2f} |"
        )
    return [*rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cycle",
        action="append",
        choices=sorted(CYCLES),
        help="measure only this cycle (repeatable); all four by default",
    )
    _docs.add_flag(parser)
    args = parser.parse_args()
    tables: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        create_schema(url)
        for name in args.cycle or CYCLES:
            title, cycle, share = CYCLES[name]
            tables += report(title, run(cycle, args.cycles // share, args.rounds, url))
    if args.write_docs:
        _docs.write("checkout_overhead", "\n".join(tables))


if __name__ == "__main__":
    main()
