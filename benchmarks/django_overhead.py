"""Whole-process CPU per Django request doing one query: bare and with poolwatch, in one run.

Run: ``python benchmarks/django_overhead.py [--requests N] [--rounds R] [--postgres]``. A view
running ``SELECT 1`` on SQLite is served in process through Django's WSGI handler (response
iterated and closed, as a server does). Two aliases: ``per_request`` (CONN_MAX_AGE = 0: a
connection opened and closed by every request, the worst case for poolwatch) and ``persistent``
(CONN_MAX_AGE = None). ``--postgres`` adds ``pg_per_request``: CONN_MAX_AGE = 0 on a throwaway
PostgreSQL on loopback (as the tests start one), with a tenth of the requests.
Each round measures bare, then instrumented, then uninstruments; a metric collection ends every
measurement so its cost is counted. Figures are the best of the rounds (load from elsewhere only
adds time), their ratio, and the median and range of each round's instrumented/bare ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import _docs
import django
from _postgres import throwaway_postgres
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import path
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolwatch

ALIASES = ["per_request", "persistent"]
#: What each alias is, in the table.
TITLES = {
    "per_request": "SQLite, CONN_MAX_AGE = 0",
    "persistent": "SQLite, CONN_MAX_AGE = None",
    "pg_per_request": "PostgreSQL, CONN_MAX_AGE = 0",
}


def one_query(request: HttpRequest, alias: str) -> HttpResponse:
    """The benchmarked view: one query, a tiny response."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return HttpResponse(str(value))


urlpatterns = [path("one/<str:alias>/", one_query)]


def configure(directory: Path, postgres: Any = None) -> None:
    """Settings for this module's view on two SQLite aliases (and one PostgreSQL alias)."""
    database = str(directory / "bench.db")
    extra = {}
    if postgres is not None:
        ALIASES.append("pg_per_request")
        extra["pg_per_request"] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": postgres.host,
            "PORT": postgres.port,
            "NAME": postgres.database,
            "USER": postgres.user,
            "PASSWORD": postgres.password,
            "CONN_MAX_AGE": 0,
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database},
            "per_request": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": database,
                "CONN_MAX_AGE": 0,
            },
            "persistent": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": database,
                "CONN_MAX_AGE": None,
            },
            **extra,
        },
    )
    django.setup()


def serve(handler: Any, path_info: str) -> None:
    """One request through the WSGI handler, as a server runs it."""
    environ: dict[str, Any] = {"PATH_INFO": path_info, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    response = handler(environ, lambda status, headers, exc_info=None: None)
    for _chunk in response:
        pass
    response.close()


def measure(handler: Any, alias: str, requests: int, instrumented: bool) -> float:
    """CPU microseconds per request for one variant, collection included."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    if instrumented:
        poolwatch.instrument_django(meter_provider=meter_provider)
    try:
        path_info = f"/one/{alias}/"
        serve(handler, path_info)  # warm: URL resolution caches, the persistent connection
        reader.collect()  # the first collection sets up every instrument's storage: warm too
        start = time.process_time()
        for _ in range(requests):
            serve(handler, path_info)
        reader.collect()
        spent = time.process_time() - start
    finally:
        if instrumented:
            poolwatch.uninstrument_django()
        connections.close_all()
        meter_provider.shutdown()
    return spent / requests * 1e6


def requests_for(alias: str, requests: int) -> int:
    """PostgreSQL's connect is far dearer: its alias gets a tenth of the requests."""
    return requests // 10 if alias.startswith("pg_") else requests


def run(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per alias: CPU microseconds per request, bare and instrumented, and their ratio (each
    round measures both back to back, so a busy machine skews both alike)."""
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    results: dict[str, dict[str, list[float]]] = {
        alias: {"bare": [], "poolwatch": [], "ratio": []} for alias in ALIASES
    }
    for _ in range(rounds):
        for alias in ALIASES:
            count = requests_for(alias, requests)
            bare = measure(handler, alias, count, False)
            instrumented = measure(handler, alias, count, True)
            results[alias]["bare"].append(bare)
            results[alias]["poolwatch"].append(instrumented)
            results[alias]["ratio"].append(instrumented / bare)
    return {alias: _summary(variants) for alias, variants in results.items()}


def _summary(variants: dict[str, list[float]]) -> dict[str, float]:
    """Best-of-rounds figures (other load only ever adds time) and the median round's ratio."""
    best_bare, best_instrumented = min(variants["bare"]), min(variants["poolwatch"])
    return {
        "bare": best_bare,
        "poolwatch": best_instrumented,
        "best": best_instrumented / best_bare,
        "median": statistics.median(variants["ratio"]),
        "lowest": min(variants["ratio"]),
        "highest": max(variants["ratio"]),
    }


def report(summaries: dict[str, dict[str, float]], requests: int) -> str:
    """Print the table and return it in markdown."""
    rows = [
        "| one-query request | requests per round | bare us | poolwatch us | x bare (best rounds) "
        "| x bare: median | range |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    print(
        f"\n{'one-query request':30} {'requests':>8} {'bare us':>8} {'poolwatch us':>12} "
        f"{'x bare':>7} {'median x':>9} {'range':>11}"
    )
    for alias, figures in summaries.items():
        count = requests_for(alias, requests)
        print(
            f"{TITLES[alias]:30} {count:8} {figures['bare']:8.1f} {figures['poolwatch']:12.1f} "
            f"{figures['best']:7.3f} {figures['median']:9.3f} "
            f"{figures['lowest']:5.2f}-{figures['highest']:<5.2f}"
        )
        rows.append(
            f"| {TITLES[alias]} | {count:,} | {figures['bare']:.1f} | {figures['poolwatch']:.1f} "
            f"| {figures['best']:.3f} | {figures['median']:.3f} "
            f"| {figures['lowest']:.2f} to {figures['highest']:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--postgres", action="store_true", help="add a PostgreSQL alias")
    _docs.add_flag(parser)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory())
        configure(
            Path(directory), stack.enter_context(throwaway_postgres()) if args.postgres else None
        )
        summaries = run(args.requests, args.rounds)
    table = report(summaries, args.requests)
    if args.write_docs:
        _docs.write("django_overhead", table)


if __name__ == "__main__":
    main()
