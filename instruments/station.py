"""Station files: one TOML file describes a bench (instruments, wiring, settings, calibration, limits).

Why a file: the addresses, cabling and calibration of a lab change far more often than the code,
and a reviewer must be able to see the safety limits a run used. The loader is strict (unknown
keys, wrong types and missing sections are errors naming the key and the file) because a typo in
a limit that silently falls back to a default is how devices get destroyed.

Layout (see ``stations/example_lab.toml`` for a documented example)::

    [station]      name, description
    [resources]    visa_library ("" system VISA, "@py" pyvisa-py, "emulated" in-process), awg,
                   scope, optional source (DC bias current), timeout_s
    [wiring]       awg_channel, scope_channel, trigger ("bus": software trigger to the AWG, AWG
                   sync/trigger out -> scope EXT), scope_trigger_level_V
    [awg]          load_ohm (number or "inf"), max_sample_rate_Hz, max_output_V, memory_samples
                   (override of what the instrument reports)
    [scope]        max_sample_rate_Hz, oversample, full_scale_V, offset_V, impedance_ohm, max_points,
                   timeout_s
    [segmentation] settle_s (zeros between packed drives), overlap_s (pre-roll of continuation
                   segments)
    [source]       compliance_V, default_bias_A, ramp_step_A, ramp_pause_s (only with resources.source)
    [calibration]  drive_gain or (series_resistance_ohm + device_resistance_ohm), response_gain,
                   delay_s
    [limits]       max_drive_V, max_bias_A, max_field_T  -> spinlab.SafetyLimits
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints

from spinlab.device import SafetyLimits
from spinlab.errors import ConfigError, SafetyLimitError

#: Directory of the station files shipped with the package.
STATIONS_DIR = Path(__file__).resolve().parent / "stations"

#: ``visa_library`` value that selects the in-process emulated instruments.
EMULATED_LIBRARY = "emulated"


class _Invalid(ValueError):
    """Raised by section validators; the loader adds the file and section to the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise _Invalid(name, f"must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class StationInfo:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Resources:
    """VISA resource names of the instruments and the VISA library that reaches them."""

    awg: str
    scope: str
    source: str | None = None
    visa_library: str = ""
    timeout_s: float = 10.0

    def validate(self) -> None:
        for name in ("awg", "scope"):
            if not getattr(self, name).strip():
                raise _Invalid(name, "must be a VISA resource name, e.g. 'TCPIP::192.168.1.10::INSTR'")
        if self.source is not None and not self.source.strip():
            raise _Invalid("source", "must be a VISA resource name or be left out (no DC source)")
        _positive(self, "timeout_s")


@dataclass(frozen=True)
class Wiring:
    """Which channels are cabled to the device, and how the scope is triggered."""

    awg_channel: int = 1
    scope_channel: int = 1
    trigger: str = "bus"
    scope_trigger_level_V: float = 1.0

    def validate(self) -> None:
        if self.awg_channel not in (1, 2):
            raise _Invalid("awg_channel", f"must be 1 or 2, got {self.awg_channel}")
        if not 1 <= self.scope_channel <= 4:
            raise _Invalid("scope_channel", f"must be 1..4, got {self.scope_channel}")
        if self.trigger != "bus":
            raise _Invalid("trigger", "must be 'bus' (software trigger to the AWG; AWG trigger/sync "
                                      f"out cabled to the scope EXT input), got {self.trigger!r}")
        if not math.isfinite(self.scope_trigger_level_V):
            raise _Invalid("scope_trigger_level_V", "must be finite")


@dataclass(frozen=True)
class AwgSettings:
    """AWG output settings. ``load_ohm`` is the load the AWG assumes (``"inf"`` = high Z)."""

    load_ohm: Union[float, str] = 50.0
    max_sample_rate_Hz: float = 250e6
    max_output_V: float = 5.0
    memory_samples: int | None = None

    def validate(self) -> None:
        if isinstance(self.load_ohm, str):
            if self.load_ohm.lower() not in ("inf", "infinity", "high_z"):
                raise _Invalid("load_ohm", f"must be a resistance in ohm or 'inf', got {self.load_ohm!r}")
        elif not (math.isfinite(self.load_ohm) and 1 <= self.load_ohm <= 10e3):
            raise _Invalid("load_ohm", f"must be between 1 and 10000 ohm or 'inf', got {self.load_ohm!r}")
        _positive(self, "max_sample_rate_Hz", "max_output_V")
        if self.memory_samples is not None and self.memory_samples < 16:
            raise _Invalid("memory_samples", f"must be at least 16, got {self.memory_samples}")

    @property
    def load(self) -> float:
        """Load in ohm, ``math.inf`` for high impedance."""
        return math.inf if isinstance(self.load_ohm, str) else float(self.load_ohm)


@dataclass(frozen=True)
class ScopeSettings:
    """Acquisition of the device response: rate, vertical range, input impedance.

    The scope samples at ``oversample`` points per drive sample interval, capped at
    ``max_sample_rate_Hz``; the bench averages the points inside each interval.
    """

    max_sample_rate_Hz: float
    full_scale_V: float
    oversample: int = 4
    offset_V: float = 0.0
    impedance_ohm: float = 50.0
    max_points: int = 4_000_000
    timeout_s: float = 10.0

    def validate(self) -> None:
        _positive(self, "max_sample_rate_Hz", "full_scale_V", "timeout_s")
        if self.oversample < 1:
            raise _Invalid("oversample", f"must be >= 1, got {self.oversample}")
        if not math.isfinite(self.offset_V):
            raise _Invalid("offset_V", "must be finite")
        if self.impedance_ohm not in (50.0, 1e6):
            raise _Invalid("impedance_ohm", f"must be 50 or 1e6, got {self.impedance_ohm!r}")
        if self.max_points < 1000:
            raise _Invalid("max_points", f"must be at least 1000, got {self.max_points}")


@dataclass(frozen=True)
class Segmentation:
    """How drives are packed into and split across AWG records.

    ``settle_s`` of zeros precede every packed drive so the device relaxes to its zero-drive
    steady state (what a simulator starts from) and packed drives do not see each other.
    ``overlap_s`` of the preceding drive is replayed before every continuation segment of a
    long drive and discarded, so the device's state (its memory) is continuous across the
    split; it must exceed a few of the device's longest relaxation times.
    """

    settle_s: float = 2e-6
    overlap_s: float = 2e-6

    def validate(self) -> None:
        for name in ("settle_s", "overlap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise _Invalid(name, f"must be >= 0, got {value!r}")


@dataclass(frozen=True)
class SourceSettings:
    """DC bias current source (Keithley 2400 sourcing current)."""

    compliance_V: float = 2.0
    default_bias_A: float = 0.0
    #: Largest bias change in one step (A); 0 switches in one step. Nano-pillars die of current
    #: steps, so a real station ramps: the bias moves in steps of at most this size...
    ramp_step_A: float = 0.0
    #: ...with this pause after each step (s), up and down, on every exit path too.
    ramp_pause_s: float = 0.0

    def validate(self) -> None:
        _positive(self, "compliance_V")
        for name in ("default_bias_A", "ramp_step_A", "ramp_pause_s"):
            if not math.isfinite(getattr(self, name)):
                raise _Invalid(name, "must be finite")
        for name in ("ramp_step_A", "ramp_pause_s"):
            if getattr(self, name) < 0:
                raise _Invalid(name, "must be >= 0 (0: no ramp)")


@dataclass(frozen=True)
class Calibration:
    """Maps requested device quantities to instrument quantities.

    ``drive_gain`` is volts at the device per volt at the AWG output; give it directly, or give
    ``series_resistance_ohm`` and ``device_resistance_ohm`` (divider: R_dev / (R_series + R_dev)).
    ``response_gain`` multiplies the scope volts (e.g. to undo an amplifier); ``delay_s`` is the
    time from the trigger to the response reaching the scope (cables, amplifier, device).
    """

    drive_gain: float | None = None
    series_resistance_ohm: float | None = None
    device_resistance_ohm: float | None = None
    response_gain: float = 1.0
    delay_s: float = 0.0

    def validate(self) -> None:
        divider = (self.series_resistance_ohm, self.device_resistance_ohm)
        if self.drive_gain is not None and any(v is not None for v in divider):
            raise _Invalid("drive_gain", "give either drive_gain or series_resistance_ohm + "
                                         "device_resistance_ohm, not both")
        if (divider[0] is None) != (divider[1] is None):
            missing = "device_resistance_ohm" if divider[1] is None else "series_resistance_ohm"
            raise _Invalid(missing, "series_resistance_ohm and device_resistance_ohm go together")
        _positive(self, "drive_gain", "device_resistance_ohm", "response_gain")
        if self.series_resistance_ohm is not None and not (
                math.isfinite(self.series_resistance_ohm) and self.series_resistance_ohm >= 0):
            raise _Invalid("series_resistance_ohm", "must be >= 0")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise _Invalid("delay_s", f"must be >= 0, got {self.delay_s!r}")

    @property
    def device_V_per_awg_V(self) -> float:
        """Volts across the device per volt programmed on the AWG."""
        if self.drive_gain is not None:
            return float(self.drive_gain)
        if self.series_resistance_ohm is not None and self.device_resistance_ohm is not None:
            return self.device_resistance_ohm / (self.series_resistance_ohm + self.device_resistance_ohm)
        return 1.0


@dataclass(frozen=True)
class Limits:
    max_drive_V: float
    max_bias_A: float
    max_field_T: float = 1.0


@dataclass(frozen=True)
class Station:
    """A validated station file."""

    path: Path
    station: StationInfo
    resources: Resources
    scope: ScopeSettings
    limits: SafetyLimits
    wiring: Wiring = field(default_factory=Wiring)
    awg: AwgSettings = field(default_factory=AwgSettings)
    segmentation: Segmentation = field(default_factory=Segmentation)
    source: SourceSettings | None = None
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def emulated(self) -> bool:
        return self.resources.visa_library == EMULATED_LIBRARY

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for the run file's device identity)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


#: section name -> (dataclass, required)
_SECTIONS: dict[str, tuple[type, bool]] = {
    "station": (StationInfo, True),
    "resources": (Resources, True),
    "wiring": (Wiring, False),
    "awg": (AwgSettings, False),
    "scope": (ScopeSettings, True),
    "segmentation": (Segmentation, False),
    "source": (SourceSettings, False),
    "calibration": (Calibration, False),
    "limits": (Limits, True),
}


def load_station(path: str | Path) -> Station:
    """Read and validate a station file; raises :class:`ConfigError` naming the key and file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"station file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_station(data, path)


def parse_station(data: Mapping[str, Any], path: str | Path = "<station>") -> Station:
    """Validate a parsed station mapping (what :func:`tomllib.load` returns)."""
    path = Path(path)
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]; known sections: "
                          f"{', '.join(_SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, (cls, required) in _SECTIONS.items():
        if name not in data:
            if required:
                raise ConfigError(f"{path}: missing section [{name}]")
            continue
        raw = data[name]
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: [{name}] must be a table, got {type(raw).__name__}")
        sections[name] = _build_section(cls, name, raw, path)

    if "source" in sections and sections["resources"].source is None:
        raise ConfigError(f"{path}: [source] is given but [resources] has no 'source' resource")
    if sections["resources"].source is not None and "source" not in sections:
        sections["source"] = SourceSettings()
    lim = sections.pop("limits")
    try:
        limits = SafetyLimits(lim.max_drive_V, lim.max_bias_A, lim.max_field_T)
    except SafetyLimitError as exc:
        raise ConfigError(f"{path}: [limits] {exc}") from None
    source = sections.get("source")
    if source is not None and abs(source.default_bias_A) > limits.max_bias_A:
        raise ConfigError(f"{path}: [source] key 'default_bias_A' = {source.default_bias_A} A exceeds "
                          f"[limits] max_bias_A = {limits.max_bias_A} A")
    awg = sections.get("awg", AwgSettings())
    gain = sections.get("calibration", Calibration()).device_V_per_awg_V
    if limits.max_drive_V / gain > awg.max_output_V:
        raise ConfigError(f"{path}: [limits] max_drive_V = {limits.max_drive_V} V needs "
                          f"{limits.max_drive_V / gain:.4g} V at the AWG (drive gain {gain:.4g}), "
                          f"above [awg] max_output_V = {awg.max_output_V} V")
    return Station(path=path, limits=limits, **sections)


def _build_section(cls: type, section: str, raw: Mapping[str, Any], path: Path) -> Any:
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}: [{section}] unknown key '{key}'; known keys: {', '.join(known)}")
    values = {}
    for f in fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in raw:
            if required:
                raise ConfigError(f"{path}: [{section}] missing required key '{f.name}'")
            continue
        values[f.name] = _coerce(raw[f.name], hints[f.name], f"{path}: [{section}] key '{f.name}'")
    obj = cls(**values)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except _Invalid as exc:
            raise ConfigError(f"{path}: [{section}] key '{exc.key}' {exc}") from None
    return obj


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (float accepts int; bool is never a number)."""
    options = get_args(hint) if get_origin(hint) is Union or type(hint).__name__ == "UnionType" else (hint,)
    for option in options:
        if option is type(None):
            continue
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if option is str and isinstance(value, str):
            return value
        if option is bool and isinstance(value, bool):
            return value
    expected = " or ".join(o.__name__ for o in options if o is not type(None))
    raise ConfigError(f"{where} must be {expected}, got {type(value).__name__} {value!r}")


def builtin_station(name: str) -> Path:
    """Path of a station file shipped with spinlab (``"emulated"`` -> ``stations/emulated.toml``)."""
    path = STATIONS_DIR / f"{name}.toml"
    if not path.is_file():
        shipped = sorted(p.stem for p in STATIONS_DIR.glob("*.toml"))
        raise ConfigError(f"no built-in station {name!r}; shipped stations: {shipped}")
    return path
