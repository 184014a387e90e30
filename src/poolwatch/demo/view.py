"""What the person running the demo sees: a live table (rich), or plain lines, and the summary."""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

from poolwatch import catalog
from poolwatch.demo.signals import Event, PoolReading
from poolwatch.demo.story import PhaseRecord, Readings, Story

#: How many of the latest events the live view lists.
LIVE_EVENTS = 8


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def conflicts_by_pool(events: list[Event]) -> Counter[str]:
    """Session conflicts per pool whose timeout caused them."""
    return Counter(e.pool or "-" for e in events if e.name == catalog.EVENT_CONFLICT)


def pool_cells(
    pool: str, reading: PoolReading, before: PoolReading | None, conflicts: int
) -> list[str]:
    """One pool's row: used/idle/max, pending, wait p99 in this phase, timeouts, leaks, conflicts."""
    return [
        pool,
        f"{reading.used}/{reading.idle}/{reading.max}",
        str(reading.pending),
        _ms(reading.wait_p99(before)),
        str(reading.timeouts),
        str(reading.leaks),
        str(conflicts),
    ]


POOL_COLUMNS = ("pool", "used/idle/max", "pending", "wait p99", "timeouts", "leaks", "conflicts")


def pool_line(cells: list[str]) -> str:
    """A pool's row as one plain line of ``key=value`` pairs."""
    keys = ("used/idle/max", "pending", "wait_p99", "timeouts", "leaks", "conflicts")
    return f"pool {cells[0]}: " + " ".join(f"{k}={v}" for k, v in zip(keys, cells[1:], strict=True))


def event_line(event: Event, phase: str) -> str:
    """An event as one line: when, in which phase, what, which pool, where in the code."""
    where = f" {_located(event.where)}" if event.where else ""
    return f"{event.at:6.1f}s {phase:<10} {event.name} [{event.pool or '-'}]{where}"


def rows(story: Story, pools: Readings, events: list[Event]) -> list[list[str]]:
    """Every pool's cells, waits measured since the current phase began."""
    current = story.current()
    conflicts = conflicts_by_pool(events)
    return [
        pool_cells(pool, reading, current.before.get(pool) if current else None, conflicts[pool])
        for pool, reading in sorted(pools.items())
    ]


def heading(story: Story) -> str:
    """``phase 3/7 waits: <what happens>  12.3s``."""
    current = story.current()
    if current is None:
        return f"starting  {story.now():.1f}s"
    return (
        f"phase {current.number}/{story.total} {current.name}: {current.phase.story}"
        f"  {story.now():.1f}s"
    )


class PlainView:
    """Plain lines for pipes and CI: phase changes, events as detected, pool rows every few seconds."""

    def __init__(self, out: TextIO, every: float = 2.0) -> None:
        self.out = out
        self.every = every
        self._phase = 0
        self._events = 0
        self._printed_at = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.out.flush()

    def update(
        self, story: Story, pools: Readings, events: list[Event], final: bool = False
    ) -> None:
        """Print what changed since the last update."""
        fresh = events[self._events :]
        self._events = len(events)
        records = story.records()
        for record in records[self._phase :]:  # every phase begun since the last update
            self._print_events([e for e in fresh if e.at < record.start], story)
            fresh = [e for e in fresh if e.at >= record.start]
            self._write(
                f"{record.start:6.1f}s phase {record.number}/{story.total} {record.name}: "
                f"{record.phase.story}"
            )
        self._phase = len(records)
        self._print_events(fresh, story)
        if final or story.now() - self._printed_at >= self.every:
            self._printed_at = story.now()
            for cells in rows(story, pools, events):
                self._write(f"{story.now():6.1f}s {pool_line(cells)}")

    def _print_events(self, events: list[Event], story: Story) -> None:
        for event in events:
            self._write(event_line(event, story.phase_at(event.at)) + f"\n         {event.body}")

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class LiveView:
    """A live terminal table of each pool, the current phase and the latest events (rich)."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out)
        self._live = Live(console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)

    def update(
        self, story: Story, pools: Readings, events: list[Event], final: bool = False
    ) -> None:
        """Redraw with the latest readings."""
        self._live.update(self.render(story, pools, events), refresh=final)

    def render(self, story: Story, pools: Readings, events: list[Event]) -> Any:
        """The whole screen: heading, pool table, latest events."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title="pools (wait p99 over the current phase)", title_justify="left")
        for column in POOL_COLUMNS:
            table.add_column(column, justify="left" if column == "pool" else "right")
        for cells in rows(story, pools, events):
            table.add_row(*cells)
        latest = [
            Text(event_line(event, story.phase_at(event.at)), no_wrap=True, overflow="ellipsis")
            for event in events[-LIVE_EVENTS:]
        ]
        return Group(
            Text("poolwatch demo  " + heading(story), style="bold"),
            table,
            Text(f"events ({len(events)}, newest last)", style="bold"),
            *(latest or [Text("  none yet")]),
        )


def summary(story: Story, events: list[Event], interrupted: bool) -> list[str]:
    """What was detected and when: one line per phase, one per kind of event."""
    lines = ["", "summary" + (" so far (interrupted)" if interrupted else "") + ":"]
    lines.append(
        f"  {'phase':<11}{'from':>7}{'to':>7}{'checkouts':>11}{'timeouts':>10}"
        f"{'wait p99':>11}{'peak pending':>14}"
    )
    lines.extend(_phase_line(record) for record in story.records())
    lines.append("detected:")
    names = Counter(event.name for event in events)
    if not names:
        lines.append("  nothing")
    for name in catalog.EVENTS:
        if names[name]:
            first = next(event for event in events if event.name == name)
            lines.append(
                f"  {name:<34} {names[name]:>3} x, first at {first.at:.1f}s in "
                f"{story.phase_at(first.at)}{_detail(first)}"
            )
    return lines


def _phase_line(record: PhaseRecord) -> str:
    from poolwatch.demo.workload import POOL

    before = record.before.get(POOL, PoolReading())
    after = (record.after or {}).get(POOL, before)
    end = "-" if record.end is None else f"{record.end:.1f}"
    return (
        f"  {record.name:<11}{record.start:>7.1f}{end:>7}"
        f"{after.checkouts - before.checkouts:>11}{after.timeouts - before.timeouts:>10}"
        f"{_ms(after.wait_p99(before)):>11}{record.peak_pending.get(POOL, 0):>14}"
    )


def _detail(event: Event) -> str:
    attributes = event.attributes
    parts = [f"pool {event.pool}"] if event.pool else []
    if attributes.get(catalog.CONFLICT_CAUSE):
        parts.append(f"cause {attributes[catalog.CONFLICT_CAUSE]}")
    if event.where:
        parts.append(_located(event.where))
    return (", " + ", ".join(parts)) if parts else ""


def _located(where: str) -> str:
    """``at <code location>``, or the holders of a timed-out pool as they are (``held by ...``)."""
    return where if where.startswith("held by") else f"at {where}"
