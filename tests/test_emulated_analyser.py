"""Emulated X-series analyser: its SCPI, its measurement model (RBW, noise floor, overload), and
the spinlab driver against it through pyvisa's in-process backend, recovering sim:vortex's line."""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.agilent import AgilentE4408B
from scipy.optimize import curve_fit

from spinlab.errors import InstrumentError
from spinlab.instruments.keysight_xsa import KeysightXSeries
from spinlab.sim_backends.emulated.analyser import GAUSSIAN_NOISE_BANDWIDTH, EmulatedXSeries, nearest_rbw
from spinlab.sim_backends.emulated.visa_backend import EmulatedVisaLibrary
from spinlab.sim_backends.vortex import VortexDevice

RESOURCE = "TCPIP::127.0.0.1::5025::SOCKET"


def open_driver(emulator: EmulatedXSeries) -> KeysightXSeries:
    """The driver over pyvisa -> the in-process backend -> the emulator."""
    library = EmulatedVisaLibrary.for_lab(SimpleNamespace(instruments={RESOURCE: emulator}))
    return KeysightXSeries(VISAAdapter(RESOURCE, visa_library=library, timeout=2000))


def dbm_to_w(dbm):
    return 1e-3 * 10 ** (np.asarray(dbm) / 10)


# --- SCPI -----------------------------------------------------------------------------------
def test_settings_short_and_long_forms_and_rbw_steps():
    sa = EmulatedXSeries()
    assert sa.ask("*IDN?").startswith("Keysight Technologies,N9020B")
    sa.write(b"FREQ:CENT 1e9;SPAN 2e6;:BAND 12.3e3;:SENS:BWID:VID 1e3;:SWE:POIN 401\n")
    assert float(sa.ask(":SENSe:FREQuency:CENTer?")) == 1e9
    assert float(sa.ask("FREQ:STAR?")) == 1e9 - 1e6 and float(sa.ask("FREQ:STOP?")) == 1e9 + 1e6
    assert float(sa.ask(":SENS:BAND:RES?")) == 12e3  # rounded to the 10 % steps
    assert float(sa.ask("BAND:VID?")) == 1e3 and sa.ask("SWE:POIN?") == "401"
    assert nearest_rbw(3.5e6) in (3e6, 4e6) and nearest_rbw(7.9e6) == 8e6
    sa.write(b"FREQ:CENT 2.5 GHz;SPAN 10kHz;:SWE:TIME 20 ms\n")
    assert float(sa.ask("FREQ:CENT?")) == 2.5e9 and float(sa.ask("FREQ:SPAN?")) == 1e4
    assert float(sa.ask("SWE:TIME?")) == pytest.approx(0.02)
    assert sa.errors() == []
    sa.write(b"FREQ:CENT 1 MS\n")
    assert [e.split(",")[0] for e in sa.errors()] == ["-131"]


def test_bad_commands_queue_scpi_errors():
    sa = EmulatedXSeries()
    sa.write(b"SWE:POIN 200000\n")
    sa.write(b"BAND 0\n")
    sa.write(b"FORM INT,32\n")
    sa.write(b"TRAC:DATA? TRACE2\n")
    assert [e.split(",")[0] for e in sa.errors()] == ["-222", "-222", "-224", "-224"]


def test_trace_formats_ascii_real32_swapped_and_normal():
    sa = EmulatedXSeries(seed=3)
    sa.write(b"INIT:CONT OFF;:FREQ:CENT 1e9;SPAN 1e6;:SWE:POIN 3;:INIT\n")
    ascii_trace = [float(x) for x in sa.ask("TRAC? TRACE1").split(",")]
    sa.write(b"FORM REAL,32;:FORM:BORD SWAP;:TRAC:DATA? TRACE1\n")
    swapped = sa.read()
    sa.write(b"FORM:BORD NORM;:TRAC:DATA? TRACE1\n")
    normal = sa.read()
    assert swapped[:4] == b"#212" and swapped.endswith(b"\n")
    assert struct.unpack("<3f", swapped[4:16]) == struct.unpack(">3f", normal[4:16])
    np.testing.assert_allclose(struct.unpack("<3f", swapped[4:16]), ascii_trace, rtol=1e-6)
    assert sa.ask("FORM?") == "REAL,32"


# --- measurement model -----------------------------------------------------------------------
def test_noise_floor_is_the_danl_in_the_rbw_noise_bandwidth():
    sa = EmulatedXSeries(seed=1, danl_dBm_per_Hz=-150.0)
    sa.write(b"INIT:CONT OFF;:FREQ:CENT 1e9;SPAN 1e6;:BAND 1e3;:SWE:POIN 1001;:INIT\n")
    trace = np.array([float(x) for x in sa.ask("TRAC? TRACE1").split(",")])
    expected = -150.0 + 10 * math.log10(GAUSSIAN_NOISE_BANDWIDTH * 1e3)
    assert 10 * math.log10(dbm_to_w(trace).mean() / 1e-3) == pytest.approx(expected, abs=0.3)
    assert trace.std() > 0.5  # the display fluctuates


def test_a_narrow_line_reads_its_power_at_its_frequency():
    power_W, f0, width = 1e-6, 1.0002e9, 1e3  # -30 dBm, 1 kHz wide: CW for a 30 kHz RBW

    def lorentzian(f):
        return power_W * (width / 2) / (math.pi * ((f - f0) ** 2 + (width / 2) ** 2))

    sa = EmulatedXSeries(lorentzian, seed=2)
    sa.write(
        b"INIT:CONT OFF;:FREQ:CENT 1e9;SPAN 1e6;:BAND 30e3;:SWE:POIN 1001;:AVER:COUN 200;:AVER ON;:INIT\n"
    )
    trace = np.array([float(x) for x in sa.ask("TRAC? TRACE1").split(",")])
    freqs = 1e9 - 5e5 + 1e3 * np.arange(1001)
    top = trace > trace.max() - 3
    assert np.average(freqs[top], weights=dbm_to_w(trace[top])) == pytest.approx(f0, abs=1e3)
    # within 0.12 dB of the filter's peak; the Lorentzian's far tails (~2 %) fall outside the RBW
    flat_top = np.abs(freqs - f0) <= 3e3
    assert 10 * np.log10(dbm_to_w(trace[flat_top]).mean() / 1e-3) == pytest.approx(-30.1, abs=0.4)


