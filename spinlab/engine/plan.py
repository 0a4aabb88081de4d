"""Plans: what a protocol does, apart from how it is run.

A :class:`Plan` bundles the protocol's validated config, its body (a function of a
:class:`~spinlab.engine.RunContext` that asks the context to measure, store and report) and the
plots drawn from what it stored. It never opens files, sockets or instruments: the engine does.

Plans are found by name through the ``spinlab.plans`` entry-point group (``characterize``,
``acquire``, ``spoken-digits``, ...); a name maps to a factory ``factory(config=None,
**overrides) -> Plan``. ``spinlab resume`` rebuilds an interrupted run's plan from its name and
stored config this way, and ``spinlab sweep`` builds one plan per grid point. A factory
decorated with :func:`command` also declares how ``spinlab run NAME`` offers it (its report, old
flags, command-line defaults); the flags themselves are generated from its config.

Determinism contract (what makes resume exact): given its config and seed, a plan asks for the
same steps in the same order, and derives every random choice from ``ctx.rng(name)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

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
    body: Callable[[RunContext], Mapping[str, Any]]
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
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        plain: dict[str, Any] = to_jsonable(dataclasses.asdict(config))
    elif hasattr(config, "model_dump"):
        plain = to_jsonable(config.model_dump())
    elif isinstance(config, Mapping):
        plain = to_jsonable(dict(config))
    else:
        raise TypeError(
            f"a plan config must be a dataclass, pydantic model or mapping, got {type(config).__name__}"
        )
    return plain


def assign_setting(settings: dict[str, Any], name: str, value: Any) -> None:
    """``settings["a"]["b"] = value`` for ``name = "a.b"`` (``--set``, ``--grid``, old flags)."""
    *groups, last = name.split(".")
    node = settings
    for part in groups:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{name}: {part!r} is a single setting ({child!r}), not a group of settings")
        node = child
    node[last] = value


def default_report(summary: Mapping[str, Any]) -> str:
    """The report of a plan that declares none: its scalar results, one per line."""
    return "\n".join(
        f"{key:<24} {value}"
        for key, value in summary.items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
    )


@dataclass(frozen=True)
class Shortcut:
    """A command-line option that is not a config field (an old flag such as ``--input``, or a
    shorthand such as ``--bias-A 6e-3,7e-3`` for a condition sweep): ``apply(settings, value)``
    folds the typed value into the settings the plan is built from. Without ``apply`` it is an
    option of the command alone (``--threads``): ``prepare`` and ``finish`` receive it in
    ``options[name]`` (``default`` when not given)."""

    flags: tuple[str, ...]
    help: str
    apply: Callable[[dict[str, Any], Any], None] | None = None
    #: str, int, float, bool (a flag) or list (a repeatable text option)
    kind: type = str
    name: str = ""
    default: Any = None


@dataclass(frozen=True)
class PlanCommand:
    """How ``spinlab run PLAN`` offers a plan. The flags are generated from ``config`` (one per
    field, named after it); the rest are the plan's command-line conveniences, kept next to the
    plan so the command line holds no decision of its own."""

    config: type
    #: ``report(summary) -> str``: the short text the command prints (``--json``: the summary)
    report: Callable[[Mapping[str, Any]], str] = default_report
    #: ``spinlab --help``-style one-line help; default: the factory's first docstring line
    help: str = ""
    #: old flag -> the setting it sets (a field, or ``group.field``, then optionally with the type
    #: of its value: ``("train.max_steps", int)``), accepted besides the field's flag
    aliases: Mapping[str, str | tuple[str, type]] = field(default_factory=dict)
    shortcuts: tuple[Shortcut, ...] = ()
    #: the setting that may also be given as the command's first argument (``fit-physics RUN_DIR``)
    argument: str | None = None
    #: "required", "optional" (plans that may run without one) or "none"
    device: str = "required"
    device_default: str | None = None
    #: the default ``--seed``, and where the run publishes when ``--monitor`` is not given
    seed: int = 0
    monitor: str | None = None
    #: ``prepare(settings, device=..., runs_dir=..., options=...) -> settings``: the defaults a
    #: command line fills in (a dataset found on this machine, a cache under the runs directory)
    prepare: Callable[..., dict[str, Any]] | None = None
    #: ``finish(summary, device=..., config=..., options=..., run=...) -> summary``: what follows
    #: the run on the command line (``run(plan)`` runs another plan with the same device and options)
    finish: Callable[..., dict[str, Any]] | None = None


def command(**declaration: Any) -> Callable[[Callable[..., Plan]], Callable[..., Plan]]:
    """Decorate a plan factory with its :class:`PlanCommand` (``spinlab run PLAN``)."""

    def attach(factory: Callable[..., Plan]) -> Callable[..., Plan]:
        factory.command = PlanCommand(**declaration)  # type: ignore[attr-defined]
        return factory

    return attach


def plan_command(name: str) -> PlanCommand | None:
    """The command-line declaration of plan ``name`` (None for a plug-in plan that has none)."""
    return getattr(plan_factory(name), "command", None)


def plan_names() -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def plan_factory(name: str) -> Callable[..., Plan]:
    """The factory registered for plan ``name``."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory: Callable[..., Plan] = ep.load()
            return factory
    raise ConfigError(f"no plan named {name!r}; known plans: {', '.join(plan_names())}")


def build_plan(name: str, config: Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """``plan_factory(name)(config, **overrides)``."""
    return plan_factory(name)(config, **overrides)


__all__ = [
    "Plan",
    "PlotFunction",
    "config_dict",
    "make_config",
    "plan_names",
    "plan_factory",
    "build_plan",
    "ENTRY_POINT_GROUP",
    "PlanCommand",
    "Shortcut",
    "assign_setting",
    "command",
    "plan_command",
    "default_report",
]


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
    known = (
        {f.name for f in dataclasses.fields(cls)}
        if dataclasses.is_dataclass(cls)
        else set(getattr(cls, "model_fields", {}))
    )
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
