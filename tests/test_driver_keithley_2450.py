"""Keithley2450 (pymeasure's driver in the SCPI command set, with LF terminators, checked levels
and a bounded error queue): the exact SCPI, written from the 2450 reference manual."""

import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import InstrumentError
from spinlab.instruments.keithley_2450 import KEITHLEY_2450_DRIVER, Keithley2450
from spinlab.instruments.roles import SourceOutput, missing_members

STATE = ":OUTP?;:SOUR:FUNC?;:SOUR:CURR?;:SOUR:VOLT?"


def test_the_bench_configuration_and_bias_in_scpi():
    with expected_protocol(
        Keithley2450,
        [
            (":OUTP 0", None),
            (":SOUR:FUNC CURR", None),
            (":SOUR:CURR:VLIM 2", None),
            (":SOUR:CURR 0.0075", None),
            (":OUTP 1", None),
            (":OUTP?", "1"),
            (":SOUR:CURR?", "+7.500000E-03"),
            (":SOUR:CURR:VLIM?", "+2.000000E+00"),
        ],
    ) as smu:
        smu.source_enabled = False
        smu.source_mode = "current"
        smu.compliance_voltage = 2.0
        smu.source_current = 7.5e-3
        smu.source_enabled = True
        assert smu.source_enabled is True
        assert smu.source_current == 7.5e-3
        assert smu.compliance_voltage == 2.0


def test_output_state_in_one_query():
    with expected_protocol(Keithley2450, [(STATE, "1;CURR;+7.500000E-03;+0.000000E+00")]) as smu:
        assert smu.output_state() == SourceOutput(True, "CURR", 7.5e-3, 0.0)


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        ("1;CURR;+9.91E+37;+0.0E+00", "source current"),
        ("0;VOLT;+0.0E+00;+300.0", "source voltage"),
        ("1;CURR;7.5e-3", "malformed"),
        ("1;RES;0;0", "source function"),
    ],
)
def test_impossible_output_state_is_refused(reply, what):
    with expected_protocol(Keithley2450, [(STATE, reply)]) as smu, pytest.raises(InstrumentError, match=what):
        smu.output_state()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("source_current", 1.2),
        ("source_voltage", -250.0),
        ("compliance_voltage", 0.01),
        ("compliance_voltage", 300),
    ],
)
def test_levels_and_limits_beyond_the_2450_are_refused_before_sending(setting, value):
    with expected_protocol(Keithley2450, []) as smu, pytest.raises(ValueError):
        setattr(smu, setting, value)


def test_error_queue_is_drained_and_raises():
    with (
        expected_protocol(
            Keithley2450, [("SYST:ERR?", '-222,"Parameter data out of range"'), ("SYST:ERR?", '0,"No error"')]
        ) as smu,
        pytest.raises(InstrumentError, match="-222"),
    ):
        smu.raise_errors("setting the bias")


def test_registration():
    assert missing_members(Keithley2450, "source") == []
    assert KEITHLEY_2450_DRIVER.serves("KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b")
    assert not KEITHLEY_2450_DRIVER.serves("KEITHLEY INSTRUMENTS INC.,MODEL 2400,1,C32")
