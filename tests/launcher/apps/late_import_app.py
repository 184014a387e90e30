"""A synchronous SQLAlchemy app that imports SQLAlchemy late, inside the function making its engine.

Same workload as ``sync_app.py`` (one pool timeout, then a few ordinary checkouts) and the same
environment variables and ``RESULT {json}`` last line, but nothing SQLAlchemy is imported until
:func:`make_engine` runs, after the app has started.
"""

import json
import os
import time
from typing import Any

AFTERWARDS = 3


def make_engine(path: str) -> Any:
    """Import SQLAlchemy now, for the first time in this app, and create the engine."""
    import sqlalchemy

    return sqlalchemy.create_engine(
        f"sqlite:///{path}",
        poolclass=sqlalchemy.pool.QueuePool,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.2,
        pool_logging_name="orders",
    )


def work(engine: Any) -> None:
    """Hold both connections, time out once, release, then a few ordinary checkouts."""
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
    time.sleep(float(os.environ.get("POOLWATCH_APP_SETTLE", "0")))
    result = {
        "attempts": attempts,
        "error_type": error_type,
        "message": message,
        "rest_from_ns": rest_from,
        "rest_until_ns": time.time_ns(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> Any:
    """Start up, then make the engine (importing SQLAlchemy) and run the workload; returns it."""
    engine = make_engine(os.environ["POOLWATCH_APP_DB"])
    work(engine)
    return engine


if __name__ == "__main__":
    #: Kept at module level so the pool is still alive when the SDK exports at shutdown.
    ENGINE = main()
