"""InfiniiVisionScope driver: exact SCPI (pymeasure expected_protocol), binary WORD blocks,
preamble validation and block-length checks."""

import struct

import numpy as np
import pytest
from pymeasure.adapters import ProtocolAdapter
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.keysight_scope import InfiniiVisionScope

NO_ERROR = '+0,"No error"'
TRANSFER = ":WAVeform:SOURce CHANnel1;FORMat WORD;BYTeorder LSBFirst;UNSigned 0;POINts:MODE RAW"
# WORD, NORMAL, 4 points, 1 average, 1 ns, -2 ns, 0, yinc 1 mV/code, yorigin 0.1 V, yref 0
PREAMBLE = "+1,+0,+4,+1,+1.0E-09,-2.0E-09,+0,+1.0E-03,+1.0E-01,+0"


def test_preamble_is_parsed_into_named_fields():
    with expected_protocol(InfiniiVisionScope, [(":WAVeform:PREamble?", PREAMBLE)]) as scope:
        pre = scope.preamble()
    assert pre == {
        "format": "WORD",
        "type": "NORMAL",
        "points": 4,
        "count": 1,
        "x_increment_s": 1e-9,
        "x_origin_s": -2e-9,
        "x_reference": 0,
        "y_increment_V": 1e-3,
        "y_origin_V": 0.1,
        "y_reference": 0,
    }


@pytest.mark.parametrize(
    "reply, what",
    [
        ("+1,+0,+4,+1,+1.0E-09,-2.0E-09,+0,+1.0E-03,+1.0E-01", "10 fields"),  # 9 fields
        ("+1,+0,four,+1,+1.0E-09,-2.0E-09,+0,+1.0E-03,+1.0E-01,+0", "points"),  # not a number
        ("+7,+0,+4,+1,+1.0E-09,-2.0E-09,+0,+1.0E-03,+1.0E-01,+0", "format"),  # unknown format
        ("+1,+0,+4,+1,+0.0E+00,-2.0E-09,+0,+1.0E-03,+1.0E-01,+0", "x_increment"),  # zero dt
    ],
)
def test_malformed_preamble_raises_with_the_raw_reply(reply, what):
    with expected_protocol(InfiniiVisionScope, [(":WAVeform:PREamble?", reply)]) as scope:
        with pytest.raises(InstrumentError, match=what) as info:
            scope.preamble()
    assert reply in str(info.value)


def test_read_waveform_scales_word_codes_to_volts():
    codes = [0, 256, -256, 32512]
    block = b"#18" + struct.pack("<4h", *codes) + b"\n"
    with expected_protocol(
        InfiniiVisionScope, [(TRANSFER, None), (":WAVeform:PREamble?", PREAMBLE), (":WAVeform:DATA?", block)]
    ) as scope:
        wave = scope.read_waveform(1)
    np.testing.assert_allclose(wave.samples, 0.1 + 1e-3 * np.array(codes, float))
    assert wave.dt_s == 1e-9 and wave.t0_s == -2e-9 and wave.unit == "V"
    assert wave.meta["channel"] == 1


def test_block_shorter_than_declared_raises():
    block = b"#18" + struct.pack("<3h", 1, 2, 3) + b"\n"  # declares 8 bytes, 7 follow
    with expected_protocol(
        InfiniiVisionScope, [(TRANSFER, None), (":WAVeform:PREamble?", PREAMBLE), (":WAVeform:DATA?", block)]
    ) as scope:
        with pytest.raises(InstrumentError, match="declares 8 bytes"):
            scope.read_waveform(1)


def test_block_longer_than_declared_raises():
    adapter = ProtocolAdapter(
        [
            (TRANSFER, None),
            (":WAVeform:PREamble?", PREAMBLE),
            (":WAVeform:DATA?", b"#16" + struct.pack("<4h", 1, 2, 3, 4) + b"\n"),
        ]
    )
    scope = InfiniiVisionScope(adapter)
    with pytest.raises(InstrumentError, match="more data than its header declared"):
        scope.read_waveform(1)


