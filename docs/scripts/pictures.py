"""Regenerate the documentation's pictures from the project itself.

    python docs/scripts/pictures.py [--duration SECONDS]

Runs ``poolwatch demo`` (SQLite, in-process SDK, no network) with its live view recorded instead
of drawn, and saves the view as it stood at the end of chosen phases as SVG files under
``docs/images/`` with rich's ``Console(record=True).save_svg``, and the incident timeline of the
demo's pool (connections used and max, pending requests, timeouts, event markers) drawn by
:mod:`poolwatch.demo.timeline`. Needs the demo extra. A
development script: the pictures are committed, and CI does not run it (the demo takes about
half a minute).
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from poolwatch.demo import runner, timeline, view
from poolwatch.demo.signals import Event
from poolwatch.demo.story import Readings, Story
from poolwatch.demo.workload import POOL

IMAGES = Path(__file__).resolve().parent.parent / "images"
#: Picture file -> the phase whose last frame it shows ("" would be the final frame).
PICTURES = {
    "demo-timeouts.svg": "timeouts",
    "demo-conflict.svg": "conflict",
}
WIDTH = 118
#: The incident timeline of the demo's pool, drawn from every collection the demo made.
TIMELINE = "demo-timeline.svg"


class RecordedView:
    """Keeps the live view's last frame of every phase instead of drawing it."""

    def __init__(self) -> None:
        self._live = view.LiveView(io.StringIO())
        self.frames: dict[str, Any] = {}
        self.timeline = timeline.Timeline(POOL)

    def __enter__(self) -> RecordedView:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def update(
        self, story: Story, pools: Readings, events: list[Event], final: bool = False
    ) -> None:
        """Render the frame the live view would show, and keep it under its phase's name."""
        current = story.current()
        self.timeline.add(story.now(), pools)
        self.timeline.events = list(events)
        self.timeline.phases = [
            (record.name, record.start, record.end if record.end is not None else story.now())
            for record in story.records()
        ]
        frame = self._live.render(story, pools, events)
        if current is not None:
            self.frames[current.name] = frame
        if final:
            self.frames[""] = frame


class PictureDemo(runner.Demo):
    """The demo, drawing into a :class:`RecordedView` instead of the terminal."""

    def __init__(self, options: runner.Options, directory: Path) -> None:
        super().__init__(options, io.StringIO(), directory, threading.Event())
        self.recorded = RecordedView()

    def screen(self) -> RecordedView:
        """The recording view, whatever the options say."""
        return self.recorded


def _portable(svg: str, roots: list[str]) -> str:
    """No paths of the machine that drew the picture: site-packages and checkout prefixes cut."""
    for root in roots:
        svg = svg.replace(root, "")
    return re.sub(r"/[^\s\"<>]*?/site-packages/", "", svg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="demo length in seconds")
    args = parser.parse_args(argv)
    options = runner.Options(live=False)
    if args.duration:
        options = runner.Options(duration=args.duration, live=False)
    with tempfile.TemporaryDirectory(prefix="poolwatch-pictures-") as scratch:
        demo = PictureDemo(options, Path(scratch))
        demo.run()
    recorded = demo.recorded
    IMAGES.mkdir(parents=True, exist_ok=True)
    roots = [str(Path(__file__).resolve().parents[2]) + "/"]
    for name, phase in PICTURES.items():
        console = Console(record=True, width=WIDTH, file=io.StringIO(), color_system="truecolor")
        console.print(recorded.frames[phase])
        svg = console.export_svg(title="poolwatch demo")
        (IMAGES / name).write_text(_portable(svg, roots), encoding="utf-8")
        print(f"wrote {IMAGES / name}")
    title = f"poolwatch demo: pool {POOL!r} through the incident"
    (IMAGES / TIMELINE).write_text(timeline.svg(recorded.timeline, title), encoding="utf-8")
    print(f"wrote {IMAGES / TIMELINE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
