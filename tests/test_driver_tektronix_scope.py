"""TektronixMSO driver (4/5/6 Series MSO): exact SCPI (pymeasure expected_protocol), the
WFMOutpre? preamble, binary CURVe? blocks checked against it, events, and the ASCII path."""

import struct

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError
from spinlab.instruments.tektronix_scope import TEK_MODELS, TektronixMSO, model_of, parse_preamble

IDN = "TEKTRONIX,MSO54,C100001,CF:91.1CT FV:1.30.2.111"
NO_EVENTS = '0,"No events to report - queue empty"'
SELECT = "HEADer 0;:DATa:SOUrce CH1;:DATa:ENCdg {};:WFMOutpre:BYT_Nr 2;:DATa:STARt 1;:DATa:STOP 1000000000"
# 4 points, 16-bit signed LSB first, 0.8 ns apart from -1.6 ns, 1 mV per code, 0.1 V at code 0
PREAMBLE = (
    '2;16;BINARY;RI;LSB;"Ch1, DC coupling, 6.5mV/div, 4 points";4;Y;LINEAR;"s";800.0E-12;-1.6E-9;0;'
    '"V";1.0E-3;0.0E+0;100.0E-3;TIME;ANALOG;0.0E+0;0.0E+0;0.0E+0'
)
CODES = [0, 16, -16, 32752]


def block(payload: bytes) -> bytes:
    return f"#{len(str(len(payload)))}{len(payload)}".encode() + payload + b"\n"


def test_preamble_is_parsed_by_position_or_by_header():
    pre = parse_preamble(PREAMBLE)
    assert (pre["BYT_NR"], pre["ENCDG"], pre["BN_FMT"], pre["BYT_OR"], pre["NR_PT"]) == (
        2,
        "BINARY",
        "RI",
        "LSB",
        4,
    )
    assert (pre["XINCR"], pre["XZERO"], pre["YMULT"], pre["YOFF"], pre["YZERO"]) == (
        8e-10,
        -1.6e-9,
        1e-3,
        0,
        0.1,
    )
    keyed = (
        ':WFMOUTPRE:BYT_NR 2;BIT_NR 16;ENCDG BINARY;BN_FMT RI;BYT_OR LSB;WFID "Ch1, DC, 4 points";NR_PT 4;'
        'PT_FMT Y;PT_ORDER LINEAR;XUNIT "s";XINCR 800.0E-12;XZERO -1.6E-9;PT_OFF 0;YUNIT "V";YMULT 1.0E-3;'
        "YOFF 0.0E+0;YZERO 100.0E-3"
    )
    assert parse_preamble(keyed) == {k: v for k, v in pre.items()}


@pytest.mark.parametrize(
    "reply, what",
    [
        ("2;16;BINARY;RI;LSB", "no WFID"),
        (PREAMBLE.replace(";4;Y;", ";four;Y;"), "NR_PT"),
        (PREAMBLE.replace("BINARY;RI", "BINARY;XX"), "unknown encoding"),
        (PREAMBLE.replace("800.0E-12", "0.0"), "XINCR must be positive"),
    ],
)
def test_malformed_preamble_raises_with_the_raw_reply(reply, what):
    with pytest.raises(InstrumentError, match=what) as info:
        parse_preamble(reply)
    assert reply in str(info.value)


def test_read_waveform_scales_signed_lsb_first_codes():
    with expected_protocol(
        TektronixMSO,
        [
            (SELECT.format("SRIbinary"), None),
            ("WFMOutpre?", PREAMBLE),
            ("CURVe?", block(struct.pack("<4h", *CODES))),
        ],
    ) as scope:
        wave = scope.read_waveform(1)
    np.testing.assert_allclose(wave.samples, 0.1 + 1e-3 * np.array(CODES, float))
    assert wave.dt_s == 8e-10 and wave.t0_s == -1.6e-9


def test_ascii_path_reads_the_same_values():
    ascii_pre = PREAMBLE.replace("BINARY", "ASCII")
    with expected_protocol(
        TektronixMSO,
        [(SELECT.format("ASCii"), None), ("WFMOutpre?", ascii_pre), ("CURVe?", "0,16,-16,32752")],
    ) as scope:
        wave = scope.read_waveform(1, ascii=True)
    np.testing.assert_allclose(wave.samples, 0.1 + 1e-3 * np.array(CODES, float))


@pytest.mark.parametrize(
    "payload",
    [struct.pack("<3h", *CODES[:3]), struct.pack("<5h", *CODES, 0)],  # short, long
)
def test_block_length_must_match_the_point_count(payload):
    with (
        expected_protocol(
            TektronixMSO,
            [(SELECT.format("SRIbinary"), None), ("WFMOutpre?", PREAMBLE), ("CURVe?", block(payload))],
        ) as scope,
        pytest.raises(InstrumentError, match="block"),
    ):
        scope.read_waveform(1)