def test_block_length_must_match_preamble_points():
    block = b"#16" + struct.pack("<3h", 1, 2, 3) + b"\n"  # consistent block, but 3 points not 4
    with expected_protocol(
        InfiniiVisionScope, [(TRANSFER, None), (":WAVeform:PREamble?", PREAMBLE), (":WAVeform:DATA?", block)]
    ) as scope:
        with pytest.raises(InstrumentError, match="6 bytes but 8 were expected"):
            scope.read_waveform(1)


def test_not_a_block_raises():
    with expected_protocol(
        InfiniiVisionScope,
        [(TRANSFER, None), (":WAVeform:PREamble?", PREAMBLE), (":WAVeform:DATA?", b"1,2,3,4\n")],
    ) as scope:
        with pytest.raises(InstrumentError, match="definite-length block"):
            scope.read_waveform(1)
        scope.adapter._read_buffer = None  # the rest of the ASCII reply is discarded


def test_no_acquired_data_raises():
    empty = "+1,+0,+0,+1,+1.0E-09,+0.0E+00,+0,+1.0E-03,+0.0E+00,+0"
    with expected_protocol(InfiniiVisionScope, [(TRANSFER, None), (":WAVeform:PREamble?", empty)]) as scope:
        with pytest.raises(InstrumentError, match="no acquired data"):
            scope.read_waveform(1)


def test_configure_capture_pins_the_setup():
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":STOP", None),
            (":CHANnel1:DISPlay 1", None),
            (":CHANnel1:IMPedance FIFT", None),
            (":CHANnel1:COUPling DC", None),
            (":CHANnel1:SCALe 0.05", None),
            (":CHANnel1:OFFSet 0.1", None),
            (":TIMebase:REFerence LEFT", None),
            (":TIMebase:RANGe 0.0001", None),
            (":TIMebase:POSition 1e-05", None),
            (":TRIGger:EDGE:SOURce EXT", None),
            (":TRIGger:EDGE:LEVel 1", None),
            (":TRIGger:EDGE:SLOPe POS", None),
            (":TRIGger:SWEep NORM", None),
            (":ACQuire:TYPE NORM", None),
            (":ACQuire:MODE RTIM", None),
            (":ACQuire:SRATe 10000000", None),
            (":ACQuire:POINts 1000", None),
            (TRANSFER, None),
            (":WAVeform:POINts 1000", None),
            (":ACQuire:SRATe?", "+1.00000000000000E+07"),
            (":ACQuire:POINts?", "1000"),
            (":SYSTem:ERRor?", NO_ERROR),
        ],
    ) as scope:
        info = scope.configure_capture(
            1, duration_s=1e-4, sample_rate_Hz=10e6, full_scale_V=0.4, offset_V=0.1, trigger_level_V=1.0
        )
    assert info == {"points": 1000, "sample_rate_Hz": 10e6, "start_s": 0.0, "segments": 1}


def test_configure_segmented_capture():
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":STOP", None),
            (":CHANnel2:DISPlay 1", None),
            (":CHANnel2:IMPedance ONEM", None),
            (":CHANnel2:COUPling DC", None),
            (":CHANnel2:SCALe 0.125", None),
            (":CHANnel2:OFFSet 0", None),
            (":TIMebase:REFerence LEFT", None),
            (":TIMebase:RANGe 2e-06", None),
            (":TIMebase:POSition 0", None),
            (":TRIGger:EDGE:SOURce EXT", None),
            (":TRIGger:EDGE:LEVel 1.5", None),
            (":TRIGger:EDGE:SLOPe POS", None),
            (":TRIGger:SWEep NORM", None),
            (":ACQuire:TYPE NORM", None),
            (":ACQuire:MODE SEGM", None),
            (":ACQuire:SEGMented:COUNt 5", None),
            (":ACQuire:SRATe 100000000", None),
            (":ACQuire:POINts 200", None),
            (TRANSFER.replace("CHANnel1", "CHANnel2"), None),
            (":WAVeform:POINts 200", None),
            (":ACQuire:SRATe?", "+1.00000000000000E+08"),
            (":ACQuire:POINts?", "200"),
            (":SYSTem:ERRor?", NO_ERROR),
        ],
    ) as scope:
        info = scope.configure_capture(
            2,
            duration_s=1.8e-6,
            sample_rate_Hz=100e6,
            full_scale_V=1.0,
            trigger_level_V=1.5,
            pretrigger_s=0.2e-6,
            segments=5,
            impedance="ONEM",
        )
    assert info["points"] == 200 and info["segments"] == 5 and info["start_s"] == pytest.approx(-0.2e-6)


