"""Keithley 6221/6220 precision current source: its DC output is the bias (the ``source`` role).

A current source has no voltage function: ``source_mode`` is always ``"current"`` and the
compliance (``SOUR:CURR:COMP``, 0.1 .. 105 V) is the only voltage it takes. pymeasure's
``Keithley6221`` silently truncates levels beyond its ranges and sets no terminators; this
subclass ends messages with LF, refuses what the 6221 cannot program before sending it, drains
the error queue through :class:`~.scpi.ErrorQueueMixin` (bounded) and reads the output state in
one query. Ramping is the bench's, as for the 2400. Ranges from the 6221 reference manual:
+-105 mA, compliance 0.1 .. 105 V.
"""

from __future__ import annotations

import math
from typing import Any

from pymeasure.instruments.keithley import Keithley6221 as _PymeasureKeithley6221

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import SourceModel
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import SourceOutput
from spinlab.instruments.scpi import (
    ConfirmedShutdown,
    ErrorQueueMixin,
    flag_control,
    parse_bool,
    parse_float,
    range_control,
)

KEITHLEY_6221 = SourceModel(
    max_current_A=0.105,
    max_voltage_V=105.0,
    high_power_current_A=0.105,
    high_power_max_V=105.0,
    min_compliance_V=0.1,
)


class Keithley6221(ConfirmedShutdown, ErrorQueueMixin, _PymeasureKeithley6221):
    """Keithley 6221/6220 sourcing a DC current, with LF terminators, checked levels, a bounded
    error queue and :meth:`output_state`."""

    source_enabled = flag_control(
        ":OUTP?", ":OUTP %d", """Control whether the current output is on (bool).""", "output state"
    )
    source_current = range_control(
        ":SOUR:CURR?",
        ":SOUR:CURR %g",
        """Control the DC source current in A (float, +-105 mA).""",
        [-0.105, 0.105],
        "source current",
    )
    compliance_voltage = range_control(
        ":SOUR:CURR:COMP?",
        ":SOUR:CURR:COMP %g",
        """Control the voltage compliance in V (float, 0.1 .. 105 V).""",
        [0.1, 105.0],
        "compliance",
    )

    def __init__(self, adapter, name: str = "Keithley 6221 current source", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, name, **kwargs)

    @property
    def source_mode(self) -> str:
        """Always ``"current"``: the 6221 sources nothing else."""
        return "current"

    @source_mode.setter
    def source_mode(self, mode: str) -> None:
        if mode != "current":
            raise ValueError(f"the 6221 is a current source; source_mode must be 'current', got {mode!r}")

    @property
    def source_voltage(self) -> float:
        """0: a current source programs no voltage (the compliance is :attr:`compliance_voltage`)."""
        return 0.0

    @source_voltage.setter
    def source_voltage(self, volts: float) -> None:
        if volts != 0:
            raise ValueError(f"the 6221 is a current source and cannot source {volts!r} V")

    def output_state(self) -> SourceOutput:
        """Output relay and DC current, in one query; a level beyond +-105 mA (or NaN, read as
        9.91E+37) raises InstrumentError instead of being trusted."""
        reply = self.ask(":OUTP?;:SOUR:CURR?").strip()
        fields = reply.split(";")
        if len(fields) != 2:
            raise InstrumentError(f"malformed output state from the bias source: {reply!r}")
        state = SourceOutput(
            parse_bool(fields[0], "output state"), "CURR", parse_float(fields[1], "source current"), 0.0
        )
        if not (
            math.isfinite(state.current_A)
            and abs(state.current_A) <= KEITHLEY_6221.max_current_A * (1 + 1e-9)
        ):
            raise InstrumentError(
                f"the bias source reports a source current of {state.current_A!r}, which a 6221 cannot "
                f"program (reply {reply!r})"
            )
        return state


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
KEITHLEY_6221_DRIVER = DriverSpec(
    "keithley-6221",
    "source",
    Keithley6221,
    r"Keithley Instruments( Inc\.?)?",
    r"Model 622[01]",
    KEITHLEY_6221,
    "Keithley 6221/6220 current source, its DC output as the bias",
)
