"""Spin-Neural ODE model: shapes, the fast RK4 against torchdiffeq, batching, gradients."""

from __future__ import annotations

import pytest
import torch

from spinlab.errors import ConfigError
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(interpolation="linear", dtype=torch.float64, **kw):
    arch = TwinArchitecture(
        n_delays=kw.pop("n_delays", 2),
        delay_samples=kw.pop("delay_samples", 3),
        hidden=kw.pop("hidden", 32),
        condition_names=("bias_A",),
        interpolation=interpolation,
    )
    model = build_model(arch, Normalisation(0.01, 0.005, 0.0, 0.2, [7.5e-3], [1e-3]), seed=3, dtype=dtype)
    with torch.no_grad():  # a lively right-hand side, so disagreements would show
        for layer in model.layers:
            layer.weight.mul_(3.0)
    return model


def _inputs(batch=4, n=60, k=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, n, generator=g, dtype=dtype)
    c = torch.randn(batch, 1, generator=g, dtype=dtype)
    x0 = torch.randn(batch, k, generator=g, dtype=dtype)
    return u, c, x0


@pytest.mark.parametrize("interpolation", ["linear", "hold"])
def test_fast_rk4_matches_torchdiffeq_rk4(interpolation):
    model = _model(interpolation)
    u, c, x0 = _inputs()
    feats = model.delay_features(u)
    fast = model.rollout(x0, feats, c, chunk=7)  # chunk borders too
    reference = model.reference_rollout(x0, feats, c)
    assert fast.shape == reference.shape == (4, 59, 2)
    assert float(fast.detach().abs().max()) > 0.5  # the dynamics are not trivial
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


def test_fast_rk4_float32_close_to_float64():
    m64 = _model("hold")
    m32 = _model("hold", dtype=torch.float32)
    u, c, x0 = _inputs()
    a = m64.rollout(x0, m64.delay_features(u), c)
    b = m32.rollout(x0.float(), m32.delay_features(u.float()), c.float())
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, rtol=1e-3, atol=1e-3)


def test_simulate_shapes_units_and_batch_independence():
    model = _model("hold", dtype=torch.float32)
    drive = 0.3 * torch.rand(5, 200, generator=torch.Generator().manual_seed(1)) - 0.15
    cond = torch.full((5, 1), 7.5e-3)
    y = model.simulate(drive, cond, settle_samples=20)
    assert y.shape == (5, 200) and y.dtype == torch.float32
    one = model.simulate(drive[2:3], cond[2:3], settle_samples=20)
    torch.testing.assert_close(one[0], y[2], rtol=1e-5, atol=1e-6)
    # starting from a measured history reproduces that history's last sample first
    hist = torch.full((5, model.arch.history_samples), 0.02)
    y_hist = model.simulate(drive, cond, y_history=hist)
    torch.testing.assert_close(y_hist[:, 0], torch.full((5,), 0.02))


def test_delay_features_shift_by_delay_and_hold_first_sample():
    model = _model(delay_samples=3)
    u = torch.arange(1.0, 9.0, dtype=torch.float64)[None]
    feats = model.delay_features(u)
    assert feats.shape == (1, 8, 2)
    assert feats[0, :, 1].tolist() == [1, 1, 1, 1, 2, 3, 4, 5]


def test_gradients_flow_through_rollout():
    model = _model(dtype=torch.float32)
    u, c, x0 = _inputs(dtype=torch.float32)
    pred = model.rollout(x0, model.delay_features(u[:, :21]), c)
    pred.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_flop_count_is_four_rhs_evaluations_of_the_mlp():
    arch = TwinArchitecture(n_delays=2, hidden=64, condition_names=("bias_A",))
    # layers: (2+2+1) x 64, 64 x 64, 64 x 2
    assert arch.flops_per_rk4_step() == 4 * 2 * (5 * 64 + 64 * 64 + 64 * 2)


def test_same_seed_same_weights_and_bad_architectures_are_rejected():
    arch = TwinArchitecture(hidden=16)
    a, b = build_model(arch, seed=5), build_model(arch, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ConfigError, match="interpolation"):
        TwinArchitecture(interpolation="cubic")
    with pytest.raises(ConfigError, match="n_delays"):
        TwinArchitecture(n_delays=0)
    with pytest.raises(ConfigError, match="condition"):
        build_model(TwinArchitecture(condition_names=("bias_A",))).condition_tensor({}, 2)


def test_parallel_workers_give_the_same_response():
    model = _model("hold", dtype=torch.float32)
    drive = 0.3 * torch.rand(7, 150, generator=torch.Generator().manual_seed(2)) - 0.15
    cond = torch.linspace(6e-3, 9e-3, 7)[:, None]
    serial = model.simulate(drive, cond, settle_samples=10)
    parallel = model.simulate(drive, cond, settle_samples=10, workers=3)
    torch.testing.assert_close(parallel, serial, rtol=1e-5, atol=1e-6)


def test_torch_loop_shards_keep_the_callers_grad_mode(monkeypatch):
    """Grad mode is per thread: the shards of a no-grad simulation must not record a graph
    (they did once: GBs of stored activations and half the speed)."""
    model = _model("hold")  # float64: the torch loop
    drive = 0.3 * torch.rand(130, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.15
    cond = torch.full((130, 1), 7.5e-3, dtype=torch.float64)
    serial = model.simulate(drive, cond, workers=1)
    modes = []
    inner = model._torch_rollout

    def recording(*args):
        modes.append(torch.is_grad_enabled())
        return inner(*args)

    monkeypatch.setattr(model, "_torch_rollout", recording)
    sharded = model.simulate(drive, cond, workers=2)
    assert modes == [False, False]
    torch.testing.assert_close(sharded, serial, rtol=1e-12, atol=1e-12)
