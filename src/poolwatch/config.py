"""Configuration: one frozen object built from keyword arguments, then the environment, then defaults.

Every environment variable is ``OTEL_PYTHON_POOLWATCH_<FIELD>``. A value that cannot be parsed,
from a variable or a keyword argument, produces one warning naming the setting and the value used
instead, and never an exception. :class:`ConfigKeywords` types the keyword arguments every
``instrument_*()`` takes, one per field of :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from poolwatch import _guard, catalog

_logger = logging.getLogger("poolwatch")

ENV_PREFIX = "OTEL_PYTHON_POOLWATCH_"

HistogramMode = Literal["otlp", "standard", "aggregated"]
HistogramAggregation = Literal["explicit", "exponential"]
#: Bucket upper bounds in seconds, increasing; empty: only the count and sum.
Bounds = tuple[float, ...]


def _setting(default: Any, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"doc": doc})


def documented() -> list[tuple[str, str, str]]:
    """``(environment variable, default, meaning)`` for every setting, for the README."""
    return [
        (ENV_PREFIX + field.name.upper(), repr(field.default), field.metadata["doc"])
        for field in dataclasses.fields(Config)
    ]


@dataclass(frozen=True, slots=True)
class Config:
    """Settings shared by every integration; see the configuration table in the README."""

    spans: bool = _setting(True, "Make a span around each checkout inside a recording trace.")
    root_spans: bool = _setting(
        False, "Also make a root span for checkouts outside any trace (floods tracing; off)."
    )
    histograms: HistogramMode = _setting(
        "otlp",
        "`otlp`: exact buckets kept in process, exported at collection time as the OTLP "
        "histograms `db.client.connection.{wait,use,create}_time` (cheap). `standard`: the same "
        "histograms recorded through the SDK per checkout (about 3x the cost). `aggregated`: the "
        "buckets as `poolwatch.connection.*_time.bucket` (`le` attribute) and `.sum` counters, "
        "for rules and dashboards that read those names.",
    )
    histogram_aggregation: HistogramAggregation = _setting(
        "explicit",
        "`explicit`: the bucket bounds below. `exponential` (with `histograms=otlp`): base-2 "
        f"exponential buckets (scale {catalog.EXPONENTIAL_SCALE}), one series per histogram as a "
        "Prometheus native histogram.",
    )
    wait_time_buckets: Bounds = _setting(
        catalog.WAIT_BUCKETS,
        "Bucket bounds (seconds, comma-separated) of the checkout wait histogram; `off`: count "
        "and sum only.",
    )
    use_time_buckets: Bounds = _setting(
        catalog.USE_BUCKETS, "Bucket bounds of the connection hold-time histogram; `off` as above."
    )
    create_time_buckets: Bounds = _setting(
        catalog.CREATE_BUCKETS,
        "Bucket bounds of the connection open-time histogram; `off` as above.",
    )
    leak_threshold: float = _setting(
        30.0,
        "Seconds a connection may stay checked out before it is reported as leaked; 0 turns "
        "leak detection off. 30 s is SQLAlchemy's default pool timeout: a connection held "
        "longer than others are willing to wait for one is starving them.",
    )
    capture_stacks: bool = _setting(
        False,
        "Record the application stack (up to 64 frames) at every checkout, for incident "
        "debugging. Off: the innermost three application frames are recorded for one checkout "
        "in 64 and for every checkout while half the pool is out; other connections held "
        "longer than a second get their holder's stack sampled instead.",
    )
    library_packages: tuple[str, ...] = _setting(
        (),
        "Comma-separated top-level packages whose frames are never the application's (wrappers "
        "of your own, or ones poolwatch does not know), so borrow sites and holders name the "
        "code that calls them; added to poolwatch's list (SQLAlchemy, Django, psycopg, SQLModel, "
        "Flask-SQLAlchemy, FastAPI, Starlette, AnyIO, asgiref, ...).",
    )
    app_packages: tuple[str, ...] = _setting(
        (),
        "Comma-separated modules (or packages) whose frames are always the application's, "
        "even inside a package listed as a library: an application shipped inside another "
        "package, or code that poolwatch would otherwise skip.",
    )
    conflict_window: float = _setting(
        60.0,
        "Seconds after a pool timeout during which a session conflict in the same thread or "
        "task is attributed to it.",
    )

    django_idle_in_transaction: float = _setting(
        60.0,
        "Seconds a Django connection may sit in a transaction without a query before it is "
        "reported as orphaned; 0 turns this check off.",
    )
    django_idle_outside_request: float = _setting(
        600.0,
        "Seconds a Django connection that no request ever used (opened by a `sync_to_async` "
        "call outside a request, startup code, a thread that lives on) may go without a query "
        "before it is reported as orphaned; 0 turns this check off.",
    )
    close_orphans: bool = _setting(
        False,
        "Close Django connections poolwatch is certain are orphaned (their thread has ended), "
        "returning pooled ones to Django's pool. Off: poolwatch only reports them.",
    )
    django_application_name: bool = _setting(
        True,
        "Set PostgreSQL's `application_name` to the pool name `<service>:<alias>` on Django "
        "connections that do not set one, so `pg_stat_activity` rows match the metrics.",
    )

    def __post_init__(self) -> None:
        for name in _BOUNDS:
            object.__setattr__(self, name, bounds(getattr(self, name), name))

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        base: Config | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a config: keyword arguments (None: not given) win over environment variables,
        which win over defaults. With ``base``, keyword arguments win over its fields, and
        neither the environment nor the defaults are read."""
        env = os.environ if environ is None else environ
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown poolwatch setting(s): {', '.join(sorted(unknown))}")
        if base is not None and not isinstance(base, Config):
            raise TypeError(f"config must be a poolwatch.Config, not {type(base).__name__}")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            given = overrides.get(field.name)
            if given is not None:
                values[field.name] = _given(field, given, env, base)
            elif base is None:
                values[field.name] = _from_environment(field, env)
        return cls(**values) if base is None else dataclasses.replace(base, **values)