def test_configure_capture_refuses_readback_mismatch():
    pairs = [
        (":STOP", None),
        (":CHANnel1:DISPlay 1", None),
        (":CHANnel1:IMPedance FIFT", None),
        (":CHANnel1:COUPling DC", None),
        (":CHANnel1:SCALe 0.05", None),
        (":CHANnel1:OFFSet 0", None),
        (":TIMebase:REFerence LEFT", None),
        (":TIMebase:RANGe 0.0001", None),
        (":TIMebase:POSition 1e-05", None),
        (":TRIGger:EDGE:SOURce EXT", None),
        (":TRIGger:EDGE:LEVel 1", None),
        (":TRIGger:EDGE:SLOPe POS", None),
        (":TRIGger:SWEep NORM", None),
        (":ACQuire:TYPE NORM", None),
        (":ACQuire:MODE RTIM", None),
        (":ACQuire:SRATe 10000000", None),
        (":ACQuire:POINts 1000", None),
        (TRANSFER, None),
        (":WAVeform:POINts 1000", None),
        (":ACQuire:SRATe?", "+2.00000000000000E+07"),
        (":ACQuire:POINts?", "1000"),
    ]
    with expected_protocol(InfiniiVisionScope, pairs) as scope:
        with pytest.raises(InstrumentError, match="instead of 1000 at 1e"):
            scope.configure_capture(1, 1e-4, 10e6, 0.4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate_Hz": 3e6},  # not an available rate
        {"duration_s": -1.0},
        {"full_scale_V": 0.0},
        {"channel": 5},
        {"segments": 1},
        {"duration_s": 1.0, "sample_rate_Hz": 1e8},  # beyond memory
    ],
)
def test_configure_capture_validates_before_sending(kwargs):
    args = {"channel": 1, "duration_s": 1e-4, "sample_rate_Hz": 10e6, "full_scale_V": 0.4, **kwargs}
    with expected_protocol(InfiniiVisionScope, []) as scope:
        with pytest.raises(ConfigError):
            scope.configure_capture(**args)


def test_wait_acquired_polls_the_run_bit():
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":OPERegister:CONDition?", "+40"),
            (":OPERegister:CONDition?", "+8"),
            (":OPERegister:CONDition?", "+0"),
        ],
    ) as scope:
        scope.wait_acquired(timeout_s=5.0, poll_s=1e-4)


def test_wait_acquired_times_out_with_advice():
    with expected_protocol(InfiniiVisionScope, [(":OPERegister:CONDition?", "+40")]) as scope:
        with pytest.raises(InstrumentError, match="no trigger arrived"):
            scope.wait_acquired(timeout_s=0.0)


def test_arm_and_digitize():
    block = b"#18" + struct.pack("<4h", 0, 0, 0, 0) + b"\n"
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":SINGle", None),
            (":AER?", "+0"),
            (":AER?", "+1"),
            (":DIGitize CHANnel1", None),
            (":OPERegister:CONDition?", "+0"),
            (TRANSFER, None),
            (":WAVeform:PREamble?", PREAMBLE),
            (":WAVeform:DATA?", block),
        ],
    ) as scope:
        scope.arm_single()
        wave = scope.digitize(1)
    np.testing.assert_allclose(wave.samples, 0.1)


