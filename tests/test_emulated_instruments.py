"""Emulated instruments: SCPI parsing and state, and the wired lab driven through the real
driver stack (pymeasure Instrument -> pyvisa -> in-process backend -> emulator)."""

import math

import numpy as np
import pytest
import pyvisa
from pymeasure.adapters import VISAAdapter
from pymeasure.instruments.keithley import Keithley2400

from spinlab import Device, SafetyLimits
from spinlab.errors import ConfigError, InstrumentError, WaveformError
from spinlab.instruments.keysight_awg import Keysight33500B
from spinlab.instruments.keysight_scope import InfiniiVisionScope
from spinlab.sim_backends.emulated import EmulatedLab
from spinlab.sim_backends.emulated.awg import Emulated33500B
from spinlab.sim_backends.emulated.scope import EmulatedInfiniiVision

NO_ERROR = '+0,"No error"'


class LinearDevice(Device):
    """response = gain * drive + bias_A * ohm: simple enough to predict exactly."""

    def __init__(self, gain=0.5, ohm=10.0):
        super().__init__(SafetyLimits(max_drive_V=0.5, max_bias_A=10e-3))
        self.gain, self.ohm = gain, ohm

    def _respond(self, drive, dt_s, conditions):
        bias = conditions.get("bias_A", np.zeros(drive.shape[0]))
        return self.gain * drive + self.ohm * bias[:, None]


# --- SCPI core -------------------------------------------------------------------------------
def test_long_short_forms_case_and_relative_paths():
    awg = Emulated33500B()
    awg.write(b"sour1:function:arbitrary:srate 2e6;SRAT?\n")
    assert awg.read() == b"+2.00000000000000E+06\n"
    awg.write(b":SOURce:VOLTage 0.5;VOLTage:OFFSet 0.1;:VOLT?;VOLT:OFFS?\n")
    assert awg.read() == b"+5.00000000000000E-01;+1.00000000000000E-01\n"
    assert awg.ask("*IDN?").startswith("Agilent Technologies,33522B")
    assert awg.errors() == []


def test_malformed_scpi_queues_errors_and_the_session_goes_on():
    awg = Emulated33500B()
    awg.write(b"FOO:BAR 1\n")  # undefined header
    awg.write(b"SOUR1:VOLT\n")  # missing parameter
    awg.write(b"SOUR1:VOLT banana\n")  # data type
    awg.write(b"SOUR1:FUNC:ARB:SRAT 1e12\n")  # out of range
    awg.write(b"OUTP1 MAYBE\n")
    awg.write(b"\xff\xfe\n")  # garbage bytes
    assert awg.ask("*IDN?").startswith("Agilent")  # still answering
    codes = [int(awg.ask("SYST:ERR?").split(",")[0]) for _ in range(7)]
    assert codes == [-113, -109, -104, -222, -104, -101, 0]
    assert awg.ask("SOUR1:FUNC:ARB:SRAT?") == "+4.00000000000000E+04"  # unchanged


def test_error_queue_overflow_and_cls():
    scope = EmulatedInfiniiVision()
    for _ in range(40):
        scope.write(b":NOPE\n")
    entries = scope.errors()
    assert len(entries) == scope.ERROR_QUEUE_DEPTH and entries[-1].startswith("-350")
    scope.write(b"*CLS\n")
    assert scope.ask(":SYSTem:ERRor?") == NO_ERROR


def test_query_interrupted_and_unterminated_read():
    awg = Emulated33500B()
    awg.write(b"*IDN?\n")
    awg.write(b"*OPC?\n")  # previous reply never read
    assert awg.read() == b"1\n"
    awg.note_unterminated_read()
    assert [e.split(",")[0] for e in awg.errors()] == ["-410", "-420"]


def test_reset_restores_defaults():
    awg = Emulated33500B()
    awg.write(b"OUTP1 ON;:SOUR1:VOLT 1.0\n")
    awg.write(b"*RST\n")
    assert awg.ask("OUTP1?;:SOUR1:VOLT?") == "0;+1.00000000000000E-01"


def test_binary_block_with_newlines_and_split_delivery():
    awg = Emulated33500B()
    codes = np.array([10, 2570, -10, 0, 1, 2, 3, 32767], dtype="<i2")  # 2570 = 0x0A0A
    message = b"FORM:BORD SWAP;:DATA:ARB:DAC blk,#216" + codes.tobytes() + b";:FUNC:ARB blk\n"
    for i in range(0, len(message), 5):  # arrives in pieces, as over TCP
        awg.write(message[i : i + 5])
    assert awg.errors() == []
    np.testing.assert_array_equal(awg.arbs["blk"], codes)
    assert awg.selected_arb == "blk"


