"""Instrumenting Django: reversible by identity, idempotent, settings-blind, never in the way."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import signals
from django.db import ProgrammingError, connections

import poolwatch
from poolwatch import _guard, catalog
from poolwatch._integrations import django as adapter
from poolwatch.testing import Capture
from tests.django.conftest import Instrument

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).parents[2]


def originals() -> dict[tuple[type[Any], str], Any]:
    """What the hooked class attributes are right now."""
    found = {}
    for module, class_name, name in adapter._REPLACEMENTS:
        cls = getattr(importlib.import_module(module), class_name)
        found[cls, name] = vars(cls)[name]
    return found


def receivers() -> tuple[int, int]:
    return len(signals.request_started.receivers), len(signals.request_finished.receivers)


def test_uninstrument_restores_every_replaced_attribute_by_identity(
    instrument: Instrument,
) -> None:
    """Every replaced class attribute is exactly what it was before; signals are untouched."""
    before, listening = originals(), receivers()
    instrument()
    during = originals()
    assert all(during[key] is not value for key, value in before.items())
    assert all(getattr(during[key], "__wrapped__", None) is before[key] for key in before)
    assert receivers() == listening  # no signal receiver: the methods that send them are hooked
    poolwatch.uninstrument_django()
    after = originals()
    assert all(after[key] is value for key, value in before.items())
    assert receivers() == listening


def test_instrumenting_twice_changes_nothing(instrument: Instrument) -> None:
    """A second call keeps the first replacements and receivers."""
    instrument()
    first, listening = originals(), receivers()
    instrument()
    assert originals() == first
    assert receivers() == listening


def run_without_settings(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter whose DJANGO_SETTINGS_MODULE cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={"DJANGO_SETTINGS_MODULE": "no.such.settings", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_instrumenting_reads_no_django_setting(tmp_path: Path) -> None:
    """Instrumenting before ``django.setup()`` leaves settings unread and apps unloaded, even with
    a settings module that cannot be imported."""
    script = (
        "import poolwatch, django.conf, django.apps\n"
        "poolwatch.instrument_django()\n"
        "print(django.conf.settings.configured, django.apps.apps.ready)\n"
    )
    result = run_without_settings(script, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False False\n", "")


def test_an_error_inside_poolwatch_leaves_the_connection_working(
    instrument: Instrument, telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing hook is counted as an internal error; the application's query runs."""
    instrument()

    def broken(*_args: Any) -> None:
        raise RuntimeError("poolwatch bug")

    monkeypatch.setattr(adapter.ADAPTER.tracker, "connection_opened", broken)
    with connections["persistent"].cursor() as cursor:
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)
    assert _guard.error_counts() == {"django.connect": 1}
    assert (
        telemetry.value(catalog.INTERNAL_ERRORS.name, attributes={catalog.HOOK: "django.connect"})
        == 1
    )


def test_the_applications_own_errors_pass_through_unchanged(instrument: Instrument) -> None:
    """Django's exception for a bad query reaches the application as it would without us."""
    instrument()
    with (
        pytest.raises(ProgrammingError, match="no_such_table") as caught,
        connections["persistent"].cursor() as cursor,
    ):
        cursor.execute("SELECT * FROM no_such_table")
    assert type(caught.value) is ProgrammingError
    assert _guard.error_counts() == {}


def test_instrumenting_again_reports_through_the_same_instruments(
    instrument: Instrument, telemetry: Capture
) -> None:
    """Uninstrument then instrument with the same providers: the SDK keeps the first callbacks
    of an instrument name, so they must read the new instrumentation (one series, its count)."""
    instrument()
    connections["persistent"].ensure_connection()
    connections["persistent"].close()
    poolwatch.uninstrument_django()
    instrument()
    connections["persistent"].ensure_connection()

    points = telemetry.metrics()[catalog.DJANGO_OPENED.name]
    assert [(dict(point.attributes), point.value) for point in points] == [
        ({catalog.DJANGO_ALIAS: "persistent"}, 1)
    ]


def test_the_launchers_instrumentor_patches_django_when_the_app_imports_it(
    tmp_path: Path,
) -> None:
    """Under the launcher a process that never imports Django does not load it; one that does
    is patched as soon as ``django.db`` is imported, settings still unread."""
    script = (
        "import sys\n"
        "from poolwatch._instrumentors import DjangoInstrumentor\n"
        "DjangoInstrumentor().instrument()  # as the launcher does\n"
        "print('django' in sys.modules)\n"
        "import django.db, django.conf\n"
        "from django.db.backends.base.base import BaseDatabaseWrapper\n"
        "print(getattr(BaseDatabaseWrapper.connect, '_poolwatch', False))\n"
        "print(django.conf.settings.configured)\n"
    )
    result = run_without_settings(script, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False\nTrue\nFalse\n", "")


def test_a_forked_worker_finds_its_own_orphans(tmp_path: Path) -> None:
    """After a fork (gunicorn's workers) the child has no checker thread; it starts its own."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "apps" / "forked_worker.py")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'RESULT {"thread": "child-job"}' in result.stdout.splitlines()
