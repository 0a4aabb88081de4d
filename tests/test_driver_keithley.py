"""Keithley2400 (pymeasure's driver with LF terminators and a bounded error queue): the exact
SCPI of the one-query output state, and readings a 2400 cannot produce."""

import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import InstrumentError
from spinlab.instruments.keithley import Keithley2400, SourceState

INIT = (":FORMAT:ELEMENTS VOLTAGE, CURRENT, RESISTANCE, TIME, STATUS", None)  # pymeasure, on open
STATE = ":OUTP?;:SOUR:FUNC?;:SOUR:CURR?;:SOUR:VOLT?"


def test_output_state_in_one_query():
    with expected_protocol(Keithley2400, [INIT, (STATE, "1;CURR;+7.50000000000000E-03;+0.0E+00")]) as smu:
        assert smu.output_state() == SourceState(True, "CURR", 7.5e-3, 0.0)


@pytest.mark.parametrize(
    "reply,what",
    [
        ("1;CURR;+9.91E+37;+0.0E+00", "source current"),  # SCPI NaN
        ("0;VOLT;+0.0E+00;+300.0", "source voltage"),
        ("1;CURR;7.5e-3", "malformed"),
        ("2;CURR;0;0", "output state"),
    ],
)
def test_impossible_output_state_is_refused(reply, what):
    with expected_protocol(Keithley2400, [INIT, (STATE, reply)]) as smu:
        with pytest.raises(InstrumentError, match=what):
            smu.output_state()


def test_error_queue_is_bounded_and_raises():
    stuck = [("SYST:ERR?", '-350,"Queue overflow"')] * 64
    with expected_protocol(
        Keithley2400,
        [INIT, ("SYST:ERR?", '-222,"Data out of range"'), ("SYST:ERR?", '+0,"No error"')] + stuck,
    ) as smu:
        with pytest.raises(InstrumentError, match="-222"):
            smu.raise_errors("setting the bias")
        with pytest.raises(InstrumentError, match="did not empty"):
            smu.check_errors()


def test_source_enabled_keeps_pymeasures_bytes_and_refuses_nan():
    with expected_protocol(
        Keithley2400,
        [INIT, ("OUTPUT 1", None), ("OUTPUT 0", None), ("OUTPUT?", "1"), ("OUTPUT?", "+9.91E+37")],
    ) as smu:
        smu.source_enabled = True
        smu.source_enabled = False
        assert smu.source_enabled is True
        with pytest.raises(InstrumentError, match="output state"):
            smu.source_enabled  # noqa: B018 - the read is the test


def _shutdown(off_reply: str) -> list:
    """pymeasure's shutdown (ramp the set current to 0 in 30 steps, abort, output off), then the
    read-back that proves the 2400 acted on it."""
    ramp = [(":SOURCE:CURRENT 0", None)] * 30
    return [
        INIT,
        (":SOURCE:FUNCTION?", "CURR"),
        (":SOURCE:CURRENT?", "0"),
        *ramp,
        (":ABOR", None),
        ("OUTPUT 0", None),
        (STATE, off_reply),
    ]


def test_shutdown_reads_the_output_back():
    with expected_protocol(Keithley2400, _shutdown("0;CURR;+0.0E+00;+0.0E+00")) as smu:
        smu.shutdown()


def test_a_source_still_on_after_shutdown_is_reported():
    with expected_protocol(Keithley2400, _shutdown("1;CURR;+0.0E+00;+0.0E+00")) as smu:
        with pytest.raises(InstrumentError, match="still reports ON"):
            smu.shutdown()
