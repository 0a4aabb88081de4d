"""Station files: one TOML file describes a bench (instruments, wiring, settings, calibration, limits).

Why a file: the addresses, cabling and calibration of a lab change far more often than the code,
and a reviewer must be able to see the safety limits a run used. The loader is strict (unknown
keys, wrong types and missing sections are errors naming the key and the file) because a typo in
a limit that silently falls back to a default is how devices get destroyed. It also checks every
setting against what the instruments can do (the named driver's data, see :mod:`.drivers`,
else :mod:`.capabilities`) before anything is opened.

Layout (see ``stations/example_lab.toml`` for a documented example)::

    [station]      name, description
    [resources]    visa_library ("" system VISA, "@py" pyvisa-py, "emulated" in-process), awg,
                   scope, optional source (DC bias current), timeout_s, retries and
                   retry_backoff_s (how the bench retries a record after an instrument fault)
    [wiring]       awg_channel, scope_channel, trigger ("bus": software trigger to the AWG, AWG
                   sync/trigger out -> scope EXT), scope_trigger_level_V
    [awg]          driver (a registered awg driver, e.g. "keysight-33600a"; left out, the
                   AWG's *IDN? picks it), model ("33500B" or "33600A"; the named driver's by
                   default), load_ohm (number or "inf"), max_sample_rate_Hz
                   (default: the model's), max_output_V, memory_samples (override of what the
                   instrument reports)
    [scope]        max_sample_rate_Hz, oversample, full_scale_V, offset_V, impedance_ohm, max_points,
                   timeout_s, driver (an InfiniiVision unless a driver is named)
    [segmentation] settle_s (zeros between packed drives), overlap_s (pre-roll of continuation
                   segments)
    [source]       driver, compliance_V, default_bias_A, ramp_step_A, ramp_pause_s (a Keithley 2400 unless a
                   driver is named; only
                   with resources.source)
    [calibration]  drive_gain or (series_resistance_ohm + device_resistance_ohm), response_gain,
                   delay_s
    [magnet]       driver, gaussmeter_driver, T_per_A, remanence_T, max_current_A, max_ramp_A_per_s,
                   ramp_A_per_s, ramp_step_A, voltage_limit_V, settle_tolerance_T, settle_time_s,
                   settle_timeout_s, max_corrections, approach, approach_margin_A, park_field_T
                   (only with resources.magnet and resources.gaussmeter; see :mod:`.field`)
    [limits]       max_drive_V, max_bias_A, max_field_T  -> spinlab.SafetyLimits
    [analyser]     driver, reference_level_dBm, averages, rbw_per_bin, and the RF chain between
                   the device and the analyser input: amplifier_gain_dB, splitter_loss_dB,
                   cable_loss_dB (so reported powers are at the device; only with
                   resources.analyser)

The sections are pydantic models (frozen, unknown keys forbidden, numbers never taken from
strings or booleans); :func:`load_station` turns any validation error into one
:class:`~spinlab.errors.ConfigError` line naming the file, the section and the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

import tomllib
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StrictStr,
    ValidationError,
    model_validator,
)

from spinlab.device import SafetyLimits
from spinlab.errors import ConfigError, SafetyLimitError
from spinlab.files import check_file
from spinlab.instruments.capabilities import (
    AWG_MODELS,
    INFINIIVISION,
    KEITHLEY_2400,
    KEPCO_BOP_36_12,
    KEYSIGHT_XSERIES_MODEL,
    LAKESHORE_425,
)
from spinlab.instruments.drivers import DriverSpec, find_driver

#: Directory of the station files shipped with the package.
STATIONS_DIR = Path(__file__).resolve().parent / "stations"

#: ``visa_library`` value that selects the in-process emulated instruments.
EMULATED_LIBRARY = "emulated"

#: A ramp from ``max_bias_A`` to zero may take at most this many steps and this long.
MAX_RAMP_STEPS = 10_000
MAX_RAMP_S = 600.0


class _Invalid(ValueError):
    """Raised by section validators; the loader adds the file and section to the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# --- value types: what TOML gives, checked by pydantic's strict mode (no silent conversions) -------
