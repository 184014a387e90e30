"""The incident timeline picture drawn from the demo's readings (poolwatch.demo.timeline)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from poolwatch import catalog
from poolwatch.demo import timeline
from poolwatch.demo.signals import Event, PoolReading

SVG = "{http://www.w3.org/2000/svg}"


def _story() -> timeline.Timeline:
    """Two phases of 10 s each; the pool fills, a caller waits, one checkout times out."""
    line = timeline.Timeline("orders")
    line.add(0.0, {"orders": PoolReading(used=1, max=5), "reports": PoolReading(used=4, max=5)})
    line.add(10.0, {"orders": PoolReading(used=5, max=5, pending=2)})
    line.add(20.0, {"orders": PoolReading(used=2, max=5, timeouts=1)})
    line.phases = [("saturation", 0.0, 10.0), ("timeouts", 10.0, 20.0)]
    line.events = [
        Event(12.0, catalog.EVENT_POOL_TIMEOUT, "", {catalog.POOL_NAME: "orders"}),
        Event(15.0, catalog.EVENT_CONFLICT, "", {catalog.CONFLICT_CAUSE_POOL: "orders"}),
        Event(16.0, catalog.EVENT_POOL_TIMEOUT, "", {catalog.POOL_NAME: "reports"}),
        Event(17.0, catalog.EVENT_RETURNED, "", {catalog.POOL_NAME: "orders"}),
    ]
    return line


def test_only_the_chosen_pool_is_kept() -> None:
    """Readings of other pools, and collections without the pool, add no sample."""
    line = _story()
    line.add(25.0, {"reports": PoolReading(used=1, max=5)})

    assert [(s.at, s.reading.used) for s in line.samples] == [(0.0, 1), (10.0, 5), (20.0, 2)]


def test_the_picture_is_valid_svg_with_a_title_and_three_panels() -> None:
    """The document parses, carries its title, and draws used, max, pending and timeouts."""
    root = ET.fromstring(timeline.svg(_story(), "orders through the incident"))

    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == "orders through the incident"  # type: ignore[union-attr]
    strokes = [line.get("stroke") for line in root.iter(f"{SVG}polyline")]
    assert strokes == [timeline.USED, timeline.LIMIT, timeline.PENDING, timeline.TIMEOUTS]


def test_series_are_drawn_as_steps_on_the_shared_time_axis() -> None:
    """Used connections hold their value until the next reading: 1, then 5, then 2."""
    root = ET.fromstring(timeline.svg(_story(), "t"))
    used = next(p for p in root.iter(f"{SVG}polyline") if p.get("stroke") == timeline.USED)
    points = [tuple(map(float, pair.split(","))) for pair in used.get("points", "").split()]
    xs = [x for x, _ in points]
    start, middle, end = (
        timeline._Scale(20.0).x(0),
        timeline._Scale(20.0).x(10),
        timeline._Scale(20.0).x(20),
    )

    assert xs == [round(v, 1) for v in (start, middle, middle, end, end)]
    heights = [y for _, y in points]
    assert heights[0] == heights[1]  # 1 used until the second reading
    assert heights[2] == heights[3] < heights[0]  # then 5 (higher on the page: a smaller y)
    assert heights[4] > heights[2]  # then 2


def test_only_the_pools_timeout_leak_and_conflict_events_are_marked() -> None:
    """The other pool's timeout and a returned-connection event get no marker."""
    svg = timeline.svg(_story(), "t")

    assert re.findall(r"<title>(\w+) at ([\d.]+)s</title>", svg) == [
        ("timeout", "12.0"),
        ("conflict", "15.0"),
    ]


def test_equal_series_give_byte_equal_pictures() -> None:
    """No clock, random id or dict order leaks into the picture."""
    assert timeline.svg(_story(), "t") == timeline.svg(_story(), "t")


def test_phases_are_named_over_the_panels() -> None:
    """Each phase's name is written once, centred over its span."""
    svg = timeline.svg(_story(), "t")

    phase_labels = re.findall(r'fill="#555555">(\w+)</text>', svg)

    assert phase_labels == ["saturation", "timeouts"]
