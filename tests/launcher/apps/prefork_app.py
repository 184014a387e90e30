"""A pre-fork server in miniature, run by the launcher tests under ``opentelemetry-instrument``.

The parent opens its pool and checks out once, then forks ``POOLWATCH_APP_WORKERS`` workers (as
gunicorn does after loading the app); each worker checks out a few times, stays up a few export
intervals and exits. The parent waits for them and prints ``RESULT {json}`` with every pid.

Environment: ``POOLWATCH_APP_DB`` (SQLite file, required); ``POOLWATCH_APP_WORKERS`` (default 2);
``POOLWATCH_APP_SETTLE`` (seconds each process stays up after its work, default 1).
"""

import sqlalchemy  # noqa: I001 - first, as the app would

import json
import os
import sys
import time
from typing import Any

from sqlalchemy.pool import QueuePool

ENGINE = sqlalchemy.create_engine(
    f"sqlite:///{os.environ['POOLWATCH_APP_DB']}",
    poolclass=QueuePool,
    pool_size=2,
    max_overflow=0,
    pool_logging_name="orders",
)
SETTLE = float(os.environ.get("POOLWATCH_APP_SETTLE", "1"))


def log_exports() -> None:
    """At exit, each process writes ``EXPORTS {json}`` to stderr: its pid, the instance id it
    exported under, and how many of its metric exports succeeded and failed (the last one is
    the SDK's export at shutdown), so a missing worker can be told from a mislabelled one."""
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    # SDK 1.35 keeps its readers in the provider's configuration only
    readers = getattr(provider, "_metric_readers", None)
    if readers is None:
        readers = getattr(getattr(provider, "_sdk_config", None), "metric_readers", ())
    for reader in readers:
        exporter = getattr(reader, "_exporter", None)
        if exporter is not None:
            _wrap(provider, exporter)


def _wrap(provider: Any, exporter: Any) -> None:
    counts = {"pid": 0, "ok": 0, "failed": 0}
    export, shutdown = exporter.export, exporter.shutdown

    def counted(*args: Any, **kwargs: Any) -> Any:
        if counts["pid"] != os.getpid():  # a forked child counts its own
            counts.update(pid=os.getpid(), ok=0, failed=0)
        result = export(*args, **kwargs)
        counts["ok" if result.name == "SUCCESS" else "failed"] += 1
        return result

    def logged(*args: Any, **kwargs: Any) -> Any:
        resource = provider._sdk_config.resource.attributes
        line = {**counts, "pid": os.getpid(), "id": resource.get("service.instance.id")}
        os.write(2, f"EXPORTS {json.dumps(line)}\n".encode())
        return shutdown(*args, **kwargs)

    exporter.export, exporter.shutdown = counted, logged


def checkouts(count: int) -> None:
    for _ in range(count):
        with ENGINE.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))


def worker() -> None:
    # A forked worker never shares its parent's pooled connections.
    ENGINE.dispose(close=False)
    checkouts(3)
    time.sleep(SETTLE)
    sys.exit(0)  # a normal exit: the SDK's shutdown exports once more


if __name__ == "__main__":
    log_exports()
    checkouts(1)
    workers = []
    for _ in range(int(os.environ.get("POOLWATCH_APP_WORKERS", "2"))):
        pid = os.fork()
        if pid == 0:
            worker()
        workers.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in workers]
    time.sleep(SETTLE)
    print("RESULT " + json.dumps({"parent": os.getpid(), "workers": workers, "codes": codes}))
