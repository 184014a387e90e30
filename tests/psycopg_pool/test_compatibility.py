"""psycopg_pool's private methods poolwatch replaces are checked when instrumenting."""

from __future__ import annotations

import logging

import pytest

import poolwatch
from poolwatch import catalog
from poolwatch._integrations._compat import Hook
from poolwatch._integrations._replacing import is_replacement
from poolwatch._integrations.psycopg_pool import COMPATIBILITY
from poolwatch.testing import Capture, FakeClock, check_leaks
from tests.psycopg_pool.conftest import PoolFactory
from tests.support.compat import assert_reported_once, remove


@pytest.mark.parametrize("hook", COMPATIBILITY.hooks, ids=lambda hook: hook.name)
def test_a_missing_hook_warns_once_counts_and_switches_off_its_feature(
    hook: Hook,
    telemetry: Capture,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning names psycopg_pool, its version and the method; counted once; only
    connection opening (create time, failed opens) is off."""
    with monkeypatch.context() as patch:
        remove(patch, hook)
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            poolwatch.instrument_psycopg_pool(**telemetry.providers)
            poolwatch.uninstrument_psycopg_pool()
            poolwatch.instrument_psycopg_pool(**telemetry.providers)
        assert_reported_once(COMPATIBILITY, hook, caplog)


@pytest.mark.postgres
def test_without_connect_checkouts_are_still_recorded(
    make_pool: PoolFactory,
    telemetry: Capture,
    poolwatch_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``_connect`` missing at instrument time, checkouts are still recorded: a connection
    held past the leak threshold is reported."""
    (hook,) = [h for h in COMPATIBILITY.hooks if h.cls == "ConnectionPool"]
    pool = make_pool(min_size=1, max_size=1)
    with monkeypatch.context() as patch:
        remove(patch, hook)
        poolwatch.instrument_psycopg_pool(
            pool, pool_name="app", leak_threshold=0.05, **telemetry.providers
        )
    assert not is_replacement(vars(type(pool))["_connect"])
    pool.open(wait=True)
    with pool.connection() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        poolwatch_clock.advance(0.1)
        check_leaks()
    pool_name = {catalog.POOL_NAME: "app"}
    assert telemetry.value(catalog.CONNECTION_LEAKS.name, attributes=pool_name) == 1
    assert telemetry.value(catalog.CONNECTION_LEAKED.name, attributes=pool_name) == 0
