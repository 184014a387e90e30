"""Runs the demo: instruments two SQLite engines, plays the phases, watches, writes, summarises."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol, TextIO

import poolwatch
from poolwatch._exit import EXIT_FAILED, EXIT_USAGE, CommandError
from poolwatch.demo import view, workload
from poolwatch.demo.export import Destination, OtlpHttp, OtlpJsonFile
from poolwatch.demo.signals import Event, Providers, providers, readings
from poolwatch.demo.story import Readings, Story

TELEMETRY_FILE = "telemetry.otlp.jsonl"
#: Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (SIGTERM: 143).
INTERRUPTED = 128 + signal.SIGINT
#: Signals that stop the demo cleanly: the workload ends, the summary is printed, files close.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
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


class Interrupt(AbstractContextManager["Interrupt"]):
    """Ctrl-C (and SIGTERM) set a flag instead of raising: the demo stops at its own pace.

    Installed before any thread starts and whatever the inherited disposition (a background job
    of a script starts with SIGINT ignored), and restored on exit.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self.stop.set()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]

    @property
    def status(self) -> int | None:
        """128 + the signal that stopped the demo, or None."""
        return None if self.signum is None else 128 + self.signum


class Demo:
    """One run: providers, engines, the workload thread and the watching loop."""

    def __init__(
        self, options: Options, out: TextIO, directory: Path, stop: threading.Event
    ) -> None:
        self.options, self.out, self.directory = options, out, directory
        self.destination: Destination = (
            OtlpHttp(options.otlp_endpoint)
            if options.otlp_endpoint
            else OtlpJsonFile(directory / TELEMETRY_FILE)
        )
        self.started = time.monotonic()
        self.providers: Providers = providers(self.destination, self.started)
        self.story = Story(self.started, self.collect, len(workload.PHASES))
        self.stop = stop
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

    def play(self, screen: View, work: workload.Workload) -> None:
        """Run the script while refreshing the screen, until it ends or ``stop`` is set."""
        thread = threading.Thread(target=self.script, args=(work,), name="demo-workload")
        try:
            thread.start()
            while thread.is_alive():
                self.tick(screen)
                thread.join(TICK)
        finally:
            # Whatever ended the loop (a signal, a closed stdout), the workload stops before its
            # database goes away; a finished one is not affected.
            self.stop.set()
            if thread.is_alive():
                thread.join(JOIN_TIMEOUT)
            self.tick(screen, final=True)

    def screen(self) -> View:
        """The live view if asked for and rich is installed, else plain lines."""
        if self.options.live:
            try:
                return view.LiveView(self.out)
            except ImportError:
                self.out.write("(plain lines: the live view needs rich, pip install rich)\n")
        return view.PlainView(self.out)

    def run(self) -> None:
        """Instrument, play, clean up."""
        with tempfile.TemporaryDirectory(prefix="poolwatch-demo-db-") as database_dir:
            engine, neighbour = workload.engines(Path(database_dir))
            for target, name in ((engine, workload.POOL), (neighbour, workload.NEIGHBOUR)):
                poolwatch.instrument_sqlalchemy(
                    target,
                    pool_name=name,
                    leak_threshold=self.leak_threshold,
                    # the demo's application lives inside poolwatch, whose frames are skipped
                    app_packages=[workload.SHOP],
                    **self.providers.kwargs,
                )
            tracer = self.providers.tracer_provider.get_tracer("poolwatch.demo")
            work = workload.Workload(engine, neighbour, tracer, self.stop)
            screen = self.screen()
            try:
                with screen:
                    self.play(screen, work)
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


def prepare(directory: Path) -> Path:
    """``--output`` as a directory the demo can write into, or a usage error saying why not."""
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"--output {directory} is a file, not a directory", EXIT_USAGE)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"--output {directory}: cannot create it ({exc.strerror})"
        raise CommandError(message, EXIT_USAGE) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CommandError(f"--output {directory} is not writable", EXIT_USAGE)
    return directory


def run(options: Options, out: TextIO) -> int:
    """Run the whole demo; returns the exit status (0; 1 if telemetry was lost; 130 after Ctrl-C)."""
    directory = options.output or default_output()
    created = not directory.exists()
    prepare(directory)
    with Interrupt() as interrupt, _quiet_exporters():
        try:
            demo = Demo(options, out, directory, interrupt.stop)
        except CommandError:
            if created:
                directory.rmdir()  # nothing was written: leave nothing behind
            raise
        out.write(
            f"poolwatch demo: pool {workload.POOL} has {workload.POOL_SIZE} connections + "
            f"{workload.MAX_OVERFLOW} overflow, pool timeout {workload.POOL_TIMEOUT:g}s, "
            f"leak threshold {demo.leak_threshold:g}s; "
            f"pool {workload.NEIGHBOUR} stays healthy. {len(workload.PHASES)} phases, "
            f"about {sum(seconds for _, seconds in workload.scaled(options.duration)):.0f}s. "
            "Ctrl-C stops.\n"
        )
        out.flush()
        demo.run()
        monitoring_failed = _report(demo, directory, interrupt.signum is not None)
    if interrupt.status is not None:
        return interrupt.status
    lost = demo.destination.delivery.failures
    if lost:
        raise CommandError(
            f"{lost} telemetry exports failed (see 'telemetry:' above): what was shown was not "
            "all delivered"
        )
    return EXIT_FAILED if monitoring_failed else 0


def _report(demo: Demo, directory: Path, interrupted: bool) -> bool:
    """Print the summary and write the dashboards; True if they could not be written."""
    lines = view.summary(demo.story, demo.providers.feed.events(), interrupted)
    lines.append("written:")
    lines.append(f"  telemetry: {demo.destination.describe()}")
    failed = False
    try:
        lines.append(f"  {write_monitoring(directory)}")
    except OSError as exc:
        lines.append(f"  dashboards and alerts FAILED: {exc.strerror}: {exc.filename}")
        failed = True
    demo.out.write("\n".join(lines) + "\n")
    demo.out.flush()
    return failed


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The OTLP exporters' retry warnings are noise here: failures are counted and summarised."""
    logger = logging.getLogger("opentelemetry.exporter.otlp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
