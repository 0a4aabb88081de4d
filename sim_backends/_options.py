"""Typed options for simulators opened from an address string.

Options in ``sim:vortex?seed=3&noise=0`` arrive as strings; options given as Python keywords
arrive typed. Both go through :func:`coerce_options`, which validates each value with pydantic
against the type the simulator declares and rejects unknown names with a message that lists the
valid ones, so a typo in an address fails loudly instead of silently running the default model.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from typing import Annotated, Any, Literal, Mapping

from pydantic import AllowInfNan, BeforeValidator, InstanceOf, TypeAdapter, ValidationError

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
        self.adapter = TypeAdapter(annotation)
        self.hint = hint


Float = _Kind(Annotated[float, AllowInfNan(False), BeforeValidator(_no_bool)],
              "a finite number (e.g. {name}=4e6)")
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


def coerce_options(options: Mapping[str, Any], spec: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Convert ``options`` to the kinds in ``spec`` (``float``, ``int``, ``bool``, :func:`choice`,
    :func:`instance_of`, or a function ``(name, value) -> value`` that raises ConfigError).
    ``where`` names the simulator in error messages (``"sim:vortex"``)."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise ConfigError(f"{where} does not take option(s) {unknown}; valid options: {sorted(spec)}")
    out = {}
    for name, value in options.items():
        kind = _BUILTIN.get(spec[name], spec[name])
        if not isinstance(kind, _Kind):
            out[name] = kind(name, value)
            continue
        try:
            out[name] = kind.adapter.validate_python(value)
        except ValidationError:
            raise ConfigError(f"option {name} of {where} must be {kind.hint.format(name=name)}, "
                              f"got {value!r}") from None
    return out


def device_options_spec(condition_names: tuple[str, ...] = STANDARD_CONDITIONS) -> dict[str, Any]:
    """What every simulated device takes besides its own options: safety limits (each limit, or
    a whole ``SafetyLimits`` as a keyword) and a default value for each of its conditions."""
    return {**{name: float for name in (*LIMIT_NAMES, *condition_names)},
            "limits": instance_of(SafetyLimits)}


def take_limits_and_conditions(opts: dict[str, Any], default_limits: SafetyLimits,
                               condition_names: tuple[str, ...] = STANDARD_CONDITIONS,
                               ) -> tuple[SafetyLimits, dict[str, float]]:
    """Pop the limits and default conditions out of coerced ``opts``: the ``limits`` keyword
    (else ``default_limits``) with any single limit given on top, and the conditions given."""
    limits = opts.pop("limits", None) or default_limits
    overrides = {name: opts.pop(name) for name in LIMIT_NAMES if name in opts}
    if overrides:
        limits = SafetyLimits(**{**asdict(limits), **overrides})
    conditions = {name: opts.pop(name) for name in condition_names if name in opts}
    return limits, conditions
