"""An app that keeps its pool exhausted, run by the end-to-end test under opentelemetry-instrument.

It holds both connections of a two-connection SQLAlchemy QueuePool on a SQLite file and keeps
trying a third checkout, each timing out after 0.2 s, for ``POOLWATCH_APP_DURATION`` seconds
(default 20) and at most ``MAX_ATTEMPTS`` times; then it releases the connections and exits. It
knows nothing of poolwatch: the launcher instruments it.

Output, one line each, flushed at once: ``HELD <unix seconds>`` once both connections are checked
out (they count as leaked once held past poolwatch's leak threshold), ``FIRST_TIMEOUT <unix
seconds>`` when the first checkout times out, then ``DONE <json>`` with the attempt and timeout
counts at the end.

Environment: ``POOLWATCH_APP_DB`` (SQLite file, required); ``POOLWATCH_APP_DURATION`` (seconds).
"""

import sqlalchemy  # noqa: I001 - first, before any other import, as a typical app does

import json
import os
import time

from sqlalchemy.pool import QueuePool

#: Upper bound on checkout attempts whatever the duration (about 0.2 s each).
MAX_ATTEMPTS = 1000

ENGINE = sqlalchemy.create_engine(
    f"sqlite:///{os.environ['POOLWATCH_APP_DB']}",
    poolclass=QueuePool,
    pool_size=2,
    max_overflow=0,
    pool_timeout=0.2,
    pool_logging_name="orders",
)


def main() -> None:
    """Hold the whole pool and time out repeatedly, then release and report."""
    duration = float(os.environ.get("POOLWATCH_APP_DURATION", "20"))
    held = [ENGINE.connect(), ENGINE.connect()]
    print(f"HELD {time.time():.6f}", flush=True)
    for connection in held:
        connection.execute(sqlalchemy.text("select 1"))
    attempts = timeouts = 0
    deadline = time.monotonic() + duration
    while attempts < MAX_ATTEMPTS and time.monotonic() < deadline:
        attempts += 1
        try:
            ENGINE.connect().close()
        except sqlalchemy.exc.TimeoutError:
            timeouts += 1
            if timeouts == 1:
                print(f"FIRST_TIMEOUT {time.time():.6f}", flush=True)
    for connection in held:
        connection.close()
    print("DONE " + json.dumps({"attempts": attempts, "timeouts": timeouts}), flush=True)


if __name__ == "__main__":
    main()
