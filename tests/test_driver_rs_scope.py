"""RsScope driver (R&S RTB2000/RTM3000/RTO): exact SCPI (pymeasure expected_protocol), the data
header, binary REAL,32 blocks checked against it, and the ASCII path."""

import struct

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.rs_scope import RS_MODELS, RsScope, model_of, parse_header, sample_rates

IDN = "Rohde&Schwarz,RTM3004,1335.8794K04/100001,01.550"
NO_ERROR = '0,"No error"'
TRANSFER = "FORMat:DATA REAL,32;:FORMat:BORDer LSBFirst;:CHANnel1:DATA:POINts MAXimum"
ASCII = "FORMat:DATA ASCii;:FORMat:BORDer LSBFirst;:CHANnel1:DATA:POINts MAXimum"
# 4 samples from -2 ns, 1 ns apart
HEADER = "-2.0E-09,1.0E-09,4,1"
VOLTS = [0.0, 0.015, -0.0125, 0.02]


def block(values, fmt="<4f", extra=b""):
    payload = struct.pack(fmt, *values) + extra
    return f"#{len(str(len(payload)))}{len(payload)}".encode() + payload + b"\n"


def test_header_gives_start_step_and_points():
    head = parse_header(HEADER)
    assert head["start_s"] == -2e-9 and head["points"] == 4 and head["values_per_sample"] == 1
    assert head["dt_s"] == pytest.approx(1e-9)


@pytest.mark.parametrize(
    "reply, what",
    [
        ("-2.0E-09,1.0E-09,4", "4 fields"),
        ("-2.0E-09,1.0E-09,four,1", "count"),
        ("-2.0E-09,1.0E-09,4,3", "values per sample"),
        ("1.0E-09,-2.0E-09,4,1", "not after"),
    ],
)
def test_malformed_header_raises_with_the_raw_reply(reply, what):
    with pytest.raises(InstrumentError, match=what) as info:
        parse_header(reply)
    assert reply in str(info.value)


def test_read_waveform_takes_real32_volts_lsb_first():
    with expected_protocol(
        RsScope, [(TRANSFER, None), ("CHANnel1:DATA:HEADer?", HEADER), ("CHANnel1:DATA?", block(VOLTS))]
    ) as scope:
        wave = scope.read_waveform(1)
    np.testing.assert_allclose(wave.samples, np.float32(VOLTS))
    assert wave.dt_s == pytest.approx(1e-9) and wave.t0_s == -2e-9


def test_ascii_path_reads_the_same_values():
    with expected_protocol(
        RsScope,
        [(ASCII, None), ("CHANnel1:DATA:HEADer?", HEADER), ("CHANnel1:DATA?", "0,1.5E-2,-1.25E-2,2E-2")],
    ) as scope:
        wave = scope.read_waveform(1, ascii=True)
    np.testing.assert_allclose(wave.samples, VOLTS)


@pytest.mark.parametrize(
    "reply, what",
    [
        (block(VOLTS[:3], "<3f"), "block"),  # 12 bytes where the header announced 16
        (block(VOLTS, extra=b"\x00\x00\x00\x00"), "block"),  # 20 bytes
        (block([0.0, float("nan"), 0.0, 0.0]), "non-finite"),
    ],
)
def test_damaged_transfers_raise(reply, what):
    with (
        expected_protocol(
            RsScope, [(TRANSFER, None), ("CHANnel1:DATA:HEADer?", HEADER), ("CHANnel1:DATA?", reply)]
        ) as scope,
        pytest.raises(InstrumentError, match=what),
    ):
        scope.read_waveform(1)


def test_no_acquired_record_raises_before_reading_data():
    pairs = [(TRANSFER, None), ("CHANnel1:DATA:HEADer?", "0,0,0,1")]
    with expected_protocol(RsScope, pairs) as scope, pytest.raises(InstrumentError, match="no acquired"):
        scope.read_waveform(1)


SETUP = [
    ("*IDN?", IDN),
    ("STOP", None),
    ("CHANnel1:STATe 1", None),
    ("CHANnel1:COUPling DC", None),
    ("CHANnel1:SCALe 0.005", None),
    ("CHANnel1:POSition 0", None),
    ("CHANnel1:OFFSet 0.02", None),
    ("TIMebase:REFerence 10", None),
    ("TIMebase:RANGe 1e-06", None),
    ("TIMebase:POSition 1e-07", None),
    ("ACQuire:POINts 1000", None),
    ("TRIGger:A:MODE NORM", None),
    ("TRIGger:A:SOURce EXT", None),
    ("TRIGger:A:EDGE:SLOPe POS", None),
    ("TRIGger:A:LEVel5:VALue 1", None),
]


