"""Figure style shared by every plan: SI-prefixed units, the symbols a paper uses, legends off
the data, and the format and resolution a run's figures are written in.

Data stay in SI units inside (``bias_A``, ``dt_s``); only a figure scales them, by the prefix
that suits the data's range (5.92e-3 A is drawn and written as 5.92 mA, 2e-8 s as 20 ns).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinlab.errors import ConfigError

FORMATS = ("png", "pdf", "svg")

#: prefix exponent -> symbol (µ is the micro sign a paper prints)
_PREFIXES = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}
#: units that take a prefix (a ratio "1", dB or a count does not)
_PREFIXED = {"A", "V", "s", "Hz", "T", "W", "Ω", "m", "A/s"}

#: a setting's name -> (symbol, SI unit): how the axes and titles of every figure name it
SYMBOLS: dict[str, tuple[str, str]] = {
    "bias_A": ("I", "A"),
    "field_T": ("µ0H", "T"),
    "theta_s": ("θ", "s"),
    "dt_s": ("Δt", "s"),
    "amplitude_V": ("V_drive", "V"),
    "drive_V": ("V_drive", "V"),
    "frequency_Hz": ("f", "Hz"),
    "threshold_A": ("I_th", "A"),
    "relaxation_time_s": ("τ", "s"),
    "gamma_G_per_s": ("Γ_G", "1/s"),
    "mz": ("m_z", ""),
    "mx": ("m_x", ""),
    "my": ("m_y", ""),
}
_TAG_PART = re.compile(r"([A-Za-z][A-Za-z0-9_]*?)=([^_]+)")
_UNIT_SUFFIX = re.compile(r"_(A|V|s|Hz|T|W|Ohm)$")


@dataclass(frozen=True)
class FigureOptions:
    """How a run's figures are written (``--figure-format``, ``--dpi``); recorded in the run file."""

    format: str = "png"
    dpi: int = 120

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"figure format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if not 10 <= int(self.dpi) <= 1200:
            raise ConfigError(f"--dpi {self.dpi}: give a resolution from 10 to 1200 dots per inch")

    def filename(self, declared: str) -> str:
        """``confusion.png`` -> ``confusion.svg`` for ``format="svg"``."""
        stem = declared.rsplit(".", 1)[0] if "." in declared else declared
        return f"{stem}.{self.format}"

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "dpi": int(self.dpi)}


def prefix(values: Any, unit: str) -> tuple[float, str]:
    """``(factor, prefixed unit)`` for data in ``unit``: multiply by ``factor`` to draw them.
    The prefix is the one that puts the largest magnitude between 1 and 1000."""
    if unit not in _PREFIXED:
        return 1.0, unit
    arr = np.abs(np.asarray(values, dtype=float))
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if not arr.size:
        return 1.0, unit
    exponent = 3 * math.floor(math.log10(float(arr.max())) / 3)
    exponent = min(max(exponent, min(_PREFIXES)), max(_PREFIXES))
    return 10.0**-exponent, _PREFIXES[exponent] + unit


def scaled(values: Any, unit: str) -> tuple[np.ndarray, str]:
    """``values`` in the prefixed unit, and that unit: ``scaled([5.9e-3], "A") -> ([5.9], "mA")``."""
    factor, shown = prefix(values, unit)
    return np.asarray(values, dtype=float) * factor, shown


def typeset(symbol: str) -> str:
    """A symbol as typeset: ``V_drive`` -> :math:`V_\\mathrm{drive}`, ``m_z`` -> :math:`m_z`,
    ``µ0H`` -> :math:`\\mu_0 H` (matplotlib's mathtext; plain words stay as they are)."""
    if symbol == "µ0H":
        return r"$\mu_0 H$"
    stem, sep, sub = symbol.partition("_")
    if not sep or not stem.isalpha() or len(stem) > 2 or not sub.isalnum():
        return symbol  # a word (drive_fraction), not a symbol
    return f"${stem}_{sub}$" if len(sub) == 1 else f"${stem}_\\mathrm{{{sub}}}$"


