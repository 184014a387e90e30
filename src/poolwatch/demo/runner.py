"""Runs the demo: instruments two SQLite engines, plays the phases, watches, writes, summarises."""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

import poolwatch
from poolwatch.demo import view, workload
from poolwatch.demo.export import Destination, OtlpHttp, OtlpJsonFile
from poolwatch.demo.signals import Event, Providers, providers, readings
from poolwatch.demo.story import Readings, Story

TELEMETRY_FILE = "telemetry.otlp.jsonl"
#: Exit status after Ctrl-C, as a shell reports a process ended by SIGINT.
INTERRUPTED = 130
#: Seconds between two collections shown on screen, and between two exported ones.
TICK, EXPORT_EVERY = 0.25, 1.0
#: Every wait in the workload ends on the stop flag or within a pool timeout; this is slack.
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Options:
    """What ``poolwatch demo`` was asked to do."""

    duration: float = workload.DEFAULT_SECONDS
    output: Path | None = None
    otlp_endpoint: str | None = None
    live: bool = True


def default_output(now: datetime | None = None) -> Path:
    """``./poolwatch-demo-YYYYmmdd-HHMMSS``: a new directory under the current one."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / f"poolwatch-demo-{stamp}"


class View(Protocol, AbstractContextManager["View"]):
    """The live table or the plain lines."""

    def update(
        self, story: Story, pools: Readings, events: list[Event], final: bool = False
    ) -> None:
        """Show the latest readings and events."""


class Demo:
    """One run: providers, engines, the workload thread and the watching loop."""

    def __init__(self, options: Options, out: TextIO, directory: Path) -> None:
        self.options, self.out, self.directory = options, out, directory
        self.destination: Destination = (
            OtlpHttp(options.otlp_endpoint)
            if options.otlp_endpoint
            else OtlpJsonFile(directory / TELEMETRY_FILE)
        )
        self.started = time.monotonic()
        self.providers: Providers = providers(self.destination, self.started)
        self.story = Story(self.started, self.collect, len(workload.PHASES))
        self.stop = threading.Event()
        self.leak_threshold = workload.LEAK_THRESHOLD
        self._exported_at = 0.0

    def collect(self) -> Readings:
        """Per-pool readings from a fresh collection."""
        return readings(self.providers.reader.get_metrics_data())

    def tick(self, screen: View, final: bool = False) -> None:
        """Collect, show, and export every ``EXPORT_EVERY`` seconds (and at the end)."""
        data = self.providers.reader.get_metrics_data()
        pools = readings(data)
        self.story.observe(pools)
        if data is not None and (final or time.monotonic() - self._exported_at >= EXPORT_EVERY):
            self._exported_at = time.monotonic()
            self.destination.export_metrics(data)
        screen.update(self.story, pools, self.providers.feed.events(), final=final)

    def script(self, work: workload.Workload) -> None:
        """The workload thread: every phase in turn, the neighbour pool busy throughout."""
        done = threading.Event()
        neighbour = threading.Thread(target=workload.background, args=(work, done), daemon=True)
        neighbour.start()
        try:
            for phase, seconds in workload.scaled(self.options.duration):
                if self.stop.is_set():
                    break
                self.story.begin(phase)
                phase.run(work, phase.name, time.monotonic() + seconds)
                self.story.end()
        finally:
            done.set()
            neighbour.join()

    def play(self, screen: View, work: workload.Workload) -> bool:
        """Run the script while refreshing the screen; True if interrupted with Ctrl-C."""
        thread = threading.Thread(target=self.script, args=(work,), name="demo-workload")
        thread.start()
        try:
            while thread.is_alive():
                self.tick(screen)
                thread.join(TICK)
        except KeyboardInterrupt:
            return True
        finally:
            # Whatever ended the loop (Ctrl-C, a closed stdout), the workload stops before its
            # database goes away; a finished one is not affected.
            self.stop.set()
            thread.join(JOIN_TIMEOUT)
            self.tick(screen, final=True)
        return False

    def screen(self) -> View:
        """The live view if asked for and rich is installed, else plain lines."""
        if self.options.live:
            try:
                return view.LiveView(self.out)
            except ImportError:
                self.out.write("(plain lines: the live view needs rich, pip install rich)\n")
        return view.PlainView(self.out)

    def run(self) -> bool:
        """Instrument, play, clean up; True if interrupted."""
        with tempfile.TemporaryDirectory(prefix="poolwatch-demo-db-") as database_dir:
            engine, neighbour = workload.engines(Path(database_dir))
            for target, name in ((engine, workload.POOL), (neighbour, workload.NEIGHBOUR)):
                poolwatch.instrument_sqlalchemy(
                    target,
                    pool_name=name,
                    leak_threshold=self.leak_threshold,
                    **self.providers.kwargs,
                )
            tracer = self.providers.tracer_provider.get_tracer("poolwatch.demo")
            work = workload.Workload(engine, neighbour, tracer, self.stop)
            screen = self.screen()
            try:
                with screen:
                    return self.play(screen, work)
            finally:
                for target in (engine, neighbour):
                    poolwatch.uninstrument_sqlalchemy(target)
                    target.dispose()
                self.providers.shutdown()
                self.destination.shutdown()


def write_monitoring(directory: Path) -> str:
    """The generated dashboards and alert rules, written under ``directory``."""
    try:
        from poolwatch.monitoring import generate
        from poolwatch.monitoring.config import MonitoringConfig
    except ImportError as missing:
        return (
            f"dashboards and alerts skipped: the monitoring extra is not installed "
            f"({missing.name} is missing): pip install 'poolwatch[monitoring]'"
        )
    files = {
        path: content
        for path, content in generate.render(MonitoringConfig()).items()
        if path.startswith((generate.DASHBOARDS_DIR + "/", generate.ALERTS_DIR + "/"))
    }
    generate.write(directory, files)
    return (
        f"dashboards and alerts: {directory / generate.DASHBOARDS_DIR} and "
        f"{directory / generate.ALERTS_DIR} ({len(files)} files)"
    )


def run(options: Options, out: TextIO) -> int:
    """Run the whole demo; returns the exit status (0, or 130 after Ctrl-C)."""
    directory = options.output or default_output()
    directory.mkdir(parents=True, exist_ok=True)
    demo = Demo(options, out, directory)
    out.write(
        f"poolwatch demo: pool {workload.POOL} has {workload.POOL_SIZE} connections + "
        f"{workload.MAX_OVERFLOW} overflow, pool timeout {workload.POOL_TIMEOUT:g}s, "
        f"leak threshold {demo.leak_threshold:g}s; "
        f"pool {workload.NEIGHBOUR} stays healthy. {len(workload.PHASES)} phases, "
        f"about {sum(seconds for _, seconds in workload.scaled(options.duration)):.0f}s. "
        "Ctrl-C stops.\n"
    )
    out.flush()
    try:
        interrupted = demo.run()
    except KeyboardInterrupt:  # before the workload started or while cleaning up
        interrupted = True
    lines = view.summary(demo.story, demo.providers.feed.events(), interrupted)
    lines.append("written:")
    lines.append(f"  telemetry: {demo.destination.describe()}")
    lines.append(f"  {write_monitoring(directory)}")
    out.write("\n".join(lines) + "\n")
    out.flush()
    return INTERRUPTED if interrupted else 0
