"""TektronixAWG5200 driver: the exact SCPI it exchanges (pymeasure expected_protocol), written
from the AWG5200 programmer manual; the float32 waveform block is pinned byte for byte."""

import struct

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError, WaveformError
from spinlab.instruments.roles import AwgPlaying, missing_members
from spinlab.instruments.tektronix_awg import TEKTRONIX_AWG5200, TektronixAWG5200

NO_ERROR = '+0,"No error"'
CAPS = {"memory_samples": 1_000_000, "max_sample_rate_Hz": 2.5e9}
SAMPLES = np.array([0.0, 0.2, 0.4, 0.2])  # offset 0.2 V, 0.4 Vpp: -1, 0, 1, 0 of full scale
BLOCK = b"#216" + struct.pack("<4f", -1.0, 0.0, 1.0, 0.0)
UPLOAD = [
    ("AWGC:STOP", None),
    ("WLIS:WAV:DEL ALL", None),
    ('WLIS:WAV:NEW "drive",4', None),
    (b'WLIS:WAV:DATA "drive",0,4,' + BLOCK + b"\n", None),
    ('SOUR1:CASS:WAV "drive"', None),
    ("OUTP1:PATH DCHV", None),
    ("CLOC:SRAT 1000000000", None),
    ("SOUR1:VOLT:OFFS 0", None),
    ("SOUR1:VOLT 0.4", None),
    ("SOUR1:VOLT:OFFS 0.2", None),
    ("SYST:ERR?", NO_ERROR),
]


def test_upload_sends_one_little_endian_float32_block_then_checks_errors():
    with expected_protocol(TektronixAWG5200, UPLOAD, **CAPS) as awg:
        info = awg.upload_arb("drive", SAMPLES, 1e9)
    assert info == {"amplitude_Vpp": pytest.approx(0.4), "offset_V": pytest.approx(0.2), "samples": 4,
                    "sample_rate_Hz": 1e9}  # fmt: skip


def test_verified_upload_reads_the_waveform_back_byte_for_byte():
    with expected_protocol(
        TektronixAWG5200, [*UPLOAD, ('WLIS:WAV:DATA? "drive"', BLOCK + b"\n")], **CAPS
    ) as awg:
        awg.upload_arb("drive", SAMPLES, 1e9, verify=True)


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        (b"#212" + struct.pack("<3f", -1.0, 0.0, 1.0), "3 samples instead of 4"),
        (b"#216" + struct.pack("<4f", -1.0, 0.0, 0.5, 0.0), "1 sample"),
    ],
)
def test_verified_upload_refuses_a_damaged_waveform(reply, what):
    with (
        expected_protocol(
            TektronixAWG5200, [*UPLOAD, ('WLIS:WAV:DATA? "drive"', reply + b"\n")], **CAPS
        ) as awg,
        pytest.raises(InstrumentError, match=f"{what}.*damaged in transfer"),
    ):
        awg.upload_arb("drive", SAMPLES, 1e9, verify=True)


def test_ascii_upload_sends_the_same_values_as_text():
    text = UPLOAD.copy()
    text[3] = ('WLIS:WAV:DATA "drive",0,4,-1,0,1,0', None)
    with expected_protocol(TektronixAWG5200, text, **CAPS) as awg:
        awg.upload_arb_ascii("drive", SAMPLES, 1e9)


def test_upload_raises_with_every_queued_error():
    with (
        expected_protocol(
            TektronixAWG5200,
            [*UPLOAD[:-1], ("SYST:ERR?", '-222,"Data out of range"'), ("SYST:ERR?", NO_ERROR)],
            **CAPS,
        ) as awg,
        pytest.raises(InstrumentError, match=r'-222,"Data out of range"'),
    ):
        awg.upload_arb("drive", SAMPLES, 1e9)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"samples_V": np.zeros(0), "sample_rate_Hz": 1e6}, WaveformError),
        ({"samples_V": np.zeros(1_000_001), "sample_rate_Hz": 1e6}, WaveformError),  # above memory
        ({"samples_V": np.zeros((2, 8)), "sample_rate_Hz": 1e6}, WaveformError),
        ({"samples_V": np.array([0.0, np.nan]), "sample_rate_Hz": 1e6}, WaveformError),
        ({"samples_V": np.zeros(8), "sample_rate_Hz": 3e9}, ConfigError),  # above 2.5 GSa/s
        ({"samples_V": np.zeros(8), "sample_rate_Hz": 100.0}, ConfigError),  # below 300 Sa/s
        ({"samples_V": np.array([0.0, 2.5]), "sample_rate_Hz": 1e6}, WaveformError),  # beyond +-2 V
    ],
)
def test_invalid_uploads_are_refused_before_sending(kwargs, error):
    with expected_protocol(TektronixAWG5200, [], **CAPS) as awg, pytest.raises(error):
        awg.upload_arb("drive", **kwargs)