def test_an_unasked_encoding_is_refused_before_the_curve():
    pairs = [(SELECT.format("SRIbinary"), None), ("WFMOutpre?", PREAMBLE.replace("2;16;", "1;8;", 1))]
    with expected_protocol(TektronixMSO, pairs) as scope, pytest.raises(InstrumentError, match="asked"):
        scope.read_waveform(1)


def test_no_acquired_record_raises():
    pairs = [(SELECT.format("SRIbinary"), None), ("WFMOutpre?", PREAMBLE.replace(";4;Y;", ";0;Y;"))]
    with expected_protocol(TektronixMSO, pairs) as scope, pytest.raises(InstrumentError, match="no acquired"):
        scope.read_waveform(1)


SETUP = [
    ("*IDN?", IDN),
    ("ACQuire:STATE 0", None),
    ("DISplay:GLObal:CH1:STATE 1", None),
    ("CH1:TERmination 50", None),
    ("CH1:COUPling DC", None),
    ("CH1:SCAle 0.005", None),
    ("CH1:POSition 0", None),
    ("CH1:OFFSet 0.02", None),
    ("HORizontal:MODe MAN", None),
    ("HORizontal:MODe:SAMPLERate 1250000000", None),
    ("HORizontal:MODe:RECOrdlength 1250", None),
    ("HORizontal:DELay:MODe 0", None),
    ("HORizontal:POSition 0", None),
    ("TRIGger:A:TYPe EDGe", None),
    ("TRIGger:A:EDGE:SOUrce AUX", None),
    ("TRIGger:A:EDGE:SLOpe RIS", None),
    ("TRIGger:A:LEVel:AUXin 1", None),
    ("TRIGger:A:MODe NORM", None),
    ("ACQuire:STOPAfter SEQ", None),
    ("HORizontal:MODe:SAMPLERate?", "1.25E+9"),
]


def test_configure_capture_pins_the_setup_and_reads_events():
    pairs = [*SETUP, ("HORizontal:MODe:RECOrdlength?", "1250"), ("*ESR?", "0"), ("EVMsg?", NO_EVENTS)]
    with expected_protocol(TektronixMSO, pairs) as scope:
        capture = scope.configure_capture(1, 1e-6, 1.25e9, 0.05, offset_V=0.02, trigger_level_V=1.0)
    assert capture == {"points": 1250, "sample_rate_Hz": 1.25e9, "start_s": 0.0, "segments": 1}


def test_an_event_after_the_setup_is_an_error():
    pairs = [
        *SETUP,
        ("HORizontal:MODe:RECOrdlength?", "1250"),
        ("*ESR?", "16"),
        ("EVMsg?", '221,"Settings conflict"'),
        ("EVMsg?", NO_EVENTS),
    ]
    with (
        expected_protocol(TektronixMSO, pairs) as scope,
        pytest.raises(InstrumentError, match="Settings conflict"),
    ):
        scope.configure_capture(1, 1e-6, 1.25e9, 0.05, offset_V=0.02)


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"sample_rate_Hz": 1e9}, "not one the MSO5 offers"),
        ({"full_scale_V": 20.0}, "full_scale_V"),
        ({"segments": 2}, "segments"),
        ({"duration_s": 1.0}, "record"),
    ],
)
def test_configure_capture_validates_before_sending(kwargs, what):
    args = {"channel": 1, "duration_s": 1e-6, "sample_rate_Hz": 1.25e9, "full_scale_V": 0.05, **kwargs}
    with expected_protocol(TektronixMSO, [("*IDN?", IDN)]) as scope, pytest.raises(ConfigError, match=what):
        scope.configure_capture(**args)


def test_arm_wait_and_done():
    with expected_protocol(
        TektronixMSO,
        [
            ("ACQuire:STATE 1", None),
            ("TRIGger:STATE?", "ARMED"),
            ("TRIGger:STATE?", "READY"),
            ("ACQuire:STATE?", "1"),
            ("ACQuire:STATE?", "0"),
        ],
    ) as scope:
        scope.arm_single()
        assert scope.waiting_for_trigger() is False
        assert scope.waiting_for_trigger() is True
        scope.wait_acquired(timeout_s=1.0)


def test_a_scope_stopped_before_its_trigger_is_an_error():
    with (
        expected_protocol(TektronixMSO, [("TRIGger:STATE?", "SAVE")]) as scope,
        pytest.raises(InstrumentError, match="stopped before the trigger"),
    ):
        scope.waiting_for_trigger()


def test_series_come_from_the_idn():
    assert model_of(IDN) is TEK_MODELS["MSO5"]
    assert model_of("TEKTRONIX,MSO64B,C1,CF:91.1CT FV:2.0").max_sample_rate_Hz == 25e9
    assert model_of("TEKTRONIX,MSO44,C1,CF:91.1CT FV:2.0").memory_points == 31_250_000
    with pytest.raises(InstrumentError, match="not a Tektronix"):
        model_of("TEKTRONIX,TDS2024B,C1,1")
