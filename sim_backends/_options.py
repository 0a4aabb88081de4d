"""Typed options for simulators opened from an address string.

Options in ``sim:vortex?seed=3&noise=0`` arrive as strings; options given as Python keywords
arrive typed. Both go through :func:`coerce_options`, which validates them with a pydantic model
built from the kinds the simulator declares (unknown names forbidden, as in every spinlab config),
so a typo in an address fails loudly, naming the valid options, instead of silently running the
default model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    InstanceOf,
    ValidationError,
    create_model,
)

from spinlab.device import STANDARD_CONDITIONS, SafetyLimits
from spinlab.errors import ConfigError

LIMIT_NAMES = ("max_drive_V", "max_bias_A", "max_field_T")


def _no_bool(value: Any) -> Any:
    """``True`` is not the number 1 in an address or a keyword: refuse it before pydantic's
    lax mode turns it into one."""
    if isinstance(value, bool):
        raise ValueError("a true/false value is not a number")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class _Kind:
    """A pydantic type with the example shown when a value does not fit it."""

    def __init__(self, annotation: Any, hint: str) -> None:
        self.annotation = annotation
        self.hint = hint


Float = _Kind(
    Annotated[float, AllowInfNan(False), BeforeValidator(_no_bool)], "a finite number (e.g. {name}=4e6)"
)
Int = _Kind(Annotated[int, BeforeValidator(_no_bool)], "an integer (e.g. {name}=3)")
#: A true/false option (``1/0``, ``true/false``, ``yes/no``, ``on/off``).
flag = _Kind(bool, "true/false (1/0)")


@lru_cache(maxsize=None)
def choice(*allowed: str) -> _Kind:
    """A string option limited to ``allowed`` values (case-insensitive)."""
    return _Kind(Annotated[Literal[allowed], BeforeValidator(_lower)], f"one of {list(allowed)}")


@lru_cache(maxsize=None)
def instance_of(cls: type) -> _Kind:
    """An option that can only be given as a Python object (not in an address)."""
    return _Kind(InstanceOf[cls], f"a {cls.__name__} object (pass it as a keyword)")


_BUILTIN = {float: Float, int: Int, bool: flag}


class AddressOptions(BaseModel):
    """Base of the options model of a simulator: unknown names forbidden, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_by(check: Callable[[str, Any], Any], name: str) -> Any:
    return Annotated[Any, AfterValidator(lambda value: check(name, value))]


@lru_cache(maxsize=64)
def options_model(where: str, kinds: tuple[tuple[str, Any], ...]) -> type[AddressOptions]:
    """The pydantic model of a simulator's options (``kinds``: name -> kind, see
    :func:`coerce_options`); every option is optional (an absent one keeps the device's default),
    a given one must fit its kind (``None`` included)."""
    fields: dict[str, Any] = {}
    for name, kind in kinds:
        kind = _BUILTIN.get(kind, kind)
        annotation = kind.annotation if isinstance(kind, _Kind) else _checked_by(kind, name)
        fields[name] = (annotation, None)  # a default is not validated: only given values are
    return create_model(f"Options of {where}", __base__=AddressOptions, **fields)


def coerce_options(options: Mapping[str, Any], spec: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Convert ``options`` to the kinds in ``spec`` (``float``, ``int``, ``bool``, :func:`choice`,
    :func:`instance_of`, or a function ``(name, value) -> value`` that raises ConfigError) through
    the simulator's :func:`options_model`. ``where`` names the simulator in error messages
    (``"sim:vortex"``)."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise ConfigError(f"{where} does not take option(s) {unknown}; valid options: {sorted(spec)}")
    model = options_model(where, tuple(spec.items()))
    try:
        validated = model(**options)
    except ValidationError as exc:
        raise _one_line(exc, spec, options, where) from None
    return {name: getattr(validated, name) for name in options}


def _one_line(
    exc: ValidationError, spec: Mapping[str, Any], options: Mapping[str, Any], where: str
) -> ConfigError:
    """The first bad option as one line: the simulator's own message, or the kind's example."""
    error = exc.errors(include_url=False)[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    name = str(error["loc"][0])
    kind = _BUILTIN.get(spec[name], spec[name])
    return ConfigError(
        f"option {name} of {where} must be {kind.hint.format(name=name)}, got {options[name]!r}"
    )


def device_options_spec(condition_names: tuple[str, ...] = STANDARD_CONDITIONS) -> dict[str, Any]:
    """What every simulated device takes besides its own options: safety limits (each limit, or
    a whole ``SafetyLimits`` as a keyword) and a default value for each of its conditions."""
    return {**{name: float for name in (*LIMIT_NAMES, *condition_names)}, "limits": instance_of(SafetyLimits)}


def take_limits_and_conditions(
    opts: dict[str, Any], default_limits: SafetyLimits, condition_names: tuple[str, ...] = STANDARD_CONDITIONS
) -> tuple[SafetyLimits, dict[str, float]]:
    """Pop the limits and default conditions out of coerced ``opts``: the ``limits`` keyword
    (else ``default_limits``) with any single limit given on top, and the conditions given."""
    limits = opts.pop("limits", None) or default_limits
    overrides = {name: opts.pop(name) for name in LIMIT_NAMES if name in opts}
    if overrides:
        limits = SafetyLimits(**{**asdict(limits), **overrides})
    conditions = {name: opts.pop(name) for name in condition_names if name in opts}
    return limits, conditions
