"""Keithley 2400 SourceMeter: pymeasure's driver, made safe to leave unattended.

pymeasure's ``Keithley2400`` sets no message terminators (a raw-socket GPIB-LAN bridge then only
returns on timeout), reads the error queue until it empties, forever if it never does, and
answers a malformed output-state reply with a bare ``KeyError``. This subclass ends messages
with LF, drains the queue through :class:`~.scpi.ErrorQueueMixin` (bounded, with
``raise_errors``), validates the output state it reads, and reads the whole output state in one
query so the bench can tell where the bias really is before it moves it (after a crash, a reset
or a reconnect).
"""

from __future__ import annotations

import math
from typing import Any

from pymeasure.instruments.keithley import Keithley2400 as _PymeasureKeithley2400

from spinlab.errors import InstrumentError
from spinlab.instruments.capabilities import KEITHLEY_2400
from spinlab.instruments.drivers import DriverSpec
from spinlab.instruments.roles import SourceOutput
from spinlab.instruments.scpi import (
    ConfirmedShutdown,
    ErrorQueueMixin,
    flag_control,
    parse_bool,
    parse_choice,
    parse_float,
)

#: The output as the instrument reports it: relay, source function and both levels (the source role's).
SourceState = SourceOutput


class Keithley2400(ConfirmedShutdown, ErrorQueueMixin, _PymeasureKeithley2400):
    """Keithley 2400 (the ``source`` role) with LF terminators, a bounded error queue and
    :meth:`output_state`."""

    source_enabled = flag_control(
        "OUTPUT?",
        "OUTPUT %d",
        """Control whether the source output is on (bool); a reply other than 0/1 raises
        InstrumentError.""",
        "output state",
    )

    def __init__(self, adapter, name: str = "Keithley 2400 SourceMeter", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, name, **kwargs)

    def output_state(self) -> SourceState:
        """Output relay, source function and programmed levels, in one query. A level the 2400
        cannot source (NaN reads as 9.91E+37) raises InstrumentError instead of being trusted."""
        reply = self.ask(":OUTP?;:SOUR:FUNC?;:SOUR:CURR?;:SOUR:VOLT?").strip()
        fields = reply.split(";")
        if len(fields) != 4:
            raise InstrumentError(f"malformed output state from the bias source: {reply!r}")
        state = SourceState(
            parse_bool(fields[0], "output state"),
            parse_choice(["CURR", "VOLT"], "source function")(fields[1]),
            parse_float(fields[2], "source current"),
            parse_float(fields[3], "source voltage"),
        )
        for value, limit, what in (
            (state.current_A, KEITHLEY_2400.max_current_A, "current"),
            (state.voltage_V, KEITHLEY_2400.max_voltage_V, "voltage"),
        ):
            if not (math.isfinite(value) and abs(value) <= limit * (1 + 1e-9)):
                raise InstrumentError(
                    f"the bias source reports a source {what} of {value!r}, which a 2400 "
                    f"cannot program (reply {reply!r})"
                )
        return state


# --- registration (entry-point group spinlab.drivers) ----------------------------------------
KEITHLEY_2400_DRIVER = DriverSpec(
    "keithley-2400",
    "source",
    Keithley2400,
    r"Keithley Instruments( Inc\.?)?",
    r"Model 240[01]",
    KEITHLEY_2400,
    "Keithley 2400/2401 SourceMeter sourcing the bias current",
)
