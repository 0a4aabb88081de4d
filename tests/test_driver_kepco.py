"""KepcoBOP (current mode for a magnet coil): the exact SCPI it sends and the replies it refuses."""

import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import InstrumentError
from spinlab.instruments.kepco_bop import KepcoBOP, MagnetSupplyState

NO_ERROR = ("SYST:ERR?", '0,"No error"')
STATE = ["OUTP?", "FUNC:MODE?", "CURR?", "VOLT?", "MEAS:CURR?"]


def test_enter_current_mode_bytes():
    with expected_protocol(
        KepcoBOP,
        [("FUNC:MODE CURR", None), ("VOLT 2.000000E+01", None), ("CURR 0.000000E+00", None), ("OUTP 1", None)]
        + [NO_ERROR],
    ) as bop:
        bop.enter_current_mode(20.0)


def test_set_points_and_readbacks():
    with expected_protocol(
        KepcoBOP,
        [
            ("CURR -2.500000E+00", None),
            ("CURR?", "-2.50000E+00"),
            ("MEAS:CURR?", "-2.49817E+00"),
            ("MEAS:VOLT?", "1.20000E+01"),
            ("FUNC:MODE?", "1"),
            ("FUNC:MODE?", "0"),
            ("OUTP?", "1"),
            ("VOLT?", "2.00000E+01"),
            ("*IDN?", "KEPCO,BOP 36-12M,E1234,4886-1.0"),
        ],
    ) as bop:
        bop.current_setpoint_A = -2.5
        assert bop.current_setpoint_A == -2.5
        assert bop.current_A == pytest.approx(-2.49817)
        assert bop.voltage_V == 12.0
        assert bop.function_mode == "CURR"
        assert bop.function_mode == "VOLT"
        assert bop.output_enabled is True
        assert bop.voltage_limit_V == 20.0
        assert bop.id.startswith("KEPCO,BOP 36-12")


@pytest.mark.parametrize("name,value", [("current_setpoint_A", 12.5), ("voltage_limit_V", 40.0)])
def test_beyond_the_rating_is_refused_before_anything_is_sent(name, value):
    with expected_protocol(KepcoBOP, []) as bop, pytest.raises(ValueError):
        setattr(bop, name, value)


def test_a_smaller_model_refuses_its_own_limits():
    with expected_protocol(
        KepcoBOP, [("CURR 4.000000E+00", None)], max_current_A=4.0, max_voltage_V=50.0
    ) as bop:
        bop.current_setpoint_A = 4.0
        with pytest.raises(ValueError):
            bop.current_setpoint_A = 4.5


def test_output_state_reads_where_the_coil_is():
    replies = ["1", "1", "3.00000E+00", "2.00000E+01", "2.99990E+00"]
    with expected_protocol(KepcoBOP, list(zip(STATE, replies))) as bop:
        assert bop.output_state() == MagnetSupplyState(True, "CURR", 3.0, 20.0, 2.9999)


@pytest.mark.parametrize(
    "replies,what",  # the replies up to the one that is refused
    [
        (["1", "1", "9.9E+37", "20", "3"], "current set point"),  # SCPI NaN
        (["1", "1", "3", "20", "-40"], "measured current"),
        (["1", "1", "3", "junk"], "voltage limit"),
        (["1", "2"], "function mode"),
        (["ON?"], "output state"),
    ],
)
def test_impossible_output_state_is_refused(replies, what):
    with (
        expected_protocol(KepcoBOP, list(zip(STATE, replies))) as bop,
        pytest.raises(InstrumentError, match=what),
    ):
        bop.output_state()


@pytest.mark.parametrize("query,name", [("MEAS:CURR?", "current_A"), ("CURR?", "current_setpoint_A")])
def test_a_nan_level_is_refused(query, name):
    with (
        expected_protocol(KepcoBOP, [(query, "+9.91E+37")]) as bop,
        pytest.raises(InstrumentError, match="not a number"),
    ):
        getattr(bop, name)


def test_error_queue_raises_with_the_code():
    with (
        expected_protocol(KepcoBOP, [("SYST:ERR?", '-222,"Data out of range"'), NO_ERROR]) as bop,
        pytest.raises(InstrumentError, match="-222"),
    ):
        bop.raise_errors("setting the current")


def test_shutdown_sets_zero_then_output_off_and_reads_it_back():
    off = list(zip(STATE, ["0", "1", "0", "20", "0"]))
    with expected_protocol(KepcoBOP, [("CURR 0.000000E+00", None), ("OUTP 0", None), *off]) as bop:
        bop.shutdown()


def test_a_supply_still_on_after_shutdown_is_reported():
    on = list(zip(STATE, ["1", "1", "0", "20", "0"]))
    with (
        expected_protocol(KepcoBOP, [("CURR 0.000000E+00", None), ("OUTP 0", None), *on]) as bop,
        pytest.raises(InstrumentError, match="still reports ON"),
    ):
        bop.shutdown()
