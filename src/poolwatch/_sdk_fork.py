"""Keep the SDK's periodic metric export alive in a forked child.

The SDK's ``PeriodicExportingMetricReader`` starts a new export thread in a forked child but
keeps its export lock as it was: a fork made while the parent's thread was exporting (a few
milliseconds out of every interval) leaves the child a lock that nobody will release (and the
HTTP client's own locks mid-request), and the child never exports. For the providers poolwatch
exports through, a fork first waits (bounded) for a collection and an export in progress; if an
export outlasts the wait, the child replaces the export lock its parent's thread held.

A child also inherits the OTLP/HTTP exporter's keep-alive connection to the collector: parent and
workers would then write their requests into one TCP stream, and the collector reads interleaved
bodies ("wire format was corrupt") or a process reads another's response. The child drops the
connections it inherited (its copies only: the parent's stay open) and opens its own. The batch
processors of the tracer and logger providers poolwatch reports through get the same: a fork
waits (bounded) for their export in progress, and the child drops their exporters' connections.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from poolwatch import _guard
from poolwatch._guard import PrivateHook

#: Seconds a fork waits for a metric collection in progress (in memory: short).
COLLECT_WAIT = 5.0
#: Seconds a fork waits for the exports in progress, all of them together (milliseconds to a
#: healthy collector; with the collector down, a fork is delayed at most this long).
EXPORT_WAIT = 2.0


_BREAKS = "a worker forked while its parent exported metrics may never export (warned about once)"
_SHARED = "a forked worker shares its parent's connection to the collector (warned about once)"
#: The private OpenTelemetry SDK attributes the metric side touches.
METRIC_HOOKS: tuple[PrivateHook, ...] = (
    PrivateHook("opentelemetry.sdk.metrics.MeterProvider", "_metric_readers", _BREAKS),
    # SDK releases before 1.36 keep the readers only in the provider's configuration
    PrivateHook("opentelemetry.sdk.metrics.MeterProvider", "_sdk_config", _BREAKS),
    PrivateHook("opentelemetry.sdk.metrics.MeterProvider", "_measurement_consumer", _BREAKS),
    PrivateHook(
        "opentelemetry.sdk.metrics._internal.measurement_consumer.SynchronousMeasurementConsumer",
        "_lock",
        _BREAKS,
    ),
    PrivateHook(
        "opentelemetry.sdk.metrics.export.PeriodicExportingMetricReader", "_export_lock", _BREAKS
    ),
    PrivateHook(
        "opentelemetry.sdk.metrics.export.PeriodicExportingMetricReader", "_exporter", _SHARED
    ),
    # the exporter's HTTP transport (SDK 1.45 and later), whose close() drops its connections
    PrivateHook(
        "opentelemetry.exporter.otlp.proto.http.metric_exporter.OTLPMetricExporter",
        "_client",
        _SHARED,
    ),
    PrivateHook("opentelemetry.exporter.otlp.common.http._OTLPHTTPClient", "_transport", _SHARED),
    # SDK 1.35 to 1.44: the exporter's own requests.Session
    PrivateHook(
        "opentelemetry.exporter.otlp.proto.http.metric_exporter.OTLPMetricExporter",
        "_session",
        _SHARED,
    ),
)
_BATCHES = "a forked worker's spans and events share its parent's connection (warned about once)"
_SDK_TRACE = "opentelemetry.sdk.trace"
_SDK_LOGS = "opentelemetry.sdk._logs._internal"
#: The private attributes through which the span and log exporters are reached.
BATCH_HOOKS = (
    PrivateHook(f"{_SDK_TRACE}.TracerProvider", "_active_span_processor", _BATCHES),
    PrivateHook(f"{_SDK_TRACE}.SynchronousMultiSpanProcessor", "_span_processors", _BATCHES),
    PrivateHook(f"{_SDK_TRACE}.export.BatchSpanProcessor", "_batch_processor", _BATCHES),
    PrivateHook(f"{_SDK_LOGS}.LoggerProvider", "_multi_log_record_processor", _BATCHES),
    PrivateHook(
        f"{_SDK_LOGS}.SynchronousMultiLogRecordProcessor", "_log_record_processors", _BATCHES
    ),
    PrivateHook(f"{_SDK_LOGS}.export.BatchLogRecordProcessor", "_batch_processor", _BATCHES),
    PrivateHook("opentelemetry.sdk._shared_internal.BatchProcessor", "_export_lock", _BATCHES),
    PrivateHook("opentelemetry.sdk._shared_internal.BatchProcessor", "_exporter", _BATCHES),
)
#: Every private OpenTelemetry SDK attribute this module touches.
PRIVATE_HOOKS = METRIC_HOOKS + BATCH_HOOKS
#: The hooks the export locks need (without them a provider is not watched at all).
_LOCK_HOOKS = tuple(hook for hook in PRIVATE_HOOKS if hook.breaks == _BREAKS)
#: Modules whose exporters keep HTTP connections alive (checked for a way to drop them).
_HTTP_EXPORTERS = "opentelemetry.exporter.otlp.proto.http"


@dataclass
class _Held:
    """What the forking thread holds between ``before`` and ``after`` (one per provider)."""

    consumer_lock: Any | None
    readers: list[tuple[Any, bool]]


_providers: weakref.WeakSet[Any] = weakref.WeakSet()
_held: list[_Held] = []
#: Tracer and logger providers whose batch processors are handled across fork.
_batch_providers: weakref.WeakSet[Any] = weakref.WeakSet()
#: The batch processors' export locks the forking thread holds: (processor, lock, taken).
_held_batches: list[tuple[Any, Any, bool]] = []


def watch(provider: Any) -> None:
    """Protect ``provider``'s periodic readers across fork() (an SDK provider; checked once)."""
    if provider in _providers:
        return
    if _hooks_present(provider):
        _providers.add(provider)
        _check_connections(provider)
        return
    _guard.warn_once(
        "sdk_fork:hooks",
        "poolwatch: the OpenTelemetry SDK's MeterProvider lacks %s; a worker forked while "
        "its parent exported metrics may never export its own",
        ", ".join(hook.attribute for hook in _LOCK_HOOKS),
    )
    _guard.internal_error("sdk_fork.hooks", LookupError("MeterProvider export locks"))


