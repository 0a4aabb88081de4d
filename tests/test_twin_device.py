"""A twin checkpoint as a Device through open_device("twin:PATH")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spinlab import Waveform, open_device
from spinlab.errors import CheckpointError, ConfigError
from spinlab.sim_backends.twin_device import TwinExtrapolationWarning
from spinlab.twin.checkpoint import TwinMeta, save_twin
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def twin_path(tmp_path):
    arch = TwinArchitecture(hidden=16, condition_names=("bias_A",), interpolation="hold")
    model = build_model(arch, Normalisation(0.014, 0.005, 0.0, 0.23, [7.5e-3], [1e-3]), seed=2)
    meta = TwinMeta(
        dt_s=1e-7, condition_ranges={"bias_A": [6.5e-3, 8.5e-3]}, noise_std=5e-4, settle_samples=10
    )
    return save_twin(tmp_path / "twin.pt", model, meta), model


def _drive(batch=3, n=120, dt=1e-7):
    rng = np.random.default_rng(0)
    return Waveform(rng.uniform(-0.3, 0.3, (batch, n)), dt)


def test_twin_is_a_device_with_batched_response(twin_path):
    path, model = twin_path
    dev = open_device(f"twin:{path}")
    assert dev.condition_names == ("bias_A",)
    assert dev.default_conditions == {"bias_A": pytest.approx(7.5e-3)}
    drive = _drive()
    out = dev.respond(drive, {"bias_A": [6.5e-3, 7.5e-3, 8.5e-3]})
    assert out.samples.shape == (3, 120) and out.dt_s == 1e-7 and out.unit == "V"
    expected = model.simulate(
        torch.as_tensor(drive.samples, dtype=torch.float32),
        torch.tensor([[6.5e-3], [7.5e-3], [8.5e-3]]),
        settle_samples=10,
    )
    np.testing.assert_allclose(out.samples, expected.double().numpy(), rtol=1e-6)
    single = dev.respond(drive.item(1), {"bias_A": 7.5e-3})
    np.testing.assert_allclose(single.samples, out.samples[1], rtol=1e-5, atol=1e-7)
    assert dev.identity()["dt_s"] == 1e-7


def test_dt_mismatch_is_a_clear_error_unless_resampling(twin_path):
    path, _ = twin_path
    dev = open_device(f"twin:{path}")
    fast = _drive(n=240, dt=5e-8)
    with pytest.raises(ConfigError, match="does not match the twin's"):
        dev.respond(fast)
    resampling = open_device(f"twin:{path}?resample=1")
    out = resampling.respond(fast)
    assert out.samples.shape == (3, 240) and out.dt_s == 5e-8
    # a drive held over pairs of fast samples is the same drive on the twin's grid
    slow = _drive(n=120)
    held = Waveform(np.repeat(slow.samples, 2, axis=1), 5e-8)
    np.testing.assert_allclose(
        resampling.respond(held).samples[:, 1::2], dev.respond(slow).samples, rtol=1e-6, atol=1e-9
    )


def test_conditions_outside_training_range_warn(twin_path):
    path, _ = twin_path
    dev = open_device(f"twin:{path}")
    with pytest.warns(TwinExtrapolationWarning, match="outside the trained range"):
        dev.respond(_drive(1), {"bias_A": 9.5e-3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dev.respond(_drive(1), {"bias_A": 7e-3})
    with pytest.raises(ConfigError):  # unknown condition for this twin
        dev.respond(_drive(1), {"field_T": 0.1})


def test_noise_option_is_seeded_and_sized(twin_path):
    path, _ = twin_path
    clean = open_device(f"twin:{path}").respond(_drive(2, 2000)).samples
    a = open_device(f"twin:{path}?noise=1&seed=4").respond(_drive(2, 2000)).samples
    b = open_device(f"twin:{path}?noise=1&seed=4").respond(_drive(2, 2000)).samples
    np.testing.assert_array_equal(a, b)
    assert np.std(a - clean) == pytest.approx(5e-4, rel=0.05)


def test_bad_options_and_bad_checkpoints(twin_path, tmp_path):
    path, _ = twin_path
    with pytest.raises(ConfigError, match="unknown twin option"):
        open_device(f"twin:{path}?colour=blue")
    with pytest.raises(ConfigError, match="noise"):
        open_device(f"twin:{path}?noise=maybe")
    with pytest.raises(ConfigError, match="torch device must be"):
        open_device(f"twin:{path}?torch_device=tpu")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        open_device(f"twin:{broken}")


def test_torch_device_option(twin_path):
    path, _ = twin_path
    cpu = open_device(f"twin:{path}?torch_device=cpu")
    assert cpu.identity()["torch_device"] == "cpu"
    auto = open_device(f"twin:{path}")  # the GPU when present, else the CPU
    assert auto.identity()["torch_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    np.testing.assert_allclose(
        auto.respond(_drive()).samples, cpu.respond(_drive()).samples, rtol=1e-4, atol=1e-6
    )
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda is not available"):
            open_device(f"twin:{path}?torch_device=cuda")


# --- a MuMax3 twin: driven by anisotropy in J/m3, DMI as its condition, mz as its response --
@pytest.fixture()
def skyrmion_twin(tmp_path):
    arch = TwinArchitecture(hidden=16, drive_names=("Ku1.region100",), condition_names=("dmi_J_m2",))
    model = build_model(arch, Normalisation(0.1, 0.2, 8e5, 7e4, [3e-3], [2e-4]), seed=5)
    inputs = [
        {
            "name": "Ku1.region100",
            "role": "drive",
            "unit": "J/m3",
            "range": [7e5, 9e5],
            "column": "Ku1.region100",
            "quantity": "anisotropy",
        },
        {
            "name": "dmi_J_m2",
            "role": "condition",
            "unit": "J/m2",
            "range": [2.6e-3, 3.4e-3],
            "column": "Dind.region100",
            "quantity": "DMI",
        },
    ]
    meta = TwinMeta(
        dt_s=5e-12,
        condition_ranges={"dmi_J_m2": [2.6e-3, 3.4e-3]},
        settle_samples=20,
        drive_unit="J/m3",
        output_unit="1",
        inputs=inputs,
        output={"name": "mz", "column": "mz", "unit": "1", "offset": 0.93, "scale": 10.0},
    )
    return save_twin(tmp_path / "sky.pt", model, meta), model


def test_skyrmion_twin_is_driven_in_j_per_m3_within_its_trained_range(skyrmion_twin):
    from spinlab.device import DriveQuantity
    from spinlab.errors import SafetyLimitError

    path, model = skyrmion_twin
    dev = open_device(f"twin:{path}")
    # the trained [7e5, 9e5] widened by 5 % of the half-span on each side
    assert dev.drive_quantity == DriveQuantity("anisotropy", "J/m3", 7e5 - 5e3, 9e5 + 5e3)
    assert dev.condition_names == ("dmi_J_m2",) and dev.default_conditions == {
        "dmi_J_m2": pytest.approx(3e-3)
    }
    calls = []
    backend = dev._respond
    dev._respond = lambda *a: calls.append(a) or backend(*a)  # a spy: did anything reach the model?
    with pytest.raises(SafetyLimitError, match="must be anisotropy in 'J/m3'"):
        dev.respond(Waveform(np.zeros((1, 50)), 5e-12))  # volts
    with pytest.raises(SafetyLimitError, match="outside the anisotropy range"):
        dev.respond(Waveform(np.full((1, 50), 9.1e5), 5e-12, "J/m3"))
    assert calls == []
    drive = dev.drive_quantity.from_unit(np.sin(np.linspace(0, 12, 80))[None], 0.9)
    out = dev.respond(Waveform(drive, 5e-12, "J/m3"), {"dmi_J_m2": 3.1e-3})
    assert len(calls) == 1 and out.unit == "1"
    expected = (
        model.simulate(
            torch.as_tensor(drive, dtype=torch.float32), torch.tensor([[3.1e-3]]), settle_samples=20
        )
        / 10.0
        + 0.93
    )
    np.testing.assert_allclose(out.samples, expected.double().numpy(), rtol=1e-5)
    with pytest.raises(ConfigError, match="does not match the twin's"):  # dt: match or resample=1
        dev.respond(Waveform(drive, 1e-11, "J/m3"))
    wide = open_device(f"twin:{path}?drive_margin=1")
    assert wide.drive_quantity.low == pytest.approx(6e5) and wide.identity()["drive"]["unit"] == "J/m3"


def test_a_twin_with_two_drives_is_not_a_device(tmp_path):
    arch = TwinArchitecture(hidden=8, drive_names=("Ku1.region100", "B_ext"))
    model = build_model(arch, Normalisation(0.0, 1.0, [8e5, 0.0], [7e4, 0.01]), seed=1)
    path = save_twin(tmp_path / "two.pt", model, TwinMeta(dt_s=5e-12))
    with pytest.raises(ConfigError, match="a Device has one drive"):
        open_device(f"twin:{path}")
