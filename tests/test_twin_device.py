"""A twin checkpoint as a Device through open_device("twin:PATH")."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spinlab import Waveform, open_device
from spinlab.errors import CheckpointError, ConfigError
from spinlab.twin.checkpoint import TwinMeta, save_twin
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model
from spinlab.sim_backends.twin_device import TwinExtrapolationWarning


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def twin_path(tmp_path):
    arch = TwinArchitecture(hidden=16, condition_names=("bias_A",), interpolation="hold")
    model = build_model(arch, Normalisation(0.014, 0.005, 0.0, 0.23, [7.5e-3], [1e-3]), seed=2)
    meta = TwinMeta(dt_s=1e-7, condition_ranges={"bias_A": [6.5e-3, 8.5e-3]}, noise_std=5e-4,
                    settle_samples=10)
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
    expected = model.simulate(torch.as_tensor(drive.samples, dtype=torch.float32),
                              torch.tensor([[6.5e-3], [7.5e-3], [8.5e-3]]), settle_samples=10)
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
    np.testing.assert_allclose(resampling.respond(held).samples[:, 1::2],
                               dev.respond(slow).samples, rtol=1e-6, atol=1e-9)


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
    np.testing.assert_allclose(auto.respond(_drive()).samples, cpu.respond(_drive()).samples,
                               rtol=1e-4, atol=1e-6)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda is not available"):
            open_device(f"twin:{path}?torch_device=cuda")