def test_arm_single_times_out_when_never_armed():
    with expected_protocol(InfiniiVisionScope, [(":SINGle", None), (":AER?", "+0")]) as scope:
        with pytest.raises(InstrumentError, match="arming"):
            scope.arm_single(timeout_s=0.0)


def test_read_segments_in_one_block():
    pre = "+1,+0,+3,+2,+1.0E-08,+0.0E+00,+0,+2.0E-03,+0.0E+00,+0"
    codes = [1, 2, 3, -1, -2, -3]
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":WAVeform:SEGMented:COUNt?", "2"),
            (TRANSFER, None),
            (":WAVeform:SEGMented:ALL 1", None),
            (":WAVeform:PREamble?", pre),
            (":WAVeform:DATA?", b"#212" + struct.pack("<6h", *codes) + b"\n"),
            (":WAVeform:SEGMented:ALL 0", None),
        ],
    ) as scope:
        wave = scope.read_segments(1)
    assert wave.batched and wave.samples.shape == (2, 3) and wave.dt_s == 1e-8
    np.testing.assert_allclose(wave.samples, 2e-3 * np.array(codes, float).reshape(2, 3))


def test_read_segments_one_index_at_a_time():
    pre = "+1,+0,+2,+1,+1.0E-08,+0.0E+00,+0,+1.0E-03,+0.0E+00,+0"
    with expected_protocol(
        InfiniiVisionScope,
        [
            (":WAVeform:SEGMented:COUNt?", "2"),
            (TRANSFER, None),
            (":ACQuire:SEGMented:INDex 1", None),
            (":WAVeform:PREamble?", pre),
            (":WAVeform:DATA?", b"#14" + struct.pack("<2h", 5, 6) + b"\n"),
            (":ACQuire:SEGMented:INDex 2", None),
            (":WAVeform:PREamble?", pre),
            (":WAVeform:DATA?", b"#14" + struct.pack("<2h", 7, 8) + b"\n"),
        ],
    ) as scope:
        wave = scope.read_segments(1, all_at_once=False)
    np.testing.assert_allclose(wave.samples, 1e-3 * np.array([[5, 6], [7, 8]]))


def test_read_segments_without_segments_raises():
    with expected_protocol(InfiniiVisionScope, [(":WAVeform:SEGMented:COUNt?", "0")]) as scope:
        with pytest.raises(InstrumentError, match="no segments"):
            scope.read_segments(1)


def test_channel_controls_and_validators():
    with expected_protocol(
        InfiniiVisionScope,
        [(":CHANnel3:SCALe 0.2", None), (":CHANnel3:SCALe?", "+2.00000E-01"), (":CHANnel3:COUPling?", "AC")],
    ) as scope:
        scope.ch_3.scale_V = 0.2
        assert scope.ch_3.scale_V == pytest.approx(0.2)
        assert scope.ch_3.coupling == "AC"
        with pytest.raises(ValueError):
            scope.ch_3.impedance = "75"
        with pytest.raises(ValueError):
            scope.trigger_sweep = "SINGLE"


def test_malformed_reply_quotes_it():
    with expected_protocol(InfiniiVisionScope, [(":TIMebase:RANGe?", "1.0E-3,junk")]) as scope:
        with pytest.raises(InstrumentError, match="junk"):
            scope.timebase_range_s


def test_driver_and_emulator_offer_the_same_sample_rates():
    from spinlab.instruments.keysight_scope import SAMPLE_RATES_Hz as DRIVER_RATES
    from spinlab.sim_backends.emulated.scope import SAMPLE_RATES_Hz as EMULATOR_RATES

    assert DRIVER_RATES == EMULATOR_RATES and 10e6 in DRIVER_RATES and 100e6 in DRIVER_RATES


def test_nan_where_an_integer_belongs_is_an_instrument_error():
    with expected_protocol(InfiniiVisionScope, [(":OPERegister:CONDition?", "+9.91E+37")]) as scope:
        with pytest.raises(InstrumentError, match="expected an integer"):
            scope.operation_condition