def test_overload_sets_the_integrity_bit_and_clips():
    sa = EmulatedXSeries(lambda f: np.full(f.shape, 1e-9), seed=0)  # 1 nW/Hz: -30 dBm over 1 MHz
    sa.write(b"INIT:CONT OFF;:FREQ:CENT 1e9;SPAN 1e6;:BAND 1e5;:DISP:WIND:TRAC:Y:RLEV -50;:INIT\n")
    assert int(sa.ask("STAT:QUES:INT:COND?")) & 16
    trace = np.array([float(x) for x in sa.ask("TRAC? TRACE1").split(",")])
    assert trace.max() <= -40.0 + 1e-4
    sa.write(b"DISP:WIND:TRAC:Y:RLEV 0;:INIT\n")
    assert sa.ask("STAT:QUES:INT:COND?") == "0"


# --- the driver against the emulator, measuring sim:vortex -----------------------------------
def vortex_analyser(bias_A: float = 7.5e-3):
    device = VortexDevice()
    conditions = {"bias_A": bias_A}
    emulator = EmulatedXSeries(lambda f: device.spectrum(conditions, f), seed=5)
    return device.line(conditions), emulator, open_driver(emulator)


def _lorentzian(f, amp, centre, fwhm, floor):
    return amp * (fwhm / 2) ** 2 / ((f - centre) ** 2 + (fwhm / 2) ** 2) + floor


@pytest.mark.parametrize("bias_A", [4e-3, 7.5e-3, 9e-3])  # below and above the 5 mA threshold
def test_driver_recovers_the_simulators_peak_frequency_and_linewidth(bias_A):
    line, emulator, sa = vortex_analyser(bias_A)
    span = round(14 * float(line.linewidth_Hz), -3)
    got = sa.configure(float(line.frequency_Hz), span, 1e3, points=4001, reference_level_dBm=-30, averages=50)
    assert got["rbw_Hz"] == 1e3 and got["points"] == 4001
    trace = sa.measure()
    assert emulator.sweep_log[-1] == pytest.approx((line.frequency_Hz, span, 1e3, 4001))
    power = dbm_to_w(trace.power_dBm)
    guess = [power.max(), float(line.frequency_Hz), float(line.linewidth_Hz), power.min()]
    (amp, centre, fwhm, _), _ = curve_fit(_lorentzian, trace.frequency_Hz, power, p0=guess)
    assert centre == pytest.approx(line.frequency_Hz, abs=0.02 * line.linewidth_Hz)
    assert abs(fwhm) == pytest.approx(line.linewidth_Hz, rel=0.05)
    # the line's power from the fit: peak PSD x pi HWHM, the PSD being power over the RBW's noise bandwidth
    total = amp / (GAUSSIAN_NOISE_BANDWIDTH * 1e3) * math.pi * abs(fwhm) / 2
    assert total == pytest.approx(line.power_W, rel=0.05)
    assert sa.check_errors() == []


def test_driver_raises_on_overload_from_the_emulator():
    line, _, sa = vortex_analyser()
    sa.configure(float(line.frequency_Hz), 10e6, 10e3, points=1001, reference_level_dBm=-80)
    with pytest.raises(InstrumentError, match="input overload"):
        sa.measure()


def test_pymeasures_agilent_driver_works_against_the_emulator():
    """pymeasure's AgilentE4408B (PSA-style SCPI with Hz units, ASCII traces) reads the same line."""
    device = VortexDevice()
    line = device.line({"bias_A": 7.5e-3})
    emulator = EmulatedXSeries(lambda f: device.spectrum({"bias_A": 7.5e-3}, f), seed=1)
    library = EmulatedVisaLibrary.for_lab(SimpleNamespace(instruments={RESOURCE: emulator}))
    sa = AgilentE4408B(VISAAdapter(RESOURCE, visa_library=library, timeout=2000))
    sa.start_frequency = float(line.frequency_Hz) - 5e6
    sa.stop_frequency = float(line.frequency_Hz) + 5e6
    sa.frequency_points = 1001
    sa.sweep_time = 0.05
    assert sa.center_frequency == pytest.approx(line.frequency_Hz, abs=1e3)  # %e: 7 digits
    freqs, trace = sa.frequencies, sa.trace(1)
    assert len(freqs) == len(trace) == 1001
    assert freqs[np.argmax(trace)] == pytest.approx(line.frequency_Hz, abs=line.linewidth_Hz)
    assert emulator.errors() == []


def test_a_sweep_faster_than_the_rbw_settles_is_uncalibrated():
    line, emulator, sa = vortex_analyser()
    sa.configure(float(line.frequency_Hz), 10e6, 1e3, points=1001, reference_level_dBm=-30)
    assert float(sa.ask(":SENSe:SWEep:TIME?")) == pytest.approx(2 * 10e6 / 1e3**2)
    sa.measure()  # coupled sweep time: calibrated
    sa.write(":SENSe:SWEep:TIME 1 s")  # 20 s needed
    with pytest.raises(InstrumentError, match="uncalibrated"):
        sa.measure()
    sa.write(":SENSe:SWEep:TIME:AUTO ON")
    sa.measure()
