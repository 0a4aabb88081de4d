"""Instrument roles: what the Bench needs from an AWG, a scope, a bias source, a magnet supply,
a gaussmeter and a spectrum analyser.

Why roles: the Bench's retries, record checks, segmentation and output safety are the same for
every model, so they talk to a role, never to a model. A driver for a new model (in spinlab or in
a lab's own package, registered through :mod:`.drivers`) implements its role's members; where its
own names differ it adds thin adapter members. Every role also has ``id`` (``*IDN?``),
``check_errors()`` and ``clear_errors()`` (drain and return the error queue); a driver is built as
``driver(resource, visa_library=..., timeout=ms)`` and keeps its connection in ``adapter``
(a pymeasure ``Instrument`` does all three).

The roles are structural (``typing.Protocol``): a driver need not inherit from them.
:func:`missing_members` checks a driver class against its role when it is registered, without
talking to an instrument (a runtime ``isinstance`` would query every property).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from spinlab.instruments.capabilities import AwgModel
from spinlab.waveform import Waveform


class AwgPlaying(NamedTuple):
    """What an AWG plays: function (``"ARB"``), arb name and the load it assumes (ohm)."""

    function: str
    arb: str
    load_ohm: float


class SourceOutput(NamedTuple):
    """A source's output as it reports it: relay, function (``"CURR"``/``"VOLT"``), both levels."""

    on: bool
    function: str
    current_A: float
    voltage_V: float


class Instrument(Protocol):
    """What every role has: identity, connection and error queue."""

    @property
    def id(self) -> str: ...  # the *IDN? reply

    def check_errors(self) -> list[tuple[int, str]]: ...  # drained and logged as errors

    def clear_errors(self) -> list[tuple[int, str]]: ...  # drained quietly (stale, after a fault)


class AwgRole(Instrument, Protocol):
    """An arbitrary waveform generator playing one record per bus trigger, on one channel."""

    output_enabled: bool
    #: the load the output assumes (ohm; ``math.inf`` for high impedance)
    output_load_ohm: float

    @property
    def capabilities(self) -> AwgModel: ...  # rate, memory, output range of the answering model

    @property
    def memory_samples(self) -> int: ...  # longest record it holds now (options included)

    def upload_arb(
        self, name: str, samples_V: np.ndarray, sample_rate_Hz: float, verify: bool = False
    ) -> dict[str, float]: ...  # with verify: read back and compared (count, checksum)

    def arm_burst(self, cycles: int = 1, source: str = "BUS") -> None: ...

    def trigger(self) -> None: ...

    def raise_errors(self, context: str) -> None: ...  # InstrumentError if the queue holds any

    def playing_state(self) -> AwgPlaying: ...  # a reset shows here


class ScopeRole(Instrument, Protocol):
    """An oscilloscope capturing one externally triggered record on one channel."""

    #: the sample rates it offers (Sa/s); the bench picks the slowest fast enough
    SAMPLE_RATES_Hz: tuple[float, ...]

    def configure_capture(
        self,
        channel: int,
        duration_s: float,
        sample_rate_Hz: float,
        full_scale_V: float,
        offset_V: float = 0.0,
        trigger_level_V: float = 1.0,
        pretrigger_s: float = 0.0,
        segments: int | None = None,
        impedance: str = "FIFT",
    ) -> dict[str, float]: ...  # points, sample_rate_Hz, start_s as set

    def arm_single(self, timeout_s: float = 5.0) -> None: ...

    def waiting_for_trigger(self) -> bool: ...  # InstrumentError if it stopped before the trigger

    def wait_acquired(self, timeout_s: float = 10.0, poll_s: float = 0.001) -> None: ...

    def read_waveform(self, channel: int) -> Waveform: ...  # scaled volts, t0 and dt

    def check_in_step(self, context: str) -> None: ...  # nothing left in the reply stream


class SourceRole(Instrument, Protocol):
    """A DC source biasing the device with a current."""

    source_enabled: bool
    source_mode: str  # "current" while the bench owns it
    compliance_voltage: float
    source_current: float
    source_voltage: float

    def output_state(self) -> SourceOutput: ...  # in one query; a reset shows here


class AnalyserRole(Instrument, Protocol):
    """A swept spectrum analyser measuring the device's RF output, one averaged trace at a time."""

    def configure(
        self,
        center_Hz: float,
        span_Hz: float,
        rbw_Hz: float,
        points: int = 1001,
        reference_level_dBm: float = 0.0,
        vbw_Hz: float | None = None,
        averages: int = 1,
    ) -> dict[str, float]: ...  # center_Hz, span_Hz, rbw_Hz, points as the analyser took them

    #: a checked sweep (block length, point count, no overload): ``frequency_Hz``, ``power_dBm``
    #: (in the RBW) and ``rbw_Hz``
    def measure(self) -> Any: ...


class MagnetSupplyOutput(NamedTuple):
    """A magnet supply as it reports it: relay, mode (``"CURR"``/``"VOLT"``), the programmed
    current and voltage limit, and the current it measures (lags the set point on a coil)."""

    on: bool
    mode: str
    setpoint_A: float
    voltage_limit_V: float
    current_A: float


class MagnetRole(Instrument, Protocol):
    """A bipolar supply driving a magnet coil in current mode (the field controller's actuator)."""

    output_enabled: bool
    function_mode: str  # "CURR" while the bench owns it
    current_setpoint_A: float
    voltage_limit_V: float  # the compliance: with the coil's inductance it caps dI/dt

    @property
    def current_A(self) -> float: ...  # the measured output current

    def output_state(self) -> MagnetSupplyOutput: ...  # in one call; where the coil really is


class GaussmeterRole(Instrument, Protocol):
    """A gaussmeter whose probe sits at the sample (the field controller's sensor)."""

    auto_range: bool

    def field_T(self) -> float: ...  # tesla whatever the display units; an overload raises

    def range_T(self) -> float: ...  # full scale of the present range


ROLES: dict[str, type] = {
    "awg": AwgRole,
    "scope": ScopeRole,
    "source": SourceRole,
    "magnet": MagnetRole,
    "gaussmeter": GaussmeterRole,
    "analyser": AnalyserRole,
}


def role_members(role: type) -> list[str]:
    """The names a driver of ``role`` must have (the Protocol's, its bases' included)."""
    names: set[str] = set()
    for klass in role.__mro__:
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(
            name
            for name, value in vars(klass).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))
        )
    return sorted(names)


def missing_members(driver: type, role: str) -> list[str]:
    """The members of ``role`` that the class ``driver`` lacks (checked on the class, so no
    property is read and nothing is sent)."""
    return [name for name in role_members(ROLES[role]) if not hasattr(driver, name)]


__all__ = [
    "AnalyserRole",
    "AwgPlaying",
    "AwgRole",
    "GaussmeterRole",
    "MagnetRole",
    "MagnetSupplyOutput",
    "ROLES",
    "ScopeRole",
    "SourceOutput",
    "SourceRole",
    "missing_members",
    "role_members",
]
