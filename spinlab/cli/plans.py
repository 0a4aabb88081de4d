"""`spinlab run PLAN`: one command per registered plan, generated from the plan's config model.

Why generated: a setting has one name everywhere. The field ``n_nodes`` is the flag
``--n-nodes``, the ``--set n_nodes=...`` key, the sweep's ``--grid n_nodes=...``, the keyword of
``plan(n_nodes=...)`` and the run file's config key. A flag's type, choices, default, unit and
help come from the field; what is not a field (old flag names, shorthands, datasets found on this
machine, the text report) is declared by the plan itself (:class:`spinlab.engine.plan.PlanCommand`).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import time
import types
import typing
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import typer
from typer.core import TyperGroup

from spinlab.cli.common import (
    MAX_SEED,
    DeviceOption,
    JsonOption,
    RunOptions,
    emit_json,
    run_command,
    run_plan,
    user_errors,
)

#: name suffix -> unit, for fields whose metadata names none
UNIT_SUFFIXES = {"_A": "A", "_s": "s", "_V": "V", "_T": "T", "_K": "K", "_Hz": "Hz"}
#: fields set by the options every run takes (``--seed``), not by a flag of their own
RUN_OPTION_FIELDS = ("seed",)
_ARGUMENT = "argument_"
_SET_HELP = (
    "NAME=VALUE: a setting, also one inside a group (GROUP.NAME=VALUE); repeatable. "
    "The value is JSON, a number or text."
)


def flag(field: str) -> str:
    """The flag of a setting: ``n_nodes`` -> ``--n-nodes``, ``bias_A`` -> ``--bias-A``."""
    return "--" + field.replace("_", "-")


def unit(field: str, info: Any) -> str | None:
    """A field's unit: its ``json_schema_extra={"unit": ...}``, else its name's suffix."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("unit"):
        return str(extra["unit"])
    return next((u for suffix, u in UNIT_SUFFIXES.items() if field.endswith(suffix)), None)


def _alternatives(annotation: Any) -> list[Any]:
    """The non-None types a field takes, ``Annotated`` and unions unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _alternatives(arg)]
    return [] if annotation is type(None) else [annotation]


def kind(annotation: Any) -> Any:
    """What a field's flag takes: bool (a ``--x/--no-x`` flag), int, float, str, a tuple of
    choices, ``list`` (comma-separated values) or None (no flag: a group, set with ``--set``)."""
    alternatives = _alternatives(annotation)
    if len(alternatives) != 1:
        return None if any(kind(a) is None for a in alternatives) else str
    only = alternatives[0]
    origin = typing.get_origin(only) or only
    if only in (bool, int, float, str):
        return only
    if origin is Literal:
        return tuple(typing.get_args(only))
    if origin in (tuple, list, set, frozenset):
        return list
    return None  # dicts and nested models


def text(value: Any) -> str:
    """A default as a user types it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(text(v) for v in value) or "none"
    return str(value)


def field_help(field: str, info: Any) -> str:
    """One sentence: the description, then the unit in parentheses."""
    description = (info.description or field.replace("_", " ")).rstrip(".")
    found = unit(field, info)
    return f"{description} ({found})." if found else f"{description}."


def _choices(field: str, values: tuple[Any, ...]) -> type[enum.Enum]:
    return enum.Enum(f"{field}_choices", {str(v): str(v) for v in values}, type=str)  # type: ignore[misc]


def _convert(info: Any, value: Any) -> Any:
    """A flag's typed value as the config takes it."""
    if isinstance(value, enum.Enum):
        return value.value
    if kind(info.annotation) is list:
        from spinlab.sweeps.spec import split_values

        return [] if value.strip().lower() in ("", "none") else split_values(value)
    if (
        isinstance(value, str)
        and value.strip().lower() == "none"
        and type(None) in typing.get_args(info.annotation)
    ):
        return None
    return value


def _seed_option(declared: int) -> Any:
    return typer.Option(
        declared,
        "--seed",
        min=0,
        max=MAX_SEED,
        help="Seed of every random choice of the run (recorded in the run file); "
        "a seed in the device address wins for the device's noise.",
    )


Handler = Callable[[dict[str, Any], dict[str, Any], Any], None]


def _to_field(field: str, info: Any) -> Handler:
    def handle(settings: dict[str, Any], _: dict[str, Any], value: Any) -> None:
        settings[field] = _convert(info, value)

    return handle


