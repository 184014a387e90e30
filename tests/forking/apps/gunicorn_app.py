"""A WSGI app for gunicorn: one engine made at import (in the master under ``--preload``).

The import itself uses the pool as an app warming up would, and runs into one pool timeout.
``/hold`` keeps a connection past the leak threshold until this process has reported the leak
(or a deadline passed), then answers with what this process exported, as JSON.
"""

import contextlib
import json
import os
import threading
import time
from typing import Any

import sqlalchemy as sa
from gunicorn_sink import SINK

import poolwatch
from poolwatch import catalog

POOL = "forked"
HOLD_DEADLINE_S = 30.0

poolwatch.instrument_sqlalchemy(leak_threshold=1.0, histograms="standard", spans=False)
ENGINE = sa.create_engine(
    os.environ["POOLWATCH_TEST_DB"],
    pool_size=1,
    max_overflow=0,
    pool_timeout=0.1,
    pool_logging_name=POOL,
)
with ENGINE.connect() as warm_up:
    warm_up.execute(sa.text("select 1"))
    with contextlib.suppress(sa.exc.TimeoutError):
        ENGINE.connect()


def report(held: float) -> dict[str, Any]:
    """What this process exported: leak events, counts, and its threads."""
    pool = {catalog.POOL_NAME: POOL}
    metrics = SINK.metrics()

    def value(metric: catalog.Metric) -> Any:
        points = [
            p for p in metrics.get(metric.name, []) if p.attributes.get(catalog.POOL_NAME) == POOL
        ]
        return points[0].value if points else None

    creates = value(catalog.CONNECTION_CREATE_TIME)
    return {
        "pid": os.getpid(),
        "held": held,
        "leak_events": [
            dict(e.attributes)[catalog.POOL_NAME] for e in SINK.events(catalog.EVENT_LEAK)
        ],
        "leaks": SINK.value(catalog.CONNECTION_LEAKS.name, attributes=pool),
        "creates": creates["count"] if creates else 0,
        "timeouts": SINK.value(catalog.CONNECTION_TIMEOUTS.name, attributes=pool),
        "pending": SINK.value(catalog.CONNECTION_PENDING_REQUESTS.name, attributes=pool),
        "threads": sorted(t.name for t in threading.enumerate()),
    }


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] != "/hold":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    started = time.monotonic()
    with ENGINE.connect() as connection:
        connection.execute(sa.text("select 1"))
        while not SINK.events(catalog.EVENT_LEAK):
            if time.monotonic() - started > HOLD_DEADLINE_S:
                break
            time.sleep(0.05)
        held = time.monotonic() - started
    body = json.dumps(report(held)).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
