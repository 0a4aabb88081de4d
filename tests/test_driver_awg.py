"""Keysight33500B driver: the exact SCPI it exchanges (pymeasure expected_protocol) and its
validation. Binary blocks are pinned byte for byte."""

import math
import struct

import numpy as np
import pytest
from pymeasure.test import expected_protocol

from spinlab.errors import ConfigError, InstrumentError, WaveformError
from spinlab.instruments.keysight_awg import Keysight33500B

NO_ERROR = '+0,"No error"'
CAPS = {"memory_samples": 1_000_000, "max_sample_rate_Hz": 160e6}


def test_upload_arb_sends_little_endian_dac_block_then_checks_errors():
    samples = np.array([0.0, 0.1, 0.2, 0.1, 0.0, -0.1, -0.2, -0.1])
    codes = [0, 16384, 32767, 16384, 0, -16384, -32767, -16384]
    block = b"#216" + struct.pack("<8h", *codes)
    with expected_protocol(
        Keysight33500B,
        [
            ("FORM:BORD SWAP", None),
            ("SOUR1:DATA:VOL:CLE", None),
            (b"SOUR1:DATA:ARB:DAC drive," + block + b"\n", None),
            ("SOUR1:FUNC:ARB drive", None),
            ("SOUR1:FUNC ARB", None),
            ("SOUR1:FUNC:ARB:SRAT 10000000", None),
            ("SOUR1:VOLT:OFFS 0", None),
            ("SOUR1:VOLT 0.4", None),
            ("SOUR1:VOLT:OFFS 0", None),
            ("SYST:ERR?", NO_ERROR),
        ],
        **CAPS,
    ) as awg:
        info = awg.upload_arb("drive", samples, 10e6)
    assert info["amplitude_Vpp"] == pytest.approx(0.4)
    assert info["offset_V"] == pytest.approx(0.0)


def test_upload_arb_offset_and_full_scale_codes():
    samples = np.linspace(0.1, 0.3, 16)
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        codes, amplitude, offset = awg.dac_scaling(samples)
    assert codes.min() == -32767 and codes.max() == 32767
    assert offset == pytest.approx(0.2) and amplitude == pytest.approx(0.2)
    np.testing.assert_allclose(offset + codes * amplitude / 2 / 32767, samples, atol=amplitude / 65534)


def test_tiny_amplitude_keeps_output_exact():
    samples = np.full(8, 0.25)
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        codes, amplitude, offset = awg.dac_scaling(samples)
    assert amplitude == Keysight33500B.MIN_AMPLITUDE_Vpp
    np.testing.assert_allclose(offset + codes * amplitude / 2 / 32767, samples)


def test_upload_raises_with_every_queued_error():
    samples = np.sin(np.linspace(0, 6, 64)) * 0.1
    codes, _, _ = Keysight33500B.dac_scaling(samples)
    block = b"#3128" + codes.astype("<i2").tobytes()
    with expected_protocol(
        Keysight33500B,
        [
            ("FORM:BORD SWAP", None),
            ("SOUR1:DATA:VOL:CLE", None),
            (b"SOUR1:DATA:ARB:DAC sine," + block + b"\n", None),
            ("SOUR1:FUNC:ARB sine", None),
            ("SOUR1:FUNC ARB", None),
            ("SOUR1:FUNC:ARB:SRAT 1000000", None),
            ("SOUR1:VOLT:OFFS 0", None),
            (f"SOUR1:VOLT {samples.max() - samples.min():.10g}", None),
            (f"SOUR1:VOLT:OFFS {0.5 * (samples.max() + samples.min()):.10g}", None),
            ("SYST:ERR?", '-223,"Too much data"'),
            ("SYST:ERR?", '-222,"Data out of range; DAC codes"'),
            ("SYST:ERR?", NO_ERROR),
        ],
        **CAPS,
    ) as awg:
        with pytest.raises(
            InstrumentError, match=r'-223,"Too much data"; -222,"Data out of range; DAC codes"'
        ):
            awg.upload_arb("sine", samples, 1e6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_send_nothing(bad):
    samples = np.zeros(16)
    samples[5] = bad
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        with pytest.raises(WaveformError, match="nothing was sent"):
            awg.upload_arb("drive", samples, 1e6)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"samples_V": np.zeros(7), "sample_rate_Hz": 1e6}, WaveformError),  # below 8 points
        ({"samples_V": np.zeros(1_000_001), "sample_rate_Hz": 1e6}, WaveformError),  # above memory
        ({"samples_V": np.zeros((2, 8)), "sample_rate_Hz": 1e6}, WaveformError),  # not 1-D
        ({"samples_V": np.zeros(8), "sample_rate_Hz": 200e6}, ConfigError),  # above 160 MSa/s
        ({"samples_V": np.zeros(8), "sample_rate_Hz": float("nan")}, ConfigError),
        ({"samples_V": np.array([6.0] * 8), "sample_rate_Hz": 1e6}, WaveformError),  # beyond +-5 V
    ],
)
def test_invalid_uploads_are_rejected_before_sending(kwargs, error):
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        with pytest.raises(error):
            awg.upload_arb("drive", **kwargs)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "waytoolongname13", "semi;colon"])
