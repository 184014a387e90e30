"""One ``service.instance.id`` per process for the SDK meter provider poolwatch exports through.

OpenTelemetry SDK 1.35-1.42 give a process no ``service.instance.id``; 1.43 draws one at
``Resource.create`` but a forked child keeps its parent's; 1.44 and later draw a new one in the
child. Without a unique id, the cumulative counters of several processes land in one series and
read as a false rate. poolwatch assigns a random id when the resource has none, draws a fresh one
in every forked child for ids it or the SDK drew, and warns about configured ids that several
processes share.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from poolwatch import _guard, _process, _sdk_fork, catalog
from poolwatch._guard import PrivateHook

SERVICE_INSTANCE_ID = catalog.SERVICE_INSTANCE_ID

_logger = logging.getLogger("poolwatch")


#: Every private OpenTelemetry SDK attribute this module touches.
PRIVATE_HOOKS = (
    PrivateHook(
        "opentelemetry.sdk.metrics.MeterProvider",
        "_sdk_config",
        "no service.instance.id is assigned or renewed after fork(); processes without one "
        "are only warned about",
    ),
    PrivateHook(
        "opentelemetry.sdk.metrics._internal.sdk_configuration.SdkConfiguration",
        "resource",
        "as above",
    ),
    PrivateHook(
        "opentelemetry.sdk.resources",
        "_service_instance_id",
        "SDK 1.43 and later: the id the SDK drew cannot be told from a configured one, so a "
        "forked child on 1.43 keeps its parent's (warned about, not renewed)",
    ),
)
#: The SDK release that draws service.instance.id itself (``_service_instance_id``).
SDK_DRAWS_FROM = (1, 43)

#: Where an instance id came from: drawn by poolwatch, by the SDK, or configured by the user.
POOLWATCH, SDK, CONFIGURED = "poolwatch", "sdk", "configured"


@dataclass
class _Claim:
    """The id a provider exported with when poolwatch last looked, and where it came from."""

    instance_id: str
    origin: str
    pid: int


class _Books:
    """The claims per provider, behind a lock that a forked child replaces."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: weakref.WeakKeyDictionary[Any, _Claim] = weakref.WeakKeyDictionary()


_books = _Books()


def _sdk_config(provider: Any) -> Any | None:
    """The SDK provider's configuration, or None for an API (no-op, proxy) provider."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    except ImportError:
        return None
    if not isinstance(provider, SdkMeterProvider):
        return None
    config = getattr(provider, "_sdk_config", None)
    if config is None or not hasattr(config, "resource"):
        _warn_once(
            "hooks",
            "poolwatch: the OpenTelemetry SDK's MeterProvider has no _sdk_config.resource; "
            "poolwatch cannot give this process a service.instance.id, so several processes "
            "of this service may share one series. Set OTEL_RESOURCE_ATTRIBUTES="
            "service.instance.id=<unique per process>",
        )
        _guard.internal_error("instance.hooks", LookupError("MeterProvider._sdk_config.resource"))
        return None
    return config


def sdk_version() -> tuple[int, ...]:
    """The installed OpenTelemetry SDK's (major, minor)."""
    from opentelemetry.sdk.version import __version__

    return tuple(int(part) for part in __version__.split(".")[:2] if part.isdigit())


def _sdk_drawn_id() -> str | None:
    """The id SDK 1.43+ drew for this process (a private module global), if any."""
    from opentelemetry.sdk import resources

    if not hasattr(resources, "_service_instance_id"):
        if sdk_version() >= SDK_DRAWS_FROM:
            _warn_once(
                "hooks.drawn",
                "poolwatch: opentelemetry.sdk.resources._service_instance_id is gone; a "
                "service.instance.id the SDK drew is treated as configured, so forked "
                "workers may share it (warned about when they do)",
            )
            _guard.internal_error("instance.hooks", LookupError("resources._service_instance_id"))
        return None
    drawn = resources._service_instance_id
    return drawn if isinstance(drawn, str) else None


def _set_id(config: Any, instance_id: str) -> None:
    from opentelemetry.sdk.resources import Resource

    config.resource = config.resource.merge(Resource({SERVICE_INSTANCE_ID: instance_id}))


def ensure_instance_id(provider: Any) -> str | None:
    """Give ``provider``'s resource a ``service.instance.id`` if it has none; return the id.

    Warns when a configured id looks shared (equal to the host name). Returns None for
    providers that are not the SDK's.
    """
    config = _sdk_config(provider)
    if config is None:
        return None
    _sdk_fork.watch(provider)
    pid = os.getpid()
    with _books.lock:
        found = config.resource.attributes.get(SERVICE_INSTANCE_ID)
        current = str(found) if found else ""
        if not current:
            current = str(uuid.uuid4())
            _set_id(config, current)
            origin = POOLWATCH
        else:
            origin = SDK if current == _sdk_drawn_id() else CONFIGURED
        claim = _books.claims.get(provider)
        inherited = claim is not None and claim.instance_id == current and claim.pid != pid
        if claim is None or claim.instance_id != current or inherited:
            _books.claims[provider] = _Claim(current, origin, pid)
    if origin == CONFIGURED and current == socket.gethostname():
        _warn_shared(current, "equals the host name")
    if origin == CONFIGURED and inherited:
        _warn_shared(current, "was inherited across fork()")
    return current


def _warn_shared(instance_id: str, why: str) -> None:
    _warn_once(
        f"shared:{instance_id}",
        f"poolwatch: service.instance.id={instance_id!r} {why}; every process with this id "
        "(pre-fork workers, several processes per host) exports into the same series and "
        "their counters read as false rates. Give each process its own id, or leave "
        "service.instance.id unset and poolwatch assigns one per process.",
    )


def _warn_once(key: str, message: str) -> None:
    _guard.warn_once(f"instance:{key}", "%s", message)


def _after_fork_in_child() -> None:
    """Renew the drawn ids the child inherited."""
    _books.lock = threading.Lock()  # another thread may have held it at fork()
    pid = os.getpid()
    for provider, claim in list(_books.claims.items()):
        _guard.guarded("instance.fork", _renew, provider, claim, pid)


def _renew(provider: Any, claim: _Claim, pid: int) -> None:
    config = _sdk_config(provider)
    if config is None or claim.pid == pid:
        return
    current = config.resource.attributes.get(SERVICE_INSTANCE_ID)
    if current != claim.instance_id:
        # The SDK (1.44+) drew a new one for this child already.
        _books.claims[provider] = _Claim(str(current), SDK, pid)
        return
    if claim.origin == CONFIGURED:
        return  # kept as configured; the child's next collection warns (no logging at fork)
    fresh = str(uuid.uuid4())
    _set_id(config, fresh)
    _books.claims[provider] = _Claim(fresh, claim.origin, pid)


def instance_id(provider: Any) -> str | None:
    """The ``service.instance.id`` ``provider`` exports with now (None when not an SDK one)."""
    config = _sdk_config(provider)
    if config is None:
        return None
    value = config.resource.attributes.get(SERVICE_INSTANCE_ID)
    return str(value) if value else None


_process.on_fork("instance", _after_fork_in_child)