def _to_setting(setting: str) -> Handler:
    def handle(settings: dict[str, Any], _: dict[str, Any], value: Any) -> None:
        _assign(settings, setting, _parse(value) if isinstance(value, str) else value)

    return handle


def _folded(apply: Callable[[dict[str, Any], Any], None]) -> Handler:
    def handle(settings: dict[str, Any], _: dict[str, Any], value: Any) -> None:
        apply(settings, value)

    return handle


def _to_option(name: str) -> Handler:
    def handle(_: dict[str, Any], options: dict[str, Any], value: Any) -> None:
        options[name] = value

    return handle


class _Signature:
    """The parameters of a generated command (typer reads them as a function's signature) and
    what each one does with its value."""

    def __init__(self) -> None:
        self.params: list[inspect.Parameter] = []
        self.handlers: dict[str, Handler] = {}

    def add(self, name: str, default: Any, annotation: Any, handler: Handler | None = None) -> None:
        self.params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
        if handler is not None:
            self.handlers[name] = handler


def _signature(declared: Any) -> _Signature:
    """Argument, device, one flag per field, old flags, shortcuts and ``--set``."""
    fields = dict(getattr(declared.config, "model_fields", {}))
    aliases: dict[str, list[str]] = {}
    typed: dict[str, Any] = {}
    for old, target in declared.aliases.items():
        setting, typed[old] = target if isinstance(target, tuple) else (target, str)
        aliases.setdefault(setting, []).append(old)
    sig = _Signature()
    if declared.argument:
        sig.params.append(
            inspect.Parameter(
                _ARGUMENT,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=str | None,
                default=typer.Argument(
                    None,
                    metavar=declared.argument.upper(),
                    show_default=False,
                    help=f"Same as {flag(declared.argument)}.",
                ),
            )
        )
    if declared.device == "required":
        sig.add("device", DeviceOption, str | None)
    elif declared.device == "optional":
        optional = " (optional)" if declared.device_default is None else ""
        sig.add(
            "device",
            typer.Option(declared.device_default, "--device", "-d", help=DeviceOption.help + optional),
            str | None,
        )
    if declared.device in ("required", "optional"):
        sig.add("record", RecordOption, Path | None)
    for field, info in fields.items():
        takes = kind(info.annotation)
        if field in RUN_OPTION_FIELDS or takes is None:
            continue
        spelled = [flag(field), *aliases.pop(field, [])]
        if takes is bool:
            spelled[0] = f"{flag(field)}/--no-{flag(field)[2:]}"
        annotation = _choices(field, takes) if isinstance(takes, tuple) else {list: str}.get(takes, takes)
        shown = "required" if info.is_required() else text(info.default)
        sig.add(
            field,
            typer.Option(None, *spelled, help=field_help(field, info), show_default=shown),
            annotation | None,
            _to_field(field, info),
        )
    for setting, olds in aliases.items():  # old flags of settings inside a group
        for old in olds:
            sig.add(
                "alias_" + old.lstrip("-").replace("-", "_"),
                typer.Option(None, old, help=f"Same as --set {setting}=VALUE."),
                typed[old] | None,
                _to_setting(setting),
            )
    for i, shortcut in enumerate(declared.shortcuts):
        annotation = list[str] if shortcut.kind is list else shortcut.kind
        shown = False if shortcut.apply else text(shortcut.default)
        handler = _folded(shortcut.apply) if shortcut.apply else _to_option(shortcut.name)
        sig.add(
            f"shortcut_{i}",
            typer.Option(None, *shortcut.flags, help=shortcut.help, show_default=shown),
            annotation | None,
            handler,
        )
    groups = [
        f"{field} ({field_help(field, info).rstrip('.')})"
        for field, info in fields.items()
        if kind(info.annotation) is None
    ]
    set_help = _SET_HELP + (f" Groups: {'; '.join(groups)}." if groups else "")
    sig.add("set_", typer.Option([], "--set", help=set_help, show_default=False), list[str])
    sig.add("json_out", JsonOption, bool)
    sig.add("run", RunOptions(), RunOptions)
    return sig