def test_big_endian_block_and_ascii_dac_upload():
    awg = Emulated33500B()
    codes = np.array([1, -2, 3, -4, 5, -6, 7, -8], dtype=">i2")
    awg.write(b"DATA:ARB:DAC big,#216" + codes.tobytes() + b"\n")  # FORM:BORD NORM (default)
    awg.write(b"DATA:ARB:DAC asc, 1, -2, 3, -4, 5, -6, 7, -8\n")  # pymeasure Agilent33500 style
    np.testing.assert_array_equal(awg.arbs["big"], codes.astype(np.int16))
    np.testing.assert_array_equal(awg.arbs["asc"], codes.astype(np.int16))


@pytest.mark.parametrize(
    "message, code",
    [
        (b"DATA:ARB:DAC short,#14" + b"\x00" * 4 + b"\n", -222),  # 2 points < 8
        (b"DATA:ARB:DAC odd,#17" + b"\x00" * 7 + b"\n", -161),  # not whole int16 samples
        (b"DATA:ARB:DAC 9bad,#216" + b"\x00" * 16 + b"\n", -224),  # invalid name
        (b"DATA:ARB:DAC x, 1,2,3,4,5,6,7,40000\n", -222),  # code out of range
        (b"FUNC ARB\n", -221),  # no arb selected
        (b"*TRG\n", -211),  # trigger source not BUS
    ],
)
def test_awg_rejects_bad_data_with_scpi_errors(message, code):
    awg = Emulated33500B()
    awg.write(message)
    assert int(awg.errors()[0].split(",")[0]) == code


def test_arb_memory_limit():
    awg = Emulated33500B(memory_samples=12)
    awg.write(b"DATA:ARB:DAC a,#216" + b"\x00" * 16 + b"\n")
    awg.write(b"DATA:ARB:DAC b,#216" + b"\x00" * 16 + b"\n")
    assert awg.errors()[0].startswith("-223") and list(awg.arbs) == ["a"]
    awg.write(b"DATA:VOL:CLE\n")
    assert awg.ask("DATA:VOL:FREE?") == "12"


def test_awg_output_emf_and_load_doubling():
    awg = Emulated33500B()
    awg.write(b"DATA:ARB:DAC r,-32767,0,32767,0,-32767,0,32767,0\n")
    awg.write(b"FUNC:ARB r;:FUNC ARB;:VOLT 1;:VOLT:OFFS 0.5;:OUTP ON;:BURS:STAT ON\n")
    assert awg.errors() == []
    emf = awg.emf_V(-1, 10, 1e-6, 1)
    # 50-ohm setting: EMF is twice the displayed voltage; idle = first point, burst of 8 points
    np.testing.assert_allclose(emf, 2 * np.array([0, 0, 0.5, 1, 0.5, 0, 0.5, 1, 0.5, 0]))
    awg.write(b"OUTP:LOAD INF\n")
    assert float(awg.ask("VOLT?")) == pytest.approx(2.0)  # display follows the load setting
    np.testing.assert_allclose(awg.emf_V(0, 3, 1e-6, 1), [0, 1, 2])
    awg.write(b"OUTP OFF\n")
    np.testing.assert_allclose(awg.emf_V(0, 3, 1e-6, 1), 0)


def test_awg_settings_conflict_keeps_state():
    awg = Emulated33500B()
    awg.write(b"VOLT 8;:VOLT:OFFS 2\n")  # 4 + 2 > 5 V into 50 ohm
    assert awg.errors()[0].startswith("-221")
    assert float(awg.ask("VOLT:OFFS?")) == 0.0


