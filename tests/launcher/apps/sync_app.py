"""A plain synchronous SQLAlchemy app, run by the launcher tests under ``opentelemetry-instrument``.

It imports SQLAlchemy before anything else, exhausts a two-connection pool so exactly one checkout
times out, then checks out a few more times and exits normally. It knows nothing of poolwatch.

Environment: ``POOLWATCH_APP_DB`` (SQLite file, required); ``POOLWATCH_APP_SETTLE`` (seconds to
stay idle after the work, default 0, so periodic exports see the pool at rest);
``POOLWATCH_APP_HEARTBEAT`` (if set, count one ``app.heartbeat`` through the OpenTelemetry
metrics API, proof that the SDK pipeline is live). The last line of output is ``RESULT {json}``:
checkout attempts, the timeout's type and message as the app caught it, and the wall-clock
window (ns) in which the pool was at rest.
"""

import sqlalchemy  # noqa: I001 - first, before any other import: the case this app covers

import json
import os
import time

from sqlalchemy import exc
from sqlalchemy.pool import QueuePool

#: Kept at module level so the pool is still alive when the SDK exports at shutdown.
ENGINE = sqlalchemy.create_engine(
    f"sqlite:///{os.environ['POOLWATCH_APP_DB']}",
    poolclass=QueuePool,
    pool_size=2,
    max_overflow=0,
    pool_timeout=0.2,
    pool_logging_name="orders",
)
AFTERWARDS = 3


def heartbeat() -> None:
    """Count one ``app.heartbeat`` if asked to (imports OpenTelemetry only then)."""
    if os.environ.get("POOLWATCH_APP_HEARTBEAT"):
        from opentelemetry import metrics

        metrics.get_meter("poolwatch-test-app").create_counter("app.heartbeat").add(1)


def main() -> None:
    """Hold both connections, time out once, release, then a few ordinary checkouts."""
    heartbeat()
    attempts = 0
    error_type = message = None
    first = ENGINE.connect()
    second = ENGINE.connect()
    attempts += 2
    try:
        attempts += 1
        ENGINE.connect().close()
    except exc.TimeoutError as error:
        error_type = f"{type(error).__module__}.{type(error).__qualname__}"
        message = str(error)
        print(f"timed out: {message}", flush=True)
    first.close()
    second.close()
    for _ in range(AFTERWARDS):
        attempts += 1
        with ENGINE.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    rest_from = time.time_ns()
    time.sleep(float(os.environ.get("POOLWATCH_APP_SETTLE", "0")))
    result = {
        "attempts": attempts,
        "error_type": error_type,
        "message": message,
        "rest_from_ns": rest_from,
        "rest_until_ns": time.time_ns(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
