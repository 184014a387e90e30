"""The current span, read on every checkout for the price of one dictionary lookup.

``opentelemetry.trace.get_current_span()`` goes through four Python calls (about 150 ns here),
the largest single item of an untraced checkout. With the API's default runtime context (a
``contextvars.ContextVar`` holding the current ``Context``, a dict), the span is one ``get`` on
what the variable holds. That layout is the API's own and not public, so it is checked once at
import; any other runtime context (``OTEL_PYTHON_CONTEXT``) or a future change of layout falls back
to the public call, with the same results.

Hot paths read ``current_context().get(SPAN_KEY)``: the current span, or None outside any span.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

try:
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - depends on the installed API
    _SPAN_KEY = "current-span"

#: The key under which a context holds its span: the API's own, else any stable one.
SPAN_KEY: str = _SPAN_KEY


def _public_context() -> Mapping[str, Any]:
    span = trace.get_current_span()
    return {SPAN_KEY: span} if span is not trace.INVALID_SPAN else {}


def _fast_context() -> Callable[[], Mapping[str, Any]] | None:
    """``ContextVar.get`` of the API's runtime context, when its layout is the known one."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:  # pragma: no cover - depends on the installed API
        return None
    variable = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    if type(_RUNTIME_CONTEXT) is not ContextVarsRuntimeContext or not isinstance(
        variable, ContextVar
    ):
        return None
    return variable.get


#: The current OpenTelemetry context, as a mapping.
current_context: Callable[[], Mapping[str, Any]] = _fast_context() or _public_context
#: Whether :data:`current_context` reads the context variable directly.
FAST = current_context is not _public_context
