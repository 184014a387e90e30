"""A user's pytest run without any conftest loads the plugin with ``-p poolwatch.testing`` and
gets its fixtures: ``poolwatch_clock`` and ``poolwatch_telemetry`` find a leak at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_TESTS = """
import sqlalchemy as sa

import poolwatch
from poolwatch.testing import check_leaks


def export_orders(engine):
    return engine.connect()  # never closed


def test_a_leak_is_found_when_the_clock_passes_the_threshold(
    poolwatch_clock, poolwatch_telemetry
):
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    poolwatch.instrument_sqlalchemy(
        engine, pool_name="shop", leak_threshold=30, **poolwatch_telemetry.providers
    )
    connection = export_orders(engine)
    poolwatch_clock.advance(29.5)
    check_leaks()
    assert poolwatch_telemetry.events("poolwatch.connection.leak") == []
    poolwatch_clock.advance(1)
    check_leaks()
    (leak,) = poolwatch_telemetry.events("poolwatch.connection.leak")
    assert leak.attributes["code.function.name"] == "export_orders"
    assert leak.attributes["poolwatch.connection.age"] == 30.5
    connection.close()


def test_the_next_test_starts_uninstrumented(poolwatch_telemetry):
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool)
    with engine.connect():
        pass
    assert poolwatch_telemetry.metrics() == {}
"""


def test_a_conftest_free_run_uses_the_plugin(tmp_path: Path) -> None:
    """Both user tests pass in a fresh pytest process whose only setup is ``-p``."""
    (tmp_path / "test_shop.py").write_text(textwrap.dedent(USER_TESTS), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "poolwatch.testing", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert not (tmp_path / "conftest.py").exists()
