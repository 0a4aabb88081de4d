"""R&S FSV driver: exact SCPI (pymeasure expected_protocol), the REAL,32 trace block and its
checks; the emulated FSV speaking the same commands to the driver and to pymeasure's FS-series (FSL) driver,
recovering sim:vortex's line; the FSV as the analyser of an emulated bench."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.rohdeschwarz.fsseries import FSL
from pymeasure.test import expected_protocol
from tcp_helpers import ask, emulated_instruments

from spinlab import open_device
from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.drivers import driver_for_idn
from spinlab.instruments.rs_fsv import RsFsv
from spinlab.protocols.spectrum import fit_line
from spinlab.sim_backends.emulated.analyser import EmulatedFSV
from spinlab.sim_backends.emulated.visa_backend import EmulatedVisaLibrary
from spinlab.sim_backends.vortex import VortexDevice

NO_ERROR = '0,"No error"'
SETTINGS = [
    ("SENS:FREQ:CENT?", "20000000"),
    ("SENS:FREQ:SPAN?", "2000000"),
    ("SENS:BAND:RES?", "10000"),
    ("SENS:SWE:POIN?", "101"),
]
POWERS = np.linspace(-90.0, -20.0, 101).astype(np.float32)
BLOCK = b"#3404" + POWERS.astype("<f4").tobytes() + b"\n"
RESOURCE = "GPIB0::20::INSTR"


def test_configure_sends_the_manuals_commands():
    with expected_protocol(
        RsFsv,
        [
            ("INIT:CONT 0", None),
            ("CALC:UNIT:POW DBM", None),
            ("SENS:FREQ:CENT 20000000", None),
            ("SENS:FREQ:SPAN 2000000", None),
            ("SENS:BAND:RES 10000", None),
            ("SENS:BAND:VID 10000", None),
            ("SENS:SWE:TIME:AUTO 1", None),
            ("SENS:SWE:POIN 101", None),
            ("DISP:WIND:TRAC:Y:SCAL:RLEV -10", None),
            ("SENS:DET RMS", None),
            ("DISP:WIND:TRAC:MODE AVER", None),
            ("SENS:SWE:COUN 20", None),
            ("FORM REAL,32;FORM:BORD SWAP", None),
            ("SYST:ERR?", NO_ERROR),
            *SETTINGS,
        ],
    ) as sa:
        got = sa.configure(20e6, 2e6, 10e3, points=101, reference_level_dBm=-10, averages=20)
    assert got == {"center_Hz": 20e6, "span_Hz": 2e6, "rbw_Hz": 10e3, "points": 101}


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"center_Hz": 0.0, "span_Hz": 1e6, "rbw_Hz": 1e3}, "center_Hz"),
        ({"center_Hz": 1e6, "span_Hz": 4e6, "rbw_Hz": 1e3}, "below 0 Hz"),
        ({"center_Hz": 1e7, "span_Hz": 1e6, "rbw_Hz": 1e3, "points": 100}, "points"),
        ({"center_Hz": 1e7, "span_Hz": 1e6, "rbw_Hz": 1e3, "averages": 0}, "averages"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_sent(kwargs, what):
    with expected_protocol(RsFsv, []) as sa, pytest.raises(ConfigError, match=what):
        sa.configure(**kwargs)


def test_measure_sweeps_and_reads_the_real32_trace():
    with expected_protocol(
        RsFsv,
        [
            ("INIT;*OPC?", "1"),
            *SETTINGS,
            ("TRAC:DATA? TRACE1", BLOCK),
            ("*OPC?", "1"),
            ("STAT:QUES:POW:COND?", "0"),
        ],
    ) as sa:
        trace = sa.measure()
    np.testing.assert_array_equal(trace.power_dBm, POWERS)
    assert trace.frequency_Hz[0] == 19e6 and trace.frequency_Hz[-1] == 21e6
    assert trace.rbw_Hz == 10e3


def test_short_block_and_overload_raise():
    short = b"#3400" + POWERS[:100].astype("<f4").tobytes() + b"\n"
    with (
        expected_protocol(RsFsv, [*SETTINGS, ("TRAC:DATA? TRACE1", short)]) as sa,
        pytest.raises(InstrumentError, match="400 bytes but 404 were expected"),
    ):
        sa.read_trace()
    for condition, what in (("1", "RF input overload"), ("4", "IF overload")):
        with (
            expected_protocol(
                RsFsv,
                [*SETTINGS, ("TRAC:DATA? TRACE1", BLOCK), ("*OPC?", "1"), ("STAT:QUES:POW:COND?", condition)],
            ) as sa,
            pytest.raises(InstrumentError, match=what),
        ):
            sa.read_trace()


def test_the_driver_serves_fsv_and_fsw_idns_only():
    assert driver_for_idn("analyser", EmulatedFSV.IDN).name == "rs-fsv"
    assert driver_for_idn("analyser", "Rohde&Schwarz,FSW-26,1312.8000K26/100005,4.61").name == "rs-fsv"
    with pytest.raises(ConfigError, match="no installed analyser driver"):
        driver_for_idn("analyser", "Rohde&Schwarz,SMB100A,1406.6000k03/12345,3.1")


# --- against the emulated FSV -----------------------------------------------------------------------
def _emulated(device: VortexDevice, bias_A: float) -> EmulatedFSV:
    return EmulatedFSV(lambda f: device.spectrum({"bias_A": bias_A}, f), seed=3)


def _library(emulator: EmulatedFSV) -> EmulatedVisaLibrary:
    return EmulatedVisaLibrary.for_lab(SimpleNamespace(instruments={RESOURCE: emulator}))


def test_emulated_fsv_speaks_the_fsv_dialect():
    sa = EmulatedFSV()
    assert sa.ask("SWE:POIN?") == "691" and sa.ask("FORM:BORD?") == "SWAP"  # *RST values
    sa.write(b"BAND:RES 25 kHz;:SWE:POIN 32001;:DISP:TRAC1:MODE AVER;:SWE:COUN 0;:INP:ATT 20 dB\n")
    assert sa.ask("BAND:RES?") == "30000" and sa.ask("SWE:POIN?") == "32001"
    assert sa.average_on and sa.average_count == 10  # a count of 0 averages 10 sweeps
    sa.write(b"SWE:POIN 32002;:FORM REAL,64;:UNIT:POW DBM;:STAT:QUES:INT:COND?\n")
    codes = [int(e.split(",")[0]) for e in sa.errors()]
    assert codes == [-222, -224, -113, -113]


def test_the_driver_recovers_the_vortex_line_through_the_emulated_fsv():
    device = VortexDevice()
    line = device.line({"bias_A": 7.5e-3})
    sa = RsFsv(VISAAdapter(RESOURCE, visa_library=_library(_emulated(device, 7.5e-3)), timeout=2000))
    f0, width = float(line.frequency_Hz), float(line.linewidth_Hz)
    settings = sa.configure(f0, 20 * width, width / 20, points=801, reference_level_dBm=-20, averages=16)
    trace = sa.measure()
    assert settings["points"] == 801 and trace.power_dBm.size == 801
    psd = 1e-3 * 10 ** (trace.power_dBm / 10) / (1.0645 * trace.rbw_Hz)
    fit = fit_line(trace.frequency_Hz, psd)
    assert fit["frequency_Hz"] == pytest.approx(f0, abs=0.02 * width)
    assert fit["linewidth_Hz"] == pytest.approx(width, rel=0.05)
    assert fit["power_W"] == pytest.approx(line.power_W, rel=0.05)
    assert sa.check_errors() == []


def test_pymeasures_fs_series_driver_reads_the_same_line():
    device = VortexDevice()
    line = device.line({"bias_A": 7.5e-3})
    emulator = _emulated(device, 7.5e-3)
    sa = FSL(VISAAdapter(RESOURCE, visa_library=_library(emulator), timeout=2000))
    sa.freq_center = float(line.frequency_Hz)
    sa.freq_span = 10e6
    sa.res_bandwidth = 30e3
    sa.continuous_sweep_enabled = False
    sa.trace_mode = "AVER"
    sa.single_sweep()
    freqs, trace = sa.read_trace()
    assert len(trace) == 691
    assert freqs[np.argmax(trace)] == pytest.approx(line.frequency_Hz, abs=30e3)
    assert emulator.errors() == []


def test_an_emulated_bench_with_the_fsv_measures_the_devices_spectrum():
    """bench:emulated?analyser=rs-fsv: *IDN? picks the rs-fsv driver; the PSD it reports is at
    the device (the station's 15.5 dB RF chain taken out) and is the model's line."""
    with open_device("bench:emulated?analyser=rs-fsv") as bench:
        assert bench.drivers["analyser"] == "rs-fsv"
        line = bench.model.line({"bias_A": 8e-3})
        f0, width = float(line.frequency_Hz), float(line.linewidth_Hz)
        freqs = np.linspace(f0 - 10 * width, f0 + 10 * width, 801)
        fit = fit_line(freqs, bench.spectrum({"bias_A": 8e-3}, freqs))
        assert bench.lab.rf_gain_dB == pytest.approx(15.5)
        assert bench.lab.source.output_current_A() == pytest.approx(8e-3)
    assert fit["linewidth_Hz"] == pytest.approx(width, rel=0.05)
    assert fit["power_W"] == pytest.approx(line.power_W, rel=0.05)
    assert not bench.lab.source.output_on  # closed: the bias is off


def test_spinlab_emulate_serves_the_fsv_when_asked():
    """`spinlab emulate --analyser rs-fsv`: the analyser port answers as an FSV, and pymeasure's
    R&S driver reads its centre frequency over the socket."""
    with emulated_instruments("--analyser", "rs-fsv") as (_, resources):
        assert ask(resources["analyser"], "*IDN?") == EmulatedFSV.IDN
        fsl = FSL(resources["analyser"], visa_library="@py", read_termination="\n")
        try:
            fsl.freq_center = 4.5e9
            assert fsl.freq_center == pytest.approx(4.5e9)
        finally:
            fsl.adapter.close()
