"""Plans: what a protocol does, apart from how it is run.

A :class:`Plan` bundles the protocol's validated config, its body (a function of a
:class:`~spinlab.engine.RunContext` that asks the context to measure, store and report) and the
plots drawn from what it stored. It never opens files, sockets or instruments: the engine does.

Plans are found by name through the ``spinlab.plans`` entry-point group (``characterize``,
``acquire``, ``spoken-digits``, ...); a name maps to a factory ``factory(config=None,
**overrides) -> Plan``. ``spinlab resume`` rebuilds an interrupted run's plan from its name and
stored config this way, and ``spinlab sweep`` builds one plan per grid point.

Determinism contract (what makes resume exact): given its config and seed, a plan asks for the
same steps in the same order, and derives every random choice from ``ctx.rng(name)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Mapping

from spinlab.engine.documents import to_jsonable
from spinlab.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spinlab.engine.engine import RunContext

ENTRY_POINT_GROUP = "spinlab.plans"

#: A plot: ``plot(datasets, results) -> matplotlib.figure.Figure`` (datasets are the plan's
#: ``ctx.save`` arrays by name, results its ``ctx.result`` values).
PlotFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], "Figure"]


@dataclass(frozen=True)
class Plan:
    """One protocol execution, ready for ``RunEngine.run``."""

    name: str
    config: Any
    body: Callable[["RunContext"], Mapping[str, Any]]
    plots: Mapping[str, PlotFunction] = field(default_factory=dict)
    #: NeXus default plot: ``{"signal": dataset, "axes": [dataset, ...]}``
    nexus: Mapping[str, Any] = field(default_factory=dict)
    #: False for plans that need no device (offline twin training)
    needs_device: bool = True

    def config_dict(self) -> dict[str, Any]:
        return config_dict(self.config)


def config_dict(config: Any) -> dict[str, Any]:
    """A config object (dataclass, pydantic model or mapping) as plain JSON values."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return to_jsonable(dataclasses.asdict(config))
    if hasattr(config, "model_dump"):
        return to_jsonable(config.model_dump())
    if isinstance(config, Mapping):
        return to_jsonable(dict(config))
    raise TypeError(f"a plan config must be a dataclass, pydantic model or mapping, got {type(config).__name__}")


def plan_names() -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def plan_factory(name: str) -> Callable[..., Plan]:
    """The factory registered for plan ``name``."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise ConfigError(f"no plan named {name!r}; known plans: {', '.join(plan_names())}")


def build_plan(name: str, config: Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """``plan_factory(name)(config, **overrides)``."""
    return plan_factory(name)(config, **overrides)


__all__ = ["Plan", "PlotFunction", "config_dict", "make_config", "plan_names", "plan_factory", "build_plan",
           "ENTRY_POINT_GROUP"]


def make_config(cls: type, config: Any = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """A ``cls`` config from an instance, a mapping (e.g. a stored JSON config) or nothing,
    with ``overrides`` applied; unknown keys are a ConfigError naming them."""
    overrides = dict(overrides or {})
    if isinstance(config, cls):
        base = config_dict(config) if overrides else None
        if base is None:
            return config
        config = base
    values = {**dict(config or {}), **overrides}
    known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(
        getattr(cls, "model_fields", {}))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