def label(symbol: str, unit: str = "") -> str:
    """An axis label as a paper writes it: ``I (mA)``; a ratio without unit is the symbol alone."""
    return f"{typeset(symbol)} ({unit})" if unit and unit != "1" else typeset(symbol)


def quantity(value: float, unit: str, digits: int = 3) -> str:
    """One value with its prefixed unit, for titles and legends: ``5.92 mA``."""
    factor, shown = prefix([value], unit)
    number = f"{value * factor:.{digits}g}"
    return number if shown in ("", "1") else f"{number} {shown}"


def symbol_of(name: str) -> tuple[str, str]:
    """``(symbol, unit)`` of a setting's name: ``bias_A -> (I, A)``; a name with a unit suffix
    keeps its stem (``sigma_V -> (sigma, V)``); an unknown name stands for itself, without unit."""
    last = name.rsplit(".", 1)[-1]
    if last in SYMBOLS:
        return SYMBOLS[last]
    match = _UNIT_SUFFIX.search(last)
    if match:
        unit = "Ω" if match.group(1) == "Ohm" else match.group(1)
        return last[: match.start()], unit
    return last, ""


def axis_label(name: str, values: Sequence[Any] | np.ndarray | None = None) -> str:
    """The label of an axis that shows setting ``name``, prefixed for ``values``: ``I (mA)``."""
    symbol, unit = symbol_of(name)
    if values is not None and unit:
        numbers = [v for v in np.ravel(np.asarray(values, dtype=object)) if _is_number(v)]
        unit = prefix(numbers, unit)[1] if numbers else unit
    return label(symbol, unit)


def condition_text(conditions: dict[str, Any]) -> str:
    """Operating conditions as a paper states them: ``I = 5.92 mA, µ0H = 0.3 T``."""
    parts = []
    for name, value in conditions.items():
        symbol, unit = symbol_of(name)
        shown = quantity(float(value), unit) if _is_number(value) else str(value)
        parts.append(f"{typeset(symbol)} = {shown}")
    return ", ".join(parts)


def device_name(address: str) -> str:
    """A device as a title names it: its scheme and short name, never a file's path
    (``twin:/home/x/runs/t/twin.pt`` -> ``twin twin.pt``, ``sim:vortex`` as it is)."""
    scheme, sep, rest = str(address).partition(":")
    if not sep:
        return str(address).replace("\\", "/").rsplit("/", 1)[-1]
    if "/" in rest or "\\" in rest:
        return f"{scheme} {rest.replace(chr(92), '/').split('?', 1)[0].rstrip('/').rsplit('/', 1)[-1]}"
    return str(address)


def tag_conditions(tag: str) -> dict[str, Any]:
    """The conditions in a tag such as ``bias_A=0.00592_field_T=0.3`` (``default``: none)."""
    out: dict[str, Any] = {}
    for name, value in _TAG_PART.findall(tag):
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    return out


def legend(ax: Any, **kwargs: Any) -> Any:
    """A legend where it covers least data (matplotlib's ``best``), small and without a frame."""
    kwargs.setdefault("loc", "best")
    kwargs.setdefault("fontsize", 8)
    kwargs.setdefault("frameon", False)
    return ax.legend(**kwargs)


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """A legend to the right of the axes, for panels whose data fill them (time traces)."""
    kwargs.setdefault("fontsize", 8)
    kwargs.setdefault("frameon", False)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


__all__ = [
    "FORMATS",
    "SYMBOLS",
    "FigureOptions",
    "axis_label",
    "condition_text",
    "device_name",
    "label",
    "legend",
    "legend_outside",
    "typeset",
    "prefix",
    "quantity",
    "scaled",
    "symbol_of",
    "tag_conditions",
]