class ConfigKeywords(TypedDict, total=False):
    """The keyword arguments of every ``instrument_*()``: one per field of :class:`Config`, each
    overriding it (None: not given). Strings are read as the environment variable would be."""

    spans: bool | str | None
    root_spans: bool | str | None
    histograms: HistogramMode | None
    histogram_aggregation: HistogramAggregation | None
    wait_time_buckets: Sequence[float] | str | None
    use_time_buckets: Sequence[float] | str | None
    create_time_buckets: Sequence[float] | str | None
    leak_threshold: float | str | None
    capture_stacks: bool | str | None
    library_packages: Sequence[str] | str | None
    app_packages: Sequence[str] | str | None
    conflict_window: float | str | None
    django_idle_in_transaction: float | str | None
    django_idle_outside_request: float | str | None
    close_orphans: bool | str | None
    django_application_name: bool | str | None


_BOUNDS = ("wait_time_buckets", "use_time_buckets", "create_time_buckets")


def bounds(value: Any, name: str = "buckets") -> Bounds:
    """``value`` as increasing finite bounds; ``off`` (or nothing) is no bounds at all.

    Raises ValueError, naming the setting, for anything else.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        value = () if text in {"off", ""} else text.split(",")
    try:
        result = tuple(float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected bounds in seconds or 'off', got {value!r}") from None
    if any(not 0 < bound < float("inf") for bound in result) or any(
        low >= high for low, high in itertools.pairwise(result)
    ):
        raise ValueError(f"{name}: bounds must be finite, above zero and increasing: {result}")
    return result


def _given(
    field: dataclasses.Field[Any], given: object, env: Mapping[str, str], base: Config | None
) -> Any:
    """A keyword argument's value; one that cannot be used warns and yields what stands in for
    it (``base``'s field, else the environment's value, else the default)."""
    try:
        return _keyword(field, given)
    except ValueError as exc:
        if base is not None:
            used, source = getattr(base, field.name), "the config's"
        else:
            used = _from_environment(field, env)
            source = "the default" if used == field.default else "the environment's"
        _warn(f"the keyword argument {field.name}=", given, exc, used, source)
        return used


def _from_environment(field: dataclasses.Field[Any], env: Mapping[str, str]) -> Any:
    raw = env.get(ENV_PREFIX + field.name.upper())
    if raw is None or raw.strip() == "":
        return field.default
    return _parse(field, raw)


def _warn(
    setting: str, value: object, reason: Exception, used: object, source: str = "the default"
) -> None:
    # once per process, however many instrumentors load
    _guard.warn_once(f"config:{setting}:{value!r}", "poolwatch: ignoring %s%r (%s); using %s %r",
                     setting, value, reason, source, used)  # fmt: skip


def _parser(field: dataclasses.Field[Any]) -> Callable[[dataclasses.Field[Any], str], Any]:
    parser = _PARSERS.get(_type_key(field))
    if parser is None:  # pragma: no cover - every field type has a parser
        raise TypeError(f"no parser for {field.name}")
    return parser


def _names(value: object) -> bool:
    """Whether ``value`` is a list or tuple of names (kept as a tuple: ``Config`` is hashed)."""
    return isinstance(value, list | tuple) and all(
        isinstance(name, str) and "," not in name for name in value
    )


def _keyword(field: dataclasses.Field[Any], value: object) -> Any:
    """A keyword argument's value checked as strictly as the environment's (strings parsed)."""
    kind = _type_key(field)
    if isinstance(value, str):
        return _parser(field)(field, value.strip())
    if kind == "Bounds":
        return bounds(value, field.name)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return _parse_float(field, repr(float(value)))
    if kind == "tuple[str, ...]" and _names(value):
        return _parse_packages(field, ",".join(value))  # type: ignore[arg-type]
    expected = {
        "bool": "True or False",
        "float": "a number of seconds",
        "tuple[str, ...]": "a list of package names",
    }.get(kind, "a string")
    raise ValueError(f"expected {expected}, not {type(value).__name__}")


def _parse(field: dataclasses.Field[Any], raw: str) -> Any:
    variable = ENV_PREFIX + field.name.upper()
    try:
        return _parser(field)(field, raw.strip())
    except ValueError as exc:
        _warn(f"{variable}=", raw, exc, field.default)
        return field.default


def _type_key(field: dataclasses.Field[Any]) -> str:
    annotation = str(field.type)
    if annotation.startswith(("HistogramMode", "HistogramAggregation", "Literal")):
        return "choice"
    return annotation


def _parse_bool(_field: dataclasses.Field[Any], raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _parse_float(_field: dataclasses.Field[Any], raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a finite number of seconds, zero or more")
    return value


def _parse_choice(field: dataclasses.Field[Any], raw: str) -> str:
    choices = _CHOICES[field.name]
    lowered = raw.lower()
    if lowered not in choices:
        raise ValueError("expected one of " + ", ".join(choices))
    return lowered


_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def _parse_packages(field: dataclasses.Field[Any], raw: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    dotted = field.name == "app_packages"
    bad = [name for name in names if not (_MODULE if dotted else _PACKAGE).match(name)]
    if bad:
        kind = "module name" if dotted else "top-level package name"
        raise ValueError(f"not a {kind}: {', '.join(bad)}")
    return names


def _parse_bounds(field: dataclasses.Field[Any], raw: str) -> Bounds:
    return bounds(raw, field.name)


_CHOICES: dict[str, tuple[str, ...]] = {
    "histograms": get_args(HistogramMode),
    "histogram_aggregation": get_args(HistogramAggregation),
}

_PARSERS: dict[str, Callable[[dataclasses.Field[Any], str], Any]] = {
    "bool": _parse_bool,
    "float": _parse_float,
    "choice": _parse_choice,
    "tuple[str, ...]": _parse_packages,
    "Bounds": _parse_bounds,
}
