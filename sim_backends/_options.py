"""Typed options for simulators opened from an address string.

Options in ``sim:vortex?seed=3&noise=0`` arrive as strings; options given as Python keywords
arrive typed. Both go through :func:`coerce_options`, which converts each value to the type the
simulator declares and rejects unknown names with a message that lists the valid ones, so a typo
in an address fails loudly instead of silently running the default model.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from spinlab.errors import ConfigError


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"option {name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name} must be a number (e.g. {name}=4e6), got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"option {name} must be finite, got {value!r}")
    return out


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"option {name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"option {name} must be an integer (e.g. {name}=3), got {value!r}")


def choice(*allowed: str) -> Callable[[str, Any], str]:
    """Converter for a string option limited to ``allowed`` values."""

    def convert(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ConfigError(f"option {name} must be one of {list(allowed)}, got {value!r}")
        return text

    return convert


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def flag(name: str, value: Any) -> bool:
    """Converter for a true/false option (``1/0``, ``true/false``, ``yes/no``, ``on/off``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"option {name} must be true/false (1/0), got {value!r}")


def instance_of(cls: type) -> Callable[[str, Any], Any]:
    """Converter for an option that can only be given as a Python object (not in an address)."""

    def convert(name: str, value: Any) -> Any:
        if not isinstance(value, cls):
            raise ConfigError(
                f"option {name} must be a {cls.__name__} object (pass it as a keyword), got {value!r}"
            )
        return value

    return convert


_BUILTIN: dict[type, Callable[[str, Any], Any]] = {float: _to_float, int: _to_int}


def coerce_options(options: Mapping[str, Any], spec: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Convert ``options`` to the types in ``spec`` (``float``, ``int`` or a converter).

    ``where`` names the simulator in error messages (``"sim:vortex"``).
    """
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise ConfigError(f"{where} does not take option(s) {unknown}; valid options: {sorted(spec)}")
    out = {}
    for name, value in options.items():
        kind = spec[name]
        convert = _BUILTIN.get(kind, kind)
        out[name] = convert(name, value)
    return out