def test_arb_name_is_validated(name):
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        with pytest.raises(ValueError):
            awg.upload_arb(name, np.zeros(8), 1e6)


def test_capabilities_come_from_idn_and_options():
    with expected_protocol(
        Keysight33500B,
        [("*IDN?", "Agilent Technologies,33522B,MY52400001,4.03-1.19-2.00-52-00"), ("*OPT?", '"MEM","IQP"')],
    ) as awg:
        assert awg.memory_samples == 16_000_000
        assert awg.max_sample_rate_Hz == 160e6
    with expected_protocol(
        Keysight33500B, [("*IDN?", "Keysight Technologies,33622A,MY1,A.02"), ("*OPT?", "0")]
    ) as awg:
        assert awg.memory_samples == 4_000_000
        assert awg.max_sample_rate_Hz == 1e9


def test_unknown_model_is_refused():
    with expected_protocol(Keysight33500B, [("*IDN?", "Rigol,DG1022,1,1"), ("*OPT?", "0")]) as awg:
        with pytest.raises(InstrumentError, match="not a 33500B"):
            awg.memory_samples


def test_arm_burst_and_trigger():
    with expected_protocol(
        Keysight33500B,
        [
            ("SOUR1:BURS:MODE TRIG", None),
            ("SOUR1:BURS:NCYC 3", None),
            ("TRIG1:SOUR BUS", None),
            ("SOUR1:BURS:STAT 1", None),
            ("SYST:ERR?", NO_ERROR),
            ("*TRG", None),
        ],
        **CAPS,
    ) as awg:
        awg.arm_burst(cycles=3, source="BUS")
        awg.trigger()


def test_arm_burst_rejects_unknown_source():
    with expected_protocol(
        Keysight33500B, [("SOUR1:BURS:MODE TRIG", None), ("SOUR1:BURS:NCYC 1", None)], **CAPS
    ) as awg:
        with pytest.raises(ValueError):
            awg.arm_burst(cycles=1, source="MANUAL")


def test_output_load_high_z_and_readback():
    with expected_protocol(
        Keysight33500B,
        [
            ("OUTP1:LOAD INF", None),
            ("OUTP1:LOAD?", "+9.9E+37"),
            ("OUTP1:LOAD 50", None),
            ("OUTP1:LOAD?", "+5.00000000000000E+01"),
        ],
        **CAPS,
    ) as awg:
        awg.output_load_ohm = math.inf
        assert math.isinf(awg.output_load_ohm)
        awg.output_load_ohm = 50
        assert awg.output_load_ohm == 50.0
        with pytest.raises(ValueError):
            awg.output_load_ohm = 0.5


def test_output_state_round_trip():
    with expected_protocol(Keysight33500B, [("OUTP1 1", None), ("OUTP1?", "1")], **CAPS) as awg:
        awg.output_enabled = True
        assert awg.output_enabled is True


@pytest.mark.parametrize("reply", ["garbage", "1,2", "", "+1.0E+00 V"])
def test_malformed_reply_raises_with_the_raw_reply(reply):
    with expected_protocol(Keysight33500B, [("SOUR1:VOLT?", reply)], **CAPS) as awg:
        with pytest.raises(InstrumentError, match="amplitude") as info:
            awg.amplitude_Vpp
    assert repr(reply)[1:-1] in str(info.value)


def test_malformed_error_reply_raises():
    with expected_protocol(Keysight33500B, [("SYST:ERR?", "oops")], **CAPS) as awg:
        with pytest.raises(InstrumentError, match="oops"):
            awg.check_errors()


def test_check_errors_returns_codes_and_messages():
    with expected_protocol(
        Keysight33500B, [("SYST:ERR?", '-113,"Undefined header"'), ("SYST:ERR?", '+0,"No error"')], **CAPS
    ) as awg:
        assert awg.check_errors() == [(-113, "Undefined header")]


