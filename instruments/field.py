"""The magnetic field, set closed-loop: a magnet supply ramped at the coil's rate, corrected from
a gaussmeter until the field holds within tolerance.

Why closed-loop: an iron-core magnet's field is not a fixed multiple of its current (remanence,
hysteresis, saturation, a warm coil), so the calibrated current (``[magnet] T_per_A``) only gets
near the set point; the gaussmeter at the sample says how far off it is, and the current is
corrected until the reading stays within ``settle_tolerance_T`` for ``settle_time_s``. Every set
point is approached from the same side (``approach``), overshooting and coming back when needed,
so the core's magnetisation is on the same branch each time.

Why ramps: the coil is an inductive load; a step in its current is a voltage spike across it
(and a quench or a cracked joint in the worst case). The set point moves in steps of
``ramp_step_A``, each after a pause long enough that no step exceeds ``ramp_A_per_s``. A ramp
toward a set point stops at the next step when the run is stopped (a signal raises there; a
worker thread checks :func:`~spinlab.engine.signals.check_stop`); the ramp to ``park_field_T``
that follows on every exit path cannot be stopped.

A set point that cannot be reached - the supply stuck below its set point (voltage compliance),
the field not following the current (saturation), a probe that drifts or is overloaded, no
convergence in ``max_corrections`` - ends in one :class:`FieldError` line, never in a silent offset.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spinlab.engine.signals import check_stop
from spinlab.errors import ConfigError, InstrumentError, InstrumentFaultError, SafetyLimitError
from spinlab.instruments.links import FAULTS, Link, one_line
from spinlab.instruments.output_safety import ramp_levels
from spinlab.instruments.scpi import format_errors

log = logging.getLogger("spinlab.field")

#: The pause after each ramp step is this much longer than step / rate (a late write must not
#: make the next step look faster than the rate).
RATE_MARGIN = 1.1
#: The measured current is at its set point within this fraction of ``max_current_A`` (a supply's
#: read-back accuracy, about 0.1 % of full scale).
CURRENT_TOLERANCE = 1e-3
#: Readings averaged per settle window, at least (``settle_time_s`` spreads them out).
MIN_READINGS = 5


class FieldError(InstrumentFaultError):
    """A field set point that cannot be reached (not retried: the bench parks the magnet)."""


class FieldReading(NamedTuple):
    """A field that was set: the set point, the mean gaussmeter reading over the settle window,
    the supply current that gives it and how many corrections it took."""

    set_T: float
    measured_T: float
    current_A: float
    corrections: int


class FieldCalibration(NamedTuple):
    """A fitted calibration: ``field = T_per_A x current + remanence_T``, the RMS residual, and
    the currents and mean readings it was fitted to."""

    T_per_A: float
    remanence_T: float
    rms_T: float
    currents_A: tuple[float, ...]
    fields_T: tuple[float, ...]


class FieldController:
    """Closed-loop field of a station's ``[magnet]`` (``settings``), through the ``magnet`` and
    ``gaussmeter`` links of a bench. ``path`` and ``max_field_T`` name the limits in refusals;
    ``sleep`` and ``clock`` are time (tests may pass faster ones)."""

    def __init__(
        self,
        settings: Any,
        magnet: Link,
        gaussmeter: Link,
        *,
        path: Path,
        max_field_T: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.magnet = magnet
        self.gaussmeter = gaussmeter
        self.path = path
        self.max_field_T = max_field_T
        self.sleep = sleep
        self.clock = clock
        #: the set point the supply is believed to hold (None: output off)
        self.setpoint_A: float | None = None
        #: the field last set closed-loop (None: none, or the magnet parked since)
        self.field_T: float | None = None
        #: True once parked (by :meth:`park`) until a field is set again
        self.parked = False

    # --- limits --------------------------------------------------------------------------
    def current_for(self, field_T: float) -> float:
        """The calibrated current for ``field_T``."""
        s = self.settings
        return 0.0 if field_T == 0 and s.remanence_T == 0 else (field_T - s.remanence_T) / s.T_per_A

    def check(self, field_T: float) -> float:
        """The calibrated current of ``field_T``, refused in one line naming the key and the file
        when the field is beyond ``[limits] max_field_T`` or needs more than ``max_current_A``."""
        if not math.isfinite(field_T) or abs(field_T) > self.max_field_T * (1 + 1e-12):
            raise SafetyLimitError(
                f"field_T = {field_T:.4g} T exceeds [limits] max_field_T = {self.max_field_T:.4g} T of "
                f"{self.path}; nothing was sent"
            )
        current = self.current_for(field_T)
        if abs(current) > self.settings.max_current_A * (1 + 1e-12):
            raise SafetyLimitError(
                f"field_T = {field_T:.4g} T needs {current:.4g} A (T_per_A = {self.settings.T_per_A:g}), "
                f"beyond [magnet] max_current_A = {self.settings.max_current_A:g} A of {self.path}; "
                "nothing was sent"
            )
        return current

    # --- opening, parking, recovering -----------------------------------------------------
    def open(self) -> None:
        """On opening: the gaussmeter on autorange, DC with its filter; a supply found on (a
        killed run) is taken over where its current is and ramped to the park field."""
        with self.gaussmeter.step("configuring the gaussmeter") as meter:
            meter.auto_range = True
            if hasattr(meter, "measure_dc"):
                meter.measure_dc()
        self.park()

    def resync(self) -> None:
        """After a supply fault: believe what the supply reports. A supply found off (a reset)
        is taken over from the current its coil still carries when the field is next set."""
        with self.magnet.step("reading back the magnet current") as supply:
            state = supply.output_state()
        on = state.on and state.mode == "CURR"
        self.setpoint_A = state.setpoint_A if on else None
        self.field_T = None
        self.parked = False  # the field is set again (closed-loop) by the next record

    def park(self) -> None:
        """Ramp from where the supply is (else from the believed set point) to ``park_field_T``,
        unstoppable; a park field of 0 ramps to 0 A (not to the current that would cancel the
        remanence), waits for the coil to discharge and switches the output off."""
        s = self.settings
        park_A = self.current_for(s.park_field_T) if s.park_field_T else 0.0  # 0 T: the supply off
        self.field_T = None
        self.parked = False
        with self.magnet.step("parking the field") as supply:
            try:
                if not self.magnet.answering:
                    raise InstrumentError("it does not answer")
                state = supply.output_state()
                start = state.setpoint_A if state.on and state.mode == "CURR" else None
                if state.on and state.mode != "CURR" or not state.on and state.current_A:
                    start = self._take_over(supply, state.current_A)
            except FAULTS as exc:
                log.error(
                    "could not read back the magnet supply (%s); ramping from the last set point, %.4g A",
                    one_line(exc),
                    self.setpoint_A or 0.0,
                )
                start = self.setpoint_A
            if start is None and not park_A:
                self.setpoint_A = None
                supply.output_enabled = False
                self.parked = True
                return
            if start is None:
                start = self._take_over(supply, 0.0)
            elif self.setpoint_A is None and start:
                log.warning("the magnet supply was on at %.4g A; ramping it to the park field", start)
            self.setpoint_A = start
            self._ramp(supply, park_A, stoppable=False)
            if park_A == 0:
                self._wait_current(supply, 0.0)
                supply.output_enabled = False
                self.setpoint_A = None
                if not self.magnet.answering:
                    raise InstrumentError("the magnet supply does not answer, so OUTP OFF is unconfirmed")
                if supply.output_enabled:
                    raise InstrumentError("the magnet supply output still reports ON after OUTP OFF")
            self.parked = True

    def _take_over(self, supply: Any, current_A: float) -> float:
        """Current mode at ``current_A`` (where the coil is: no jump), its compliance, output on."""
        supply.current_setpoint_A = current_A
        supply.function_mode = "CURR"
        supply.voltage_limit_V = self.settings.voltage_limit_V
        supply.output_enabled = True
        self.setpoint_A = current_A
        return current_A

    # --- setting a field ---------------------------------------------------------------------
    def set_field(self, field_T: float) -> FieldReading:
        """Ramp to the calibrated current from the configured side, then correct from the
        gaussmeter until the field holds within tolerance; raises :class:`FieldError` (one line)
        when it cannot be reached."""
        s = self.settings
        target = self.check(field_T)
        if self.parked and field_T == s.park_field_T:
            # the park field is where the magnet is: nothing moves (a bench that is not asked for
            # a field runs at it); what the gaussmeter reads there is recorded
            self.field_T = field_T
            return FieldReading(field_T, self.read_field(), self.setpoint_A or 0.0, 0)
        self.field_T = None
        self.parked = False
        with self.magnet.step(f"setting the field to {field_T:.4g} T") as supply:
            if self.setpoint_A is None:
                self._take_over(supply, supply.current_A)
            self._approach(supply, target)
        spread = 0.0
        for corrections in range(s.max_corrections + 1):
            self._wait_for_current()
            mean, spread = self._settled_reading()
            error = field_T - mean
            if abs(error) <= s.settle_tolerance_T and spread <= 2 * s.settle_tolerance_T:
                self.field_T = field_T
                assert self.setpoint_A is not None
                return FieldReading(field_T, mean, self.setpoint_A, corrections)
            if corrections == s.max_corrections:
                break
            assert self.setpoint_A is not None
            corrected = self.setpoint_A + error / s.T_per_A
            if abs(corrected) > s.max_current_A:
                raise FieldError(
                    f"the field {field_T:.4g} T is out of reach: the gaussmeter reads {mean:.5g} T at "
                    f"{self.setpoint_A:.4g} A and the correction needs {corrected:.4g} A, beyond [magnet] "
                    f"max_current_A = {s.max_current_A:g} A of {self.path} (is the core saturated, or "
                    "T_per_A wrong? run spinlab calibrate-field)"
                )
            with self.magnet.step(f"correcting the field to {field_T:.4g} T") as supply:
                self._approach(supply, corrected)
        raise FieldError(
            f"the field did not settle at {field_T:.4g} T within [magnet] settle_tolerance_T = "
            f"{s.settle_tolerance_T:g} T after {s.max_corrections} corrections (last mean reading "
            f"{mean:.5g} T, spread {spread:.3g} T over settle_time_s = {s.settle_time_s:g} s: a drifting "
            f"or noisy probe, or a tolerance tighter than it resolves; {self.path})"
        )

    def _approach(self, supply: Any, target_A: float) -> None:
        """Ramp to ``target_A`` from the configured side (overshooting by ``approach_margin_A``
        and coming back when it lies on the other side of the present set point)."""
        s = self.settings
        start = self.setpoint_A or 0.0
        if s.approach == "below" and target_A < start:
            self._ramp(supply, max(target_A - s.approach_margin_A, -s.max_current_A))
        elif s.approach == "above" and target_A > start:
            self._ramp(supply, min(target_A + s.approach_margin_A, s.max_current_A))
        self._ramp(supply, target_A)

    def _ramp(self, supply: Any, target_A: float, *, stoppable: bool = True) -> None:
        """Set-point steps of at most ``ramp_step_A``, each after a pause that keeps it within
        ``ramp_A_per_s``; a stoppable ramp ends at the next step when the run stops."""
        s = self.settings
        start = self.setpoint_A or 0.0
        for level in ramp_levels(start, target_A, s.ramp_step_A):
            if stoppable:
                check_stop()
            self.sleep(abs(float(level) - start) / s.rate_A_per_s * RATE_MARGIN)
            supply.current_setpoint_A = float(level)
            self.setpoint_A = start = float(level)

    def _wait_for_current(self) -> None:
        with self.magnet.step("waiting for the magnet current") as supply:
            assert self.setpoint_A is not None
            self._check_supply(supply, self.setpoint_A)
            self._wait_current(supply, self.setpoint_A)

    @staticmethod
    def _check_supply(supply: Any, setpoint_A: float) -> None:
        """An empty error queue, and the output on in current mode at the set point: a reset or a
        refused command is an instrument fault (the bench re-runs the step), not a compliance."""
        errors = supply.check_errors()
        if errors:
            raise InstrumentError(
                f"the magnet supply reported {format_errors(errors)} while its current was set"
            )
        state = supply.output_state()
        if not (
            state.on and state.mode == "CURR" and math.isclose(state.setpoint_A, setpoint_A, abs_tol=1e-6)
        ):
            raise InstrumentError(
                f"the magnet supply is {'on' if state.on else 'off'} in {state.mode} mode at "
                f"{state.setpoint_A:.6g} A instead of {setpoint_A:.6g} A (was it reset?)"
            )

    def _wait_current(self, supply: Any, target_A: float) -> None:
        """Until the measured current is at ``target_A``: a supply that stays short of it is at
        its voltage compliance (or not driving the coil)."""
        s = self.settings
        tolerance = CURRENT_TOLERANCE * s.max_current_A
        deadline = self.clock() + s.settle_timeout_s
        while True:
            current = supply.current_A
            if abs(current - target_A) <= tolerance:
                return
            if self.clock() > deadline:
                raise FieldError(
                    f"the magnet supply sources {current:.4g} A, not the {target_A:.4g} A set, after "
                    f"settle_timeout_s = {s.settle_timeout_s:g} s: at its voltage compliance (raise "
                    f"[magnet] voltage_limit_V = {s.voltage_limit_V:g} V within the coil's rating) or not "
                    f"connected to the coil ({self.path})"
                )
            self.sleep(0.01)

    def _settled_reading(self) -> tuple[float, float]:
        """(mean, max - min) of the gaussmeter over ``settle_time_s``."""
        s = self.settings
        pause = s.settle_time_s / (MIN_READINGS - 1)
        readings = []
        with self.gaussmeter.step("reading the field") as meter:
            for n in range(MIN_READINGS):
                if n:
                    self.sleep(pause)
                readings.append(float(meter.field_T()))
        return sum(readings) / len(readings), max(readings) - min(readings)

    def calibrate(self, currents_A: list[float]) -> FieldCalibration:
        """Step the current through ``currents_A`` from the configured side (each reached by a
        ramp, then held for the settle window), read the field at each and fit
        ``field = T_per_A x current + remanence_T``; the magnet is left at the last current (the
        bench parks it when it closes)."""
        s = self.settings
        if len(currents_A) < 2:
            raise ConfigError("calibrate-field needs at least 2 currents to fit T_per_A")
        for current in currents_A:
            if not abs(current) <= s.max_current_A:
                raise SafetyLimitError(
                    f"calibration current {current:.4g} A is beyond [magnet] max_current_A = "
                    f"{s.max_current_A:g} A of {self.path}; nothing was sent"
                )
        order = sorted(currents_A, reverse=s.approach == "above")
        self.field_T = None
        self.parked = False
        fields = []
        with self.magnet.step("starting the calibration") as supply:
            if self.setpoint_A is None:
                self._take_over(supply, supply.current_A)
            if s.approach != "none":  # the first point on the same branch as the others
                side = -1.0 if s.approach == "below" else 1.0
                edge = order[0] + side * s.approach_margin_A
                self._ramp(supply, max(-s.max_current_A, min(s.max_current_A, edge)))
        for current in order:
            with self.magnet.step(f"stepping the current to {current:.4g} A") as supply:
                self._approach(supply, current)
            self._wait_for_current()
            fields.append(self._settled_reading()[0])
        slope, intercept = np.polyfit(order, fields, 1)
        rms = float(np.sqrt(np.mean((np.polyval([slope, intercept], order) - fields) ** 2)))
        return FieldCalibration(float(slope), float(intercept), rms, tuple(order), tuple(fields))

    def read_field(self) -> float:
        """One gaussmeter reading (T)."""
        with self.gaussmeter.step("reading the field") as meter:
            return float(meter.field_T())


__all__ = ["FieldCalibration", "FieldController", "FieldError", "FieldReading"]