def _integral_float(value: Any) -> Any:
    """``4e6`` is the integer 4000000 (TOML has no integer exponent form); ``4.5`` stays a float and
    fails the strict integer check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _load(value: Any) -> float | str:
    if isinstance(value, str):
        if value.lower() not in ("inf", "infinity", "high_z"):
            raise ValueError(f"must be a resistance in ohm or 'inf', got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a resistance in ohm or 'inf', got {type(value).__name__} {value!r}")
    return float(value)


#: a number: an int or a float, never a string or a bool
Float = Annotated[float, Strict()]
#: an integer the run file can store (TOML integers are 64-bit)
Int = Annotated[int, BeforeValidator(_integral_float), Strict(), Field(ge=-(2**63), lt=2**63)]
Str = StrictStr
Load = Annotated[Union[float, str], PlainValidator(_load)]

#: what a value of the wrong type is told, by pydantic's error type
_WRONG_TYPE = {
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "string_type": "must be a string",
}


def _positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise _Invalid(name, f"must be a positive finite number, got {value!r}")


def _within(section: Any, name: str, low: float, high: float, why: str) -> None:
    value = getattr(section, name)
    if not (math.isfinite(value) and low <= value <= high):
        raise _Invalid(name, f"must be between {low:g} and {high:g} ({why}), got {value!r}")


def _driver(section: Any, role: str) -> DriverSpec | None:
    """The driver a section names (None: the instrument's ``*IDN?`` picks it when the bench opens)."""
    name = getattr(section, "driver", None)
    if name is None:
        return None
    try:
        return find_driver(name, role)
    except ConfigError as exc:
        raise _Invalid("driver", str(exc)) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _checked(self) -> _Section:
        self.validate_values()
        return self

    def validate_values(self) -> None:
        """Checks of one section; raise :class:`_Invalid` naming the key."""


class StationInfo(_Section):
    name: Str
    description: Str = ""


class Resources(_Section):
    """VISA resource names of the instruments, the VISA library that reaches them, and how
    patiently the bench talks to them."""

    awg: Str
    scope: Str
    source: Str | None = None
    #: spectrum analyser on the device's RF output (``spinlab spectrum``)
    analyser: Str | None = None
    #: the magnet supply and the gaussmeter at the sample (together, with a [magnet] section)
    magnet: Str | None = None
    gaussmeter: Str | None = None
    visa_library: Str = ""
    timeout_s: Float = 10.0
    #: attempts after the first for one AWG record (or the opening steps) after an instrument fault
    retries: Int = 2
    #: pause before the first retry; each further retry waits three times longer
    retry_backoff_s: Float = 0.1

    def validate_values(self) -> None:
        for name in ("awg", "scope"):
            if not getattr(self, name).strip():
                raise _Invalid(name, "must be a VISA resource name, e.g. 'TCPIP::192.168.1.10::INSTR'")
        for name, what in (
            ("source", "DC source"),
            ("magnet", "magnet"),
            ("gaussmeter", "gaussmeter"),
            ("analyser", "spectrum analyser"),
        ):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise _Invalid(name, f"must be a VISA resource name or be left out (no {what})")
        if (self.magnet is None) != (self.gaussmeter is None):
            missing = "gaussmeter" if self.gaussmeter is None else "magnet"
            raise _Invalid(missing, "magnet and gaussmeter go together (the field is set closed-loop)")
        _positive(self, "timeout_s")
        _within(self, "timeout_s", 1e-3, 600, "seconds per VISA read or write")
        if not 0 <= self.retries <= 10:
            raise _Invalid("retries", f"must be 0 .. 10, got {self.retries}")
        _within(self, "retry_backoff_s", 0, 10, "seconds")

    @property
    def instruments(self) -> dict[str, str]:
        """Role -> resource string of every instrument of the station."""
        out = {"awg": self.awg, "scope": self.scope}
        for role in ("source", "magnet", "gaussmeter", "analyser"):
            if getattr(self, role):
                out[role] = getattr(self, role)
        return out


class Wiring(_Section):
    """Which channels are cabled to the device, and how the scope is triggered."""

    awg_channel: Int = 1
    scope_channel: Int = 1
    trigger: Str = "bus"
    scope_trigger_level_V: Float = 1.0

    def validate_values(self) -> None:
        if self.awg_channel not in (1, 2):
            raise _Invalid("awg_channel", f"must be 1 or 2, got {self.awg_channel}")
        if not 1 <= self.scope_channel <= 4:
            raise _Invalid("scope_channel", f"must be 1..4, got {self.scope_channel}")
        if self.trigger != "bus":
            raise _Invalid(
                "trigger",
                "must be 'bus' (software trigger to the AWG; AWG trigger/sync "
                f"out cabled to the scope EXT input), got {self.trigger!r}",
            )
        if not math.isfinite(self.scope_trigger_level_V):
            raise _Invalid("scope_trigger_level_V", f"must be finite, got {self.scope_trigger_level_V!r}")


class AwgSettings(_Section):
    """AWG output settings. ``load_ohm`` is the load the AWG assumes (``"inf"`` = high Z)."""

    #: a registered awg driver (``spinlab.drivers``); left out, the AWG's ``*IDN?`` picks it
    driver: Str | None = None
    model: Str = "33500B"
    load_ohm: Load = 50.0
    max_sample_rate_Hz: Float = AWG_MODELS["33500B"].max_sample_rate_Hz
    max_output_V: Float = 5.0
    memory_samples: Int | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_rate(cls, data: Any) -> Any:
        """The model defaults to the named driver's, the sample rate and output range to the model's."""
        if not isinstance(data, Mapping):
            return data
        model = data.get("model")
        caps = AWG_MODELS.get(model) if isinstance(model, str) else None  # a non-string: the field says so
        if isinstance(data.get("driver"), str) and "model" not in data:
            try:
                caps = find_driver(data["driver"], "awg").capabilities
            except ConfigError:
                return data  # validate_values names the key
            data = {**data, "model": caps.family}
        if "max_sample_rate_Hz" not in data and caps is not None:
            data = {**data, "max_sample_rate_Hz": caps.max_sample_rate_Hz}
        if "max_output_V" not in data and caps is not None:
            data = {**data, "max_output_V": caps.max_peak_V}
        return data

    @property
    def capabilities(self) -> Any:
        """What the AWG can do: the named driver's data, else the declared 33500B/33600A model's."""
        spec = _driver(self, "awg")
        return AWG_MODELS[self.model] if spec is None else spec.capabilities

    def validate_values(self) -> None:
        spec = _driver(self, "awg")
        if spec is not None and self.model != spec.capabilities.family:
            raise _Invalid(
                "model",
                f"= {self.model!r}, but driver {spec.name!r} drives a {spec.capabilities.family}; "
                "leave model out or name the driver of that model",
            )
        if spec is None and self.model not in AWG_MODELS:
            raise _Invalid(
                "model",
                f"must be one of {sorted(AWG_MODELS)} (the Keysight33500B driver's "
                f"families), got {self.model!r}",
            )
        caps = self.capabilities
        if isinstance(self.load_ohm, float) and not (
            math.isfinite(self.load_ohm) and 1 <= self.load_ohm <= 10e3
        ):
            raise _Invalid("load_ohm", f"must be between 1 and 10000 ohm or 'inf', got {self.load_ohm!r}")
        _positive(self, "max_sample_rate_Hz", "max_output_V")
        if self.max_sample_rate_Hz > caps.max_sample_rate_Hz:
            raise _Invalid(
                "max_sample_rate_Hz",
                f"= {self.max_sample_rate_Hz:g} Sa/s is beyond the {caps.family}'s "
                f"{caps.max_sample_rate_Hz:g} Sa/s arb rate",
            )
        if self.max_output_V > caps.max_peak_V:
            raise _Invalid(
                "max_output_V",
                f"= {self.max_output_V:g} V is beyond the {caps.max_peak_V:g} V the "
                f"{caps.family} driver allows (|offset| + Vpp/2 into 50 ohm)",
            )
        if self.memory_samples is not None and not 16 <= self.memory_samples <= caps.memory_samples_mem:
            raise _Invalid(
                "memory_samples",
                f"must be 16 .. {caps.memory_samples_mem} (the {caps.family}'s "
                f"largest arb memory), got {self.memory_samples}",
            )

    @property
    def load(self) -> float:
        """Load in ohm, ``math.inf`` for high impedance."""
        return math.inf if isinstance(self.load_ohm, str) else float(self.load_ohm)


class ScopeSettings(_Section):
    """Acquisition of the device response (an InfiniiVision): rate, vertical range, impedance.

    The scope samples at ``oversample`` points per drive sample interval, capped at
    ``max_sample_rate_Hz``; the bench averages the points inside each interval.
    """

    max_sample_rate_Hz: Float
    full_scale_V: Float
    #: a registered scope driver (``spinlab.drivers``); left out, the scope's ``*IDN?`` picks it
    driver: Str | None = None
    oversample: Int = 4
    offset_V: Float = 0.0
    impedance_ohm: Float = 50.0
    max_points: Int = 4_000_000
    timeout_s: Float = 10.0

    @property
    def capabilities(self) -> Any:
        """The named driver's data, else the InfiniiVision's."""
        spec = _driver(self, "scope")
        return INFINIIVISION if spec is None else spec.capabilities

    def validate_values(self) -> None:
        caps = self.capabilities
        _positive(self, "max_sample_rate_Hz", "full_scale_V", "timeout_s")
        if self.max_sample_rate_Hz > caps.max_sample_rate_Hz:
            raise _Invalid(
                "max_sample_rate_Hz",
                f"= {self.max_sample_rate_Hz:g} Sa/s is beyond the "
                f"{caps.family}'s {caps.max_sample_rate_Hz:g} Sa/s",
            )
        divisions, (low, high) = caps.vertical_divisions, caps.scale_V_per_div
        what = f"{divisions} divisions of {low:g} .. {high:g} V"
        _within(self, "full_scale_V", divisions * low, divisions * high, what)
        _within(self, "offset_V", -caps.max_offset_V, caps.max_offset_V, "the channel offset range")
        _within(self, "timeout_s", 1e-3, 3600, "seconds")
        if not 1 <= self.oversample <= 1000:
            raise _Invalid(
                "oversample", f"must be 1 .. 1000 (scope points per drive sample), got {self.oversample}"
            )
        if self.impedance_ohm not in (50.0, 1e6):
            raise _Invalid("impedance_ohm", f"must be 50 or 1e6, got {self.impedance_ohm!r}")
        if not 1000 <= self.max_points <= caps.memory_points:
            raise _Invalid(
                "max_points",
                f"must be 1000 .. {caps.memory_points} (the {caps.family}'s "
                f"acquisition memory), got {self.max_points}",
            )


class Segmentation(_Section):
    """How drives are packed into and split across AWG records.

    ``settle_s`` of zeros precede every packed drive so the device relaxes to its zero-drive
    steady state (what a simulator starts from) and packed drives do not see each other.
    ``overlap_s`` of the preceding drive is replayed before every continuation segment of a
    long drive and discarded, so the device's state (its memory) is continuous across the
    split; it must exceed a few of the device's longest relaxation times.
    """

    settle_s: Float = 2e-6
    overlap_s: Float = 2e-6

    def validate_values(self) -> None:
        for name in ("settle_s", "overlap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1.0):
                raise _Invalid(name, f"must be >= 0 and at most 1 s, got {value!r}")


class SourceSettings(_Section):
    """DC bias current source (Keithley 2400 sourcing current)."""

    #: a registered source driver (``spinlab.drivers``); left out, the source's ``*IDN?`` picks it
    driver: Str | None = None
    compliance_V: Float = 2.0
    default_bias_A: Float = 0.0
    #: Largest bias change in one step (A); 0 switches in one step. Nano-pillars die of current
    #: steps, so a real station ramps: the bias moves in steps of at most this size...
    ramp_step_A: Float = 0.0
    #: ...with this pause after each step (s), up and down, on every exit path too.
    ramp_pause_s: Float = 0.0

    @property
    def capabilities(self) -> Any:
        """The named driver's data, else the Keithley 2400's."""
        spec = _driver(self, "source")
        return KEITHLEY_2400 if spec is None else spec.capabilities

    def validate_values(self) -> None:
        caps = self.capabilities
        _positive(self, "compliance_V")
        for name in ("default_bias_A", "ramp_step_A", "ramp_pause_s"):
            if not math.isfinite(getattr(self, name)):
                raise _Invalid(name, "must be finite")
        for name in ("ramp_step_A", "ramp_pause_s"):
            if getattr(self, name) < 0:
                raise _Invalid(name, "must be >= 0 (0: no ramp)")
        _within(
            self, "compliance_V", caps.min_compliance_V, caps.max_voltage_V, "what a Keithley 2400 accepts"
        )
        _within(self, "ramp_pause_s", 0, 10, "seconds after each ramp step")


class AnalyserSettings(_Section):
    """The spectrum analyser and the RF chain from the device to its input.

    Reported powers are at the device: a trace is corrected by ``- amplifier_gain_dB +
    splitter_loss_dB + cable_loss_dB`` (the splitter's insertion loss on the analyser's arm, a
    bias tee's included, and the cable's loss at the oscillator's frequency). ``rbw_per_bin``
    sets the resolution bandwidth to that many trace bins (2: every point is resolved, a line
    wider than ~20 bins is not broadened by more than 0.3 %). ``averages`` sweeps are averaged
    in power per trace (the display noise falls as 1/sqrt(averages)).
    """

    #: a registered analyser driver (``spinlab.drivers``); left out, the analyser's ``*IDN?`` picks it
    driver: Str | None = None
    reference_level_dBm: Float = -20.0
    averages: Int = 16
    rbw_per_bin: Float = 2.0
    amplifier_gain_dB: Float = 0.0
    splitter_loss_dB: Float = 0.0
    cable_loss_dB: Float = 0.0

    @property
    def capabilities(self) -> Any:
        """The named driver's data, else the Keysight X-series'."""
        spec = _driver(self, "analyser")
        return KEYSIGHT_XSERIES_MODEL if spec is None else spec.capabilities

    def validate_values(self) -> None:
        caps = self.capabilities
        low, high = caps.reference_level_range_dBm
        _within(self, "reference_level_dBm", low, high, f"the {caps.family}'s reference levels")
        if not 1 <= self.averages <= 10_000:
            raise _Invalid("averages", f"must be 1 .. 10000 sweeps, got {self.averages}")
        _within(self, "rbw_per_bin", 0.1, 100, "trace bins per resolution bandwidth")
        _within(self, "amplifier_gain_dB", -20, 80, "dB of the amplifier before the analyser")
        for name in ("splitter_loss_dB", "cable_loss_dB"):
            _within(self, name, 0, 60, "dB of loss, >= 0")

    @property
    def chain_gain_dB(self) -> float:
        """Gain from the device to the analyser input (dB)."""
        return self.amplifier_gain_dB - self.splitter_loss_dB - self.cable_loss_dB


class MagnetSettings(_Section):
    """The magnet: the coil's calibration and limits, and how a field is set and parked.

    ``T_per_A`` and ``remanence_T`` are what ``spinlab calibrate-field`` measures (field =
    ``T_per_A`` x current + ``remanence_T`` on the configured approach side); they give the
    current a set point starts from, the gaussmeter corrects the rest. The coil is an inductive
    load: the current moves in steps of ``ramp_step_A`` at ``ramp_A_per_s`` (at most the coil's
    ``max_ramp_A_per_s``). ``approach``: every set point is reached moving up (``"below"``), down
    (``"above"``, overshooting by ``approach_margin_A`` and coming back when needed, as labs do
    with iron cores) or directly (``"none"``). A field is set once the gaussmeter reads within
    ``settle_tolerance_T`` for ``settle_time_s``, after at most ``max_corrections``. On every exit
    the field ramps to ``park_field_T``.
    """

    #: a registered magnet driver; left out, the supply's ``*IDN?`` picks it
    driver: Str | None = None
    #: a registered gaussmeter driver; left out, the gaussmeter's ``*IDN?`` picks it
    gaussmeter_driver: Str | None = None
    T_per_A: Float
    remanence_T: Float = 0.0
    max_current_A: Float
    max_ramp_A_per_s: Float
    ramp_A_per_s: Float | None = None
    ramp_step_A: Float = 0.01
    voltage_limit_V: Float = 10.0
    settle_tolerance_T: Float = 1e-3
    settle_time_s: Float = 1.0
    settle_timeout_s: Float = 30.0
    max_corrections: Int = 10
    approach: Str = "below"
    approach_margin_A: Float = 0.1
    park_field_T: Float = 0.0

    @property
    def capabilities(self) -> Any:
        """The named supply driver's rating, else a Kepco BOP 36-12's."""
        spec = _driver(self, "magnet")
        return KEPCO_BOP_36_12 if spec is None else spec.capabilities

    @property
    def gaussmeter_capabilities(self) -> Any:
        name = self.gaussmeter_driver
        if name is None:
            return LAKESHORE_425
        try:
            return find_driver(name, "gaussmeter").capabilities
        except ConfigError as exc:
            raise _Invalid("gaussmeter_driver", str(exc)) from None

    @property
    def rate_A_per_s(self) -> float:
        """The ramp rate used (the coil's maximum unless a slower one is set)."""
        return self.max_ramp_A_per_s if self.ramp_A_per_s is None else self.ramp_A_per_s

    def validate_values(self) -> None:
        caps = self.capabilities
        self.gaussmeter_capabilities  # noqa: B018 - a bad gaussmeter_driver names its key
        if not (math.isfinite(self.T_per_A) and self.T_per_A != 0):
            raise _Invalid(
                "T_per_A", f"must be a finite non-zero number (tesla per ampere), got {self.T_per_A!r}"
            )
        _positive(self, "max_current_A", "max_ramp_A_per_s", "ramp_A_per_s", "ramp_step_A")
        _positive(self, "voltage_limit_V", "settle_tolerance_T", "settle_timeout_s", "approach_margin_A")
        for name in ("remanence_T", "park_field_T"):
            if not math.isfinite(getattr(self, name)):
                raise _Invalid(name, "must be finite")
        if self.max_current_A > caps.max_current_A:
            raise _Invalid(
                "max_current_A",
                f"= {self.max_current_A:g} A is beyond the supply's {caps.max_current_A:g} A rating",
            )
        if self.voltage_limit_V > caps.max_voltage_V:
            raise _Invalid(
                "voltage_limit_V",
                f"= {self.voltage_limit_V:g} V is beyond the supply's {caps.max_voltage_V:g} V rating",
            )
        if self.rate_A_per_s > self.max_ramp_A_per_s:
            raise _Invalid(
                "ramp_A_per_s",
                f"= {self.rate_A_per_s:g} A/s is above the coil's max_ramp_A_per_s = "
                f"{self.max_ramp_A_per_s:g} A/s",
            )
        if self.ramp_step_A > self.max_current_A:
            raise _Invalid("ramp_step_A", f"= {self.ramp_step_A:g} A is more than max_current_A")
        _within(self, "settle_time_s", 0, 600, "seconds the field must stay within tolerance")
        _within(self, "settle_timeout_s", 0, 3600, "seconds")
        if not 0 <= self.max_corrections <= 100:
            raise _Invalid("max_corrections", f"must be 0 .. 100, got {self.max_corrections}")
        if self.approach not in ("below", "above", "none"):
            raise _Invalid("approach", f"must be 'below', 'above' or 'none', got {self.approach!r}")


class Calibration(_Section):
    """Maps requested device quantities to instrument quantities.

    ``drive_gain`` is volts at the device per volt at the AWG output; give it directly, or give
    ``series_resistance_ohm`` and ``device_resistance_ohm`` (divider: R_dev / (R_series + R_dev)).
    ``response_gain`` multiplies the scope volts (e.g. to undo an amplifier); ``delay_s`` is the
    time from the trigger to the response reaching the scope (cables, amplifier, device).
    """

    drive_gain: Float | None = None
    series_resistance_ohm: Float | None = None
    device_resistance_ohm: Float | None = None
    response_gain: Float = 1.0
    delay_s: Float = 0.0

    def validate_values(self) -> None:
        divider = (self.series_resistance_ohm, self.device_resistance_ohm)
        if self.drive_gain is not None and any(v is not None for v in divider):
            raise _Invalid(
                "drive_gain",
                "give either drive_gain or series_resistance_ohm + device_resistance_ohm, not both",
            )
        if (divider[0] is None) != (divider[1] is None):
            missing = "device_resistance_ohm" if divider[1] is None else "series_resistance_ohm"
            raise _Invalid(missing, "series_resistance_ohm and device_resistance_ohm go together")
        _positive(self, "drive_gain", "device_resistance_ohm", "response_gain")
        if self.series_resistance_ohm is not None and not (
            math.isfinite(self.series_resistance_ohm) and self.series_resistance_ohm >= 0
        ):
            raise _Invalid("series_resistance_ohm", "must be >= 0")
        if not (math.isfinite(self.delay_s) and 0 <= self.delay_s <= 1.0):
            raise _Invalid("delay_s", f"must be >= 0 and at most 1 s, got {self.delay_s!r}")

    @property
    def device_V_per_awg_V(self) -> float:
        """Volts across the device per volt programmed on the AWG."""
        if self.drive_gain is not None:
            return float(self.drive_gain)
        if self.series_resistance_ohm is not None and self.device_resistance_ohm is not None:
            return self.device_resistance_ohm / (self.series_resistance_ohm + self.device_resistance_ohm)
        return 1.0


class Limits(_Section):
    max_drive_V: Float
    max_bias_A: Float
    max_field_T: Float = 1.0


class _StationFile(BaseModel):
    """The whole file: its tables are the sections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    station: StationInfo
    resources: Resources
    wiring: Wiring = Wiring()
    awg: AwgSettings = AwgSettings()
    scope: ScopeSettings
    segmentation: Segmentation = Segmentation()
    source: SourceSettings | None = None
    magnet: MagnetSettings | None = None
    calibration: Calibration = Calibration()
    limits: Limits
    analyser: AnalyserSettings | None = None


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
    analyser: AnalyserSettings | None = None
    magnet: MagnetSettings | None = None

    def driver_name(self, role: str) -> str | None:
        """The driver the file names for ``role`` (None: ``*IDN?`` picks it)."""
        if role == "gaussmeter":
            return None if self.magnet is None else self.magnet.gaussmeter_driver
        return getattr(getattr(self, role), "driver", None)

    def with_drivers(self, drivers: Mapping[str, str]) -> Station:
        """This station checked again with the drivers ``*IDN?`` chose (role -> name) for the
        roles its file leaves open, so their capabilities apply as if the file named them."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, BaseModel):
                data[f.name] = value.model_dump(exclude_unset=True)
            elif f.name == "limits":
                data[f.name] = dataclasses.asdict(value)
        for role, name in drivers.items():
            if self.driver_name(role) is None and role == "gaussmeter" and "magnet" in data:
                data["magnet"] = {**data["magnet"], "gaussmeter_driver": name}
            elif self.driver_name(role) is None and role in data:
                data[role] = {**data[role], "driver": name}
        return parse_station(data, self.path)

    @property
    def emulated(self) -> bool:
        return self.resources.visa_library == EMULATED_LIBRARY

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for the run file's device identity)."""
        out: dict[str, Any] = {"path": str(self.path)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, BaseModel):
                out[f.name] = value.model_dump()
            elif f.name == "limits":
                out[f.name] = dataclasses.asdict(value)
            elif f.name != "path":
                out[f.name] = value
        return out


def load_station(path: str | Path) -> Station:
    """Read and validate a station file; raises :class:`ConfigError` naming the key and file."""
    path = check_file(path, "station", ConfigError, f"station file {path} does not exist")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"station file {path} does not exist") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply to be a station file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (TOML is UTF-8; byte {exc.start} is not); "
            "save the station file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"station file {path} cannot be read: {exc}") from None
    return parse_station(data, path)


def parse_station(data: Mapping[str, Any], path: str | Path = "<station>") -> Station:
    """Validate a parsed station mapping (what :func:`tomllib.load` returns)."""
    path = Path(path)
    try:
        parsed = _StationFile.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path) from None
    except OverflowError:  # an integer beyond any float
        raise ConfigError(f"{path}: a number is too large to be a measurement setting") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply to be a station file") from None
    if parsed.source is not None and parsed.resources.source is None:
        raise ConfigError(f"{path}: [source] is given but [resources] has no 'source' resource")
    source = parsed.source
    if parsed.resources.source is not None and source is None:
        source = SourceSettings()
    if parsed.analyser is not None and parsed.resources.analyser is None:
        raise ConfigError(f"{path}: [analyser] is given but [resources] has no 'analyser' resource")
    analyser = parsed.analyser
    if parsed.resources.analyser is not None and analyser is None:
        analyser = AnalyserSettings()
    lim = parsed.limits
    try:
        limits = SafetyLimits(lim.max_drive_V, lim.max_bias_A, lim.max_field_T)
    except SafetyLimitError as exc:
        raise ConfigError(f"{path}: [limits] {exc}") from None
    station = Station(
        path=path,
        station=parsed.station,
        resources=parsed.resources,
        scope=parsed.scope,
        limits=limits,
        wiring=parsed.wiring,
        awg=parsed.awg,
        segmentation=parsed.segmentation,
        source=source,
        calibration=parsed.calibration,
        analyser=analyser,
        magnet=parsed.magnet,
    )
    if (parsed.magnet is None) != (parsed.resources.magnet is None):
        raise ConfigError(
            f"{path}: [magnet] is given but [resources] has no 'magnet' resource"
            if parsed.resources.magnet is None
            else f"{path}: [resources] names a magnet but there is no [magnet] section (T_per_A, "
            "max_current_A, max_ramp_A_per_s)"
        )
    _check_across_sections(station)
    return station


