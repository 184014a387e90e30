"""Django's internal methods poolwatch replaces are checked as their modules are imported."""

from __future__ import annotations

import logging
import time

import pytest
from django.db import close_old_connections, connections

from poolwatch import catalog
from poolwatch._integrations._compat import Hook
from poolwatch._integrations.django import ADAPTER, COMPATIBILITY, LAST_QUERY
from poolwatch.testing import Capture
from tests.django.conftest import Instrument
from tests.support.compat import assert_reported_once, remove
from tests.support.readings import django_closed

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("hook", COMPATIBILITY.hooks, ids=lambda hook: hook.name)
def test_a_missing_hook_warns_once_counts_and_switches_off_its_feature(
    hook: Hook,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning names Django, its version and the method; counted once; only the feature
    that needs the method is off."""
    with monkeypatch.context() as patch:
        remove(patch, hook)
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            instrument()
        assert_reported_once(COMPATIBILITY, hook, caplog)
        assert ADAPTER.tracker is not None
        assert ADAPTER.tracker.queries_seen is (hook.feature != LAST_QUERY)


def test_close_reasons_do_not_depend_on_caller_names(
    instrument: Instrument, telemetry: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CONN_MAX_AGE close reached through layers of the app's own (a close wrapped by a
    tracing or retry helper, say) keeps its reason: the closing method sets it."""
    instrument()
    wrapper = connections["persistent"]
    wrapper.ensure_connection()
    wrapper.close_at = time.monotonic() - 1
    close = type(wrapper).close

    def traced_close() -> None:
        def retried() -> None:
            def logged() -> None:
                def timed() -> None:
                    close(wrapper)

                timed()

            logged()

        retried()

    monkeypatch.setattr(wrapper, "close", traced_close, raising=False)
    close_old_connections()
    assert wrapper.connection is None
    assert django_closed(telemetry, "persistent") == {catalog.CLOSE_MAX_AGE: 1}
