"""Telemetry providers that fail, for the tests that telemetry never breaks the app."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider


class ExplodingTracerProvider(TracerProvider):
    """A tracer provider whose spans cannot be started."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = super().get_tracer(*args, **kwargs)

        def start_span(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("tracer is broken")

        tracer.start_span = start_span  # type: ignore[method-assign]
        return tracer


class ExplodingLoggerProvider:
    """A logger provider whose loggers raise on every emit."""

    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        class Logger:
            def emit(self, *_args: Any, **_kwargs: Any) -> None:
                raise RuntimeError("exporter is broken")

        return Logger()
