"""Kepco BOP bipolar power supply (BIT 4886 / BOP-GL / BOP 1KW SCPI) driving a magnet coil.

The magnet role runs the BOP in current mode: the set point is the coil current and ``VOLT`` is
then the voltage compliance, which with the coil's inductance caps how fast the current can move
(dI/dt <= V/L). Commands follow the Kepco SCPI manuals and pymeasure's ``KepcoBOP3612``
(``FUNC:MODE?`` answers 0 for voltage mode, 1 for current mode). Every reply is validated, so a
garbled or NaN level raises :class:`~spinlab.errors.InstrumentError` instead of moving a magnet
from a wrong starting point; :meth:`KepcoBOP.output_state` is what a controller reads on open to
ramp from where the coil really is (after a crash the supply may still carry current).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.validators import strict_discrete_set, strict_range

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import KEPCO_BOP_36_12
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import MagnetSupplyOutput
from spinlab.instruments.scpi import (
    RAW_REPLY,
    ConfirmedShutdown,
    ErrorQueueMixin,
    ensure_termination,
    flag_control,
    float_reply,
    parse_bool,
    parse_float,
)

#: ``FUNC:MODE?`` replies (Kepco manual: 0 = voltage mode, 1 = current mode).
_MODE_REPLIES = {"0": "VOLT", "1": "CURR", "VOLT": "VOLT", "CURR": "CURR"}


def _mode_reply(reply: Any) -> str:
    text = str(reply).strip().upper()
    text = text.lstrip("+") if text.lstrip("+") in ("0", "1") else text
    if text not in _MODE_REPLIES:
        raise InstrumentError(f"malformed function mode from the instrument: expected 0/1, got {reply!r}")
    return _MODE_REPLIES[text]


def _finite_reply(what: str) -> Callable[[Any], float]:
    """A level that must be a finite number: SCPI's NaN (9.91E+37) raises instead of reading as inf."""

    def process(reply: Any) -> float:
        value = parse_float(reply, what)
        if not math.isfinite(value):
            raise InstrumentError(f"malformed {what} from the instrument: not a number ({reply!r})")
        return value

    return process


#: what :meth:`KepcoBOP.output_state` returns (the magnet role's output state)
MagnetSupplyState = MagnetSupplyOutput


class KepcoBOP(ConfirmedShutdown, ErrorQueueMixin, SCPIMixin, Instrument):
    """Kepco BOP in current mode. Units: A, V. ``max_current_A``/``max_voltage_V``: the model's
    rating (a BOP 36-12 by default); values beyond it are refused before anything is sent."""

    def __init__(
        self,
        adapter,
        name: str = "Kepco BOP bipolar power supply",
        max_current_A: float = 12.0,
        max_voltage_V: float = 36.0,
        **kwargs: Any,
    ) -> None:
        if not (max_current_A > 0 and max_voltage_V > 0):
            raise ValueError(f"the BOP rating must be positive, got {max_current_A!r} A, {max_voltage_V!r} V")
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, name, **kwargs)
        ensure_termination(self.adapter)
        self.max_current_A = float(max_current_A)
        self.max_voltage_V = float(max_voltage_V)
        # the declarative validators read their range from the instance
        self.current_setpoint_A_values = [-self.max_current_A, self.max_current_A]
        self.voltage_limit_V_values = [0.0, self.max_voltage_V]

    output_enabled = flag_control(
        "OUTP?", "OUTP %d", """Control whether the output is on (bool).""", "output state"
    )
    function_mode = Instrument.control(
        "FUNC:MODE?",
        "FUNC:MODE %s",
        """Control the operating mode: "CURR" (current mode, the magnet's) or "VOLT".""",
        validator=strict_discrete_set,
        values=["CURR", "VOLT"],
        get_process=_mode_reply,
        **RAW_REPLY,
    )
    current_setpoint_A = Instrument.control(
        "CURR?",
        "CURR %.6E",
        """Control the programmed current in A (the output in current mode), within the rating.""",
        validator=strict_range,
        values=[-12.0, 12.0],
        dynamic=True,
        get_process=_finite_reply("current set point"),
        **RAW_REPLY,
    )
    voltage_limit_V = Instrument.control(
        "VOLT?",
        "VOLT %.6E",
        """Control the programmed voltage in V: in current mode the compliance, which limits the
        coil's dI/dt to V/L.""",
        validator=strict_range,
        values=[0.0, 36.0],
        dynamic=True,
        get_process=_finite_reply("voltage limit"),
        **RAW_REPLY,
    )
    current_A = Instrument.measurement(
        "MEAS:CURR?",
        """Measure the output current in A (lags the set point while an inductive load ramps).""",
        get_process=_finite_reply("measured current"),
        **RAW_REPLY,
    )
    voltage_V = Instrument.measurement(
        "MEAS:VOLT?",
        """Measure the output voltage in V (L dI/dt + R I across a coil).""",
        get_process=_finite_reply("measured voltage"),
        **RAW_REPLY,
    )
    self_test = Instrument.measurement(
        "*TST?",
        """Get the interface self-test result (0: passed; bits as in the manual).""",
        get_process=float_reply("self-test result"),
        **RAW_REPLY,
    )

    def output_state(self) -> MagnetSupplyState:
        """Output, mode, set point, voltage limit and the measured current. A level beyond the
        rating (a NaN reads as 9.9E+37) raises InstrumentError instead of being trusted."""
        state = MagnetSupplyState(
            parse_bool(self.ask("OUTP?"), "output state"),
            _mode_reply(self.ask("FUNC:MODE?")),
            parse_float(self.ask("CURR?"), "current set point"),
            parse_float(self.ask("VOLT?"), "voltage limit"),
            parse_float(self.ask("MEAS:CURR?"), "measured current"),
        )
        for value, limit, what in (
            (state.setpoint_A, self.max_current_A, "current set point"),
            (state.current_A, self.max_current_A, "measured current"),
            (state.voltage_limit_V, self.max_voltage_V, "voltage limit"),
        ):
            if not (math.isfinite(value) and abs(value) <= limit * 1.01):
                raise InstrumentError(
                    f"{self.name} reports a {what} of {value!r}, beyond its "
                    f"{self.max_current_A:g} A / {self.max_voltage_V:g} V rating"
                )
        return state

    def enter_current_mode(self, voltage_limit_V: float) -> None:
        """Current mode with the given compliance, set point 0 and the output on; errors raise."""
        self.function_mode = "CURR"
        self.voltage_limit_V = voltage_limit_V
        self.current_setpoint_A = 0.0
        self.output_enabled = True
        self.raise_errors("entering current mode")

    def shutdown(self) -> None:
        """Set point 0, then output off. The supply itself then discharges the coil at its
        voltage limit; ramping at the coil's safe rate is the magnet controller's job, before this."""
        self.current_setpoint_A = 0.0
        self.output_enabled = False
        super().shutdown()


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
KEPCO_BOP_DRIVER = DriverSpec(
    "kepco-bop",
    "magnet",
    KepcoBOP,
    r"KEPCO",
    r"(BOP|BIT).*",
    KEPCO_BOP_36_12,
    "Kepco BOP bipolar supply in current mode driving a magnet coil (rating of a BOP 36-12)",
)
