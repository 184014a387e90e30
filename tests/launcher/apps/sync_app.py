"""A plain synchronous SQLAlchemy app, run by the launcher tests under ``opentelemetry-instrument``.

It imports SQLAlchemy before anything else, exhausts a two-connection pool so exactly one checkout
times out, then checks out a few more times and exits normally. It knows nothing of poolwatch.

Environment: ``POOLWATCH_APP_DB`` (SQLite file, required); ``POOLWATCH_APP_REST=stdin`` (stay
idle after the work until stdin closes) or ``POOLWATCH_APP_SETTLE`` (seconds to stay idle, default
0), so periodic exports see the pool at rest;
``POOLWATCH_APP_HEARTBEAT`` (if set, count one ``app.heartbeat`` through the OpenTelemetry
metrics API, proof that the SDK pipeline is live). The workload is ``workload.work``.
"""

import sqlalchemy  # noqa: I001 - first, before any other import: the case this app covers

import os

from sqlalchemy.pool import QueuePool
from workload import heartbeat, work

#: Kept at module level so the pool is still alive when the SDK exports at shutdown.
ENGINE = sqlalchemy.create_engine(
    f"sqlite:///{os.environ['POOLWATCH_APP_DB']}",
    poolclass=QueuePool,
    pool_size=2,
    max_overflow=0,
    pool_timeout=0.2,
    pool_logging_name="orders",
)


if __name__ == "__main__":
    heartbeat()
    work(ENGINE)
