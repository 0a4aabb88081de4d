"""Keithley 2450 SourceMeter (SCPI command set) sourcing the bias current (the ``source`` role).

pymeasure's ``Keithley2450`` reads the output state but cannot switch it through a property,
sends source levels and limits unchecked (``source_current`` has no range, the limits are
silently truncated) and sets no message terminators. This subclass ends messages with LF,
refuses a level or limit the 2450 cannot program before anything is sent, drains the error queue
through :class:`~.scpi.ErrorQueueMixin` (bounded) and reads the whole output state in one query,
as the 2400 driver does. Ranges from the 2450 reference manual: +-1.05 A up to 21 V, +-105 mA up
to 210 V; the voltage limit (``:SOUR:CURR:VLIM``) is 0.02 .. 210 V.
"""

from __future__ import annotations

import math
from typing import Any

from pymeasure.instruments.keithley import Keithley2450 as _PymeasureKeithley2450

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import SourceModel
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import SourceOutput
from spinlab.instruments.scpi import (
    ConfirmedShutdown,
    ErrorQueueMixin,
    flag_control,
    parse_bool,
    parse_choice,
    parse_float,
    range_control,
)

KEITHLEY_2450 = SourceModel(
    max_current_A=1.05,
    max_voltage_V=210.0,
    high_power_current_A=0.105,
    high_power_max_V=21.0,
    min_compliance_V=0.02,
)


class Keithley2450(ConfirmedShutdown, ErrorQueueMixin, _PymeasureKeithley2450):
    """Keithley 2450 in its SCPI command set, with LF terminators, checked levels and limits,
    a bounded error queue and :meth:`output_state`."""

    source_enabled = flag_control(
        ":OUTP?", ":OUTP %d", """Control whether the source output is on (bool).""", "output state"
    )
    source_current = range_control(
        ":SOUR:CURR?",
        ":SOUR:CURR %g",
        """Control the source current in A (float, +-1.05 A).""",
        [-1.05, 1.05],
        "source current",
    )
    source_voltage = range_control(
        ":SOUR:VOLT?",
        ":SOUR:VOLT %g",
        """Control the source voltage in V (float, +-210 V).""",
        [-210.0, 210.0],
        "source voltage",
    )
    compliance_voltage = range_control(
        ":SOUR:CURR:VLIM?",
        ":SOUR:CURR:VLIM %g",
        """Control the voltage limit while sourcing current, in V (float, 0.02 .. 210 V).""",
        [0.02, 210.0],
        "voltage limit",
    )
    compliance_current = range_control(
        ":SOUR:VOLT:ILIM?",
        ":SOUR:VOLT:ILIM %g",
        """Control the current limit while sourcing voltage, in A (float, 1 nA .. 1.05 A).""",
        [1e-9, 1.05],
        "current limit",
    )

    def __init__(self, adapter, name: str = "Keithley 2450 SourceMeter", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, name, **kwargs)

    def output_state(self) -> SourceOutput:
        """Output relay, source function and programmed levels, in one query; a level the 2450
        cannot program (NaN reads as 9.91E+37) raises InstrumentError instead of being trusted."""
        reply = self.ask(":OUTP?;:SOUR:FUNC?;:SOUR:CURR?;:SOUR:VOLT?").strip()
        fields = reply.split(";")
        if len(fields) != 4:
            raise InstrumentError(f"malformed output state from the bias source: {reply!r}")
        state = SourceOutput(
            parse_bool(fields[0], "output state"),
            parse_choice(["CURR", "VOLT"], "source function")(fields[1]),
            parse_float(fields[2], "source current"),
            parse_float(fields[3], "source voltage"),
        )
        for value, limit, what in (
            (state.current_A, KEITHLEY_2450.max_current_A, "current"),
            (state.voltage_V, KEITHLEY_2450.max_voltage_V, "voltage"),
        ):
            if not (math.isfinite(value) and abs(value) <= limit * (1 + 1e-9)):
                raise InstrumentError(
                    f"the bias source reports a source {what} of {value!r}, which a 2450 cannot "
                    f"program (reply {reply!r})"
                )
        return state


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
KEITHLEY_2450_DRIVER = DriverSpec(
    "keithley-2450",
    "source",
    Keithley2450,
    r"Keithley Instruments( Inc\.?)?",
    r"Model 2450",
    KEITHLEY_2450,
    "Keithley 2450 SourceMeter (SCPI command set) sourcing the bias current",
)
