"""The compiled RK4 kernel: same states and gradients as the torch integrators, any batch."""

from __future__ import annotations

import logging

import pytest
import torch

from spinlab.errors import ConfigError
from spinlab.twin import kernel
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(kernel.library() is None, reason="no C++ compiler for the twin kernel"),
]


def _models(interpolation="hold", layers=2, hidden=24, delay_samples=3):
    """The same lively twin in float64 (reference) and float32 (the kernel's dtype)."""
    arch = TwinArchitecture(
        n_delays=2,
        delay_samples=delay_samples,
        hidden=hidden,
        n_hidden_layers=layers,
        condition_names=("bias_A",),
        interpolation=interpolation,
    )
    return _lively(arch, Normalisation(0.01, 0.005, 0.0, 0.2, [7.5e-3], [1e-3]), seed=3)


def _lively(arch, norm, seed):
    """float64 and float32 copies of a twin with large weights (non-trivial dynamics)."""
    m64 = build_model(arch, norm, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        for layer in m64.layers:
            layer.weight.mul_(3.0)
    m32 = build_model(arch, norm, seed=seed)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    return m64, m32


def _inputs(model, batch=37, n=61):  # 37: not a multiple of the kernel's 16 lanes
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, n, generator=g, dtype=torch.float64)
    c = torch.randn(batch, 1, generator=g, dtype=torch.float64)
    x0 = torch.randn(batch, 2, generator=g, dtype=torch.float64)
    return x0, model.delay_features(u), c


