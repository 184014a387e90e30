"""Orders and reports: the requests, the forgetful report and the fan-out scheduler of the demo."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = [
    "Order",
    "engines",
    "fan_out_orders",
    "forgetful_report",
    "handle_request",
    "refresh_report",
]


class Base(DeclarativeBase):
    """Tables of the demo database."""


class Order(Base):
    """One row the scheduler saves and a failing child wrongly re-saves."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]


def engines(
    directory: Path, pool_size: int, max_overflow: int, pool_timeout: float
) -> tuple[sa.Engine, sa.Engine]:
    """The orders engine (the pool in trouble) and the reports engine (a healthy neighbour)."""
    orders = sa.create_engine(
        f"sqlite:///{directory / 'orders.db'}",
        poolclass=sa.pool.QueuePool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
    )
    reports = sa.create_engine(
        f"sqlite:///{directory / 'reports.db'}", poolclass=sa.pool.QueuePool, pool_size=2
    )
    Base.metadata.create_all(orders)
    return orders, reports


def handle_request(engine: sa.Engine, tracer: Tracer, stop: threading.Event, hold: float) -> bool:
    """One request: a span, a checkout, a query, ``hold`` seconds of work; False on pool timeout."""
    with tracer.start_as_current_span("GET /orders"):
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
                stop.wait(hold)
        except sa.exc.TimeoutError:
            return False
    return True


def forgetful_report(engine: sa.Engine, stop: threading.Event, seconds: float) -> None:
    """A report that takes a connection and keeps it for ``seconds`` (a leak, until it returns)."""
    connection = engine.connect()
    connection.exec_driver_sql("SELECT 1")
    stop.wait(seconds)
    connection.close()


def refresh_report(engine: sa.Engine) -> None:
    """The reports pool's light, steady work."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def fan_out_orders(
    engine: sa.Engine, stop: threading.Event, children: int, slow_io: float
) -> list[str]:
    """A scheduler holds its session (and connection) while child threads each open their own.

    The children hold connections across slow I/O, the pool runs dry, a child's first query
    times out, and its error handler re-saves the scheduler's order: "already attached to
    session". Returns what each child ended with.
    """
    outcomes: list[str] = []
    with Session(engine, expire_on_commit=False) as scheduler:
        order = Order(id=time.time_ns() % 1_000_000_007, status="scheduled")
        scheduler.add(order)
        scheduler.flush()  # takes a connection and keeps it while the children run

        def child() -> None:
            with Session(engine) as session:
                try:
                    session.get(Order, -1)
                    stop.wait(slow_io)  # slow I/O while holding the connection
                    outcomes.append("done")
                except sa.exc.TimeoutError:
                    try:
                        session.add(order)  # the error handler re-saves the scheduler's order
                        outcomes.append("saved")
                    except sa.exc.InvalidRequestError as conflict:
                        outcomes.append(str(conflict))

        threads = [threading.Thread(target=child, name=f"child-{n}") for n in range(children)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        scheduler.rollback()
    return outcomes
