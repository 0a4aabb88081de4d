import numpy as np
import pytest

from spinlab import (
    ConfigError,
    Device,
    DeviceAddressError,
    DriveQuantity,
    SafetyLimitError,
    SafetyLimits,
    Waveform,
    WaveformError,
    open_device,
)
from spinlab.registry import parse_address


class RecordingDevice(Device):
    """Gain-of-two device that remembers what reached the backend."""

    def __init__(self):
        super().__init__(SafetyLimits(max_drive_V=0.5, max_bias_A=5e-3), {"bias_A": 1e-3})
        self.calls = []

    def _respond(self, drive, dt_s, conditions):
        self.calls.append((drive.copy(), dt_s, {k: v.copy() for k, v in conditions.items()}))
        return 2 * drive


def test_respond_keeps_shape_and_time_base():
    dev = RecordingDevice()
    out = dev.respond(Waveform(np.array([0.1, -0.2]), 1e-8, t0_s=3e-8))
    np.testing.assert_allclose(out.samples, [0.2, -0.4])
    assert out.dt_s == 1e-8 and out.t0_s == 3e-8 and out.unit == "V"
    assert out.meta["bias_A"] == pytest.approx(1e-3)


def test_conditions_broadcast_per_drive():
    dev = RecordingDevice()
    dev.respond(Waveform(np.zeros((3, 4)), 1e-8), {"bias_A": [1e-3, 2e-3, 3e-3]})
    np.testing.assert_allclose(dev.calls[-1][2]["bias_A"], [1e-3, 2e-3, 3e-3])


def test_over_limit_drive_never_reaches_backend():
    dev = RecordingDevice()
    with pytest.raises(SafetyLimitError, match="max_drive_V"):
        dev.respond(Waveform(np.array([0.0, 0.6]), 1e-8))
    assert dev.calls == []


def test_over_limit_bias_never_reaches_backend():
    dev = RecordingDevice()
    with pytest.raises(SafetyLimitError, match="bias_A"):
        dev.respond(Waveform(np.zeros(3), 1e-8), {"bias_A": 6e-3})
    assert dev.calls == []


def test_unknown_condition_and_wrong_length_are_refused():
    dev = RecordingDevice()
    with pytest.raises(ConfigError, match="temperature_K"):
        dev.respond(Waveform(np.zeros(3), 1e-8), {"temperature_K": 4.0})
    with pytest.raises(ConfigError, match="one value per drive"):
        dev.respond(Waveform(np.zeros((2, 3)), 1e-8), {"bias_A": [1e-3, 1e-3, 1e-3]})
    assert dev.calls == []


def test_drive_must_be_volts_waveform():
    dev = RecordingDevice()
    with pytest.raises(SafetyLimitError, match="volts"):
        dev.respond(Waveform(np.zeros(3), 1e-8, unit="A"))
    with pytest.raises(WaveformError, match="Waveform"):
        dev.respond(np.zeros(3))


class AnisotropyDevice(RecordingDevice):
    """Driven by an anisotropy constant in J/m3, as a micromagnetic twin is."""

    drive_quantity = DriveQuantity("anisotropy", "J/m3", 0.9e6, 1.1e6)


def test_a_device_declares_its_drive_quantity_and_range():
    assert RecordingDevice().drive_quantity == DriveQuantity("voltage", "V", -0.5, 0.5)
    dev = AnisotropyDevice()
    u = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(dev.drive_quantity.from_unit(u), [0.9e6, 1.0e6, 1.1e6])
    np.testing.assert_allclose(dev.drive_quantity.from_unit(u, 0.5), [0.95e6, 1.0e6, 1.05e6])
    dev.respond(Waveform(np.array([0.95e6, 1.05e6]), 1e-9, unit="J/m3"))
    with pytest.raises(SafetyLimitError, match=r"outside the anisotropy range .*nothing was sent"):
        dev.respond(Waveform(np.array([1.0e6, 1.2e6]), 1e-9, unit="J/m3"))
    with pytest.raises(SafetyLimitError, match="anisotropy in 'J/m3'"):
        dev.respond(Waveform(np.array([0.1]), 1e-9))
    assert len(dev.calls) == 1
    assert dev.identity()["drive"]["unit"] == "J/m3"
    with pytest.raises(ConfigError, match="low < high"):
        DriveQuantity("voltage", "V", 1.0, -1.0)


def test_safety_limits_validate_themselves():
    with pytest.raises(SafetyLimitError):
        SafetyLimits(max_drive_V=-1)
    with pytest.raises(SafetyLimitError):
        SafetyLimits(max_bias_A=float("nan"))


def test_address_parsing():
    assert parse_address("sim:vortex?seed=3&noise=0") == ("sim", "vortex", {"seed": "3", "noise": "0"})
    assert parse_address("bench:lab.toml") == ("bench", "lab.toml", {})


@pytest.mark.parametrize("address", ["vortex", "", "foo:bar", "sim:vortex?=&"])
def test_bad_addresses_say_what_is_valid(address):
    with pytest.raises(DeviceAddressError):
        open_device(address)