def test_scope_word_quantisation_and_preamble():
    scope = EmulatedInfiniiVision()
    scope.acquire = lambda t, channels, triggered: {n: np.linspace(-1, 1, t.size) for n in channels}
    scope.write(b":CHAN1:SCAL 0.1;OFFS 0.05;:ACQ:SRAT 1e8;POIN 1000;:TIM:REF LEFT;POS 0\n")
    scope.write(b":WAV:FORM WORD;BYT LSBF;UNS 0;:TRIG:SWE AUTO;:SING\n")
    pre = scope.ask(":WAV:PRE?").split(",")
    assert pre[:4] == ["+1", "+0", "+1000", "+1"] and float(pre[4]) == 1e-8
    assert float(pre[7]) == pytest.approx(0.8 / 65536) and float(pre[8]) == 0.05
    scope.write(b":WAV:DATA?\n")
    raw = scope.read()
    assert raw[:6] == b"#42000" and raw.endswith(b"\n") and len(raw) == 6 + 2000 + 1
    codes = np.frombuffer(raw[6:-1], "<i2")
    assert np.all(codes % 256 == 0)  # 8-bit ADC in the upper byte
    assert codes.min() == -32768 and codes.max() == 127 * 256  # clipped at the screen edges
    volts = codes * float(pre[7]) + 0.05
    inside = np.abs(np.linspace(-1, 1, 1000) - 0.05) < 0.39
    assert np.max(np.abs(volts - np.linspace(-1, 1, 1000))[inside]) <= 0.8 / 256 / 2 + 1e-12


def test_scope_opc_waits_for_the_trigger_and_segments():
    scope = EmulatedInfiniiVision()
    scope.write(b":ACQ:MODE SEGM;SEGM:COUN 3;:TRIG:SWE NORM;:TRIG:EDGE:SOUR EXT;LEV 1;:SING\n")
    scope.write(b"*OPC?\n")
    assert scope.read() == b"" and scope.operation_condition() == 8 | 32
    for _ in range(3):
        assert scope.trigger_input_edge("EXT")
    assert scope.read() == b"1\n"  # the deferred *OPC? reply
    assert scope.ask(":WAV:SEGM:COUN?") == "3" and scope.operation_condition() == 0


def test_scope_ignores_triggers_it_is_not_set_up_for():
    scope = EmulatedInfiniiVision()
    scope.write(b":TRIG:SWE NORM;:TRIG:EDGE:SOUR EXT;LEV 5;:SING\n")  # level above the TTL swing
    assert not scope.trigger_input_edge("EXT")
    scope.write(b":TRIG:EDGE:LEV 1;SLOP NEG\n")
    assert not scope.trigger_input_edge("EXT")
    scope.write(b":TRIG:EDGE:SLOP POS\n")
    assert scope.trigger_input_edge("EXT")


def test_scope_srate_rounds_up_to_available_rate():
    scope = EmulatedInfiniiVision()
    scope.write(b":ACQ:SRAT 3e6\n")
    assert float(scope.ask(":ACQ:SRAT?")) == 5e6


# --- the lab through the real driver stack ---------------------------------------------------
@pytest.fixture
def bench():
    lab = EmulatedLab(LinearDevice(), seed=3, trigger_delay_s=0.0, scope_noise_V=2e-3)
    lib = lab.visa_library()
    awg = Keysight33500B(VISAAdapter(lab.AWG_RESOURCE, visa_library=lib, timeout=500))
    scope = InfiniiVisionScope(VISAAdapter(lab.SCOPE_RESOURCE, visa_library=lib, timeout=500))
    smu = Keithley2400(lab.SOURCE_RESOURCE, visa_library=lib)
    yield lab, awg, scope, smu
    for inst in (awg, scope, smu):
        inst.adapter.close()


