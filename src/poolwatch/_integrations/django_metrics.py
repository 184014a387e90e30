"""The ``poolwatch.django.*`` instruments, read at collection time from the live tracker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from poolwatch import catalog
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations.django_tracking import Tracker

#: One reading: a value and the attributes of its point.
Observation = tuple[float, dict[str, Any]]

_STATES = (
    catalog.DJANGO_IN_REQUEST,
    catalog.DJANGO_IDLE,
    catalog.DJANGO_IN_TRANSACTION,
    catalog.DJANGO_ORPHANED,
)

TrackerSource = Callable[[], "Tracker | None"]


def register_metrics(instrumentation: Instrumentation, source: TrackerSource) -> None:
    """The ``poolwatch.django.*`` collection-time metrics, read from the tracker ``source``
    gives (registered once per instrumentation: re-instrumenting swaps the tracker, not the
    instruments)."""
    for metric, read in (
        (catalog.DJANGO_CONNECTIONS, _observe_states),
        (catalog.DJANGO_CONNECTION_AGE, _observe_ages),
        (catalog.DJANGO_CONNECTION_IDLE, _observe_idle),
        (catalog.DJANGO_OPENED, _observe_opened),
        (catalog.DJANGO_CLOSED, _observe_closed),
        (catalog.DJANGO_ORPHANS, _observe_orphans),
    ):
        instrumentation.observe(metric, _reader(source, read))


def _reader(
    source: TrackerSource, read: Callable[[Tracker], Iterator[Observation]]
) -> Callable[[], list[Observation]]:
    def reader() -> list[Observation]:
        tracker = source()
        if tracker is None or not tracker.active:
            return []
        return list(read(tracker))

    return reader


def _observe_states(tracker: Tracker) -> Iterator[Observation]:
    for alias, (states, _age, _idle) in sorted(tracker.snapshot().items()):
        for state in _STATES:
            yield (states[state], {catalog.DJANGO_ALIAS: alias, catalog.DJANGO_STATE: state})


def _observe_ages(tracker: Tracker) -> Iterator[Observation]:
    for alias, (_states, age, _idle) in sorted(tracker.snapshot().items()):
        yield (age, {catalog.DJANGO_ALIAS: alias})


def _observe_idle(tracker: Tracker) -> Iterator[Observation]:
    for alias, (_states, _age, idle) in sorted(tracker.snapshot().items()):
        yield (idle, {catalog.DJANGO_ALIAS: alias})


def _observe_opened(tracker: Tracker) -> Iterator[Observation]:
    for alias, count in tracker.counted(tracker.opened):
        yield (count, {catalog.DJANGO_ALIAS: alias})


def _observe_closed(tracker: Tracker) -> Iterator[Observation]:
    tracker.reap()
    for (alias, reason), count in tracker.counted(tracker.closed):
        yield (count, {catalog.DJANGO_ALIAS: alias, catalog.CLOSE_REASON: reason})


def _observe_orphans(tracker: Tracker) -> Iterator[Observation]:
    orphans = dict(tracker.counted(tracker.orphans))
    for alias, _opened in tracker.counted(tracker.opened):
        yield (orphans.get(alias, 0), {catalog.DJANGO_ALIAS: alias})
