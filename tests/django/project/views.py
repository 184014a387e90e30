"""Views that query the database the ways the connection tests need."""

import threading
import time
from collections.abc import Callable

from django.db import connections
from django.http import HttpRequest, HttpResponse

#: What ``short_body`` declares it sends; it sends far less.
DECLARED_LENGTH = 100
#: Called by ``pid`` once it has queried (tests look at poolwatch's view mid-request).
probe: Callable[[], None] | None = None


def _backend_pid(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    return int(row[0])


def short_body(request: HttpRequest) -> HttpResponse:
    """Queries, then answers with a body shorter than its Content-Length: sending it fails."""
    pid = _backend_pid("default")
    response = HttpResponse(str(pid).encode())
    response["Content-Length"] = str(DECLARED_LENGTH)
    return response


def pid(request: HttpRequest, alias: str) -> HttpResponse:
    """Answers the backend pid of the connection the request used on ``alias``."""
    backend = _backend_pid(alias)
    if probe is not None:
        probe()
    return HttpResponse(str(backend).encode())


def background(request: HttpRequest, alias: str) -> HttpResponse:
    """Runs a job on a thread of its own that queries and ends without closing its connection."""
    pids: list[int] = []
    job = threading.Thread(target=lambda: pids.append(_backend_pid(alias)), name="report-job")
    job.start()
    job.join()
    return HttpResponse(str(pids[0]).encode())


def hold(request: HttpRequest, alias: str) -> HttpResponse:
    """Queries, then keeps the connection a moment (concurrent requests pile up)."""
    pid = _backend_pid(alias)
    time.sleep(0.3)
    return HttpResponse(str(pid).encode())