def _drive(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.uniform(-0.3, 0.3, n // 10), 10)
    x[0] = 0.0
    return x


def _capture(awg, scope, samples, rate=10e6, full_scale=0.8, offset=0.0, **kw):
    awg.upload_arb("drive", samples, rate)
    awg.output_enabled = True
    awg.arm_burst(1, "BUS")
    scope.configure_capture(1, samples.size / rate, rate, full_scale, offset_V=offset, **kw)
    scope.arm_single()
    awg.trigger()
    scope.wait_acquired(2.0)
    return scope.read_waveform(1)


def test_round_trip_returns_the_device_response(bench):
    lab, awg, scope, smu = bench
    smu.source_mode = "current"
    smu.compliance_voltage = 2.0
    smu.source_current = 5e-3
    smu.enable_source()
    x = _drive()
    wave = _capture(awg, scope, x, offset=0.05)
    expected = 0.5 * x + 10 * 5e-3
    lsb = 0.8 / 256
    err = wave.samples - expected
    assert wave.n == x.size and wave.dt_s == pytest.approx(1e-7) and wave.t0_s == 0.0
    assert abs(err.mean()) < 3e-4  # unbiased
    assert err.std() == pytest.approx(math.hypot(2e-3, lsb / math.sqrt(12)), rel=0.1)
    assert np.max(np.abs(err)) < lsb / 2 + 6 * 2e-3  # quantisation + noise
    assert awg.check_errors() == [] and scope.check_errors() == [] and smu.check_errors() == []


def test_trigger_delay_shifts_the_response():
    lab = EmulatedLab(LinearDevice(), seed=0, trigger_delay_s=300e-9, scope_noise_V=0.0)
    lib = lab.visa_library()
    awg = Keysight33500B(VISAAdapter(lab.AWG_RESOURCE, visa_library=lib))
    scope = InfiniiVisionScope(VISAAdapter(lab.SCOPE_RESOURCE, visa_library=lib))
    x = _drive()
    wave = _capture(awg, scope, x)
    lsb = 0.8 / 256
    np.testing.assert_allclose(wave.samples[3:], 0.5 * x[:-3], atol=lsb / 2 + 1e-12)  # 3 samples late
    np.testing.assert_allclose(wave.samples[:3], 0.0, atol=lsb / 2)


def test_output_off_gives_the_zero_drive_response(bench):
    lab, awg, scope, smu = bench
    x = _drive()
    awg.upload_arb("drive", x, 10e6)
    awg.arm_burst(1, "BUS")
    scope.configure_capture(1, x.size / 10e6, 10e6, 0.8)
    scope.arm_single()
    awg.trigger()  # output still off
    scope.wait_acquired(2.0)
    wave = scope.read_waveform(1)
    assert abs(wave.samples.mean()) < 1e-3 and wave.samples.std() < 4e-3  # noise only


def test_segmented_captures_one_segment_per_trigger(bench):
    lab, awg, scope, smu = bench
    x = _drive(1000)
    awg.upload_arb("drive", x, 10e6)
    awg.output_enabled = True
    awg.arm_burst(1, "BUS")
    scope.configure_capture(1, x.size / 10e6, 10e6, 0.8, segments=4)
    scope.arm_single()
    for _ in range(4):
        awg.trigger()
    scope.wait_acquired(2.0)
    batch = scope.read_segments(1)
    per_index = scope.read_segments(1, all_at_once=False)
    assert batch.samples.shape == (4, 1000)
    np.testing.assert_array_equal(batch.samples, per_index.samples)
    for row in batch.samples:
        assert np.max(np.abs(row - 0.5 * x)) < 0.8 / 512 + 6 * 2e-3
    assert not np.array_equal(batch.samples[0], batch.samples[1])  # independent noise


def test_nan_upload_sends_nothing(bench):
    lab, awg, scope, smu = bench
    x = _drive()
    x[17] = np.nan
    with pytest.raises(WaveformError):
        awg.upload_arb("drive", x, 10e6)
    assert lab.awg.arbs == {} and lab.awg.function == "SIN"


def test_unread_trigger_times_out_with_advice(bench):
    lab, awg, scope, smu = bench
    scope.configure_capture(1, 1e-5, 10e6, 0.8)
    scope.arm_single()
    with pytest.raises(InstrumentError, match="no trigger arrived"):
        scope.wait_acquired(0.05)


def test_device_safety_limit_surfaces_as_awg_error(bench):
    lab, awg, scope, smu = bench
    x = np.full(100, 0.3)
    x[:50] = -0.3
    awg.upload_arb("drive", x * 2, 10e6)  # +-0.6 V > the device's 0.5 V limit
    awg.output_enabled = True
    awg.arm_burst(1, "BUS")
    scope.configure_capture(1, 1e-5, 10e6, 0.8)
    scope.arm_single()
    awg.trigger()
    errors = awg.check_errors()
    assert errors and errors[0][0] == -200 and "max_drive_V" in errors[0][1]


def test_wrong_block_length_from_the_instrument_raises(bench, monkeypatch):
    lab, awg, scope, smu = bench
    x = _drive(1000)
    _capture(awg, scope, x)
    good = lab.scope._data
    monkeypatch.setattr(lab.scope, "_data", lambda: b"#42001" + good()[6:])  # declares 1 byte more
    with pytest.raises(InstrumentError, match="fewer bytes than its block header declared"):
        scope.read_waveform(1)
    lab.scope.device_clear()
    monkeypatch.setattr(lab.scope, "_data", lambda: b"#41999" + good()[6:])  # declares 1 byte less
    with pytest.raises(InstrumentError, match="more data than its header declared"):
        scope.read_waveform(1)


def test_malformed_scpi_through_visa_and_shutdown(bench):
    lab, awg, scope, smu = bench
    awg.write("SOUR1:VOLT:BOGUS 3")
    awg.write("SOUR1:VOLT")
    assert awg.amplitude_Vpp == pytest.approx(0.1)  # still working
    assert [code for code, _ in awg.check_errors()] == [-113, -109]
    awg.output_enabled = True
    awg.shutdown()
    assert lab.awg.output_on is False


def test_keithley_2400_emulator_answers_pymeasure(bench):
    lab, awg, scope, smu = bench
    assert "MODEL 2400" in smu.id
    smu.source_mode = "current"
    smu.compliance_voltage = 2.0
    smu.source_current = 7.5e-3
    assert smu.source_mode == "current" and smu.source_current == pytest.approx(7.5e-3)
    assert lab.source.output_current_A() == 0.0  # output off
    smu.enable_source()
    assert smu.source_enabled is True
    assert lab.source.output_current_A() == pytest.approx(7.5e-3)
    assert smu.voltage == pytest.approx(7.5e-3 * 100.0)  # into the 100-ohm device resistance
    smu.compliance_voltage = 0.5  # now the source is in compliance: 0.5 V / 100 ohm
    assert lab.source.output_current_A() == pytest.approx(5e-3)
    smu.write(":SOUR:CURR 2")  # beyond +-1.05 A: the instrument refuses and keeps its level
    assert int(smu.next_error[0]) == -222
    assert smu.source_current == pytest.approx(7.5e-3)
    smu.shutdown()
    assert smu.source_enabled is False and lab.source.source_current_A == pytest.approx(0.0)
    assert smu.check_errors() == []


def test_visa_resource_manager_lists_the_lab(bench):
    lab = bench[0]
    rm = pyvisa.ResourceManager(lab.visa_library())
    assert set(rm.list_resources("?*")) == set(lab.RESOURCES.values())
    assert set(lab.RESOURCES) == {"awg", "scope", "source", "magnet", "gaussmeter", "analyser"}
    with pytest.raises(pyvisa.errors.VisaIOError):
        rm.open_resource("TCPIP::10.0.0.1::5025::SOCKET")


def test_lab_validates_its_options():
    with pytest.raises(ConfigError):
        EmulatedLab(object())
    with pytest.raises(ConfigError):
        EmulatedLab(LinearDevice(), trigger_delay_s=-1.0)


def test_vortex_model_behind_the_emulated_bench_matches_direct_simulation():
    from spinlab import Waveform, open_device

    device = open_device("sim:vortex?noise=0")
    lab = EmulatedLab(device, seed=0, trigger_delay_s=0.0, scope_noise_V=0.0)
    lib = lab.visa_library()
    awg = Keysight33500B(VISAAdapter(lab.AWG_RESOURCE, visa_library=lib))
    scope = InfiniiVisionScope(VISAAdapter(lab.SCOPE_RESOURCE, visa_library=lib))
    smu = Keithley2400(lab.SOURCE_RESOURCE, visa_library=lib)
    smu.source_mode = "current"
    smu.compliance_voltage = 2.0
    smu.source_current = 7.5e-3
    smu.enable_source()
    x = _drive(2000, seed=4)
    wave = _capture(awg, scope, x, full_scale=0.08, offset=0.02)
    direct = device.respond(Waveform(x, 1e-7), {"bias_A": 7.5e-3}).samples
    assert np.ptp(direct) > 0.005  # the drive really modulates the oscillator power
    np.testing.assert_allclose(wave.samples, direct, atol=0.08 / 512 + 2e-4)


@pytest.mark.slow
def test_million_sample_round_trip_through_the_driver_stack():
    from spinlab import Waveform, open_device

    device = open_device("sim:vortex?noise=0")
    lab = EmulatedLab(device, seed=0, trigger_delay_s=0.0, scope_noise_V=0.0)
    lib = lab.visa_library()
    awg = Keysight33500B(VISAAdapter(lab.AWG_RESOURCE, visa_library=lib, timeout=30_000))
    scope = InfiniiVisionScope(VISAAdapter(lab.SCOPE_RESOURCE, visa_library=lib, timeout=30_000))
    x = _drive(1_000_000, seed=7)
    wave = _capture(awg, scope, x, full_scale=0.08, offset=0.02)
    direct = device.respond(Waveform(x, 1e-7), {"bias_A": 0.0}).samples
    assert wave.n == 1_000_000
    np.testing.assert_allclose(wave.samples, direct, atol=0.08 / 512 + 2e-4)
