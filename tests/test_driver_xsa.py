"""KeysightXSeries driver: exact SCPI (pymeasure expected_protocol), the REAL,32 trace block and
its checks (length against the sweep points, reply stream in step, overload / uncal)."""

import struct

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.keysight_xsa import KeysightXSeries

NO_ERROR = '+0,"No error"'
SETTINGS = [
    (":SENSe:FREQuency:CENTer?", "+2.00000000E+07"),
    (":SENSe:FREQuency:SPAN?", "+2.00000000E+06"),
    (":SENSe:BANDwidth:RESolution?", "+1.00000000E+04"),
    (":SENSe:SWEep:POINts?", "+4"),
]
POWERS = [-80.0, -20.5, -60.25, -90.0]
BLOCK = b"#216" + struct.pack("<4f", *POWERS) + b"\n"


def test_configure_sends_the_programmers_guide_commands():
    with expected_protocol(
        KeysightXSeries,
        [
            (":INITiate:CONTinuous 0", None),
            (":UNIT:POWer DBM", None),
            (":SENSe:FREQuency:CENTer 20000000", None),
            (":SENSe:FREQuency:SPAN 2000000", None),
            (":SENSe:BANDwidth:RESolution 10000", None),
            (":SENSe:BANDwidth:VIDeo 10000", None),
            (":SENSe:SWEep:POINts 4", None),
            (":DISPlay:WINDow:TRACe:Y:SCALe:RLEVel -10", None),
            (":SENSe:AVERage:COUNt 20", None),
            (":SENSe:AVERage:STATe 1", None),
            (":FORMat:TRACe:DATA REAL,32;:FORMat:BORDer SWAPped", None),
            (":SYSTem:ERRor?", NO_ERROR),
            *SETTINGS,
        ],
    ) as sa:
        got = sa.configure(20e6, 2e6, 10e3, points=4, reference_level_dBm=-10, averages=20)
    assert got == {"center_Hz": 20e6, "span_Hz": 2e6, "rbw_Hz": 10e3, "points": 4}


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"center_Hz": 0.0, "span_Hz": 1e6, "rbw_Hz": 1e3}, "center_Hz"),
        ({"center_Hz": 1e6, "span_Hz": 4e6, "rbw_Hz": 1e3}, "below 0 Hz"),
        ({"center_Hz": 1e7, "span_Hz": 1e6, "rbw_Hz": float("nan")}, "rbw_Hz"),
        ({"center_Hz": 1e7, "span_Hz": 1e6, "rbw_Hz": 1e3, "points": 1}, "points"),
        ({"center_Hz": 1e7, "span_Hz": 1e6, "rbw_Hz": 1e3, "averages": 0}, "averages"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_sent(kwargs, what):
    with expected_protocol(KeysightXSeries, []) as sa, pytest.raises(ConfigError, match=what):
        sa.configure(**kwargs)


def test_out_of_range_value_is_refused_by_the_control():
    with expected_protocol(KeysightXSeries, []) as sa, pytest.raises(ValueError):
        sa.rbw_Hz = 20e6


def test_measure_sweeps_and_reads_the_real32_trace():
    with expected_protocol(
        KeysightXSeries,
        [
            (":INITiate:IMMediate;*OPC?", "1"),
            *SETTINGS,
            (":TRACe:DATA? TRACE1", BLOCK),
            ("*OPC?", "1"),
            (":STATus:QUEStionable:INTegrity:CONDition?", "+0"),
        ],
    ) as sa:
        trace = sa.measure()
    np.testing.assert_array_equal(trace.power_dBm, np.array(POWERS, dtype=np.float32))
    np.testing.assert_allclose(trace.frequency_Hz, [19e6, 19e6 + 2e6 / 3, 19e6 + 4e6 / 3, 21e6])
    assert trace.rbw_Hz == 10e3


def test_block_shorter_than_the_sweep_points_raises():
    short = b"#212" + struct.pack("<3f", *POWERS[:3]) + b"\n"
    with (
        expected_protocol(KeysightXSeries, [*SETTINGS, (":TRACe:DATA? TRACE1", short)]) as sa,
        pytest.raises(InstrumentError, match="12 bytes but 16 were expected"),
    ):
        sa.read_trace()


def test_block_that_declares_more_than_arrives_raises():
    broken = b"#216" + struct.pack("<3f", *POWERS[:3]) + b"\n"
    with (
        expected_protocol(KeysightXSeries, [*SETTINGS, (":TRACe:DATA? TRACE1", broken)]) as sa,
        pytest.raises(InstrumentError, match="declares 16 bytes"),
    ):
        sa.read_trace()


@pytest.mark.parametrize("condition, what", [("+16", "input overload"), ("+8", "uncalibrated")])
def test_overload_and_uncal_raise(condition, what):
    with (
        expected_protocol(
            KeysightXSeries,
            [
                *SETTINGS,
                (":TRACe:DATA? TRACE1", BLOCK),
                ("*OPC?", "1"),
                (":STATus:QUEStionable:INTegrity:CONDition?", condition),
            ],
        ) as sa,
        pytest.raises(InstrumentError, match=what),
    ):
        sa.read_trace()


def test_sweep_reply_other_than_1_raises():
    with (
        expected_protocol(KeysightXSeries, [(":INITiate:IMMediate;*OPC?", "0")]) as sa,
        pytest.raises(InstrumentError, match="INITiate"),
    ):
        sa.sweep()


def test_malformed_setting_reply_quotes_it():
    with (
        expected_protocol(KeysightXSeries, [(":SENSe:SWEep:POINts?", "lots")]) as sa,
        pytest.raises(InstrumentError, match="lots"),
    ):
        _ = sa.sweep_points
