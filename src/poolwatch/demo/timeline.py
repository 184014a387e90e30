"""The demo's incident as a timeline picture: one pool's series and the events, drawn as SVG.

:class:`Timeline` keeps what the demo read at each collection; :func:`svg` draws it with plain
SVG elements (no plotting library, no display), so equal series give byte-equal pictures.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from poolwatch import catalog
from poolwatch.demo.signals import Event, PoolReading

WIDTH, LEFT, RIGHT = 880, 64, 16
PANEL, GAP, TOP, STRIP = 110, 26, 40, 24
#: The events marked, with their label and colour.
MARKERS = {
    catalog.EVENT_POOL_TIMEOUT: ("timeout", "#d62728"),
    catalog.EVENT_LEAK: ("leak", "#9467bd"),
    catalog.EVENT_CONFLICT: ("conflict", "#ff7f0e"),
}
USED, LIMIT, PENDING, TIMEOUTS = "#1f77b4", "#7f7f7f", "#2ca02c", "#d62728"


@dataclass(frozen=True)
class Sample:
    """One pool's reading at one collection, seconds since the demo started."""

    at: float
    reading: PoolReading


@dataclass
class Timeline:
    """One pool's readings over time, the phases the demo ran and the events it saw."""

    pool: str
    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def add(self, at: float, readings: dict[str, PoolReading]) -> None:
        """Keep the pool's reading from a collection made ``at`` seconds in."""
        if self.pool in readings:
            self.samples.append(Sample(at, readings[self.pool]))


@dataclass(frozen=True)
class _Scale:
    """Seconds to x, for the panels' shared time axis."""

    end: float

    def x(self, at: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (at / self.end if self.end else 0.0)


def svg(timeline: Timeline, title: str) -> str:
    """The timeline as a standalone SVG document."""
    end = max([s.at for s in timeline.samples] + [p[2] for p in timeline.phases] + [1.0])
    scale = _Scale(end)
    readings = [(s.at, s.reading) for s in timeline.samples]
    top_of = [TOP + STRIP + GAP + i * (PANEL + GAP) for i in range(3)]
    height = top_of[-1] + PANEL + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    parts += _phases(timeline.phases, scale, TOP, top_of[-1] + PANEL)
    parts += _events(timeline.events, timeline.pool, scale, TOP)
    used = [(at, float(r.used)) for at, r in readings]
    limit = [(at, float(r.max)) for at, r in readings]
    pending = [(at, float(r.pending)) for at, r in readings]
    timeouts = [(at, float(r.timeouts)) for at, r in readings]
    parts += _panel(top_of[0], scale, "connections", [("used", USED, used), ("max", LIMIT, limit)])
    parts += _panel(top_of[1], scale, "waiting", [("pending requests", PENDING, pending)])
    parts += _panel(top_of[2], scale, "timeouts", [("timeouts (total)", TIMEOUTS, timeouts)])
    parts += _time_axis(scale, top_of[-1] + PANEL)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _phases(
    phases: Sequence[tuple[str, float, float]], scale: _Scale, top: float, bottom: float
) -> list[str]:
    parts = []
    for index, (name, start, stop) in enumerate(phases):
        x0, x1 = scale.x(start), scale.x(stop)
        shade = "#f4f4f4" if index % 2 else "#ffffff"
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{bottom - top}" '
            f'fill="{shade}"/>'
        )
        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{top - 4}" text-anchor="middle" '
            f'fill="#555555">{escape(name)}</text>'
        )
    return parts


def _events(events: Sequence[Event], pool: str, scale: _Scale, top: float) -> list[str]:
    parts = [f'<text x="{LEFT - 6}" y="{top + 16}" text-anchor="end">events</text>']
    for event in events:
        if event.name not in MARKERS or event.pool not in (pool, None):
            continue
        label, colour = MARKERS[event.name]
        x = scale.x(event.at)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + 4}" x2="{x:.1f}" y2="{top + STRIP}" '
            f'stroke="{colour}" stroke-width="1.5"><title>{label} at {event.at:.1f}s</title></line>'
        )
    legend_x = WIDTH - RIGHT
    for label, colour in reversed(list(MARKERS.values())):
        legend_x -= 8 * len(label) + 22
        parts.append(
            f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="17">{label}</text>'
        )
    return parts


def _panel(
    top: float,
    scale: _Scale,
    name: str,
    series: Sequence[tuple[str, str, list[tuple[float, float]]]],
) -> list[str]:
    highest = max([value for _, _, points in series for _, value in points] + [1.0])
    bottom = top + PANEL

    def y(value: float) -> float:
        return bottom - PANEL * value / highest

    parts = [
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#999999"/>',
        f'<text x="{LEFT - 6}" y="{y(highest) + 4:.1f}" text-anchor="end">{_number(highest)}</text>',
        f'<text x="{LEFT - 6}" y="{bottom + 4}" text-anchor="end">0</text>',
        f'<text x="{LEFT - 6}" y="{top + PANEL / 2:.1f}" text-anchor="end" '
        f'font-weight="bold">{escape(name)}</text>',
    ]
    legend_x = LEFT + 6
    for label, colour, points in series:
        if points:
            steps = " ".join(f"{scale.x(at):.1f},{y(value):.1f}" for at, value in _stepped(points))
            parts.append(
                f'<polyline points="{steps}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        parts.append(f'<text x="{legend_x}" y="{top + 12}" fill="{colour}">{escape(label)}</text>')
        legend_x += 8 * len(label) + 16
    return parts


def _stepped(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A reading holds until the next one: a step line, not a slope between collections."""
    stepped = [points[0]]
    for (_, previous), (at, value) in itertools.pairwise(points):
        stepped += [(at, previous), (at, value)]
    return stepped


def _time_axis(scale: _Scale, bottom: float) -> list[str]:
    parts = []
    step = 5.0 if scale.end > 15 else 1.0
    tick = 0.0
    while tick <= scale.end + 1e-9:
        x = scale.x(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{_number(tick)}s</text>'
        )
        tick += step
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{bottom + 32}" text-anchor="middle" '
        'fill="#555555">seconds since the demo started</text>'
    )
    return parts
