"""A synchronous SQLAlchemy app that imports SQLAlchemy late, inside the function making its engine.

Same workload as ``sync_app.py`` (one pool timeout, then a few ordinary checkouts), but nothing
SQLAlchemy is imported until :func:`make_engine` runs, after the app has started. Its last line of
output is ``RESULT {json}``.
"""

import json
import os
from typing import Any

#: Set by main(); kept at module level so the pool is alive when the SDK exports at shutdown.
ENGINE: Any = None
AFTERWARDS = 3


def make_engine(path: str) -> Any:
    """Import SQLAlchemy now, for the first time in this app, and create the engine."""
    import sqlalchemy
    from sqlalchemy.pool import QueuePool

    return sqlalchemy.create_engine(
        f"sqlite:///{path}",
        poolclass=QueuePool,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.2,
        pool_logging_name="orders",
    )


def main() -> None:
    """Create the engine late, hold both connections, time out once, then ordinary checkouts."""
    global ENGINE
    ENGINE = make_engine(os.environ["POOLWATCH_APP_DB"])

    import sqlalchemy
    from sqlalchemy import exc

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