def watch_batches(provider: Any) -> None:
    """Handle the batch processors of an SDK tracer or logger ``provider`` across fork()
    (any other provider is left alone; checked once)."""
    if provider in _batch_providers or not _is_sdk_batching(provider):
        return
    processors = _batch_processors(provider)
    if processors is None or not all(
        hasattr(processor, "_export_lock") and hasattr(processor, "_exporter")
        for processor in processors
    ):
        _guard.warn_once(
            "sdk_fork:batches",
            "poolwatch: cannot find the batch processors of %s (%s); a worker forked after "
            "its parent exported spans or events shares the parent's connection to the "
            "collector, and their exports can corrupt each other",
            type(provider).__name__,
            ", ".join(hook.attribute for hook in BATCH_HOOKS),
        )
        _guard.internal_error("sdk_fork.batches", LookupError("SDK batch processors"))
        return
    _batch_providers.add(provider)


def _is_sdk_batching(provider: Any) -> bool:
    """Whether ``provider`` is the SDK's tracer or logger provider (the SDK is optional)."""
    try:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return False
    return isinstance(provider, TracerProvider | LoggerProvider)


def _batch_processors(provider: Any) -> list[Any] | None:
    """The SDK batch processors behind ``provider``'s span or log processors (None: not found)."""
    multi = getattr(provider, "_active_span_processor", None)
    processors = getattr(multi, "_span_processors", None)
    if multi is None:
        multi = getattr(provider, "_multi_log_record_processor", None)
        processors = getattr(multi, "_log_record_processors", None)
    if processors is None:
        return None
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    batching = [
        processor
        for processor in processors
        if isinstance(processor, BatchSpanProcessor | BatchLogRecordProcessor)
    ]
    found = [getattr(processor, "_batch_processor", None) for processor in batching]
    return None if None in found else found


def _check_connections(provider: Any) -> None:
    """Warn (once) when an HTTP exporter's connections cannot be dropped in a forked child."""
    unknown = [
        type(getattr(reader, "_exporter", reader)).__name__
        for reader in _periodic(_readers(provider))
        if _keeps_connections(reader) and _closer(reader) is None
    ]
    if not unknown:
        return
    _guard.warn_once(
        "sdk_fork:connections",
        "poolwatch: cannot find the HTTP connections of %s (none of %s); a worker forked "
        "after its parent exported shares the parent's connection to the collector, and "
        "their exports can corrupt each other",
        ", ".join(unknown),
        ", ".join(hook.attribute for hook in PRIVATE_HOOKS if hook.breaks == _SHARED),
    )
    _guard.internal_error("sdk_fork.connections", LookupError("OTLP/HTTP exporter transport"))