def _check_across_sections(st: Station) -> None:
    """Limits against each other and against what the instruments can do."""
    path, limits = st.path, st.limits
    level = st.scope.capabilities.max_trigger_level_V  # the scope's driver's range
    if abs(st.wiring.scope_trigger_level_V) > level:
        raise ConfigError(
            f"{path}: [wiring] key 'scope_trigger_level_V' must be between {-level:g} and {level:g} (the "
            f"{st.scope.driver or 'InfiniiVision'} trigger range), got {st.wiring.scope_trigger_level_V!r}"
        )
    gain = st.calibration.device_V_per_awg_V
    if limits.max_drive_V / gain > st.awg.max_output_V:
        raise ConfigError(
            f"{path}: [limits] max_drive_V = {limits.max_drive_V} V needs "
            f"{limits.max_drive_V / gain:.4g} V at the AWG (drive gain {gain:.4g}), "
            f"above [awg] max_output_V = {st.awg.max_output_V} V"
        )
    if st.magnet is not None:
        _check_magnet(st)
    source = st.source
    if source is None:
        return
    caps = source.capabilities
    if limits.max_bias_A > caps.max_current_A:
        raise ConfigError(
            f"{path}: [limits] key 'max_bias_A' = {limits.max_bias_A:g} A is beyond the "
            f"{caps.max_current_A:g} A a Keithley 2400 sources; set the device's real limit"
        )
    if abs(source.default_bias_A) > limits.max_bias_A:
        raise ConfigError(
            f"{path}: [source] key 'default_bias_A' = {source.default_bias_A} A exceeds "
            f"[limits] max_bias_A = {limits.max_bias_A} A"
        )
    if limits.max_bias_A > caps.high_power_current_A and source.compliance_V > caps.high_power_max_V:
        raise ConfigError(
            f"{path}: [source] key 'compliance_V' = {source.compliance_V:g} V with [limits] "
            f"max_bias_A = {limits.max_bias_A:g} A: a 2400 sources more than "
            f"{caps.high_power_current_A:g} A only up to {caps.high_power_max_V:g} V"
        )
    if source.ramp_step_A > 0:
        steps = math.ceil(limits.max_bias_A / source.ramp_step_A - 1e-9)
        if steps > MAX_RAMP_STEPS or steps * source.ramp_pause_s > MAX_RAMP_S:
            raise ConfigError(
                f"{path}: [source] key 'ramp_step_A' = {source.ramp_step_A:g} A: a ramp from "
                f"max_bias_A to 0 would take {steps} steps ({steps * source.ramp_pause_s:.4g} s); "
                f"allow at most {MAX_RAMP_STEPS} steps and {MAX_RAMP_S:g} s"
            )


