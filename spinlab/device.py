"""The Device interface and its safety limits.

Everything that can stand where the spintronic device stands is a Device: it takes a drive
waveform (what the AWG applies, in volts; a device may declare another quantity, e.g. a
micromagnetic twin driven by anisotropy in J/m3) plus operating conditions (DC bias current,
field, ...) and returns the response on the same time grid (what the oscilloscope sees, in volts).
Protocols only talk to a Device, so hardware, emulated bench, simulator and twin are one
address string apart (:func:`spinlab.registry.open_device`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spinlab.errors import ConfigError, SafetyLimitError, WaveformError
from spinlab.waveform import Waveform

#: Operating conditions every backend understands, in SI units.
STANDARD_CONDITIONS = ("bias_A", "field_T")

#: Suffix of a response ``meta`` key that holds what an instrument measured of a condition
#: (``field_T_measured``: the gaussmeter's reading of the set ``field_T``).
MEASURED = "_measured"

_noted: ContextVar[list[dict[str, Any]] | None] = ContextVar("spinlab_noted_measurements", default=None)


@contextmanager
def noting_measurements() -> Iterator[list[dict[str, Any]]]:
    """Collect, for every device call inside the block that measured a condition, its set and
    measured conditions (the run engine stores them with each recorded step, so every plan's run
    file holds the field the gaussmeter read, not only the one asked for)."""
    noted: list[dict[str, Any]] = []
    token = _noted.set(noted)
    try:
        yield noted
    finally:
        _noted.reset(token)


def note_measurement(meta: Mapping[str, Any]) -> None:
    """Hand a response's conditions to :func:`noting_measurements` if it measured one."""
    noted = _noted.get()
    if noted is not None and any(key.endswith(MEASURED) for key in meta):
        noted.append({key: value for key, value in meta.items() if key != "device"})


@dataclass(frozen=True)
class SafetyLimits:
    """Hard limits checked before anything reaches an output (part of the station config)."""

    max_drive_V: float = 0.5
    max_bias_A: float = 10e-3
    max_field_T: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SafetyLimitError(f"safety limit {name} must be a positive number, got {value!r}")

    def check_drive(self, drive: Waveform) -> None:
        if drive.unit != "V":
            raise SafetyLimitError(f"drive must be in volts (unit 'V'), got unit {drive.unit!r}")
        peak = max(float(np.max(drive.samples)), -float(np.min(drive.samples)))  # no |x| copy
        if peak > self.max_drive_V * (1 + 1e-12):
            raise SafetyLimitError(
                f"drive peak {peak:.4g} V exceeds the safety limit max_drive_V = {self.max_drive_V:.4g} V; "
                "scale the drive down or raise the limit in the station file"
            )

    def check_conditions(self, conditions: Mapping[str, np.ndarray]) -> None:
        checks = {"bias_A": self.max_bias_A, "field_T": self.max_field_T}
        for name, limit in checks.items():
            if name in conditions:
                peak = float(np.max(np.abs(conditions[name])))
                if peak > limit * (1 + 1e-12):
                    raise SafetyLimitError(
                        f"{name} = {peak:.4g} exceeds the safety limit max_{name} = {limit:.4g}; "
                        "nothing was sent"
                    )