def test_shutdown_turns_output_off():
    with expected_protocol(Keysight33500B, [("OUTP1 0", None), ("OUTP1?", "0")], **CAPS) as awg:
        awg.shutdown()
        assert awg.isShutdown


def test_shutdown_refuses_to_pretend_output_is_off():
    with expected_protocol(Keysight33500B, [("OUTP1 0", None), ("OUTP1?", "1")], **CAPS) as awg:
        with pytest.raises(InstrumentError, match="still reports ON"):
            awg.shutdown()
        assert awg.isShutdown


def test_amplitude_validator():
    with expected_protocol(Keysight33500B, [], **CAPS) as awg:
        with pytest.raises(ValueError):
            awg.amplitude_Vpp = 50
        with pytest.raises(ValueError):
            awg.burst_cycles = 0


# --- reading back what the generator holds ----------------------------------------------------
def _verified_upload(attributes: str):
    samples = np.array([0.0, 0.1, 0.2, 0.1, 0.0, -0.1, -0.2, -0.1])
    block = b"#216" + struct.pack("<8h", 0, 16384, 32767, 16384, 0, -16384, -32767, -16384)
    return samples, [
        ("FORM:BORD SWAP", None),
        ("SOUR1:DATA:VOL:CLE", None),
        (b"SOUR1:DATA:ARB:DAC drive," + block + b"\n", None),
        ("SOUR1:FUNC:ARB drive", None),
        ("SOUR1:FUNC ARB", None),
        ("SOUR1:FUNC:ARB:SRAT 10000000", None),
        ("SOUR1:VOLT:OFFS 0", None),
        ("SOUR1:VOLT 0.4", None),
        ("SOUR1:VOLT:OFFS 0", None),
        ("SYST:ERR?", NO_ERROR),
        ("SOUR1:DATA:ATTR:POIN? drive;AVER? drive;PTP? drive", attributes),
    ]


def test_verified_upload_reads_back_points_mean_and_peak_to_peak():
    samples, protocol = _verified_upload("+8;+0.00000000000000E+00;+2.00000000000000E+00")
    with expected_protocol(Keysight33500B, protocol, **CAPS) as awg:
        awg.upload_arb("drive", samples, 10e6, verify=True)


@pytest.mark.parametrize(
    "attributes,what",
    [
        ("+7;+0.00000000000000E+00;+2.00000000000000E+00", "7 points instead of 8"),
        ("+8;+3.05185094759972E-05;+2.00000000000000E+00", "mean"),  # one code changed by 8
        ("+8;+0.00000000000000E+00;+1.99975585192419E+00", "peak-to-peak"),  # 8 codes short
    ],
)
def test_verified_upload_refuses_a_damaged_arb(attributes, what):
    samples, protocol = _verified_upload(attributes)
    with expected_protocol(Keysight33500B, protocol, **CAPS) as awg:
        with pytest.raises(InstrumentError, match=f"{what}.*damaged in transfer"):
            awg.upload_arb("drive", samples, 10e6, verify=True)


def test_verification_is_as_fine_as_the_printed_digits():
    codes = np.array([0, 16384, 32767, 16384, 0, -16384, -32767, -16387])  # mean -3/8 LSB
    with expected_protocol(
        Keysight33500B,
        [
            ("SOUR1:DATA:ATTR:POIN? drive;AVER? drive;PTP? drive", "+8;+0.0000;+2.0000")  # 4 decimals
        ],
        **CAPS,
    ) as awg:
        awg.verify_arb("drive", codes)


def test_playing_state_in_one_query():
    with expected_protocol(
        Keysight33500B, [("SOUR1:FUNC?;:SOUR1:FUNC:ARB?;:OUTP1:LOAD?", 'ARB;"SPINLAB";+9.9E+37')], **CAPS
    ) as awg:
        assert awg.playing_state() == ("ARB", "SPINLAB", math.inf)


def test_check_in_step_wants_exactly_one():
    with expected_protocol(Keysight33500B, [("*OPC?", "1"), ("*OPC?", "\x12\x001")], **CAPS) as awg:
        awg.check_in_step("a transfer")
        with pytest.raises(InstrumentError, match="out of step"):
            awg.check_in_step("a transfer")


def test_family_comes_from_idn():
    with expected_protocol(
        Keysight33500B, [("*IDN?", "Keysight Technologies,33622A,MY1,A.02"), ("*OPT?", "0")]
    ) as awg:
        assert awg.family.family == "33600A"