def _check_magnet(st: Station) -> None:
    """The park field within the limits, and a ramp from the field limit to zero not endless."""
    path, magnet, limit = st.path, st.magnet, st.limits.max_field_T
    assert magnet is not None
    if abs(magnet.park_field_T) > limit:
        raise ConfigError(
            f"{path}: [magnet] key 'park_field_T' = {magnet.park_field_T:g} T exceeds [limits] "
            f"max_field_T = {limit:g} T"
        )
    park_A = (magnet.park_field_T - magnet.remanence_T) / magnet.T_per_A if magnet.park_field_T else 0.0
    if abs(park_A) > magnet.max_current_A:
        raise ConfigError(
            f"{path}: [magnet] key 'park_field_T' = {magnet.park_field_T:g} T needs {park_A:.4g} A, beyond "
            f"max_current_A = {magnet.max_current_A:g} A"
        )
    ramp_s = 2 * magnet.max_current_A / magnet.rate_A_per_s
    if ramp_s > MAX_RAMP_S * 6:
        raise ConfigError(
            f"{path}: [magnet] key 'ramp_A_per_s' = {magnet.rate_A_per_s:g} A/s: a ramp across "
            f"+-max_current_A would take {ramp_s:.4g} s; allow at most {MAX_RAMP_S * 6:g} s"
        )


