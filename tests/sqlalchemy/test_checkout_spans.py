"""Checkout-wait spans and the pool-timeout event."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture


def test_checkout_inside_a_trace_makes_a_child_span_with_the_pool_state(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """The span is a child of the request span and carries used/idle/max/pending at the start."""
    engine = instrumented(pool_size=2, max_overflow=1)
    held = engine.connect()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        engine.connect().close()
    held.close()

    (span,) = telemetry.spans(catalog.SPAN_CHECKOUT)
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.kind is SpanKind.INTERNAL
    attributes = dict(span.attributes or {})
    wait = attributes.pop(catalog.WAIT_DURATION)
    assert 0 <= wait < 0.5
    assert attributes == {
        catalog.POOL_NAME: "app",
        catalog.DB_SYSTEM: "sqlite",
        catalog.DB_NAMESPACE: engine.url.database,
        catalog.POOL_USED: 1,
        catalog.POOL_IDLE: 0,
        catalog.POOL_MAX: 3,
        catalog.POOL_PENDING: 1,
    }


def test_no_span_is_made_outside_a_trace(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """Checkouts with no recording span around them make no root spans by default."""
    engine = instrumented()
    engine.connect().close()
    assert telemetry.spans() == []


def test_root_spans_can_be_switched_on(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """With ``root_spans=True`` a checkout outside any trace gets a span of its own."""
    engine = make_engine()
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", root_spans=True, **telemetry.providers)
    engine.connect().close()
    (span,) = telemetry.spans(catalog.SPAN_CHECKOUT)
    assert span.parent is None


def test_spans_can_be_switched_off(
    make_engine: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """With ``spans=False`` no checkout span is made even inside a trace."""
    engine = make_engine()
    poolwatch.instrument_sqlalchemy(engine, pool_name="app", spans=False, **telemetry.providers)
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("request"):
        engine.connect().close()
    assert [span.name for span in telemetry.spans()] == ["request"]


def test_timeout_ends_the_span_in_error_and_emits_an_event_with_the_same_state(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """A pool timeout: error status, the exception recorded, and a poolwatch.pool.timeout event."""
    engine = instrumented(pool_size=1, max_overflow=0, pool_timeout=0.05)
    held = engine.connect()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    held.close()

    (span,) = telemetry.spans(catalog.SPAN_CHECKOUT)
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"].endswith("TimeoutError")

    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    state_keys = (
        catalog.POOL_NAME,
        catalog.POOL_USED,
        catalog.POOL_IDLE,
        catalog.POOL_MAX,
        catalog.POOL_PENDING,
    )
    assert {key: event.attributes[key] for key in state_keys} == {
        key: span.attributes[key]
        for key in state_keys  # type: ignore[index]
    }
    assert event.attributes[catalog.POOL_USED] == 1
    assert event.attributes[catalog.POOL_MAX] == 1
    assert event.attributes[catalog.WAIT_DURATION] == pytest.approx(0.05, abs=0.04)
    assert event.span_id == span.parent.span_id  # type: ignore[union-attr]

    (request,) = telemetry.spans("request")
    assert [e.name for e in request.events] == [catalog.EVENT_POOL_TIMEOUT]


def test_timeout_outside_a_trace_still_emits_the_event(
    instrumented: Callable[..., sa.Engine], telemetry: Capture
) -> None:
    """The event does not depend on tracing: it carries the pool's state at the timeout."""
    engine = instrumented(pool_size=1, max_overflow=0, pool_timeout=0.05)
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    assert event.attributes[catalog.POOL_USED] == 1
    assert event.attributes[catalog.POOL_IDLE] == 0
    assert event.attributes[catalog.ERROR_TYPE] == "TimeoutError"
    assert "timed out" in str(event.body)