@dataclass(frozen=True)
class DriveQuantity:
    """What a device's drive is: the physical quantity, its unit and the range it accepts.

    Protocols that think in a normalised input ``u`` in [-1, 1] map it onto this range with
    :meth:`from_unit` (-1 -> ``low``, 1 -> ``high``), so one protocol runs on an STO driven in
    volts and on a skyrmion twin driven in J/m3 alike.
    """

    quantity: str
    unit: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(
                f"drive range of {self.quantity} must be finite with low < high, "
                f"got [{self.low!r}, {self.high!r}] {self.unit}"
            )

    @property
    def centre(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def half_span(self) -> float:
        return 0.5 * (self.high - self.low)

    def from_unit(self, u: np.ndarray, fraction: float = 1.0) -> np.ndarray:
        """``u`` in [-1, 1] onto the range; ``fraction`` < 1 uses only that share of it."""
        return self.centre + fraction * self.half_span * np.asarray(u, dtype=np.float64)

    def check(self, drive: Waveform) -> None:
        """Unit and range of a drive, before anything reaches the device."""
        if drive.unit != self.unit:
            raise SafetyLimitError(f"drive must be {self.quantity} in {self.unit!r}, got unit {drive.unit!r}")
        low, high = float(np.min(drive.samples)), float(np.max(drive.samples))
        tol = 1e-12 * max(abs(self.low), abs(self.high))
        if low < self.low - tol or high > self.high + tol:
            raise SafetyLimitError(
                f"drive spans [{low:.4g}, {high:.4g}] {self.unit}, outside the {self.quantity} "
                f"range this device accepts, [{self.low:.4g}, {self.high:.4g}] {self.unit}; "
                "nothing was sent"
            )


class Device(ABC):
    """A drive -> response map with operating conditions. Subclasses implement ``_respond``.

    ``respond`` validates everything at the boundary (finite samples, unit, safety limits, known
    condition names, broadcastable condition values) and only then calls the backend, so a
    backend never sees a NaN or an out-of-range value.
    """

    #: Address this device was opened with (``sim:vortex``, ``bench:emulated``, ...).
    address: str = ""
    #: Names of operating conditions this backend accepts.
    condition_names: tuple[str, ...] = STANDARD_CONDITIONS
    #: Unit of the response samples.
    response_unit: str = "V"

    @property
    def drive_quantity(self) -> DriveQuantity:
        """What the drive is; by default a voltage within the safety limit ``max_drive_V``.
        Override for a device driven by another quantity (its ``respond`` then checks that
        range instead of ``max_drive_V``)."""
        v = self.limits.max_drive_V
        return DriveQuantity("voltage", "V", -v, v)

    def __init__(
        self, limits: SafetyLimits | None = None, default_conditions: Mapping[str, float] | None = None
    ) -> None:
        self.limits = limits or SafetyLimits()
        self.default_conditions = dict(default_conditions or {})

    # --- public API ------------------------------------------------------------------------
    def respond(
        self, drive: Waveform, conditions: Mapping[str, float | np.ndarray] | None = None
    ) -> Waveform:
        """Apply ``drive`` (one signal or a batch) at ``conditions``; return the response.

        Each condition is a number (same for every drive) or an array with one value per drive.
        Missing conditions take the device's defaults. The response has the drive's shape and
        time grid.
        """
        if not isinstance(drive, Waveform):
            raise WaveformError(f"drive must be a spinlab.Waveform, got {type(drive).__name__}")
        batch = drive.as_batch()
        cond = self.resolve_conditions(conditions, batch.batch_size)
        quantity = self.drive_quantity
        if quantity.unit == "V":
            self.limits.check_drive(batch)  # the hardware limit, with its station-file advice
        else:
            quantity.check(batch)
        self.limits.check_conditions(cond)
        out = np.asarray(self._respond(batch.samples.astype(np.float64, copy=False), batch.dt_s, cond))
        if out.shape != batch.samples.shape:
            raise RuntimeError(
                f"{type(self).__name__} returned shape {out.shape}, expected {batch.samples.shape}"
            )
        if not drive.batched:
            out = out[0]
        meta = {
            "device": self.address,
            **{k: _scalar_or_list(v) for k, v in cond.items()},
            **self._measured_conditions(),
        }
        note_measurement(meta)
        return Waveform(out, drive.dt_s, self.response_unit, drive.t0_s, meta)

    def resolve_conditions(self, conditions: Mapping[str, Any] | None, batch: int) -> dict[str, np.ndarray]:
        """Merge with defaults, check names and values, broadcast each to shape ``(batch,)``."""
        merged = {**self.default_conditions, **dict(conditions or {})}
        unknown = sorted(set(merged) - set(self.condition_names))
        if unknown:
            raise ConfigError(
                f"{self.address or type(self).__name__} does not know condition(s) {unknown}; "
                f"it accepts {list(self.condition_names)}"
            )
        resolved = {}
        for name, value in merged.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 0:
                arr = np.full(batch, float(arr))
            if arr.shape != (batch,):
                raise ConfigError(
                    f"condition {name} must be a number or have one value per drive ({batch}), "
                    f"got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"condition {name} has non-finite values")
            resolved[name] = arr
        return resolved

    def identity(self) -> dict[str, Any]:
        """What this device is (instrument IDNs, model parameters); stored in every run file."""
        return {
            "address": self.address,
            "type": type(self).__name__,
            "limits": asdict(self.limits),
            "drive": asdict(self.drive_quantity),
        }

    def outputs_off(self) -> None:
        """Put every output in its safe state (hardware: bias ramped down, AWG off). The run
        engine calls this on every exit path; simulators have nothing to switch off."""

    def close(self) -> None:
        """Release resources; for hardware this turns every output off."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- backend hooks ---------------------------------------------------------------------
    def _measured_conditions(self) -> dict[str, Any]:
        """What the last ``_respond`` measured of its conditions (``{"field_T_measured": ...}``,
        a number or one per drive), added to the response's ``meta``; a simulator measures none."""
        return {}

    @abstractmethod
    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """Response to validated drives: ``drive`` is ``(batch, n)`` float64 (volts unless
        :attr:`drive_quantity` says otherwise), each
        condition an array ``(batch,)``. Return an array of the same shape as ``drive``."""


def _scalar_or_list(values: np.ndarray) -> float | list[float]:
    return float(values[0]) if np.all(values == values[0]) else values.tolist()
