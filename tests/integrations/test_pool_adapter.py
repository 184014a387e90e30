"""The pool-adapter base serves a new library: a toy pool adapted with only its specifics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.trace import Span

from poolwatch import catalog
from poolwatch._context import SPAN_KEY, current_context
from poolwatch._instrumentors import instrumentation_for
from poolwatch._integrations._compat import Table
from poolwatch._integrations._pool_adapter import Binding, PoolAdapter, wants_span
from poolwatch._naming import REGISTRY, Target
from poolwatch._recorder import PoolState
from poolwatch.config import Config
from poolwatch.testing import Capture

_ATTR = "_poolwatch_binding"


class Connection:
    """A toy connection (weakly referenceable, as loan keys need)."""


class ToyPool:
    """A pool library with no hooks of its own."""

    def __init__(self, name: str | None = None, size: int = 2) -> None:
        self.name = name
        self.size = size
        self.idle = [Connection() for _ in range(size)]
        self.out: list[Connection] = []

    def getconn(self) -> Connection:
        connection = self.idle.pop()
        self.out.append(connection)
        return connection

    def putconn(self, connection: Connection) -> None:
        self.out.remove(connection)
        self.idle.append(connection)


ORIGINAL_GETCONN = ToyPool.getconn
ORIGINAL_PUTCONN = ToyPool.putconn


class ToyAdapter(PoolAdapter[list[str]]):
    """Everything particular to the toy library; the details are the names it was renamed to."""

    library = "toy"
    compatibility = Table("toy", "poolwatch", ())

    def binding_of(self, pool: Any) -> Binding[list[str]] | None:
        binding: Binding[list[str]] | None = vars(pool).get(_ATTR)
        return binding

    def read_state(self, binding: Binding[list[str]], pool: ToyPool) -> PoolState:
        return PoolState(len(pool.out), len(pool.idle), pool.size, pool.size, 0)

    def _identify(self, pool: ToyPool, owner: Any) -> tuple[str | None, Target]:
        return pool.name, Target("other_sql")

    def _details(self) -> list[str]:
        return []

    def _bind(self, binding: Binding[list[str]], pool: Any, app_name: str | None) -> None:
        setattr(pool, _ATTR, binding)

    def _unbind(self, binding: Binding[list[str]]) -> None:
        pool = binding.pool_ref()
        if pool is not None:
            delattr(pool, _ATTR)

    def _renamed(self, binding: Binding[list[str]], name: str) -> None:
        binding.details.append(name)

    def _hook(self) -> None:
        self._replaced.replace(ToyPool, "getconn", _getconn)
        self._replaced.replace(ToyPool, "putconn", _putconn)


ADAPTER = ToyAdapter()


def _getconn(original: Callable[..., Any]) -> Callable[..., Any]:
    def getconn(pool: ToyPool) -> Any:
        binding = ADAPTER.binding_of(pool) or ADAPTER.auto_attach(pool)
        if binding is None:
            return original(pool)
        recorder = binding.recorder
        parent: Span | None = current_context().get(SPAN_KEY)
        started = recorder.begin()
        traced = recorder.trace() if wants_span(recorder, parent) else None
        connection = original(pool)
        key = binding.key(connection)
        recorder.succeeded(started, traced, key, key, parent)
        return connection

    return getconn


def _putconn(original: Callable[..., Any]) -> Callable[..., Any]:
    def putconn(pool: ToyPool, connection: Connection) -> None:
        binding = ADAPTER.binding_of(pool)
        if binding is not None:
            binding.recorder.checked_in(binding.key(connection))
        original(pool, connection)

    return putconn


@pytest.fixture
def toy(telemetry: Capture) -> Iterator[ToyAdapter]:
    """The toy adapter recording every pool into ``telemetry``; unhooked afterwards."""
    ADAPTER.instrument_all(instrumentation_for(Config.load(environ={}), **telemetry.providers))
    yield ADAPTER
    ADAPTER.uninstrument_all()


def test_a_pool_is_attached_at_its_first_checkout_and_its_state_read(
    toy: ToyAdapter, telemetry: Capture
) -> None:
    """The base binds the pool, names it, and reads its state through the adapter."""
    pool = ToyPool("toys")
    connection = pool.getconn()
    used = {catalog.POOL_NAME: "toys", catalog.STATE: "used"}
    idle = {catalog.POOL_NAME: "toys", catalog.STATE: "idle"}
    assert telemetry.value(catalog.CONNECTION_COUNT.name, attributes=used) == 1
    assert telemetry.value(catalog.CONNECTION_COUNT.name, attributes=idle) == 1
    binding = toy.binding_of(pool)
    assert binding is not None
    assert len(binding.recorder.loans) == 1
    pool.putconn(connection)
    assert len(binding.recorder.loans) == 0
    assert telemetry.value(catalog.CONNECTION_COUNT.name, attributes=used) == 0


def test_the_binding_claims_a_unique_name_and_releases_it_on_detach(toy: ToyAdapter) -> None:
    """Unnamed pools are named after their target, suffixed when taken; detaching frees names."""
    first, second = ToyPool(), ToyPool()
    first.getconn()
    second.getconn()
    bindings = [toy.binding_of(pool) for pool in (first, second)]
    assert [b.recorder.name if b else None for b in bindings] == ["other_sql", "other_sql#2"]
    assert REGISTRY.names() == {"other_sql": "toy", "other_sql#2": "toy"}
    toy.uninstrument_all()
    assert REGISTRY.names() == {}
    assert toy.binding_of(first) is None


def test_uninstrumenting_restores_the_library_exactly(toy: ToyAdapter) -> None:
    """The replaced methods go back once no pool is recorded."""
    ToyPool().getconn()
    assert toy.installed
    assert ToyPool.getconn is not ORIGINAL_GETCONN
    toy.uninstrument_all()
    assert not toy.installed
    assert (ToyPool.getconn, ToyPool.putconn) == (ORIGINAL_GETCONN, ORIGINAL_PUTCONN)


def test_a_checkout_gets_a_span_only_inside_a_recording_trace(
    toy: ToyAdapter, telemetry: Capture
) -> None:
    """``wants_span``: spans are on by default for checkouts inside a recording trace only."""
    pool = ToyPool("toys")
    pool.putconn(pool.getconn())
    assert telemetry.spans(catalog.SPAN_CHECKOUT) == []
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        pool.putconn(pool.getconn())
    assert len(telemetry.spans(catalog.SPAN_CHECKOUT)) == 1


def test_a_collected_connection_is_forgotten_at_the_next_state_read(
    toy: ToyAdapter, telemetry: Capture
) -> None:
    """Loan keys from :meth:`Binding.key` queue a connection dropped while out; reading the
    state reaps it, so the loan does not stay open forever."""
    pool = ToyPool("toys")
    pool.getconn()
    pool.out.clear()  # the application lost the connection: nothing references it any more
    binding = toy.binding_of(pool)
    assert binding is not None
    assert len(binding.collected) == 1
    binding.read_state()
    assert (len(binding.collected), len(binding.recorder.loans)) == (0, 0)


def test_root_spans_make_a_span_outside_any_trace(telemetry: Capture) -> None:
    """``wants_span`` with ``root_spans=True``: a checkout outside any trace gets a span too."""
    config = Config.load(environ={}, root_spans=True)
    ADAPTER.instrument_all(instrumentation_for(config, **telemetry.providers))
    try:
        pool = ToyPool("toys")
        pool.putconn(pool.getconn())
    finally:
        ADAPTER.uninstrument_all()
    assert len(telemetry.spans(catalog.SPAN_CHECKOUT)) == 1
