"""What every pool adapter shares: pools bound to recorders, named once, attached and detached,
and the library's classes hooked while any pool is recorded.

Adding a pool library
---------------------
A pool adapter is one module, ``poolwatch/_integrations/<library>.py``, holding a subclass of
:class:`PoolAdapter`, its one instance ``ADAPTER``, and the plain functions that replace the
library's methods (the hot path). The base owns the lifecycle; the subclass says only what is
particular to its library:

``library`` and ``compatibility``
    The library's name (it names pools nobody named, suffixes names shared with another
    library's pools, and names the fork reset) and the :class:`~poolwatch._integrations._compat.Table`
    of every private attribute the adapter touches; the table is checked before anything is hooked.
``_hook()``
    Replace the library's pool methods at class level through ``self._replaced``
    (:class:`~poolwatch._integrations._replacing.Replacements`), which restores them when the
    last pool is detached. Anything hooked otherwise is undone in ``_unhook()``.
``_identify(pool, owner)``
    The name the user gave the pool (None when it has none of its own) and its
    :class:`~poolwatch._naming.Target`; the base claims a unique name from the registry.
``binding_of(pool)``
    The :class:`Binding` recording ``pool``, found by whatever ``_bind`` marked the pool with
    (an attribute the hot path reads in one lookup).
``_bind(binding, pool, app_name)`` and ``_unbind(binding)``
    What is done to one pool when it is attached (mark it, listen to it, give its connections
    ``application_name``) and undone when it is detached.
``read_state(binding, pool)``
    The :class:`~poolwatch._recorder.PoolState` the library reports, read at collection time;
    None when the pool is closed for good.
``_details()``
    A fresh object of the adapter's own per-pool bookkeeping (``binding.details``).

Optional: ``current_pool`` (the pool an owner holds now, when the owner replaces its pool),
``_renamed`` (the pool's name moved: rename what carries it), ``_after_fork`` (call the base's).

The hot path asks :func:`wants_span` (as its docstring shows) whether a checkout gets a span,
keys loans by :meth:`Binding.key` when the library lends no object of its own to key them by, and
guards every call into poolwatch (``_guard``) so that the library's own exceptions alone reach
the app.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from poolwatch import _process
from poolwatch._integrations._graveyard import Graveyard
from poolwatch._integrations._replacing import Replacements
from poolwatch._naming import APPLICATION_NAME, REGISTRY, Target

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from poolwatch._instrumentation import Instrumentation
    from poolwatch._integrations._compat import Table
    from poolwatch._recorder import PoolRecorder, PoolState

#: The adapter's own bookkeeping for one pool.
D = TypeVar("D")

_weakref = weakref.ref


def wants_span(recorder: PoolRecorder, parent: Span | None) -> bool:
    """Whether a checkout gets a span: spans are on, and the checkout is inside a recording
    trace (or root spans are on too).

    On the hot path, ask only when a span is possible at all, ``(parent is not None or
    recorder.root_spans) and wants_span(recorder, parent)``: outside any trace that test is
    cheaper than the rule itself, and the call (about 430 instructions on CPython 3.11, half a
    percent of a checkout) is left for checkouts inside a trace.
    """
    return recorder.spans and (
        recorder.root_spans or (parent is not None and parent.is_recording())
    )


class Binding(Generic[D]):
    """Ties one recorder to the pool it watches: its name is claimed and its recorder made here.

    The registry holds the binding weakly as the name's owner: it asks :meth:`drained` whether
    the name may pass to a newcomer and calls :meth:`rename` when it does.
    """

    def __init__(
        self,
        adapter: PoolAdapter[D],
        pool: Any,
        owner: Any,
        *,
        details: D,
        telemetry: Instrumentation,
        chosen: str | None,
        target: Target,
    ) -> None:
        self.adapter = adapter
        self.pool_ref = weakref.ref(pool)
        #: What holds the pool and outlives it (an engine across ``dispose()``), if not the pool.
        self.owner_ref = weakref.ref(owner) if owner is not None else None
        #: The adapter's own bookkeeping for this pool.
        self.details = details
        #: Loan keys (weak references) whose connection was garbage-collected while out.
        #: Filled from inside the garbage collector, so only appended to, never locked.
        self.collected: deque[weakref.ref[Any]] = deque()
        library = adapter.library
        name = REGISTRY.claim(
            chosen or target.derived_name(library),
            owner=self,
            library=library,
            explicit=bool(chosen),
        )
        self.recorder: PoolRecorder = telemetry.pool(name, self.read_state, target.attributes())

    def pool(self) -> Any:
        """The pool recorded now (the owner's current one), None once it is gone."""
        return self.adapter.current_pool(self)

    def drained(self) -> bool:
        """Whether the pool opened connections and has none open now (its name may move)."""
        return self.recorder.drained()

    def rename(self, name: str) -> None:
        """Report, and name new connections, under ``name`` from now on."""
        self.recorder.rename(name)
        self.adapter._renamed(self, name)

    def read_state(self) -> PoolState | None:
        self.reap()
        pool = self.pool()
        return None if pool is None else self.adapter.read_state(self, pool)

    def key(self, connection: Any) -> weakref.ref[Any]:
        """A loan key: equal to ``weakref.ref(connection)`` while the connection lives, and
        queued for :meth:`reap` when it is garbage-collected while out."""
        return _weakref(connection, self.collected.append)

    def reap(self) -> None:
        """Report loans whose connection was garbage-collected without coming back."""
        while self.collected:
            try:
                key = self.collected.popleft()
            except IndexError:  # another thread took the last one
                return
            self.recorder.forget(key)


class PoolAdapter(ABC, Generic[D]):
    """Hooks one library's pool classes once and binds recorders to its pools."""

    #: The library's name, as pools and errors are named after it.
    library: ClassVar[str]
    #: Every private attribute of the library the adapter touches.
    compatibility: ClassVar[Table]

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._installed = False
        #: The telemetry every pool first seen from now on is recorded by (``instrument_all``).
        self._auto: Instrumentation | None = None
        #: The telemetry last handed to this adapter, for hooks that see no pool.
        self._latest: Instrumentation | None = None
        self._application_name: str | None = APPLICATION_NAME
        self._bindings: dict[int, Binding[D]] = {}
        self._replaced = Replacements()
        self._graveyard = Graveyard()
        _process.on_fork(self.library, self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.RLock()
        for binding in self._bindings.values():
            binding.collected.clear()  # the parent's loans: the recorder forgot them

    # --- public ------------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        """Whether the library's classes are hooked right now."""
        return self._installed

    def instrument_all(
        self, telemetry: Instrumentation, application_name: str | None = APPLICATION_NAME
    ) -> None:
        """Record every pool first seen from now on (pools already attached stay attached)."""
        with self._lock:
            self._install()
            self._auto = self._latest = telemetry
            self._application_name = application_name

    def uninstrument_all(self) -> None:
        """Stop recording every pool and restore the library exactly as it was."""
        with self._lock:
            self._auto = None
            self._graveyard.clear()
            for key, binding in list(self._bindings.items()):
                self._detach(key, binding)
            self._maybe_uninstall()

    def auto_attach(self, pool: Any, owner: Any = None) -> Binding[D] | None:
        """Attach a pool first seen after :meth:`instrument_all` (zero-code mode), else None."""
        if self._auto is None:
            return None
        with self._lock:
            existing = self.binding_of(pool)
            if existing is not None or self._auto is None:
                return existing
            return self._attach(pool, owner, self._auto, None, self._application_name)

    # --- library specifics -------------------------------------------------------------------

    @abstractmethod
    def binding_of(self, pool: Any) -> Binding[D] | None:
        """The binding recording ``pool``, if any."""

    @abstractmethod
    def read_state(self, binding: Binding[D], pool: Any) -> PoolState | None:
        """What the library reports about ``pool`` now; None if it is closed for good."""

    @abstractmethod
    def _identify(self, pool: Any, owner: Any) -> tuple[str | None, Target]:
        """The name the user gave ``pool`` (None if none), and what it connects to."""

    @abstractmethod
    def _details(self) -> D:
        """Fresh per-pool bookkeeping for a new binding."""

    @abstractmethod
    def _bind(self, binding: Binding[D], pool: Any, app_name: str | None) -> None:
        """Mark ``pool`` as recorded by ``binding`` and hook what belongs to it alone."""

    @abstractmethod
    def _unbind(self, binding: Binding[D]) -> None:
        """Undo :meth:`_bind` (the pool may be gone)."""

    @abstractmethod
    def _hook(self) -> None:
        """Hook the library's classes (through ``self._replaced`` where possible)."""

    def _unhook(self) -> None:
        """Undo what :meth:`_hook` did other than through ``self._replaced``."""

    def current_pool(self, binding: Binding[D]) -> Any:
        """The pool ``binding`` records now, None once it is gone."""
        return binding.pool_ref()

    def _renamed(self, binding: Binding[D], name: str) -> None:
        """The pool is reported under ``name`` from now on (its recorder knows already)."""

    # --- attaching ----------------------------------------------------------------------------

    def _instrument(
        self,
        pool: Any,
        owner: Any,
        telemetry: Instrumentation,
        pool_name: str | None,
        app_name: str | None,
    ) -> PoolRecorder:
        """Record ``pool``; a pool recorded already keeps its recorder."""
        with self._lock:
            self._install()
            existing = self.binding_of(pool)
            if existing is not None:
                return existing.recorder
            return self._attach(pool, owner, telemetry, pool_name, app_name).recorder

    def _uninstrument(self, binding: Binding[D] | None) -> None:
        """Stop recording the pool of ``binding`` (None: none), unhooking if it was the last."""
        with self._lock:
            if binding is not None and self._bindings.get(id(binding)) is binding:
                self._detach(id(binding), binding)
            self._maybe_uninstall()

    def _attach(
        self,
        pool: Any,
        owner: Any,
        telemetry: Instrumentation,
        pool_name: str | None,
        app_name: str | None,
    ) -> Binding[D]:
        self._reap()
        self._latest = telemetry
        chosen, target = self._identify(pool, owner)
        details = self._details()
        chosen = pool_name or chosen
        binding = Binding(
            self, pool, owner, details=details, telemetry=telemetry, chosen=chosen, target=target
        )
        self._bind(binding, pool, app_name)
        self._bindings[id(binding)] = binding
        self._graveyard.watch(owner if owner is not None else pool, id(binding))
        return binding

    def _reap(self) -> None:
        self._graveyard.reap(self._bindings, self._detach)

    def _detach(self, key: int, binding: Binding[D]) -> None:
        del self._bindings[key]
        self._unbind(binding)
        binding.recorder.owner.drop(binding.recorder)
        REGISTRY.release(binding)

    def _install(self) -> None:
        if self._installed:
            return
        self.compatibility.check()
        self._hook()
        self._installed = True

    def _maybe_uninstall(self) -> None:
        if not self._installed or self._auto is not None or self._bindings:
            return
        self._replaced.restore()
        self._unhook()
        self._latest = None
        self._installed = False
