"""The demo tells the story end to end: its output shows each phase and the timeouts it caused."""

from __future__ import annotations

import io

from poolwatch import catalog, demo


def test_the_demo_runs_every_phase_and_reports_its_timeouts() -> None:
    """A short demo prints one line per phase; exhaustion times out and says so with events."""
    phases = (
        demo.Phase("healthy", callers=2, hold=0.001, rounds=5),
        demo.Phase("exhaustion", callers=8, hold=0.4, rounds=1),
        demo.Phase("recovery", callers=1, hold=0.001, rounds=5),
    )
    out = io.StringIO()
    timeouts = demo.run(out, phases)
    text = out.getvalue()
    assert timeouts == 3  # 5 connections served, 3 callers waited 0.25 s and gave up
    lines = text.splitlines()
    assert [line.split("]")[0].strip("[ ") for line in lines if line.startswith("[")] == [
        "healthy",
        "exhaustion",
        "recovery",
    ]
    assert "timeouts=3" in lines[-2]
    assert f"event {catalog.EVENT_POOL_TIMEOUT}" in text
    assert "held by" in text