@pytest.mark.parametrize("name", ["", "1abc", "has space", 'quo"te', "x" * 33])
def test_waveform_name_is_validated(name):
    with (
        expected_protocol(TektronixAWG5200, [], **CAPS) as awg,
        pytest.raises(ValueError, match="waveform name"),
    ):
        awg.upload_arb(name, np.zeros(8), 1e6)


def test_capabilities_from_options_and_waveform_list():
    with expected_protocol(
        TektronixAWG5200, [("*OPT?", "50,DC,SEQ"), ("WLIS:WAV:LMAX?", "2000000000")]
    ) as awg:
        assert awg.max_sample_rate_Hz == 5e9
        assert awg.memory_samples == 2_000_000_000
        assert awg.capabilities.family == "AWG5200"
    with expected_protocol(TektronixAWG5200, [("*OPT?", "25,DC")]) as awg:
        assert awg.max_sample_rate_Hz == 2.5e9


def test_arm_starts_a_triggered_run_and_trigger_is_an_a_trigger():
    with expected_protocol(
        TektronixAWG5200,
        [
            ("SOUR1:RMOD TRIG", None),
            ("SOUR1:TINP ATR", None),
            ("OUTP1:WVAL:ANAL FIRS", None),
            ("AWGC:RUN:IMM", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("TRIG:IMM ATR", None),
        ],
        **CAPS,
    ) as awg:
        awg.arm_burst(cycles=1, source="BUS")
        awg.trigger()


@pytest.mark.parametrize(("kwargs", "match"), [({"cycles": 2}, "1 cycle"), ({"source": "TIM"}, "BUS or EXT")])
def test_arm_refuses_what_the_triggered_mode_cannot_do(kwargs, match):
    with expected_protocol(TektronixAWG5200, [], **CAPS) as awg, pytest.raises(ValueError, match=match):
        awg.arm_burst(**kwargs)


def test_output_and_playing_state():
    with expected_protocol(
        TektronixAWG5200,
        [
            ("OUTP1:STAT 1", None),
            ("OUTP1:STAT?", "1"),
            ("SOUR1:CASS?", '"SPINLAB"'),
            ("SOUR1:CASS?", '""'),
            ("AWGC:RST?", "1"),
        ],
        **CAPS,
    ) as awg:
        awg.output_enabled = True
        assert awg.output_enabled is True
        assert awg.playing_state() == AwgPlaying("ARB", "SPINLAB", 50.0)
        assert awg.playing_state() == AwgPlaying("NONE", "", 50.0)
        assert awg.run_state == 1


def test_the_load_is_always_50_ohm():
    with expected_protocol(TektronixAWG5200, [], **CAPS) as awg:
        awg.output_load_ohm = 50.0
        assert awg.output_load_ohm == 50.0
        with pytest.raises(ValueError, match="no load setting"):
            awg.output_load_ohm = float("inf")


@pytest.mark.parametrize(
    ("setting", "value"), [("amplitude_Vpp", 6.0), ("offset_V", -2.5), ("sample_rate_Hz", 1e10)]
)
def test_settings_beyond_the_data_sheet_are_refused_before_sending(setting, value):
    with expected_protocol(TektronixAWG5200, [], **CAPS) as awg, pytest.raises(ValueError):
        setattr(awg, setting, value)


def test_shutdown_switches_the_output_off_and_checks():
    off = [("OUTP1:STAT 0", None), ("OUTP1:STAT?", "1")]
    with (
        expected_protocol(TektronixAWG5200, off, **CAPS) as awg,
        pytest.raises(InstrumentError, match="still"),
    ):
        awg.shutdown()


def test_registration_serves_the_awg5200_family_only():
    assert missing_members(TektronixAWG5200, "awg") == []
    assert TEKTRONIX_AWG5200.serves("TEKTRONIX,AWG5208,B0,FV:6.3")
    assert not TEKTRONIX_AWG5200.serves("TEKTRONIX,AWG70002A,B0,FV:6.3")
