"""The worker's telemetry: in-memory SDK providers, set as the global ones after the fork (the
way the OpenTelemetry SDK is set up under a pre-fork server)."""

from opentelemetry import _logs, metrics, trace

from poolwatch.testing import Capture

SINK = Capture()


def install() -> None:
    """Make :data:`SINK`'s providers this process's global ones."""
    metrics.set_meter_provider(SINK.meter_provider)
    trace.set_tracer_provider(SINK.tracer_provider)
    _logs.set_logger_provider(SINK.logger_provider)
