"""A synchronous SQLAlchemy app that imports SQLAlchemy late, inside the function making its engine.

Same workload as ``sync_app.py`` (one pool timeout, then a few ordinary checkouts) and the same
environment variables and ``RESULT {json}`` last line, but nothing SQLAlchemy is imported until
:func:`make_engine` runs, after the app has started.
"""

import os
from typing import Any

from workload import work


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


def main() -> Any:
    """Start up, then make the engine (importing SQLAlchemy) and run the workload; returns it."""
    engine = make_engine(os.environ["POOLWATCH_APP_DB"])
    work(engine)
    return engine


if __name__ == "__main__":
    #: Kept at module level so the pool is still alive when the SDK exports at shutdown.
    ENGINE = main()
