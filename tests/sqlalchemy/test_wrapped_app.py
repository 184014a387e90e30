"""Holders name the application's own code when it is installed in site-packages and reaches
the pool through wrappers (an ORM wrapper named like SQLModel, and an in-house helper package
the user names in ``OTEL_PYTHON_POOLWATCH_LIBRARY_PACKAGES``), threads and asyncio tasks alike.

The application and both wrappers are built as wheels and pip-installed into a directory laid
out like a virtual environment's site-packages, then run in a fresh interpreter on a fake clock: the
holders wait on events, the clock is moved past the leak threshold and the leak check run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.wheels import build_wheel, pip_install, site_packages

#: A wrapper package named like SQLModel: ``Session.exec`` checks a connection out for the caller.
WRAPPER = {
    "sqlmodel/__init__.py": '''
        import asyncio


        class Session:
            def __init__(self, engine):
                self.engine = engine
                self.connection = None

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                if self.connection is not None:
                    self.connection.close()

            def exec(self, statement, hold=None):
                if self.connection is None:
                    self.connection = self.engine.connect()
                rows = self.connection.exec_driver_sql(statement).all()
                if hold is not None:  # a slow statement: the holder waits inside the wrapper
                    hold.wait(30)
                return rows


        def spawn(coroutine):
            """Start a task named after the wrapper's own callable, as AnyIO names them."""
            return asyncio.create_task(coroutine, name="sqlmodel.spawn.<locals>.runner")
    ''',
}
#: An in-house helper package between the application and the wrapper.
HELPERS = {
    "shopkit/__init__.py": "",
    "shopkit/db.py": """
        import sqlmodel


        def fetch(engine, statement, hold=None):
            with sqlmodel.Session(engine) as session:
                return session.exec(statement, hold)
    """,
}
APP = {
    "shopapp/__init__.py": "",
    "shopapp/views.py": """
        import asyncio
        import threading

        import sqlmodel
        import shopkit.db


        def list_orders(engine, hold):
            with sqlmodel.Session(engine) as session:
                return session.exec("SELECT 1", hold)


        def monthly_report(engine, hold):
            return shopkit.db.fetch(engine, "SELECT 2", hold)


        async def sync_orders(engine, hold):
            with sqlmodel.Session(engine) as session:
                session.exec("SELECT 3")
                await hold.wait()  # slow I/O while the connection is out
    """,
}

DRIVER = """
import asyncio, json, sys, threading

import sqlalchemy as sa

import poolwatch
from poolwatch import catalog
from poolwatch.testing import Capture, check_leaks, fake_clock

import sqlmodel
from shopapp import views

database = sys.argv[1]
telemetry = Capture()
clock_context = fake_clock()
clock = clock_context.__enter__()
poolwatch.instrument_sqlalchemy(leak_threshold=0.3, **telemetry.providers)


def all_out(engine, count, done):
    checked_out = []

    def checkout(*_args):
        checked_out.append(1)
        if len(checked_out) == count:
            done()

    sa.event.listen(engine, "checkout", checkout)


def threads():
    engine = sa.create_engine(
        f"sqlite:///{database}", poolclass=sa.pool.QueuePool, pool_size=20, max_overflow=0,
        pool_timeout=0.3, connect_args={"check_same_thread": False},
    )
    full, release = threading.Event(), threading.Event()
    all_out(engine, 20, full.set)
    workers = [
        threading.Thread(target=views.list_orders if i % 2 else views.monthly_report,
                         args=(engine, release))
        for i in range(20)
    ]
    for worker in workers:
        worker.start()
    assert full.wait(30)
    clock.advance(1.0)
    check_leaks()  # samples the holders' stacks, as the watchdog does
    try:
        engine.connect()
    except sa.exc.TimeoutError:
        pass
    (event,) = telemetry.events(catalog.EVENT_POOL_TIMEOUT)
    holders = list(event.attributes[catalog.POOL_HOLDERS])
    release.set()
    for worker in workers:
        worker.join()
    engine.dispose()
    return holders


async def tasks():
    engine = sa.create_engine(
        f"sqlite:///{database}", poolclass=sa.pool.QueuePool, pool_size=10, max_overflow=0,
    )
    full, release = asyncio.Event(), asyncio.Event()
    all_out(engine, 10, full.set)
    running = [sqlmodel.spawn(views.sync_orders(engine, release)) for _ in range(10)]
    await full.wait()
    clock.advance(1.0)
    check_leaks()
    release.set()
    await asyncio.gather(*running)
    engine.dispose()


holders = threads()
telemetry.clear()
asyncio.run(tasks())
leaks = [dict(e.attributes) for e in telemetry.events(catalog.EVENT_LEAK)]
print(json.dumps({"holders": holders, "leaks": leaks}, default=str))
"""


def _dedent(files: dict[str, str]) -> dict[str, str]:
    return {path: textwrap.dedent(text).lstrip() for path, text in files.items()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The application and both wrappers, pip-installed from wheels into a site-packages."""
    root = tmp_path_factory.mktemp("venv")
    wheels = [
        build_wheel(root, "shopapp", _dedent(APP)),
        build_wheel(root, "sqlmodel", _dedent(WRAPPER)),
        build_wheel(root, "shopkit", _dedent(HELPERS)),
    ]
    target = site_packages(root)
    pip_install(wheels, target)
    assert (target / "shopapp" / "views.py").is_file()
    return target


def run_app(installed: Path, tmp_path: Path, library_packages: str | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.getcwd()])}
    env.pop("OTEL_PYTHON_POOLWATCH_LIBRARY_PACKAGES", None)
    if library_packages is not None:
        env["OTEL_PYTHON_POOLWATCH_LIBRARY_PACKAGES"] = library_packages
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "shop.db")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def app_run(
    installed: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str | None], dict[str, Any]]:
    """``run_app`` once per ``library_packages`` setting for the module (the tests read the same
    run from different sides)."""
    runs: dict[str | None, dict[str, Any]] = {}

    def run(library_packages: str | None) -> dict[str, Any]:
        if library_packages not in runs:
            runs[library_packages] = run_app(
                installed, tmp_path_factory.mktemp("shop"), library_packages
            )
        return runs[library_packages]

    return run


def held_by(holders: list[str], function: str) -> int:
    """How many connections the timeout event's holder entries put in ``shopapp`` ``function``."""
    return sum(
        int(entry.split(" x ", 1)[0])
        for entry in holders
        if "shopapp" in entry
        and entry.split(" x ", 1)[1].split(" (", 1)[0].endswith(f" in {function}")
    )


def test_holders_name_the_application_through_wrappers(
    app_run: Callable[[str | None], dict[str, Any]],
) -> None:
    """With the helper package named, every holder of a full pool names the app's function."""
    result = app_run("shopkit")
    holders = result["holders"]
    total = sum(int(entry.split(" x ", 1)[0]) for entry in holders)
    assert total == 20
    named = held_by(holders, "list_orders") + held_by(holders, "monthly_report")
    assert named == total, holders  # every holder sampled or walked in the app


def test_asyncio_holders_are_named_by_the_application_coroutine(
    app_run: Callable[[str | None], dict[str, Any]],
) -> None:
    """Tasks started by a wrapper under its own name are named by the app's coroutine, and
    their leaks point at it."""
    result = app_run("shopkit")
    leaks = result["leaks"]
    assert len(leaks) == 10
    assert {leak["poolwatch.asyncio.task"] for leak in leaks} == {"sync_orders"}
    functions = [leak.get("code.function.name") for leak in leaks]
    assert functions.count("sync_orders") == len(leaks), functions


def test_an_unnamed_helper_package_takes_the_blame(
    app_run: Callable[[str | None], dict[str, Any]],
) -> None:
    """Without ``library_packages`` the in-house helper, installed like the app, is where the
    report holders land for its callers: naming it is what moves them to the app."""
    result = app_run(None)
    holders = result["holders"]
    assert held_by(holders, "list_orders") == 10
    assert held_by(holders, "monthly_report") == 0
    assert any("shopkit" in entry and " in fetch " in entry for entry in holders), holders
