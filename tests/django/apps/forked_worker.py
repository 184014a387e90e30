"""A pre-forking server in miniature: instrument, use the database, fork, orphan in the child.

Prints ``RESULT <json>`` with what the child saw; exits non-zero if the child did not report.
"""

import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import django
from django.conf import settings

import poolwatch
from poolwatch import catalog
from poolwatch.testing import capture

DEADLINE_S = 60


def connect_and_end() -> None:
    from django.db import connections

    connections["default"].ensure_connection()


def child(sink: object) -> int:
    """In the forked child: a thread's connection outlives it; the child's checker must see it
    (the collector is off so the dead thread's wrapper stays until then)."""
    gc.disable()
    worker = threading.Thread(target=connect_and_end, name="child-job")
    worker.start()
    worker.join()
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        events = sink.events(catalog.EVENT_ORPHANED)  # type: ignore[attr-defined]
        if events:
            thread = events[0].attributes[catalog.THREAD_NAME]
            print("RESULT " + json.dumps({"thread": thread}), flush=True)
            return 0
        time.sleep(0.05)
    return 1


def main() -> int:
    directory = Path(tempfile.mkdtemp())
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": directory / "db"}},
    )
    django.setup()
    with capture() as sink:
        poolwatch.instrument_django(**sink.providers)
        connect_and_end()  # the parent's own connection starts the parent's checker
        pid = os.fork()
        if pid == 0:
            os._exit(child(sink))
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
