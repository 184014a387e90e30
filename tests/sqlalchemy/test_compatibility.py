"""Every private SQLAlchemy attribute poolwatch uses is checked when instrumenting: a missing
one is warned about once, counted, and switches off only the feature that needs it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.pool.base import _ConnectionRecord

import poolwatch
from poolwatch import catalog
from poolwatch._integrations._compat import Hook
from poolwatch._integrations.sqlalchemy import CHECKIN, COMPATIBILITY
from poolwatch.testing import Capture, FakeClock, check_leaks
from tests.support.compat import assert_reported_once, remove


@pytest.mark.parametrize("hook", COMPATIBILITY.hooks, ids=lambda hook: hook.name)
def test_a_missing_hook_warns_once_counts_and_switches_off_its_feature(
    hook: Hook,
    telemetry: Capture,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning names SQLAlchemy, its version and the hook; the count is one however often
    poolwatch instruments; the hook's feature alone is off."""
    with monkeypatch.context() as patch:
        remove(patch, hook)
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            poolwatch.instrument_sqlalchemy(**telemetry.providers)
            poolwatch.uninstrument_sqlalchemy()
            poolwatch.instrument_sqlalchemy(**telemetry.providers)
        assert_reported_once(COMPATIBILITY, hook, caplog)
    assert (
        telemetry.value(
            catalog.INTERNAL_ERRORS.name, attributes={catalog.HOOK: "compat.SQLAlchemy"}
        )
        == 1
    )


def test_without_the_checkin_hook_checkins_come_from_the_public_event(
    make_engine: Callable[..., sa.Engine],
    telemetry: Capture,
    poolwatch_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``_ConnectionRecord.checkin`` missing, loans still end at checkin (through the
    ``checkin`` pool event): a leaked connection is reported returned, and leaked no more."""
    engine = make_engine(pool_size=1)
    with monkeypatch.context() as patch:
        remove(patch, CHECKIN)
        poolwatch.instrument_sqlalchemy(
            engine, pool_name="app", leak_threshold=0.05, **telemetry.providers
        )
    assert not hasattr(vars(_ConnectionRecord)["checkin"], "_poolwatch")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        poolwatch_clock.advance(0.1)
        check_leaks()
    pool = {catalog.POOL_NAME: "app"}
    assert telemetry.value(catalog.CONNECTION_LEAKS.name, attributes=pool) == 1
    assert len(telemetry.events(catalog.EVENT_RETURNED)) == 1
    assert telemetry.value(catalog.CONNECTION_LEAKED.name, attributes=pool) == 0
