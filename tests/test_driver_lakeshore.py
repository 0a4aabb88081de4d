"""LakeShore425: the exact commands from the Model 425 manual, field in tesla whatever the units,
and an overloaded or malformed reading refused."""

import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import InstrumentError
from spinlab.instruments.lakeshore_gaussmeter import LakeShore425


def test_settings_bytes():
    with expected_protocol(
        LakeShore425,
        [
            ("UNIT 2", None),
            ("UNIT?", "2"),
            ("RANGE 3", None),
            ("RANGE?", "3"),
            ("AUTO 1", None),
            ("AUTO?", "1"),
            ("*IDN?", "LSCI,MODEL425,4250022,1.0"),
        ],
    ) as meter:
        meter.unit = "T"
        assert meter.unit == "T"
        meter.range = 3
        assert meter.range == 3
        meter.auto_range = True
        assert meter.auto_range is True
        assert meter.id == "LSCI,MODEL425,4250022,1.0"


def test_reading_mode_probe_type_and_zero():
    with expected_protocol(
        LakeShore425, [("RDGMODE 1,1,1", None), ("RDGMODE?", "2,0,2"), ("TYPE?", "40"), ("ZPROBE", None)]
    ) as meter:
        meter.reading_mode = (1, 1, 1)
        assert meter.reading_mode == (2, 0, 2)
        assert meter.probe_type == 40
        meter.zero_probe()


@pytest.mark.parametrize(
    "unit,reading,tesla",
    [
        ("1", "+2.9981E+03", 0.29981),  # gauss
        ("2", "-2.9981E-01", -0.29981),  # tesla
        ("3", "+1.0000E+02", 0.01),  # oersted, in air
        ("4", "+7.9577E+05", 0.99999),  # A/m, mu0 H
    ],
)
def test_field_in_tesla_whatever_the_units(unit, reading, tesla):
    with expected_protocol(LakeShore425, [("RDGFIELD?", reading), ("UNIT?", unit)]) as meter:
        assert meter.field_T() == pytest.approx(tesla, rel=1e-4)


def test_range_in_tesla():
    with expected_protocol(LakeShore425, [("RANGE?", "2")]) as meter:
        assert meter.range_T() == pytest.approx(0.035)


@pytest.mark.parametrize("reply", ["+OL", "-OL", "OL"])
def test_overload_is_an_error_not_a_number(reply):
    with (
        expected_protocol(LakeShore425, [("RDGFIELD?", reply)]) as meter,
        pytest.raises(InstrumentError, match="overloaded"),
    ):
        meter.field()


@pytest.mark.parametrize(
    "exchange,read,what",
    [
        ([("RDGFIELD?", "+2.9981E+0x")], lambda m: m.field(), "field reading"),
        ([("RDGFIELD?", "+9.91E+37")], lambda m: m.field(), "not a number"),
        ([("UNIT?", "7")], lambda m: m.unit, "field units"),
        ([("RANGE?", "0")], lambda m: m.range, "field range"),
        ([("AUTO?", "2")], lambda m: m.auto_range, "auto range"),
        ([("RDGMODE?", "1,1")], lambda m: m.reading_mode, "reading mode"),
        ([("RDGMODE?", "3,0,1")], lambda m: m.reading_mode, "reading mode"),
    ],
)
def test_malformed_replies_are_refused(exchange, read, what):
    with expected_protocol(LakeShore425, exchange) as meter, pytest.raises(InstrumentError, match=what):
        read(meter)


@pytest.mark.parametrize(
    "name,value,what",
    [
        ("unit", "mT", "units"),
        ("range", 5, "range"),
        ("range", 0, "range"),
        ("reading_mode", (1, 1), "reading mode"),
        ("reading_mode", 1, "reading mode"),
    ],
)
def test_bad_settings_are_refused_before_sending(name, value, what):
    with expected_protocol(LakeShore425, []) as meter, pytest.raises(ValueError, match=what):
        setattr(meter, name, value)
