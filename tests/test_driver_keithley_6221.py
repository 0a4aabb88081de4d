"""Keithley6221 (a DC current source: pymeasure's driver with LF terminators, checked levels and
a bounded error queue): the exact SCPI, written from the 6221 reference manual."""

import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import InstrumentError
from spinlab.instruments.keithley_6221 import KEITHLEY_6221_DRIVER, Keithley6221
from spinlab.instruments.roles import SourceOutput, missing_members

STATE = ":OUTP?;:SOUR:CURR?"


def test_the_bench_configuration_and_bias_in_scpi():
    with expected_protocol(
        Keithley6221,
        [
            (":OUTP 0", None),
            (":SOUR:CURR:COMP 2", None),
            (":SOUR:CURR 0.0075", None),
            (":OUTP 1", None),
            (":OUTP?", "1"),
            (":SOUR:CURR:COMP?", "+2.000000E+00"),
        ],
    ) as src:
        src.source_enabled = False
        src.source_mode = "current"  # the only mode: nothing to send
        src.compliance_voltage = 2.0
        src.source_current = 7.5e-3
        src.source_enabled = True
        assert src.source_enabled is True
        assert src.compliance_voltage == 2.0
        assert src.source_voltage == 0.0


def test_output_state_in_one_query():
    with expected_protocol(Keithley6221, [(STATE, "1;-2.500000E-03")]) as src:
        assert src.output_state() == SourceOutput(True, "CURR", -2.5e-3, 0.0)


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        ("1;+9.91E+37", "source current"),
        ("1;0.2", "source current"),
        ("1", "malformed"),
        ("2;0", "output state"),
    ],
)
def test_impossible_output_state_is_refused(reply, what):
    with expected_protocol(Keithley6221, [(STATE, reply)]) as src, pytest.raises(InstrumentError, match=what):
        src.output_state()


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("source_current", 0.2, "not in range"),
        ("compliance_voltage", 0.05, "not in range"),
        ("compliance_voltage", 200.0, "not in range"),
        ("source_mode", "voltage", "current source"),
        ("source_voltage", 1.0, "current source"),
    ],
)
def test_what_a_6221_cannot_do_is_refused_before_sending(setting, value, match):
    with expected_protocol(Keithley6221, []) as src, pytest.raises(ValueError, match=match):
        setattr(src, setting, value)


def test_error_queue_is_bounded():
    stuck = [("SYST:ERR?", '-350,"Queue overflow"')] * 64
    with expected_protocol(Keithley6221, stuck) as src, pytest.raises(InstrumentError, match="did not empty"):
        src.check_errors()


def test_registration():
    assert missing_members(Keithley6221, "source") == []
    assert KEITHLEY_6221_DRIVER.serves("KEITHLEY INSTRUMENTS INC.,MODEL 6221,4143210,D03  /700x")
    assert KEITHLEY_6221_DRIVER.serves("KEITHLEY INSTRUMENTS INC.,MODEL 6220,1,D03")
