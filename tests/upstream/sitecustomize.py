"""Turns poolwatch on in every Python process of an upstream test run (``run.py --on``).

Found through ``PYTHONPATH`` and imported by ``site`` at interpreter start, before the suite
imports its library, as the ``opentelemetry-instrument`` launcher would. Telemetry goes to
in-memory SDK providers, collected at exit so observable callbacks run too; the number of
metric points and any error poolwatch counted go to ``$POOLWATCH_UPSTREAM_ERRORS.<pid>``.
"""

from __future__ import annotations

import atexit
import json
import os


def _turn_on() -> None:
    import poolwatch
    from poolwatch import _guard
    from poolwatch.testing import Capture

    sink = Capture()
    settings = {**sink.providers, "leak_threshold": 5.0}
    libraries = os.environ.get("POOLWATCH_UPSTREAM_LIBRARIES", "sqlalchemy").split(",")
    if "sqlalchemy" in libraries:
        poolwatch.instrument_sqlalchemy(**settings)
    if "django" in libraries:
        poolwatch.instrument_django(**settings)
    if "psycopg_pool" in libraries:
        poolwatch.instrument_psycopg_pool(**settings)

    def report() -> None:
        points = sum(len(found) for found in sink.metrics().values())  # callbacks run too
        path = os.environ.get("POOLWATCH_UPSTREAM_ERRORS")
        if path:
            with open(f"{path}.{os.getpid()}", "w", encoding="utf-8") as out:
                json.dump({"errors": _guard.error_counts(), "points": points}, out)

    atexit.register(report)


if os.environ.get("POOLWATCH_UPSTREAM") == "on":
    _turn_on()