def test_configure_capture_pins_the_setup():
    pairs = [*SETUP, ("ACQuire:SRATe?", "1.0E+09"), ("ACQuire:POINts?", "1000"), ("SYSTem:ERRor?", NO_ERROR)]
    with expected_protocol(RsScope, pairs) as scope:
        capture = scope.configure_capture(1, 1e-6, 1e9, 0.05, offset_V=0.02, trigger_level_V=1.0)
    assert capture == {"points": 1000, "sample_rate_Hz": 1e9, "start_s": 0.0, "segments": 1}


def test_configure_capture_refuses_a_readback_mismatch():
    pairs = [*SETUP, ("ACQuire:SRATe?", "5.0E+08"), ("ACQuire:POINts?", "500")]
    with expected_protocol(RsScope, pairs) as scope, pytest.raises(InstrumentError, match="500 points at 5e"):
        scope.configure_capture(1, 1e-6, 1e9, 0.05, offset_V=0.02)


def test_the_rto_is_triggered_through_its_own_trigger_subsystem():
    rto = [("*IDN?", "Rohde&Schwarz,RTO2044,1329.7002k44/100001,4.70.1.0")] + [
        (command.replace("TRIGger:A:", "TRIGger:"), reply) for command, reply in SETUP[1:]
    ]
    pairs = [*rto, ("ACQuire:SRATe?", "1.0E+09"), ("ACQuire:POINts?", "1000"), ("SYSTem:ERRor?", NO_ERROR)]
    with expected_protocol(RsScope, pairs) as scope:
        scope.configure_capture(1, 1e-6, 1e9, 0.05, offset_V=0.02, trigger_level_V=1.0)
    assert ("TRIGger:LEVel5:VALue 1", None) in pairs


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"sample_rate_Hz": 3e9}, "not one the RTM3000 offers"),
        ({"full_scale_V": 200.0}, "full_scale_V"),
        ({"segments": 4}, "segments"),
        ({"duration_s": 1.0}, "memory"),
        ({"impedance": "75"}, "impedance"),
        ({"trigger_level_V": 12.0}, "trigger_level_V"),
    ],
)
def test_configure_capture_validates_before_sending(kwargs, what):
    args = {"channel": 1, "duration_s": 1e-6, "sample_rate_Hz": 1e9, "full_scale_V": 0.05, **kwargs}
    with expected_protocol(RsScope, [("*IDN?", IDN)]) as scope, pytest.raises(ConfigError, match=what):
        scope.configure_capture(**args)


def test_arm_wait_and_done():
    with expected_protocol(
        RsScope,
        [
            ("SINGle", None),
            ("STATus:OPERation:CONDition?", "0"),
            ("ACQuire:STATe?", "RUN"),
            ("STATus:OPERation:CONDition?", "8"),
            ("ACQuire:STATe?", "RUN"),
            ("ACQuire:STATe?", "COMP"),
        ],
    ) as scope:
        scope.arm_single()
        assert scope.waiting_for_trigger() is False
        assert scope.waiting_for_trigger() is True
        scope.wait_acquired(timeout_s=1.0)


def test_a_scope_stopped_before_its_trigger_is_an_error():
    with (
        expected_protocol(
            RsScope, [("STATus:OPERation:CONDition?", "0"), ("ACQuire:STATe?", "STOP")]
        ) as scope,
        pytest.raises(InstrumentError, match="stopped before the trigger"),
    ):
        scope.waiting_for_trigger()


def test_models_and_rates_come_from_the_idn():
    assert model_of(IDN) is RS_MODELS["RTM3000"]
    assert model_of("Rohde&Schwarz,RTB2004,1333.1005K04/1,02.300").max_sample_rate_Hz == 2.5e9
    assert model_of("Rohde&Schwarz,RTO2044,1329.7002k44/1,4.70").family == "RTO"
    with pytest.raises(InstrumentError, match="not an R&S"):
        model_of("KEYSIGHT TECHNOLOGIES,DSOX4024A,1,1")
    assert sample_rates(RS_MODELS["RTM3000"])[:4] == (5e9, 2.5e9, 1e9, 5e8)
