"""Run the instrumented libraries' own test suites with poolwatch off and on, and compare.

    python tests/upstream/run.py [--suite sqlalchemy|django|all] [--ci] [--work DIR]

For each suite it fetches the library's source distribution for the installed version from
PyPI (cached in ``--work``), runs the chosen test modules twice in fresh interpreters, once
plain and once with poolwatch instrumenting every pool from interpreter start
(``sitecustomize.py`` beside this file), and lists the tests that fail only with poolwatch on.
Exit status: 0 when there are none apart from the entries of ``known.json`` (each with its
reason), 1 otherwise, 2 when a suite could not run.

``--ci`` runs the subset CI runs (SQLite only); without it, each suite runs on SQLite and,
when PostgreSQL's server programs are installed, on a throwaway PostgreSQL cluster on loopback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIMPLE_INDEX = "https://pypi.org/simple/{name}/"

SQLALCHEMY_MODULES = [
    "test/engine/test_pool.py",
    "test/engine/test_reconnect.py",
    "test/engine/test_execute.py",
    "test/engine/test_transaction.py",
    "test/orm/test_session.py",
    "test/orm/test_transaction.py",
    "test/ext/asyncio",
]
SQLALCHEMY_CI_MODULES = [
    "test/engine/test_pool.py",
    "test/engine/test_reconnect.py",
    "test/orm/test_session.py",
    "test/ext/asyncio",
]
DJANGO_LABELS = [
    "backends",
    "handlers",
    "requests_tests",
    "db_utils",
    "transactions",
    "transaction_hooks",
    "asgi",
    "servers",
    "select_for_update",
]
DJANGO_CI_LABELS = ["backends", "handlers", "db_utils", "transactions", "transaction_hooks"]


@dataclass
class Outcome:
    """The tests of one run by id, and how the run ended."""

    failed: set[str] = field(default_factory=set)
    passed: int = 0
    skipped: int = 0
    returncode: int = 0
    internal_errors: dict[str, int] = field(default_factory=dict)
    points: int = 0
    processes: int = 0


def sdist(name: str, version: str, work: Path) -> Path:
    """The unpacked source distribution of ``name`` ``version``, fetched once into ``work``."""
    target = work / f"{name.lower()}-{version}"
    if target.is_dir():
        return target
    with urllib.request.urlopen(SIMPLE_INDEX.format(name=name.lower()), timeout=60) as page:
        listing = page.read().decode()
    pattern = rf'href="(https://[^"#]+/{re.escape(name.lower())}-{re.escape(version)}\.tar\.gz)'
    found = re.search(pattern, listing, re.IGNORECASE)
    if found is None:
        raise SystemExit(f"no source distribution of {name} {version} on PyPI")
    archive = work / f"{name.lower()}-{version}.tar.gz"
    with urllib.request.urlopen(found.group(1), timeout=300) as response:
        archive.write_bytes(response.read())
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    unpacked = [p for p in work.iterdir() if p.is_dir() and p.name.lower() == target.name]
    if not unpacked:
        raise SystemExit(f"{archive} did not unpack into {target.name}")
    return unpacked[0]


def environment(on: bool, libraries: str, errors: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["POOLWATCH_UPSTREAM"] = "on" if on else "off"
    env["POOLWATCH_UPSTREAM_LIBRARIES"] = libraries
    env["POOLWATCH_UPSTREAM_ERRORS"] = str(errors)
    return env


def collect_reports(errors: Path, outcome: Outcome) -> None:
    """What each poolwatch-on process wrote at exit: metric points seen and internal errors."""
    for path in errors.parent.glob(f"{errors.name}.*"):
        found = json.loads(path.read_text())
        outcome.processes += 1
        outcome.points += found["points"]
        for key, value in found["errors"].items():
            outcome.internal_errors[key] = outcome.internal_errors.get(key, 0) + value


def run_sqlalchemy(source: Path, modules: Sequence[str], dburi: str | None, on: bool) -> Outcome:
    """SQLAlchemy's pytest suite against the installed SQLAlchemy (``-s`` keeps its ./lib out)."""
    with tempfile.TemporaryDirectory(prefix="poolwatch-upstream-") as scratch:
        report = Path(scratch) / "junit.xml"
        errors = Path(scratch) / "errors"
        command = [sys.executable, "-s", "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        command += ["--junitxml", str(report), "-o", "addopts=-p warnings -p logging"]
        if dburi:
            command += ["--dburi", dburi]
        command += list(modules)
        done = subprocess.run(
            command,
            cwd=source,
            env=environment(on, "sqlalchemy", errors),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=3600,
            check=False,
        )
        outcome = junit(report)
        outcome.returncode = done.returncode
        collect_reports(errors, outcome)
        return outcome


DJANGO_POSTGRES_SETTINGS = """\
SECRET_KEY = "upstream-suite-run"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
_server = {{"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": {port},
           "USER": "postgres", "NAME": "postgres"}}
DATABASES = {{"default": dict(_server), "other": dict(_server, TEST={{"NAME": "other_tests"}})}}
"""


def run_django(source: Path, labels: Sequence[str], on: bool, port: int | None = None) -> Outcome:
    """Django's ``runtests.py``: its SQLite settings, or PostgreSQL on ``port`` (superuser)."""
    with tempfile.TemporaryDirectory(prefix="poolwatch-upstream-") as scratch:
        errors = Path(scratch) / "errors"
        command = [sys.executable, "-s", "runtests.py", "--parallel", "1", "-v", "2", *labels]
        env = environment(on, "django", errors)
        if port is not None:
            Path(scratch, "upstream_postgres.py").write_text(
                DJANGO_POSTGRES_SETTINGS.format(port=port)
            )
            env["PYTHONPATH"] = os.pathsep.join([scratch, env["PYTHONPATH"]])
            command.insert(3, "--settings=upstream_postgres")
        done = subprocess.run(
            command,
            cwd=source / "tests",
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        outcome = unittest_log(done.stderr)
        ran = re.search(r"^Ran (\d+) tests?", done.stderr, re.MULTILINE)
        parsed = outcome.passed + outcome.skipped + len(outcome.failed)
        if ran is None or int(ran.group(1)) != parsed:
            print(f"  warning: parsed {parsed} results, Django reports {ran and ran.group(0)}")
        outcome.returncode = done.returncode
        collect_reports(errors, outcome)
        return outcome


def junit(report: Path) -> Outcome:
    outcome = Outcome()
    if not report.exists():
        return outcome
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome.failed.add(name)
        elif case.find("skipped") is not None:
            outcome.skipped += 1
        else:
            outcome.passed += 1
    return outcome


_UNITTEST_LINE = re.compile(
    r"^(\w+) \(([\w.]+)\)(?:\n.*?)? \.\.\. (ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$",
    re.MULTILINE,
)


def unittest_log(text: str) -> Outcome:
    outcome = Outcome()
    for test, where, verdict in _UNITTEST_LINE.findall(text):
        name = f"{where}::{test}"
        if verdict in ("FAIL", "ERROR", "unexpected success"):
            outcome.failed.add(name)
        elif verdict.startswith("skipped"):
            outcome.skipped += 1
        else:
            outcome.passed += 1
    return outcome


def compare(title: str, off: Outcome, on: Outcome, known: dict[str, str]) -> list[str]:
    on_only = sorted(on.failed - off.failed)
    unexplained = [name for name in on_only if name not in known]
    print(f"\n{title}")
    for label, outcome in (("off", off), ("on", on)):
        print(
            f"  poolwatch {label:3}: {outcome.passed} passed, {len(outcome.failed)} failed, "
            f"{outcome.skipped} skipped (exit {outcome.returncode})"
        )
    if on.processes:
        print(f"  poolwatch on: {on.points} metric points from {on.processes} process(es)")
    if on.internal_errors:
        print(f"  poolwatch internal errors: {on.internal_errors}")
    for name in on_only:
        reason = known.get(name)
        print(f"  on only: {name}" + (f"  [known: {reason}]" if reason else ""))
    if not on_only:
        print("  no test fails only with poolwatch on")
    if off.passed + on.passed == 0:
        unexplained.append(f"{title}: no test ran")
    if on.points == 0:
        unexplained.append(f"{title}: poolwatch recorded nothing, so the run proves nothing")
    return unexplained


def postgres() -> Any:
    """A throwaway PostgreSQL cluster on loopback (the test suite's own), or None."""
    sys.path.insert(0, str(ROOT))
    from tests.support.postgres import PostgresNotAvailable, start_postgres

    try:
        return start_postgres(max_connections=100)
    except PostgresNotAvailable as missing:
        print(f"PostgreSQL runs skipped: {missing}")
        return None


def suite_runs(
    args: argparse.Namespace, cluster: Any, known: dict[str, str], library: str
) -> list[str]:
    """Every target of one library's suite (SQLite, and PostgreSQL when ``cluster`` runs), off
    and on; the on-only failures not explained in ``known``."""
    version = importlib.metadata.version(library)
    if library == "sqlalchemy":
        source = sdist("SQLAlchemy", version, args.work)
        tests = SQLALCHEMY_CI_MODULES if args.ci else SQLALCHEMY_MODULES
        server = cluster.sqlalchemy_url("psycopg") if cluster is not None else None

        def run(target: Any, on: bool) -> Outcome:
            return run_sqlalchemy(source, tests, target, on=on)
    else:
        source = sdist("Django", version, args.work)
        tests = DJANGO_CI_LABELS if args.ci else DJANGO_LABELS
        server = cluster.port if cluster is not None else None

        def run(target: Any, on: bool) -> Outcome:
            return run_django(source, tests, on=on, port=target)

    targets = [("sqlite", None)] + ([("postgresql", server)] if server is not None else [])
    unexplained: list[str] = []
    for label, target in targets:
        off, on = run(target, False), run(target, True)
        title = f"{source.name} on {label}: {' '.join(tests)}"
        unexplained += compare(title, off, on, known)
    return unexplained


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["sqlalchemy", "django", "all"], default="all")
    parser.add_argument("--ci", action="store_true", help="the subset CI runs (SQLite only)")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "poolwatch-upstream"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    known = json.loads((HERE / "known.json").read_text())
    unexplained: list[str] = []
    cluster = None if args.ci else postgres()
    try:
        if args.suite in ("sqlalchemy", "all"):
            unexplained += suite_runs(args, cluster, known["sqlalchemy"], "sqlalchemy")
        if args.suite in ("django", "all"):
            unexplained += suite_runs(args, cluster, known["django"], "django")
    finally:
        if cluster is not None:
            cluster.stop()

    if unexplained:
        print(f"\n{len(unexplained)} failure(s) only with poolwatch on, not in known.json")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
