"""Output safety of the bench: limits checked before anything is sent, the bias ramped in the
station's steps, and every output switched off and read back.

Why apart from the Bench: this is the part a lab relies on when something goes wrong (a crash,
Ctrl-C, an instrument that stops answering), so it is kept small enough to read in one go.
:class:`OutputSafety` is a mixin of :class:`~spinlab.instruments.bench.Bench`: it uses the
bench's ``station``, ``links``, ``limits``, ``_lock``, ``scope_rate`` and the believed bias
``_bias_A`` (None while the source is off).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from spinlab.errors import ConfigError, InstrumentError, SafetyLimitError
from spinlab.instruments.links import FAULTS, StepFailed, one_line
from spinlab.instruments.roles import SourceOutput
from spinlab.instruments.scpi import format_errors

log = logging.getLogger("spinlab.bench")

#: How long a reconnected instrument gets to answer ``*IDN?`` (the timeout budget of a fault).
PROBE_TIMEOUT_S = 1.0
#: A source left sourcing a voltage is ramped down in this many steps (the station ramps in A).
VOLTAGE_RAMP_STEPS = 20


def ramp_levels(start_A: float, stop_A: float, max_step_A: float) -> np.ndarray:
    """Current levels from ``start_A`` (excluded) to ``stop_A`` (included), equally spaced, no
    step larger than ``max_step_A``; ``max_step_A = 0`` means one step."""
    if max_step_A <= 0 or start_A == stop_A:
        return np.array([stop_A])
    steps = max(1, math.ceil(abs(stop_A - start_A) / max_step_A - 1e-9))
    return np.linspace(start_A, stop_A, steps + 1)[1:]


class OutputSafety:
    """Bias and output handling of the bench (see the module docstring for what it relies on)."""

    station: Any
    links: dict[str, Any]
    limits: Any
    _bias_A: float | None
    _lock: Any
    field: Any  # the FieldController, or None without a magnet
    field_log: list[Any]
    scope_rate: Any

    def _configure_source(self) -> None:
        with self.links["source"].step("configuring the bias source") as source:
            source.source_enabled = False
            source.source_mode = "current"
            source.compliance_voltage = self.station.source.compliance_V
            source.source_current = 0.0
            self._source_errors(source, "configuring the bias source")

    def _check_derived(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """Checks on what the instruments would be told (after calibration); nothing sent yet."""
        st = self.station
        awg_V = drive / st.calibration.device_V_per_awg_V
        peak = float(np.max(np.abs(awg_V))) if awg_V.size else 0.0
        if not math.isfinite(peak) or peak > st.awg.max_output_V:
            raise SafetyLimitError(
                f"the drive needs {peak:.4g} V at the AWG (drive gain "
                f"{st.calibration.device_V_per_awg_V:.4g}), above [awg] max_output_V = "
                f"{st.awg.max_output_V} V; nothing was sent"
            )
        if 1.0 / dt_s > st.awg.max_sample_rate_Hz * (1 + 1e-9):
            raise ConfigError(
                f"drive sample rate {1 / dt_s:.4g} Sa/s exceeds the AWG maximum "
                f"{st.awg.max_sample_rate_Hz:.4g} Sa/s; use a longer dt_s. Nothing was sent"
            )
        self.scope_rate(dt_s)
        field = conditions.get("field_T")
        if field is not None:
            if self.field is None:  # the condition names refuse it first; kept for direct calls
                raise ConfigError(f"{st.path} has no [magnet]; it cannot set field_T")
            for value in np.unique(field):
                self.field.check(float(value))
        bias = conditions.get("bias_A")
        if bias is not None and float(np.max(np.abs(bias))) > self.limits.max_bias_A * (1 + 1e-12):
            raise SafetyLimitError(
                f"bias {float(np.max(np.abs(bias))):.4g} A exceeds max_bias_A = "
                f"{self.limits.max_bias_A:.4g} A; nothing was sent"
            )
        return awg_V

    def _set_field(self, field_T: float) -> None:
        """Set the field closed-loop, only when it changes; every set is logged with its reading."""
        if self.field.field_T == field_T:
            return
        reading = self.field.set_field(field_T)
        self.field_log.append(reading)
        log.info(
            "field %.4g T set: the gaussmeter reads %.6g T at %.6g A (%d correction(s))",
            *reading[:3],
            reading.corrections,
        )

    def _set_bias(self, bias_A: float) -> None:
        if abs(bias_A) > self.limits.max_bias_A * (1 + 1e-12):  # re-checked where it is sent
            raise SafetyLimitError(f"bias {bias_A:.4g} A exceeds max_bias_A = {self.limits.max_bias_A:.4g} A")
        if self._bias_A == bias_A:
            return
        with self.links["source"].step(f"setting the bias to {bias_A:.4g} A") as source:
            if self._bias_A is None:
                source.source_current = 0.0
                source.source_enabled = True
                self._bias_A = 0.0
            self._ramp_bias(source, self._bias_A, bias_A)
            self._source_errors(source, f"setting the bias to {bias_A:.4g} A")

    def _ramp_bias(self, source: Any, start_A: float, stop_A: float) -> None:
        """Move the source current in the station's ramp steps (one step when it sets none)."""
        settings = self.station.source
        for level in ramp_levels(start_A, stop_A, settings.ramp_step_A):
            source.source_current = level
            self._bias_A = float(level)
            if settings.ramp_pause_s:
                time.sleep(settings.ramp_pause_s)

    @staticmethod
    def _source_errors(source: Any, context: str) -> None:
        """A bias-source error must stop the record (pymeasure's check_errors only logs)."""
        errors = source.check_errors()
        if errors:
            raise InstrumentError(
                f"the bias source reported {format_errors(errors)} after {context}; check the bias "
                "source and the station's [source] settings (compliance_V, bias range)"
            )

    def _resync_source(self) -> None:
        """After a source fault: believe what the source reports, not what was last sent. Off
        (a reset, say) means the next record ramps it up again from zero."""
        with self.links["source"].step("reading back the bias") as source:
            state = source.output_state()
        if state.on and state.function == "CURR":
            self._bias_A = state.current_A
            return
        self._source_off()  # off already, or sourcing a voltage it was never told to
        self._configure_source()

    def outputs_off(self) -> list[str]:
        """Switch the AWG output and the bias source off, then ramp the field to its park value
        (the bias first: a device must not see a field sweep under bias), and read every state
        back (a query
        also guarantees the instrument has executed the writes); keep going if one fails. A
        failed switch-off gets one fresh connection; an instrument that stopped answering is
        only written to, so this cannot hang on it. Returns the outputs not confirmed off.
        Waits for a ``respond`` in progress in another thread (stop that thread first: it then
        ends at its next record)."""
        with self._lock:
            return self._outputs_off()

    def _outputs_off(self) -> list[str]:
        left = []
        outputs = (
            ("awg", "AWG output", self._awg_off),
            ("source", "bias source", self._source_off),
            ("magnet", "magnet supply", self._park_field),
        )
        for key, name, action in outputs:
            link = self.links.get(key)
            if link is None:
                continue
            try:
                try:
                    action()
                except (StepFailed, *FAULTS):
                    if not link.answering:
                        raise
                    link.reconnect(min(link.timeout_s, PROBE_TIMEOUT_S), tries=1)
                    action()
            except Exception as exc:  # the other output must still go off
                left.append(name)
                log.error(
                    "could not switch the %s off, or not confirm that it is off: %s",
                    name,
                    one_line(exc.cause if isinstance(exc, StepFailed) else exc),
                )
        return left

    def _park_field(self) -> None:
        if self.field is not None:
            self.field.park()

    def _awg_off(self) -> None:
        link = self.links["awg"]
        with link.step("switching its output off") as awg:
            awg.output_enabled = False
            if not link.answering:
                raise InstrumentError("the AWG does not answer, so OUTP OFF is unconfirmed")
            if awg.output_enabled:
                raise InstrumentError("the AWG output still reports ON after OUTP OFF")

    def _source_off(self) -> None:
        """Ramp the bias down from where the source says it is (else from where the bench last
        set it) and switch the output off."""
        link = self.links.get("source")
        if link is None:
            return
        believed, self._bias_A = self._bias_A, None
        with link.step("switching the bias off") as source:
            try:
                if not link.answering:
                    raise InstrumentError("it does not answer")
                state = source.output_state()
            except FAULTS as exc:
                log.error(
                    "could not read back the bias source (%s); ramping down from the last level set, %.4g A",
                    one_line(exc),
                    believed or 0.0,
                )
                state = SourceOutput(True, "CURR", believed or 0.0, 0.0)
            if state.on and state.function == "CURR" and state.current_A:
                if believed is None:
                    log.warning("the bias source was on at %.4g A; ramping it down", state.current_A)
                self._ramp_bias(source, state.current_A, 0.0)
            elif state.on and state.function == "VOLT" and state.voltage_V:
                log.warning("the bias source was sourcing %.4g V; ramping it down", state.voltage_V)
                steps = VOLTAGE_RAMP_STEPS if self.station.source.ramp_step_A else 1
                for level in np.linspace(state.voltage_V, 0.0, steps + 1)[1:]:
                    source.source_voltage = level
                    time.sleep(self.station.source.ramp_pause_s)
            self._bias_A = None
            source.source_current = 0.0
            source.source_enabled = False
            if not link.answering:
                raise InstrumentError("the bias source does not answer, so OUTP OFF is unconfirmed")
            if source.source_enabled:
                raise InstrumentError("the bias source output still reports ON after OUTP OFF")


__all__ = ["OutputSafety", "PROBE_TIMEOUT_S", "VOLTAGE_RAMP_STEPS", "ramp_levels"]
