"""The hot path's read of the current span agrees with OpenTelemetry's public call."""

from __future__ import annotations

import asyncio
import threading

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from poolwatch import _context


def _read() -> object:
    return _context.current_context().get(_context.SPAN_KEY)


def test_the_installed_api_gets_the_direct_read() -> None:
    """The default runtime context is the one whose layout poolwatch knows: no fallback."""
    assert _context.FAST
    assert _context.SPAN_KEY != "current-span"  # the API's own key, made unique at import


def test_outside_any_span_there_is_nothing_and_inside_it_is_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert _read() is None
    with tracer.start_as_current_span("outer") as outer:
        assert _read() is outer is trace.get_current_span()
        with tracer.start_as_current_span("inner") as inner:
            assert _read() is inner is trace.get_current_span()
        assert _read() is outer
        token = otel_context.attach(otel_context.Context())
        try:
            assert _read() is None
        finally:
            otel_context.detach(token)
    assert _read() is None


def test_threads_and_tasks_see_their_own_span() -> None:
    """Another thread starts with an empty context; a task copies its creator's."""
    tracer = TracerProvider().get_tracer("test")
    seen: dict[str, object] = {}

    async def task() -> None:
        seen["task"] = _read()

    with tracer.start_as_current_span("request") as request:
        worker = threading.Thread(target=lambda: seen.setdefault("thread", _read()))
        worker.start()
        worker.join()
        asyncio.run(task())
    assert seen == {"thread": None, "task": request}


def test_the_public_fallback_reads_the_same_spans() -> None:
    tracer = TracerProvider().get_tracer("test")
    fallback = _context._public_context
    assert fallback().get(_context.SPAN_KEY) is None
    with tracer.start_as_current_span("request") as request:
        assert fallback()[_context.SPAN_KEY] is request