def generate(name: str) -> Callable[..., None]:
    """The command function of plan ``name``: its options from the plan's config and
    declaration, then the options every run takes (:func:`~spinlab.cli.common.run_command`)."""
    from spinlab.engine.plan import PlanCommand, plan_command, plan_factory

    declared = plan_command(name) or PlanCommand(config=type(None))
    sig = _signature(declared)

    def command(**given: Any) -> None:
        options: RunOptions = given.pop("run")
        json_out, assignments = given.pop("json_out"), given.pop("set_")
        device, positional = given.pop("device", None), given.pop(_ARGUMENT, None)
        record = given.pop("record", None)
        if declared.monitor and not options.monitor:
            options = dataclasses.replace(options, monitor=declared.monitor)
        start = time.perf_counter()
        with user_errors():
            if record is not None:
                device = recording(device, record)
            settings = _settings(assignments)
            extras = {s.name: s.default for s in declared.shortcuts if s.apply is None}
            if positional is not None and declared.argument:
                settings[declared.argument] = positional
            for param, value in given.items():
                if value is not None and value != []:
                    sig.handlers[param](settings, extras, value)
            if declared.prepare is not None:
                settings = declared.prepare(
                    settings, device=device, runs_dir=options.runs_dir, options=extras
                )
            plan = plan_factory(name)(settings)
            result = run_plan(plan, device, options)
            summary = {**result.summary, "run_dir": str(result.path)}
            summary.setdefault(
                "figures", sorted(str(p) for p in Path(result.path).glob(f"*.{options.figure_format}"))
            )
            summary.setdefault("device", device)
            summary.setdefault("wall_s", time.perf_counter() - start)
            if declared.finish is not None:
                summary = declared.finish(
                    summary,
                    device=device,
                    config=plan.config,
                    options=extras,
                    run=lambda other: run_plan(other, device, options),
                )
        if json_out:
            emit_json(summary)
        else:
            typer.echo(declared.report(summary))

    command.__signature__ = inspect.Signature(sig.params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in sig.params}
    command.__doc__ = declared.help or _first_line(plan_factory(name).__doc__)
    return run_command(command, seed=_seed_option(declared.seed) if declared.seed else None)


RecordOption = typer.Option(
    None,
    "--record",
    metavar="DIR",
    help="Write every byte exchanged with the bench's instruments into a transcript in DIR "
    "(bench: devices; replay it with bench:...?replay=FILE or spinlab emulate --replay FILE).",
)


def recording(device: str | None, folder: Path) -> str:
    """``device`` with the bench option ``record=FOLDER``: a bench records its own dialogue, so
    every plan on any station records the same way."""
    from spinlab.errors import ConfigError
    from spinlab.registry import parse_address

    if device is None or parse_address(device)[0] != "bench":
        raise ConfigError(
            f"--record records a bench's instruments; --device {device} is not a bench: address"
        )
    if "record" in parse_address(device)[2]:
        raise ConfigError(f"--record and the bench option record= in {device!r}: give one")
    value = urllib.parse.quote(str(folder), safe="/:")
    return f"{device}{'&' if '?' in device else '?'}record={value}"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def _parse(value: str) -> Any:
    """An old flag's text as ``--set`` reads it; ``a,b`` (outside brackets) is a list."""
    from spinlab.sweeps.spec import parse_value, split_values

    parts = split_values(value)
    if len(parts) > 1 and not value.lstrip().startswith(("[", "{", '"')):
        return [parse_value(part) for part in parts]
    return parse_value(value)


def _assign(settings: dict[str, Any], name: str, value: Any) -> None:
    from spinlab.engine.plan import assign_setting

    assign_setting(settings, name, value)


def _settings(assignments: list[str]) -> dict[str, Any]:
    """``--set`` assignments as the settings the plan is built from."""
    from spinlab.sweeps.spec import parse_assignment

    settings: dict[str, Any] = {}
    for item in assignments:
        name, value = parse_assignment(item, many=False)
        _assign(settings, name, value)
    return settings


def register_plan(app: typer.Typer, command_name: str, plan: str) -> None:
    """Add plan ``plan`` to ``app`` as the command ``command_name`` (``spinlab characterize``
    is ``spinlab run characterize``)."""
    function = generate(plan)
    app.command(command_name, help=function.__doc__)(function)


class PlanGroup(TyperGroup):
    """``spinlab run``: every registered plan, each command built (its plan imported) only when
    it runs or shows its help."""

    def list_commands(self, ctx: Any) -> list[str]:
        from spinlab.engine.plan import plan_names

        return plan_names()

    def get_command(self, ctx: Any, name: str) -> Any:
        from spinlab.engine.plan import plan_names

        if name not in plan_names():
            return None
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        register_plan(single, name, name)
        return typer.main.get_command(single)


__all__ = ["PlanGroup", "generate", "register_plan", "flag", "kind", "unit", "field_help", "text"]
