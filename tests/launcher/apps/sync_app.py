"""A plain synchronous SQLAlchemy app, run by the launcher tests under ``opentelemetry-instrument``.

It imports SQLAlchemy before anything else, exhausts a two-connection pool so exactly one checkout
times out, then checks out a few more times and exits normally. It knows nothing of poolwatch or
OpenTelemetry. Its last line of output is ``RESULT {json}``: what the app itself saw.
"""

import sqlalchemy  # first, before any other import: the case this app covers

import json
import os

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


def main() -> None:
    """Hold both connections, time out once, release, then a few ordinary checkouts."""
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
    result = {"attempts": attempts, "error_type": error_type, "message": message}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
