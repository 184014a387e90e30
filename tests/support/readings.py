"""Reading poolwatch's telemetry back in tests: per-pool values, bucket counts, and polling."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from poolwatch import catalog
from poolwatch._histogram import format_bound
from poolwatch.testing import Capture, FakeClock, check_leaks
from tests.support.polling import poll


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    assert poll(condition, timeout, 0.01), "condition never held"


def assert_borrowed_by(
    attributes: Mapping[str, Any], pool: str, borrower: Callable[..., Any]
) -> None:
    """A leak event's site: ``pool``, and ``borrower``'s line after its docstring, in this thread."""
    code = borrower.__code__
    assert attributes[catalog.POOL_NAME] == pool
    assert attributes[catalog.CODE_FUNCTION] == code.co_name
    assert attributes[catalog.CODE_FILE] == code.co_filename
    assert attributes[catalog.CODE_LINE] == code.co_firstlineno + 2
    assert attributes[catalog.THREAD_NAME] == threading.current_thread().name


def counts(telemetry: Capture, pool: str) -> tuple[int, int]:
    """(used, idle) as poolwatch reports them for ``pool``."""
    used = telemetry.value(
        catalog.CONNECTION_COUNT.name,
        attributes={catalog.POOL_NAME: pool, catalog.STATE: catalog.STATE_USED},
    )
    idle = telemetry.value(
        catalog.CONNECTION_COUNT.name,
        attributes={catalog.POOL_NAME: pool, catalog.STATE: catalog.STATE_IDLE},
    )
    return used, idle


def gauge(telemetry: Capture, metric: catalog.Metric, pool: str) -> Any:
    """The value of a per-pool metric."""
    return telemetry.value(metric.name, attributes={catalog.POOL_NAME: pool})


def histogram(telemetry: Capture, metric: catalog.Metric, pool: str) -> dict[str, Any] | None:
    """The OTLP histogram point of ``pool`` (count, sum, bounds, buckets), None before any value."""
    points = [
        point.value
        for point in telemetry.metrics().get(metric.name, [])
        if point.attributes.get(catalog.POOL_NAME) == pool
    ]
    assert len(points) <= 1, points
    return points[0] if points else None


def buckets(telemetry: Capture, metric: catalog.Metric, pool: str) -> dict[str, int]:
    """Cumulative counts by ``le``: of an OTLP histogram (``catalog.CONNECTION_WAIT_TIME`` ...),
    or of the ``le`` gauges of ``histograms="aggregated"`` (``catalog.WAIT_TIME_BUCKET`` ...)."""
    if metric.kind is catalog.Kind.HISTOGRAM:
        point = histogram(telemetry, metric, pool)
        if point is None:
            return {}
        running, result = 0, {}
        for bound, count in zip((*point["bounds"], None), point["buckets"], strict=True):
            running += count
            result["+Inf" if bound is None else format_bound(bound)] = running
        return result
    return {
        point.attributes[catalog.LE]: point.value
        for point in telemetry.metrics().get(metric.name, [])
        if point.attributes.get(catalog.POOL_NAME) == pool
    }


def observed(telemetry: Capture, metric: catalog.Metric, pool: str) -> int:
    """How many values a histogram holds (its ``+Inf`` bucket)."""
    return buckets(telemetry, metric, pool).get("+Inf", 0)


def total(telemetry: Capture, metric: catalog.Metric, pool: str) -> float:
    """The sum of an OTLP histogram (0 before any value)."""
    point = histogram(telemetry, metric, pool)
    return 0.0 if point is None else float(point["sum"])


def django_states(telemetry: Capture, alias: str) -> dict[str, int]:
    """Open Django connections of ``alias`` by state."""
    return {
        point.attributes[catalog.DJANGO_STATE]: point.value
        for point in telemetry.metrics()[catalog.DJANGO_CONNECTIONS.name]
        if point.attributes[catalog.DJANGO_ALIAS] == alias
    }


def django_closed(telemetry: Capture, alias: str) -> dict[str, int]:
    """Django connections of ``alias`` closed so far, by close reason."""
    return {
        point.attributes[catalog.CLOSE_REASON]: point.value
        for point in telemetry.metrics().get(catalog.DJANGO_CLOSED.name, [])
        if point.attributes[catalog.DJANGO_ALIAS] == alias
    }


def django_opened(telemetry: Capture, alias: str) -> int:
    """Django connections of ``alias`` opened so far."""
    value: int = telemetry.value(
        catalog.DJANGO_OPENED.name, attributes={catalog.DJANGO_ALIAS: alias}
    )
    return value


def the_one_leak(telemetry: Capture, clock: FakeClock, threshold: float) -> Any:
    """The leak event of the connection just borrowed and kept: none until ``threshold`` has
    passed, then exactly one, however often the check runs after."""
    clock.advance(threshold - 0.01)
    check_leaks()
    assert telemetry.events(catalog.EVENT_LEAK) == []  # not yet past the threshold
    clock.advance(0.01)
    check_leaks()
    clock.advance(threshold)
    check_leaks()  # checked again: still one event
    (event,) = telemetry.events(catalog.EVENT_LEAK)
    return event
