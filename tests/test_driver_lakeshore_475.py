"""LakeShore475: the exact commands of the Model 475 DSP manual (pinned by expected_protocol), its
probe-dependent ranges and five-field RDGMODE, and the emulated 475 answering the driver, the raw
commands other projects' 475 drivers send, an emulated bench and `spinlab emulate`."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import pyvisa
from pymeasure.test import expected_protocol
from tcp_helpers import ask, emulated_instruments

from spinlab import Waveform, open_device
from spinlab.errors import InstrumentError
from spinlab.instruments.drivers import driver_for_idn
from spinlab.instruments.lakeshore_gaussmeter import LakeShore475
from spinlab.sim_backends.emulated.gaussmeter import EmulatedLakeShore475
from spinlab.sim_backends.emulated.visa_backend import EmulatedVisaLibrary

IDN = "LSCI,MODEL475,4750123,04102003"


def test_settings_bytes():
    with expected_protocol(
        LakeShore475,
        [
            ("UNIT 2", None),
            ("UNIT?", "2"),
            ("RANGE 5", None),
            ("RANGE?", "5"),
            ("AUTO 0", None),
            ("AUTO?", "0"),
            ("*IDN?", IDN),
        ],
    ) as meter:
        meter.unit = "T"
        assert meter.unit == "T"
        meter.range = 5
        assert meter.range == 5
        meter.auto_range = False
        assert meter.auto_range is False
        assert meter.id == IDN


def test_reading_mode_dc_probe_type_and_zero():
    with expected_protocol(
        LakeShore475,
        [
            ("RDGMODE 2,1,3,1,1", None),
            ("RDGMODE?", "3,2,1,2,3"),
            ("RDGMODE 1,3,1,1,1", None),
            ("TYPE?", "41"),
            ("ZPROBE", None),
        ],
    ) as meter:
        meter.reading_mode = (2, 1, 3, 1, 1)  # RMS, low pass
        assert meter.reading_mode == (3, 2, 1, 2, 3)
        meter.measure_dc()  # what the field loop asks: DC at 5 3/4 digits
        assert meter.probe_type == 41
        meter.zero_probe()


def test_the_driver_is_picked_by_idn():
    assert driver_for_idn("gaussmeter", IDN).name == "lakeshore-475"
    assert driver_for_idn("gaussmeter", "LSCI,MODEL425,4250022,1.0").name == "lakeshore-425"


@pytest.mark.parametrize(
    "unit,reading,tesla",
    [("1", "+2.9981E+03", 0.29981), ("2", "-2.9981E-01", -0.29981), ("4", "+7.9577E+05", 0.99999)],
)
def test_field_in_tesla_whatever_the_units(unit, reading, tesla):
    with expected_protocol(LakeShore475, [("RDGFIELD?", reading), ("UNIT?", unit)]) as meter:
        assert meter.field_T() == pytest.approx(tesla, rel=1e-4)


@pytest.mark.parametrize(
    "probe,code,tesla",
    [("40", "1", 3.5e-4), ("40", "5", 3.5), ("41", "5", 35.0), ("42", "1", 3.5e-6), ("52", "4", 3.5e-3)],
)
def test_range_in_tesla_depends_on_the_probe(probe, code, tesla):
    with expected_protocol(LakeShore475, [("TYPE?", probe), ("RANGE?", code)]) as meter:
        assert meter.range_T() == pytest.approx(tesla)


@pytest.mark.parametrize(
    "exchange,what",
    [
        ([("TYPE?", "42"), ("RANGE?", "5")], "lacks"),  # an ultra-high sensitivity probe has 4 ranges
        ([("TYPE?", "43")], "unknown probe type 43"),
    ],
)
def test_a_range_the_probe_lacks_is_an_error(exchange, what):
    with expected_protocol(LakeShore475, exchange) as meter, pytest.raises(InstrumentError, match=what):
        meter.range_T()


@pytest.mark.parametrize(
    "reply,what", [("OL", "overloaded"), ("-OL", "overloaded"), ("NO PROBE", "no probe")]
)
def test_overload_or_no_probe_is_an_error_not_a_number(reply, what):
    with (
        expected_protocol(LakeShore475, [("RDGFIELD?", reply)]) as meter,
        pytest.raises(InstrumentError, match=what),
    ):
        meter.field()


@pytest.mark.parametrize(
    "exchange,read,what",
    [
        ([("RANGE?", "6")], lambda m: m.range, "field range"),
        ([("RDGMODE?", "1,1,1")], lambda m: m.reading_mode, "reading mode"),
        ([("RDGMODE?", "1,4,1,1,1")], lambda m: m.reading_mode, "reading mode"),
    ],
)
def test_malformed_replies_are_refused(exchange, read, what):
    with expected_protocol(LakeShore475, exchange) as meter, pytest.raises(InstrumentError, match=what):
        read(meter)


@pytest.mark.parametrize(
    "name,value,what",
    [
        ("range", 6, "range must be 1-5"),
        ("range", 0, "range must be 1-5"),
        ("reading_mode", (1, 1, 1), "reading mode"),  # the 425's three fields
        ("reading_mode", (1, 4, 1, 1, 1), "reading mode"),
        ("unit", "mT", "units"),
    ],
)
def test_bad_settings_are_refused_before_sending(name, value, what):
    with expected_protocol(LakeShore475, []) as meter, pytest.raises(ValueError, match=what):
        setattr(meter, name, value)


# --- the emulated 475 ------------------------------------------------------------------------------
RESOURCE = "GPIB0::12::INSTR"
NOISE_T = 2e-5


@pytest.fixture
def emulated():
    """The emulated 475 reading a settable field, reached through pyvisa as on the bench."""
    field = {"T": 0.1}
    emulator = EmulatedLakeShore475(lambda: field["T"], noise_T=NOISE_T, seed=2, lock=threading.RLock())
    library = EmulatedVisaLibrary.for_lab(SimpleNamespace(instruments={RESOURCE: emulator}))
    return field, emulator, library


def test_the_driver_reads_the_emulated_475(emulated):
    field, emulator, library = emulated
    meter = LakeShore475(RESOURCE, visa_library=library, timeout=500)
    assert meter.id == EmulatedLakeShore475.IDN
    meter.unit = "T"
    meter.auto_range = True
    meter.measure_dc()
    assert meter.reading_mode == (1, 3, 1, 1, 1) == emulator.mode
    readings = np.array([meter.field_T() for _ in range(200)])
    assert readings.mean() == pytest.approx(0.1, abs=5 * NOISE_T)
    assert meter.range == 4 and meter.range_T() == pytest.approx(0.35)  # 3.5 kG holds 1 kG
    meter.range = 3  # 350 G: the field is beyond it
    assert meter.auto_range is False
    with pytest.raises(InstrumentError, match="overloaded"):
        meter.field_T()
    field["T"] = 1e-4  # 1 G on the 3.5 G range (1): the smallest a high-sensitivity probe has
    meter.auto_range = True
    assert meter.field_T() == pytest.approx(1e-4, abs=5 * NOISE_T) and meter.range == 1
    meter.write("RANGE 6")  # no sixth range on this probe: refused, queued, nothing changes
    assert meter.range == 1 and emulator.errors()[0].startswith("-222")


def test_the_dc_resolution_sets_the_digits_shown(emulated):
    """3 3/4, 4 3/4 or 5 3/4 digits: 1.23456 kG on the 3.5 kG range in 1 G, 0.1 G or 0.01 G steps
    (the emulator noise-free, so the reading is the field rounded)."""
    field, emulator, library = emulated
    emulator.noise_T = 0.0
    field["T"] = 0.123456
    with pyvisa.ResourceManager(library).open_resource(
        RESOURCE, read_termination="\n", write_termination="\n"
    ) as raw:
        raw.write("UNIT 1;AUTO 1")
        shown = []
        for resolution in (1, 2, 3):
            raw.write(f"RDGMODE 1,{resolution},1,1,1")
            shown.append(float(raw.query("RDGFIELD?")))
    assert shown == [1235.0, 1234.6, 1234.56]


def test_commands_other_475_drivers_send_are_answered(emulated):
    """What InstrumentKit's ``Lakeshore475`` and lab scripts send (``RDGMODE 1,2,1,1,1`` for DC at
    four digits, ``AUTO 1``, ``UNIT 2``, ``RDGFIELD?``), over a raw pyvisa session."""
    field, emulator, library = emulated
    with pyvisa.ResourceManager(library).open_resource(
        RESOURCE, read_termination="\n", write_termination="\n"
    ) as raw:
        assert raw.query("*IDN?").startswith("LSCI,MODEL475,")
        raw.write("RDGMODE 1,2,1,1,1")
        raw.write("AUTO 1")
        raw.write("UNIT 2")
        assert int(raw.query("UNIT?")) == 2
        assert float(raw.query("RDGFIELD?")) == pytest.approx(0.1, abs=5 * NOISE_T)
        assert raw.query("RDGMODE?") == "1,2,1,1,1"
    assert emulator.errors() == []


def test_an_emulated_bench_with_the_475_sets_and_reads_the_field():
    """bench:emulated?gaussmeter=lakeshore-475: *IDN? picks the 475's driver, the field loop puts
    it in DC at 5 3/4 digits and sets 0.2 T closed-loop; the gaussmeter reads it back."""
    with open_device("bench:emulated?gaussmeter=lakeshore-475") as bench:
        assert bench.drivers["gaussmeter"] == "lakeshore-475"
        meter = bench.lab.roles["gaussmeter"]
        assert isinstance(meter, EmulatedLakeShore475)
        tolerance = bench.station.magnet.settle_tolerance_T
        drive = Waveform(np.full((2, 400), 0.1), 1e-7, "V")
        response = bench.respond(drive, {"bias_A": 7.5e-3, "field_T": 0.2})
        assert abs(response.meta["field_T_measured"] - 0.2) <= tolerance
        assert meter.mode == (1, 3, 1, 1, 1)
        assert abs(np.mean([meter.reading_T() for _ in range(20)]) - 0.2) <= tolerance
    assert not bench.lab.magnet.output_on


def test_spinlab_emulate_serves_the_475_when_asked():
    with emulated_instruments("--gaussmeter", "lakeshore-475") as (_, resources):
        assert ask(resources["gaussmeter"], "*IDN?") == EmulatedLakeShore475.IDN
        assert ask(resources["gaussmeter"], "RDGMODE?") == "1,2,1,1,1"
