"""The workload both synchronous launcher apps run; imports SQLAlchemy only when it runs.

Hold both connections of a two-connection pool, time out once, release, then a few ordinary
checkouts; print ``RESULT {json}``: checkout attempts, the timeout's type and message as the app
caught it, and the wall-clock window (ns) in which the pool was at rest (see :func:`rest`).
"""

import json
import os
import sys
import time
from typing import Any

AFTERWARDS = 3


def heartbeat() -> None:
    """Count one ``app.heartbeat`` if asked to (imports OpenTelemetry only then)."""
    if os.environ.get("POOLWATCH_APP_HEARTBEAT"):
        from opentelemetry import metrics

        metrics.get_meter("poolwatch-test-app").create_counter("app.heartbeat").add(1)


def rest() -> None:
    """Stay idle after the work: until stdin closes if ``POOLWATCH_APP_REST=stdin`` (the test
    closes it once it has exports from the idle app; ``RESTING <ns>`` on stdout says when the
    rest began), else ``POOLWATCH_APP_SETTLE`` seconds."""
    if os.environ.get("POOLWATCH_APP_REST") == "stdin":
        print(f"RESTING {time.time_ns()}", flush=True)
        sys.stdin.read()
    else:
        time.sleep(float(os.environ.get("POOLWATCH_APP_SETTLE", "0")))


def work(engine: Any) -> None:
    """Run the workload on ``engine`` and print its result line."""
    import sqlalchemy

    attempts = 0
    error_type = message = None
    first = engine.connect()
    second = engine.connect()
    attempts += 2
    try:
        attempts += 1
        engine.connect().close()
    except sqlalchemy.exc.TimeoutError as error:
        error_type = f"{type(error).__module__}.{type(error).__qualname__}"
        message = str(error)
        print(f"timed out: {message}", flush=True)
    first.close()
    second.close()
    for _ in range(AFTERWARDS):
        attempts += 1
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    rest_from = time.time_ns()
    rest()
    result = {
        "attempts": attempts,
        "error_type": error_type,
        "message": message,
        "rest_from_ns": rest_from,
        "rest_until_ns": time.time_ns(),
    }
    print("RESULT " + json.dumps(result), flush=True)