def _keeps_connections(reader: Any) -> bool:
    """Whether ``reader`` exports through an OTLP/HTTP exporter (which keeps connections alive)."""
    exporter = getattr(reader, "_exporter", None)
    return exporter is None or type(exporter).__module__.startswith(_HTTP_EXPORTERS)


def _closer(reader: Any) -> Any:
    """What drops the connections ``reader``'s exporter keeps open (None if not found)."""
    exporter = getattr(reader, "_exporter", None)
    transport = getattr(getattr(exporter, "_client", None), "_transport", None)
    holder = transport if transport is not None else getattr(exporter, "_session", None)
    close = getattr(holder, "close", None)
    return close if callable(close) else None


def _readers(provider: Any) -> Any:
    """The provider's metric readers (None when the SDK keeps them elsewhere)."""
    readers = getattr(provider, "_metric_readers", None)
    if readers is None:
        readers = getattr(getattr(provider, "_sdk_config", None), "metric_readers", None)
    return readers


def _hooks_present(provider: Any) -> bool:
    consumer = getattr(provider, "_measurement_consumer", None)
    readers = _readers(provider)
    if not hasattr(consumer, "_lock") or readers is None:
        return False
    return all(hasattr(reader, "_export_lock") for reader in _periodic(readers))


def _periodic(readers: Any) -> list[Any]:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return [reader for reader in readers if isinstance(reader, PeriodicExportingMetricReader)]


def _before_fork(deadline: float) -> None:
    """Wait for a collection and an export in progress, holding their locks across the fork."""
    for provider in list(_providers):
        consumer_lock = provider._measurement_consumer._lock
        if not consumer_lock.acquire(timeout=COLLECT_WAIT):
            consumer_lock = None
        entry = _Held(consumer_lock, [])
        _held.append(entry)  # appended first: released after fork even if a step below fails
        for reader in _periodic(_readers(provider)):
            entry.readers.append((reader, reader._export_lock.acquire(timeout=_left(deadline))))


def _before_fork_batches(deadline: float) -> None:
    """Wait for the batch processors' exports in progress, holding their locks across the fork."""
    for provider in list(_batch_providers):
        for processor in _batch_processors(provider) or ():
            lock = processor._export_lock
            _held_batches.append((processor, lock, False))
            taken = lock.acquire(timeout=_left(deadline))
            _held_batches[-1] = (processor, lock, taken)


def _release_batches(in_child: bool) -> None:
    held = list(_held_batches)
    _held_batches.clear()
    for processor, lock, taken in held:
        if not taken:
            continue  # an export in flight: the SDK gives the child a new lock of its own
        if in_child and _keeps_connections(processor):
            close = _closer(processor)
            if close is not None:
                _guard.guarded("sdk_fork.connections", close)
        lock.release()  # the lock taken (the SDK may already have replaced it in the child)


def _release(in_child: bool) -> None:
    _guard.guarded("sdk_fork.batches", _release_batches, in_child)
    held = list(_held)
    _held.clear()
    for entry in held:
        for reader, taken in entry.readers:
            if taken and in_child and _keeps_connections(reader):
                # no export was in flight: no thread of the parent's holds the pool's locks
                close = _closer(reader)
                if close is not None:
                    _guard.guarded("sdk_fork.connections", close)
            if taken:
                reader._export_lock.release()
            elif in_child:
                # held by the parent's export thread, which the child does not have
                reader._export_lock = threading.Lock()
        if entry.consumer_lock is not None:
            entry.consumer_lock.release()


def _after_in_parent() -> None:
    _guard.guarded("sdk_fork.parent", _release, False)


def _after_in_child() -> None:
    _guard.guarded("sdk_fork.child", _release, True)


def _left(deadline: float) -> float:
    """Seconds to wait for one more lock (0: only if it is free now)."""
    return max(0.0, deadline - time.monotonic())


def _guarded_before() -> None:
    deadline = time.monotonic() + EXPORT_WAIT
    _guard.guarded("sdk_fork.before", _before_fork, deadline)
    _guard.guarded("sdk_fork.before", _before_fork_batches, deadline)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_guarded_before,
        after_in_parent=_after_in_parent,
        after_in_child=_after_in_child,
    )