@pytest.mark.parametrize("interpolation", ["hold", "linear"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_kernel_matches_torchdiffeq_within_float32(interpolation, layers):
    m64, m32 = _models(interpolation, layers)
    x0, feats, c = _inputs(m64)
    reference = m64.reference_rollout(x0, feats, c)
    fast = m32.rollout(x0.float(), feats.float(), c.float(), kernel="compiled")
    assert fast.dtype == torch.float32 and fast.shape == reference.shape == (37, 60, 2)
    assert float(reference.detach().abs().max()) > 1.0  # the dynamics are not trivial
    torch.testing.assert_close(fast.double(), reference, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_kernel_gradients_match_autograd_through_the_torch_loop(layers):
    _, m32 = _models("linear", layers)
    x0, feats, c = (t.float() for t in _inputs(m32, n=21))
    weights = torch.randn(37, 20, 2, generator=torch.Generator().manual_seed(1))

    def grads(name):
        m32.zero_grad()
        start = x0.clone().requires_grad_()
        (m32.rollout(start, feats, c, kernel=name) * weights).sum().backward()
        return [p.grad.clone() for p in m32.parameters()] + [start.grad]

    for got, want in zip(grads("compiled"), grads("torch")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_rows_are_independent_of_batch_and_threads():
    _, m32 = _models()
    x0, feats, c = (t.float() for t in _inputs(m32, batch=100))
    with torch.no_grad():
        whole = m32.rollout(x0, feats, c, kernel="compiled")
        threaded = m32.rollout(x0, feats, c, kernel="compiled", workers=3)
        alone = m32.rollout(x0[57:58], feats[57:58], c[57:58], kernel="compiled")
    assert torch.equal(threaded, whole)
    torch.testing.assert_close(alone[0], whole[57], rtol=1e-6, atol=1e-6)


def test_a_non_finite_state_stays_visible():
    _, m32 = _models()
    x0, feats, c = (t.float() for t in _inputs(m32, batch=3, n=6))
    x0[1, 1] = float("nan")
    with torch.no_grad():
        out = m32.rollout(x0, feats, c, kernel="compiled")
    assert bool(out[1].isnan().all()) and bool(torch.isfinite(out[[0, 2]]).all())


def test_kernel_choice_is_checked():
    m64, m32 = _models()
    x0, feats, c = _inputs(m64, batch=2, n=4)
    with pytest.raises(ConfigError, match="float32"):
        m64.rollout(x0, feats, c, kernel="compiled")
    with pytest.raises(ConfigError, match="kernel must be one of"):
        m32.rollout(x0.float(), feats.float(), c.float(), kernel="fast")


def test_without_a_compiler_the_torch_loop_answers(tmp_path, monkeypatch, caplog):
    _, m32 = _models()
    x0, feats, c = (t.float() for t in _inputs(m32, batch=5, n=30))
    with torch.no_grad():
        compiled = m32.rollout(x0, feats, c)
    monkeypatch.setenv("SPINLAB_CACHE", str(tmp_path))  # nothing built there
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    kernel.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="spinlab.twin"), torch.no_grad():
            fallback = m32.rollout(x0, feats, c)
        assert kernel.library() is None and "torch integrator" in caplog.text
        with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
            m32.rollout(x0, feats, c, kernel="compiled")
    finally:
        kernel.library.cache_clear()
    torch.testing.assert_close(fallback, compiled, rtol=1e-4, atol=1e-5)


def _two_drive_models(interpolation):
    """A twin with two drives and two time-varying conditions (float64 and float32)."""
    arch = TwinArchitecture(
        n_delays=2,
        delay_samples=2,
        hidden=20,
        drive_names=("ku", "field"),
        condition_names=("dmi", "temperature"),
        interpolation=interpolation,
    )
    m64, m32 = _lively(arch, Normalisation(0.0, 1.0, [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]), seed=4)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(37, 2, 41, generator=g, dtype=torch.float64)
    c = torch.cumsum(torch.randn(37, 41, 2, generator=g, dtype=torch.float64), dim=1) * 0.3
    x0 = torch.randn(37, 2, generator=g, dtype=torch.float64)
    return m64, m32, x0, m64.delay_features(u), c


@pytest.mark.parametrize("interpolation", ["hold", "linear"])
def test_time_varying_conditions_kernel_torch_and_reference_agree(interpolation):
    m64, m32, x0, feats, c = _two_drive_models(interpolation)
    assert feats.shape == (37, 41, 4)
    reference = m64.reference_rollout(x0, feats, c)
    args = (x0.float(), feats.float(), c.float())
    fast = m32.rollout(*args, kernel="compiled")
    loop = m32.rollout(*args, kernel="torch")
    assert float(reference.detach().abs().max()) > 1.0
    torch.testing.assert_close(fast.double(), reference, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(loop, fast, rtol=1e-5, atol=2e-5)
    # held means held: a condition that changes only after step n leaves steps up to n alone
    later = c.clone()
    later[:, 30:] += 1.0
    moved = m64.reference_rollout(x0, feats, later)
    torch.testing.assert_close(moved[:, :29], reference[:, :29])
    assert not torch.allclose(moved[:, 29], reference[:, 29])


def test_time_varying_conditions_gradients_kernel_equal_torch():
    _, m32, x0, feats, c = _two_drive_models("linear")
    x0, feats, c = x0.float(), feats.float(), c.float()

    def grads(name):
        m32.zero_grad()
        (m32.rollout(x0, feats, c, kernel=name) ** 2).sum().backward()
        return [p.grad.clone() for p in m32.parameters()]

    for got, want in zip(grads("compiled"), grads("torch")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_simulate_with_a_condition_input_is_the_same_on_both_paths():
    arch = TwinArchitecture(hidden=16, drive_names=("Ku1.region100",), condition_names=("dmi_J_m2",))
    model = build_model(arch, Normalisation(0.1, 0.2, 8e5, 7e4, [3e-3], [2e-4]), seed=5)
    with torch.no_grad():
        model.layers[-1].weight.mul_(20.0)
    g = torch.Generator().manual_seed(0)
    drive = 8e5 + 7e4 * torch.randn(5, 300, generator=g)
    held = torch.tensor([[2.8e-3], [3.0e-3], [3.1e-3], [3.2e-3], [3.4e-3]])
    series = held[:, None, :].expand(5, 300, 1)  # the same conditions, one value per sample
    runs = [model.simulate(drive, held, settle_samples=20, kernel=k) for k in ("compiled", "torch")]
    runs += [model.simulate(drive, series, settle_samples=20, kernel=k) for k in ("compiled", "torch")]
    assert float(runs[0].std()) > 0.01
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-4, atol=1e-4 * float(runs[0].abs().max()))