def _config_error(exc: ValidationError, path: Path) -> ConfigError:
    """The first validation error as one line naming the file, the section and the key."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    kind = err["type"]
    section = loc[0] if loc else "?"
    if len(loc) == 1:
        if kind == "missing":
            return ConfigError(f"{path}: missing section [{section}]")
        if kind == "extra_forbidden":
            return ConfigError(
                f"{path}: unknown section [{section}]; known sections: {', '.join(_StationFile.model_fields)}"
            )
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return ConfigError(f"{path}: [{section}] must be a table, got {type(err['input']).__name__}")
    if kind == "missing":
        return ConfigError(f"{path}: [{section}] missing required key '{loc[1]}'")
    if kind == "extra_forbidden":
        known = _section_model(section).model_fields
        return ConfigError(f"{path}: [{section}] unknown key '{loc[1]}'; known keys: {', '.join(known)}")
    cause = (err.get("ctx") or {}).get("error")
    key = getattr(cause, "key", None) or (loc[1] if len(loc) > 1 else "?")
    got = err.get("input")
    if kind == "float_type" and isinstance(got, int) and not isinstance(got, bool):
        message = "is a number too large to be a measurement setting"
    elif kind in _WRONG_TYPE:
        message = f"{_WRONG_TYPE[kind]}, got {type(got).__name__} {got!r}"
    elif kind in ("greater_than_equal", "less_than"):  # only Int has bounds: the 64-bit range
        message = f"must be an integer of at most 64 bits, got {int(got)}"
    else:
        message = str(cause) if cause is not None else err["msg"]
    return ConfigError(f"{path}: [{section}] key '{key}' {message}")


def _section_model(section: str) -> type[BaseModel]:
    annotation = _StationFile.model_fields[section].annotation
    return next(a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None))


def write_magnet_calibration(path: str | Path, T_per_A: float, remanence_T: float) -> None:
    """Store a measured calibration in the ``[magnet]`` section of the station file at ``path``
    (its other lines and comments kept), checked by loading the result before it replaces the file."""
    path = Path(path)
    if path.resolve().parent == STATIONS_DIR:
        raise ConfigError(f"{path} is a station shipped with spinlab; copy it and calibrate the copy")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == "[magnet]"), None)
    if start is None:
        raise ConfigError(f"{path} has no [magnet] section to store the calibration in")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for key, value in (("T_per_A", T_per_A), ("remanence_T", remanence_T)):
        new = f"{key} = {value:.6g}"
        at = next((i for i in range(start + 1, end) if lines[i].split("=")[0].strip() == key), None)
        if at is None:
            lines.insert(start + 1, new + "\n")
            end += 1
        else:
            comment = lines[at].partition("#")[2]
            lines[at] = new + (f"  # {comment.strip()}" if comment else "") + "\n"
    text = "".join(lines)
    try:
        parse_station(tomllib.loads(text), path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: the calibrated file would not be valid TOML ({exc}); left unchanged"
        ) from None
    path.write_text(text, encoding="utf-8")


def builtin_station(name: str) -> Path:
    """Path of a station file shipped with spinlab (``"emulated"`` -> ``stations/emulated.toml``)."""
    path = STATIONS_DIR / f"{name}.toml"
    if not path.is_file():
        shipped = sorted(p.stem for p in STATIONS_DIR.glob("*.toml"))
        raise ConfigError(f"no built-in station {name!r}; shipped stations: {shipped}")
    return path
