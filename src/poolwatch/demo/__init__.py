"""``poolwatch demo``: a scripted pool incident on SQLite, watched by poolwatch as it happens.

No server is needed: the OpenTelemetry SDK runs in process. Two pools run through the phases of
a real incident (healthy, saturation, waits, timeouts, a leaked connection, a session conflict
caused by exhaustion, recovery); the terminal shows each pool and every event as poolwatch
detects it, and everything emitted is written as OTLP/JSON (or sent to a collector).
"""

from __future__ import annotations

from poolwatch.demo.runner import INTERRUPTED, TELEMETRY_FILE, Options, default_output, run
from poolwatch.demo.workload import DEFAULT_SECONDS, PHASES, Phase

__all__ = [
    "DEFAULT_SECONDS",
    "INTERRUPTED",
    "PHASES",
    "TELEMETRY_FILE",
    "Options",
    "Phase",
    "default_output",
    "run",
]
