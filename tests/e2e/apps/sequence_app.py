"""An app whose every metric collection is numbered, run by the gateway-restart test.

Under ``opentelemetry-instrument`` (poolwatch instruments its SQLAlchemy pool) it checks a
connection out and back in every 50 ms, and counts metric collections with an observable counter
``e2e.collections``: the n-th collection reports n and prints ``COLLECTED <n> <unix seconds>``.
So the samples that reach the backend must be exactly 1..N, with N the last number printed (the
final collection happens at exit). It stops when the file ``POOLWATCH_APP_STOP_FILE`` exists, or
after ``MAX_SECONDS``.

Environment: ``POOLWATCH_APP_DB`` (SQLite file), ``POOLWATCH_APP_STOP_FILE`` (both required).
"""

import sqlalchemy  # noqa: I001 - first, before any other import, as a typical app does

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.pool import QueuePool

#: Upper bound on the run, whatever the test does.
MAX_SECONDS = 180.0

ENGINE = sqlalchemy.create_engine(
    f"sqlite:///{os.environ['POOLWATCH_APP_DB']}",
    poolclass=QueuePool,
    pool_size=2,
    max_overflow=0,
    pool_logging_name="ledger",
)
_lock = threading.Lock()
_numbers = itertools.count(1)


def count_collection(options: CallbackOptions) -> Iterator[Observation]:
    """Number this collection and say so."""
    with _lock:
        number = next(_numbers)
        print(f"COLLECTED {number} {time.time():.3f}", flush=True)
        yield Observation(number)


metrics.get_meter("poolwatch.e2e").create_observable_counter(
    "e2e.collections", callbacks=[count_collection], unit="{collection}"
)


def main() -> None:
    """Use the pool until told to stop."""
    stop = Path(os.environ["POOLWATCH_APP_STOP_FILE"])
    deadline = time.monotonic() + MAX_SECONDS
    while not stop.exists() and time.monotonic() < deadline:
        with ENGINE.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        time.sleep(0.05)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
