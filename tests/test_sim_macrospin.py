"""sim:macrospin: LLGS physics sanity, differentiability in physical parameters, Device use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinlab import Waveform, open_device
from spinlab.errors import ConfigError
from spinlab.sim_backends import open_simulator
from spinlab.sim_backends.macrospin import (
    MacrospinDevice,
    MacrospinParams,
    reference_trajectory,
    response_and_jacobian,
    row_seeds,
    simulate,
    trajectory,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crossing_frequency_Hz(signal: np.ndarray, dt_s: float) -> float:
    """Frequency from interpolated upward zero crossings."""
    i = np.flatnonzero((signal[:-1] < 0) & (signal[1:] >= 0))
    t = (i + signal[i] / (signal[i] - signal[i + 1])) * dt_s
    return (len(t) - 1) / (t[-1] - t[0])


# --- physics --------------------------------------------------------------------------------
def test_free_precession_matches_kittel_frequency():
    params = MacrospinParams(alpha=1e-4)
    with torch.no_grad():
        m = trajectory(params, torch.zeros(1, 1200), 0.05, 2e-12)
    f = crossing_frequency_Hz(m[0, :, 1].numpy(), 2e-12)
    assert f == pytest.approx(float(params.fmr_frequency_Hz(0.05).detach()), rel=0.005)


def test_damping_drives_m_to_the_easy_axis_and_norm_is_kept():
    params = MacrospinParams(alpha=0.1)
    with torch.no_grad():
        m = trajectory(params, torch.zeros(1, 400), 0.02, 10e-12, initial_tilt_rad=0.5)
    assert m[0, -1, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(m.norm(dim=-1), torch.ones(1, 400, dtype=torch.float64), atol=1e-12)


def test_spin_torque_threshold_matches_critical_current():
    """10 % below Ic the precession amplitude decays, 10 % above it grows (50 mT > Hk)."""
    params = MacrospinParams()
    ic = float(params.critical_current_A(0.05).detach())
    current = torch.tensor([[0.9 * ic], [1.1 * ic]]).expand(2, 1000)
    with torch.no_grad():
        m = trajectory(params, current, 0.05, 10e-12)
    envelope = 1 - m[..., 0]  # 1 - m_x, peaks once per precession period
    early = envelope[:, 100:300].max(dim=1).values
    late = envelope[:, -200:].max(dim=1).values
    assert late[0] < 0.5 * early[0]
    assert late[1] > 2.0 * early[1]


# --- differentiability ----------------------------------------------------------------------
def test_gradients_reach_every_physical_parameter():
    params = MacrospinParams()
    current = torch.full((2, 60), 2.5e-3)
    volts = simulate(params, current, torch.tensor([0.05, 0.08]), 10e-12)
    volts.square().mean().backward()
    for name in MacrospinParams.DEFAULTS:
        grad = getattr(params, "log_" + name).grad
        assert grad is not None and torch.isfinite(grad) and grad.abs().item() > 0, name


def test_adam_fit_recovers_damping():
    truth = MacrospinParams(alpha=0.05)
    current = torch.full((1, 100), 1e-3)
    with torch.no_grad():
        target = simulate(truth, current, 0.05, 5e-12, max_step_s=5e-12, initial_tilt_rad=0.3)
    model = MacrospinParams(alpha=0.08).fit_only("alpha")
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        volts = simulate(model, current, 0.05, 5e-12, max_step_s=5e-12, initial_tilt_rad=0.3)
        loss = (volts - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.1 * losses[0]
    assert abs(float(model.alpha.detach()) - 0.05) < 0.1 * abs(0.08 - 0.05)
    assert model.log_Ms_A_per_m.grad is None  # frozen by fit_only


def test_params_are_validated():
    with pytest.raises(ConfigError):
        MacrospinParams(alpha=-0.1)
    with pytest.raises(ConfigError):
        MacrospinParams(eta=1.5)
    with pytest.raises(ConfigError, match="valid"):
        MacrospinParams(Ku=1.0)
    with pytest.raises(ConfigError):
        trajectory(MacrospinParams(), torch.zeros(5), 0.0, 1e-12)


# --- as a Device ----------------------------------------------------------------------------
def test_device_responds_with_junction_voltage():
    dev = open_device("sim:macrospin?max_step_s=5e-12&bias_A=2e-3&field_T=0.05")
    assert isinstance(dev, MacrospinDevice)
    drive = Waveform(np.zeros(50), 10e-12)
    v = dev.respond(drive).samples
    # below Ic the junction sits near the parallel state: V = I R_P
    assert v[-1] == pytest.approx(2e-3 * 50.0, rel=1e-3)
    assert dev.identity()["params"]["alpha"] == pytest.approx(0.02)


def test_device_batch_and_per_drive_conditions_match_single_calls():
    dev = MacrospinDevice(max_step_s=5e-12)
    drives = np.random.default_rng(0).uniform(-0.2, 0.2, (2, 40))
    cond = {"bias_A": np.array([2.5e-3, 3.5e-3]), "field_T": np.array([0.05, 0.07])}
    batch = dev.respond(Waveform(drives, 10e-12), cond).samples
    for i in range(2):
        single = dev.respond(Waveform(drives[i], 10e-12), {k: v[i] for k, v in cond.items()}).samples
        assert np.allclose(batch[i], single, rtol=1e-12, atol=0)


def test_device_refuses_reservoir_grids():
    dev = MacrospinDevice()
    with pytest.raises(ConfigError, match="sim:vortex"):
        dev.respond(Waveform(np.zeros(100), 100e-9))


def test_address_options_are_checked():
    dev = open_simulator("macrospin", alpha="0.03", max_steps="1000")
    assert float(dev.params.alpha.detach()) == pytest.approx(0.03) and dev.max_steps == 1000
    with pytest.raises(ConfigError, match="alpha"):
        open_simulator("macrospin", alfa="0.03")


# --- the numba kernel against the torch reference -------------------------------------------
def test_kernel_equals_reference_forward_and_gradients():
    """The kernel (forward sensitivities) and the pure-torch reference (autograd) agree to
    rounding: responses, and gradients to every parameter and the field."""
    rng = np.random.default_rng(0)
    current = torch.from_numpy(rng.uniform(1e-3, 5e-3, (3, 60)))
    weights = torch.from_numpy(rng.normal(size=(3, 60)))
    grads = []
    for reference in (False, True):
        params = MacrospinParams(alpha=0.03, Hk_A_per_m=2.5e4)
        field = torch.tensor([0.04, 0.05, 0.08], dtype=torch.float64, requires_grad=True)
        volts = simulate(params, current, field, 1e-11, reference=reference)  # 5 substeps
        (volts * weights).sum().backward()
        grads.append(
            (
                volts.detach(),
                field.grad,
                {n: getattr(params, "log_" + n).grad for n in MacrospinParams.DEFAULTS},
            )
        )
    (v_fast, f_fast, p_fast), (v_ref, f_ref, p_ref) = grads
    assert torch.allclose(v_fast, v_ref, rtol=1e-12, atol=0)
    assert torch.allclose(f_fast, f_ref, rtol=1e-9, atol=0)
    for name in MacrospinParams.DEFAULTS:
        assert p_fast[name] == pytest.approx(float(p_ref[name]), rel=1e-9), name


def test_jacobian_matches_finite_differences_with_thermal_noise():
    """d V / d log(param) of the kernel is the derivative of the same seeded noisy path."""
    values = MacrospinParams(alpha=0.04).as_dict()
    current = np.random.default_rng(1).uniform(1e-3, 5e-3, (2, 50))
    seeds = row_seeds(5, 2)
    names = list(MacrospinParams.DEFAULTS)
    run = lambda v, wrt=(): response_and_jacobian(
        v, current, 0.05, 1e-11, wrt, temperature_K=300.0, seeds=seeds
    )
    volts, jac = run(values, names)
    for col, name in enumerate(names):
        up, down = dict(values), dict(values)
        up[name] *= math.exp(1e-6)
        down[name] *= math.exp(-1e-6)
        numeric = (run(up)[0] - run(down)[0]) / 2e-6
        assert np.allclose(jac[..., col], numeric, rtol=0, atol=1e-5 * np.abs(numeric).max()), name


def test_trajectory_refuses_gradients_to_the_current_samples():
    current = torch.full((1, 5), 3e-3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ConfigError, match="reference_trajectory"):
        trajectory(MacrospinParams(), current, 0.05, 1e-11)
    reference_trajectory(MacrospinParams(), current, 0.05, 1e-11)[..., 0].sum().backward()
    assert current.grad is not None


# --- thermal field --------------------------------------------------------------------------
def test_thermal_fluctuations_obey_equipartition():
    """At zero current m fluctuates about +x with <m_y^2> = kT / (mu0 Ms V (H + Hk)) and
    <m_z^2> = kT / (mu0 Ms V (H + Hk + Hd)) (Boltzmann, small angles): checks the noise
    strength of the stochastic LLGS against its fluctuation-dissipation theorem."""
    params = MacrospinParams(alpha=0.1)
    with torch.no_grad():
        m = trajectory(params, torch.zeros(32, 3000), 0.05, 10e-12, temperature_K=300.0, seed=3)
    settled = m[:, 200:].numpy()
    p = params.as_dict()
    kt = 1.380649e-23 * 300.0
    h = 0.05 / (4e-7 * math.pi) + p["Hk_A_per_m"]
    energy = 4e-7 * math.pi * p["Ms_A_per_m"] * p["volume_m3"]
    assert np.mean(settled[..., 1] ** 2) == pytest.approx(kt / (energy * h), rel=0.08)
    assert np.mean(settled[..., 2] ** 2) == pytest.approx(kt / (energy * (h + p["Hd_A_per_m"])), rel=0.08)
    assert abs(np.mean(settled[..., 1])) < 0.1 * math.sqrt(kt / (energy * h))


def test_thermal_noise_is_seeded_per_drive():
    drives = Waveform(np.random.default_rng(2).uniform(-0.2, 0.2, (3, 40)), 10e-12)
    make = lambda seed, **kw: MacrospinDevice(temperature_K=300.0, seed=seed, max_step_s=5e-12, **kw)
    first = make(7).respond(drives).samples
    again = make(7)
    assert np.array_equal(first, again.respond(drives).samples)
    assert not np.array_equal(first, again.respond(drives).samples)  # every call draws new noise
    assert not np.array_equal(first, make(8).respond(drives).samples)
    single = make(7).respond(Waveform(drives.samples[0], 10e-12)).samples
    assert np.array_equal(first[0], single)  # a row does not depend on the batch around it
    threaded = make(7, threads=2)
    threaded.max_steps = 10**7
    big = Waveform(np.tile(drives.samples, (40, 50)), 10e-12)  # enough steps to use threads
    assert np.array_equal(
        threaded.respond(big).samples, make(7, threads=1, max_steps=10**7).respond(big).samples
    )
    cold = [MacrospinDevice(seed=s, max_step_s=5e-12).respond(drives).samples for s in (1, 2)]
    assert np.array_equal(*cold)  # T = 0 (the default) is deterministic


def test_temperature_option():
    dev = open_device("sim:macrospin?temperature_K=77&seed=4")
    assert dev.temperature_K == 77.0 and dev.identity()["temperature_K"] == 77.0
    with pytest.raises(ConfigError, match="temperature_K"):
        MacrospinDevice(temperature_K=-1.0)
