"""Emulated Kepco BOP 36-12 driving an iron-core electromagnet: what a magnet controller sees.

The supply speaks the BIT 4886 SCPI subset that spinlab's ``KepcoBOP`` and pymeasure's
``KepcoBOP3612`` send (``OUTP``, ``FUNC:MODE``, ``CURR``, ``VOLT``, ``MEAS:CURR?``,
``MEAS:VOLT?``, ``*TST?``, ``DIAG:TST?``, ``SYST:BEEP``, ``SYST:ERR?``). The coil has inductance
``L`` and resistance ``R``: with the voltage limit ``V`` the current moves toward the set point
along ``L dI/dt = +-V - R I`` (exact exponential, evaluated when asked, so no thread ticks), so it
ramps at about V/L, and a set point beyond V/R is never reached (compliance). In voltage mode the
set point is V/R clamped to the programmed current. Output off: nothing drives the coil and its
current decays through R with the time constant L/R (it never jumps to 0).

The field is ``calibration_T_per_A * I`` plus a remanent term of the iron core that depends on
the side the current came from (a play hysteron of half-width ``hysteresis_A``): approached from
below the field reads ``remanence_T`` low, from above as much high, and in between it moves
linearly. With a finite ``saturation_T`` the core saturates: the linear part becomes
``saturation_T * tanh(calibration_T_per_A * I / saturation_T)``, so a field near or beyond it
cannot be reached by any current. ``field_T()`` is what the emulated gaussmeter reads.

Emulator-only diagnostics (no real BOP has them), for tests in other processes:
``DIAG:CURR:LOG?`` answers ``t0,I0,t1,I1,...``: every programmed current set point with the
emulator time in s at which it arrived (what a bus sniffer would log), so a test can check a
ramp rate; ``DIAG:CURR:LOG:CLE`` empties it; ``DIAG:FIELD?`` is the true field in T.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from spinlab.sim_backends.emulated.scpi import ScpiInstrument
from spinlab.sim_backends.emulated.scpi_syntax import (
    Arg,
    ScpiError,
    arg_bool,
    arg_choice,
    arg_float,
    format_float,
)

#: Most set points the diagnostic log keeps (oldest dropped): bounded memory, and the whole log
#: fits one reply under the emulators' 1 MB reply cap.
MAX_LOG_ENTRIES = 20_000


class EmulatedKepcoMagnet(ScpiInstrument):
    """Kepco BOP 36-12 (+-12 A, +-36 V) into an electromagnet coil.

    ``inductance_H``, ``resistance_ohm``: the coil. ``calibration_T_per_A``: field per ampere.
    ``remanence_T``, ``hysteresis_A``: the iron core's remanent field and the current over which
    it swaps sides. ``saturation_T``: where the core saturates (inf: never). ``clock``: time
    source in s (monotonic by default; tests may step it).
    """

    IDN = "KEPCO,BOP 36-12M,E1234,4886-EMULATED"
    MAX_CURRENT_A = 12.0
    MAX_VOLTAGE_V = 36.0

    def __init__(
        self,
        *,
        inductance_H: float = 0.5,
        resistance_ohm: float = 1.0,
        calibration_T_per_A: float = 0.1,
        remanence_T: float = 2e-3,
        hysteresis_A: float = 0.05,
        saturation_T: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        lock: threading.RLock | None = None,
    ) -> None:
        for name, value in (
            ("inductance_H", inductance_H),
            ("resistance_ohm", resistance_ohm),
            ("hysteresis_A", hysteresis_A),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(calibration_T_per_A) and calibration_T_per_A != 0):
            raise ValueError(f"calibration_T_per_A must be finite and non-zero, got {calibration_T_per_A!r}")
        if not saturation_T > 0:
            raise ValueError(f"saturation_T must be > 0 (math.inf: no saturation), got {saturation_T!r}")
        if not (math.isfinite(remanence_T) and remanence_T >= 0):
            raise ValueError(f"remanence_T must be a finite number >= 0, got {remanence_T!r}")
        self.inductance_H = float(inductance_H)
        self.resistance_ohm = float(resistance_ohm)
        self.calibration_T_per_A = float(calibration_T_per_A)
        self.remanence_T = float(remanence_T)
        self.hysteresis_A = float(hysteresis_A)
        self.saturation_T = float(saturation_T)
        self.clock = clock
        self._t0 = clock()
        # the coil keeps its current and the core its magnetisation across *RST
        self._current_A = 0.0
        self._play_A = 0.0  # play-hysteron state: lags the current by at most hysteresis_A
        self._t_last = self._t0
        #: (emulator time s, set point A) of every programmed current since the last clear
        self.current_log: deque[tuple[float, float]] = deque(maxlen=MAX_LOG_ENTRIES)
        super().__init__(lock)

    # --- physics -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self._advance()
        self.mode = "VOLT"
        self.setpoint_A = 0.0
        self.voltage_V = 0.0
        self.output_on = False

    def _target(self) -> tuple[float, float]:
        """(current the supply drives toward, voltage it may apply) in the present state."""
        if not self.output_on:
            return 0.0, 0.0  # nothing drives the coil: its current decays through R
        if self.mode == "CURR":
            return self.setpoint_A, abs(self.voltage_V)
        limit = abs(self.setpoint_A)
        return max(-limit, min(limit, self.voltage_V / self.resistance_ohm)), abs(self.voltage_V)

    def _advance(self) -> None:
        """Move the coil current from the last update to now along L dI/dt = +-V - R I."""
        now = self.clock()
        dt = max(now - self._t_last, 0.0)
        self._t_last = now
        if not dt or not hasattr(self, "mode"):
            return
        target, volts = self._target()
        current = self._current_A
        if target != current:
            asymptote = math.copysign(volts / self.resistance_ohm, target - current)
            decay = math.exp(-dt * self.resistance_ohm / self.inductance_H)
            moved = asymptote + (current - asymptote) * decay
            # stop at the set point once reached (the supply regulates there)
            current = min(moved, target) if target > current else max(moved, target)
        self._set_coil_current(current)

    def _set_coil_current(self, current: float) -> None:
        self._current_A = current
        w = self.hysteresis_A
        self._play_A = min(max(self._play_A, current - w), current + w)

    def current_A(self) -> float:
        """The coil current now."""
        with self.lock:
            self._advance()
            return self._current_A

    def field_T(self) -> float:
        """The field at the sample now: calibration times current, plus the core's remanence
        (low when the current came from below, high when it came from above)."""
        with self.lock:
            self._advance()
            side = (self._current_A - self._play_A) / self.hysteresis_A  # +1 rising .. -1 falling
            linear = self.calibration_T_per_A * self._current_A
            if math.isfinite(self.saturation_T):
                linear = self.saturation_T * math.tanh(linear / self.saturation_T)
            return linear - self.remanence_T * side

    def terminal_voltage_V(self) -> float:
        """L dI/dt + R I across the coil now."""
        with self.lock:
            self._advance()
            target, volts = self._target()
            if not self.output_on:
                return 0.0
            if target == self._current_A:
                return self.resistance_ohm * self._current_A
            return math.copysign(volts, target - self._current_A)

    # --- command tree ------------------------------------------------------------------------
    def _register(self) -> None:
        self.command("OUTPut[:STATe]", lambda a: self._change("output_on", arg_bool(self._one(a))))
        self.query("OUTPut[:STATe]", lambda a: self._no_args(a) or str(int(self.output_on)))
        self.command(
            "[SOURce]:FUNCtion:MODE",
            lambda a: self._change("mode", arg_choice(self._one(a), ("CURRent", "VOLTage"))),
        )
        self.query("[SOURce]:FUNCtion:MODE", lambda a: self._no_args(a) or str(int(self.mode == "CURR")))
        self.command("[SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._set_current)
        self.query(
            "[SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: self._no_args(a) or format_float(self.setpoint_A),
        )
        self.command("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._set_voltage)
        self.query(
            "[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            lambda a: self._no_args(a) or format_float(self.voltage_V),
        )
        self.query(
            "MEASure[:SCALar]:CURRent[:DC]", lambda a: self._no_args(a) or format_float(self.current_A())
        )
        self.query(
            "MEASure[:SCALar]:VOLTage[:DC]",
            lambda a: self._no_args(a) or format_float(self.terminal_voltage_V()),
        )
        self.query("*TST", lambda a: self._no_args(a) or "0")
        self.query("DIAGnostic:TST", lambda a: self._no_args(a) or "0")
        self.command("SYSTem:BEEP[:IMMediate]", lambda a: self._no_args(a))
        self.command("SYSTem:REMote", self._remote)
        self.query("DIAGnostic:CURRent:LOG", lambda a: self._no_args(a) or self._log_reply())
        self.command("DIAGnostic:CURRent:LOG:CLEar", lambda a: self._no_args(a) or self.current_log.clear())
        self.query("DIAGnostic:FIELD", lambda a: self._no_args(a) or format_float(self.field_T()))

    def _remote(self, args: Sequence[Arg]) -> None:
        """``SYST:REM ON|OFF`` (BOP 1KW): checked; over the bus the unit is remote anyway."""
        arg_bool(self._one(args))

    def _change(self, name: str, value: object) -> None:
        self._advance()  # the coil moved under the old settings until now
        setattr(self, name, value)

    def _set_current(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": -self.MAX_CURRENT_A, "MAXimum": self.MAX_CURRENT_A, "DEFault": 0.0}
        )
        if not abs(value) <= self.MAX_CURRENT_A:
            raise ScpiError(-222, f"current {value:g} A outside +-{self.MAX_CURRENT_A:g} A")
        self._change("setpoint_A", value)
        self.current_log.append((self._t_last - self._t0, value))

    def _set_voltage(self, args: Sequence[Arg]) -> None:
        value = arg_float(
            self._one(args), {"MINimum": -self.MAX_VOLTAGE_V, "MAXimum": self.MAX_VOLTAGE_V, "DEFault": 0.0}
        )
        if not abs(value) <= self.MAX_VOLTAGE_V:
            raise ScpiError(-222, f"voltage {value:g} V outside +-{self.MAX_VOLTAGE_V:g} V")
        self._change("voltage_V", value)

    def _log_reply(self) -> str:
        return ",".join(f"{t:.6f},{format_float(i)}" for t, i in self.current_log)
