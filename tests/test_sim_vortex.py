"""sim:vortex against the closed forms of the auto-oscillator model, and as a Device."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinlab import SafetyLimits, Waveform, open_device
from spinlab.errors import ConfigError, DeviceAddressError, SafetyLimitError, WaveformError
from spinlab.sim_backends import open_simulator, vortex
from spinlab.sim_backends.vortex import VortexDevice, VortexParams

DT = 100e-9


def const_drive(n: int, value_V: float = 0.0, batch: int | None = None) -> Waveform:
    shape = (n,) if batch is None else (batch, n)
    return Waveform(np.full(shape, value_V), DT)


def power(device: VortexDevice, response: Waveform) -> np.ndarray:
    return response.samples / device.params.detector_V_per_p


# --- closed forms ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias_A", [6e-3, 7.5e-3, 9e-3])
def test_steady_power_matches_closed_form(bias_A):
    dev = VortexDevice(noise=0)
    p = power(dev, dev.respond(const_drive(50), {"bias_A": bias_A}))
    z = bias_A / 5e-3
    assert np.allclose(p, dev.params.steady_power(bias_A), rtol=1e-12)
    assert p[-1] == pytest.approx((z - 1) / (z + 2), rel=0.01)  # thermal floor adds < 1 %


def test_small_step_relaxes_with_closed_form_time():
    dev = VortexDevice(noise=0)
    drive = np.zeros(4000)
    drive[1000:] = 0.02  # +0.1 mA step on top of 7.5 mA
    p = power(dev, dev.respond(Waveform(drive, DT)))
    final_A = 7.5e-3 + 0.02 * 5e-3
    deviation = np.abs(p[1000 : 1000 + 20] - dev.params.steady_power(final_A))
    # response sample k is the end of hold k: deviation ~ exp(-(k + 1) dt / tau)
    t = (np.arange(20) + 1) * DT
    tau_fit = -1.0 / np.polyfit(t, np.log(deviation), 1)[0]
    z = final_A / 5e-3
    assert tau_fit == pytest.approx(dev.params.relaxation_time_s(final_A), rel=0.01)
    assert tau_fit == pytest.approx(1.0 / (2 * 5e6 * (z - 1)), rel=0.03)
    assert dev.params.relaxation_time_s(7.5e-3) == pytest.approx(200e-9, rel=0.01)


def test_zero_order_hold_is_integrated_exactly():
    """The same held drive sampled at 100 ns or 10 ns gives the same power at common times."""
    rng = np.random.default_rng(1)
    coarse = rng.uniform(-0.4, 0.4, 300)
    dev = VortexDevice(noise=0)
    p_coarse = dev.respond(Waveform(coarse, DT)).samples
    p_fine = dev.respond(Waveform(np.repeat(coarse, 10), DT / 10)).samples
    assert np.allclose(p_fine[9::10], p_coarse, rtol=1e-9, atol=1e-15)


def test_below_threshold_power_is_thermal():
    dev = VortexDevice(seed=2)
    p = power(dev, dev.respond(const_drive(20_000), {"bias_A": 2e-3}))
    z = 2e-3 / 5e-3
    assert p.mean() == pytest.approx(dev.params.thermal_power / (1 - z), rel=0.1)
    assert p.max() < 2e-3  # ~0 compared with p0 = 0.14 at 7.5 mA


def test_langevin_term_gives_exact_stationary_distribution_at_threshold():
    """At z = 1 the power's stationary density is a half-Gaussian of variance 2D/b (D = Gamma_G
    p_th, b = 2 Gamma_G (Q + 1)), so <p> = sqrt(2/pi) sqrt(2 D / b): checks the Ito noise term."""
    dev = VortexDevice(seed=4)
    p = power(dev, dev.respond(const_drive(200_000, batch=2), {"bias_A": 5e-3}))
    params = dev.params
    d = params.gamma_G_per_s * params.thermal_power
    b = 2 * params.gamma_G_per_s * (params.Q + 1)
    assert p.mean() == pytest.approx(math.sqrt(2 / math.pi) * math.sqrt(2 * d / b), rel=0.03)


def test_noise_above_threshold_is_small_and_centered():
    dev = VortexDevice(seed=5)
    p = power(dev, dev.respond(const_drive(100_000), {"bias_A": 7.5e-3}))
    p0 = dev.params.steady_power(7.5e-3)
    assert p.mean() == pytest.approx(p0, rel=0.01)
    # linearised Ito equation: var = D p0 / (Gamma_G (z - 1)) = p_th p0 / (z - 1)
    assert p.std() == pytest.approx(math.sqrt(1e-4 * p0 / 0.5), rel=0.1)


# --- randomness -----------------------------------------------------------------------------
def test_seed_reproduces_and_calls_advance():
    drive = const_drive(2000)
    a, b = VortexDevice(seed=7), VortexDevice(seed=7)
    first = a.respond(drive).samples
    assert np.array_equal(first, b.respond(drive).samples)
    assert not np.array_equal(first, a.respond(drive).samples)
    assert not np.array_equal(first, VortexDevice(seed=8).respond(drive).samples)


def test_noise_zero_is_deterministic():
    drive = Waveform(np.random.default_rng(0).uniform(-0.3, 0.3, 500), DT)
    assert np.array_equal(
        VortexDevice(noise=0, seed=1).respond(drive).samples,
        VortexDevice(noise=0, seed=2).respond(drive).samples,
    )


def test_batch_rows_equal_single_drives():
    rng = np.random.default_rng(3)
    drives = rng.uniform(-0.4, 0.4, (3, 800))
    dev = VortexDevice(noise=0)
    batch = dev.respond(Waveform(drives, DT)).samples
    for i in range(3):
        assert np.array_equal(batch[i], dev.respond(Waveform(drives[i], DT)).samples)
    # with noise, the first row of a fresh device's batch is its first single drive
    noisy = VortexDevice(seed=9).respond(Waveform(drives, DT)).samples
    assert np.array_equal(noisy[0], VortexDevice(seed=9).respond(Waveform(drives[0], DT)).samples)


def test_threaded_batches_equal_one_thread():
    drives = Waveform(np.random.default_rng(4).uniform(-0.4, 0.4, (5, 60_000)), DT)
    threaded = VortexDevice(seed=11, threads=3).respond(drives).samples
    assert np.array_equal(threaded, VortexDevice(seed=11, threads=1).respond(drives).samples)


def test_condition_arrays_apply_per_drive():
    dev = VortexDevice(noise=0)
    biases = np.array([4e-3, 7.5e-3, 9e-3])
    fields = np.array([0.0, 0.1, -0.2])
    out = dev.respond(const_drive(100, 0.1, batch=3), {"bias_A": biases, "field_T": fields}).samples
    for i in range(3):
        single = dev.respond(const_drive(100, 0.1), {"bias_A": biases[i], "field_T": fields[i]}).samples
        assert np.array_equal(out[i], single)


def test_field_shifts_threshold():
    params = VortexParams()
    assert params.threshold_current_A(0.4) == pytest.approx(5e-3 * (1 + 0.5 * 0.4))
    dev = VortexDevice(noise=0)
    p = power(dev, dev.respond(const_drive(20, batch=2), {"bias_A": 5.5e-3, "field_T": np.array([0.0, 0.4])}))
    assert p[0, -1] == pytest.approx(params.steady_power(5.5e-3), rel=1e-9)  # above threshold
    assert p[0, -1] == pytest.approx((1.1 - 1) / (1.1 + 2), rel=0.05)  # + p_th/(z-1) floor
    # threshold raised to 6 mA: only the thermal power p_th / (1 - z)
    assert p[1, -1] == pytest.approx(1e-4 / (1 - 5.5 / 6), rel=0.05)
    assert p[1, -1] < 0.05 * p[0, -1]


def test_drive_starts_settled_and_follows_input():
    dev = VortexDevice(noise=0)
    p = power(dev, dev.respond(Waveform(np.r_[np.zeros(100), np.full(3000, 0.2)], DT)))
    assert p[0] == pytest.approx(dev.params.steady_power(7.5e-3), rel=1e-9)
    assert p[-1] == pytest.approx(dev.params.steady_power(8.5e-3), rel=1e-6)


# --- RF output ------------------------------------------------------------------------------
def test_rf_output_oscillates_at_shifted_frequency():
    dt = 0.1e-9
    dev = VortexDevice(noise=0, output="rf")
    v = dev.respond(Waveform(np.zeros(2**16), dt)).samples
    p0 = dev.params.steady_power(7.5e-3)
    spectrum = np.abs(np.fft.rfft(v * np.hanning(v.size)))
    f_peak = np.fft.rfftfreq(v.size, dt)[np.argmax(spectrum)]
    assert f_peak == pytest.approx(300e6 + 100e6 * p0, abs=2 / (v.size * dt))
    assert np.max(np.abs(v)) == pytest.approx(0.01 * math.sqrt(p0), rel=1e-3)


def test_rf_output_rejects_undersampled_grid():
    with pytest.raises(ConfigError, match="output='power'"):
        VortexDevice(output="rf").respond(const_drive(10))


# --- validation at the boundary -------------------------------------------------------------
def test_bad_drives_rejected_before_the_kernel(monkeypatch):
    def boom(*args):
        raise AssertionError("kernel reached")

    monkeypatch.setattr(vortex, "_kernel", boom)
    dev = VortexDevice()
    with pytest.raises(SafetyLimitError):
        dev.respond(const_drive(10, 0.6))
    with pytest.raises(SafetyLimitError):
        dev.respond(const_drive(10), {"bias_A": 12e-3})
    with pytest.raises(ConfigError):
        dev.respond(const_drive(10), {"temperature_K": 300})
    with pytest.raises(WaveformError):
        Waveform(np.array([0.0, np.nan]), DT)
    with pytest.raises(WaveformError):
        dev.respond(np.zeros(10))


@pytest.mark.parametrize(
    "bad",
    [
        {"Q": -1},
        {"gamma_G_per_s": 0},
        {"thermal_power": float("nan")},
        {"threshold_slope_per_T": 1.5},
        {"threshold_A": "5e-3"},
    ],
)
def test_params_are_validated(bad):
    with pytest.raises(ConfigError):
        VortexParams(**bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"noise": 1.5}, {"noise": -0.1}, {"seed": -1}, {"output": "iq"}, {"noise_substep_s": 0}, {"threads": 0}],
)
def test_device_options_are_validated(kwargs):
    with pytest.raises(ConfigError):
        VortexDevice(**kwargs)


# --- opening from an address ----------------------------------------------------------------
def test_address_options_are_converted():
    dev = open_device("sim:vortex?seed=3&noise=0&gamma_G_per_s=4e6&bias_A=6e-3&output=power")
    assert isinstance(dev, VortexDevice)
    assert dev.seed == 3 and dev.noise == 0.0 and dev.params.gamma_G_per_s == 4e6
    assert dev.default_conditions["bias_A"] == 6e-3
    assert dev.address == "sim:vortex?seed=3&noise=0&gamma_G_per_s=4e6&bias_A=6e-3&output=power"
    ident = dev.identity()
    assert ident["seed"] == 3 and ident["params"]["gamma_G_per_s"] == 4e6


def test_unknown_options_and_names_are_rejected_with_the_valid_ones():
    with pytest.raises(ConfigError, match="gamma_G_per_s"):
        open_simulator("vortex", gama=1)
    with pytest.raises(ConfigError, match="integer"):
        open_simulator("vortex", seed="abc")
    with pytest.raises(ConfigError, match="number"):
        open_simulator("vortex", Q="two")
    with pytest.raises(DeviceAddressError, match="sim:vortex"):
        open_simulator("vortx")
    with pytest.raises(SafetyLimitError, match="max_drive_V"):
        open_simulator("vortex", max_drive_V="-1")


def test_keyword_objects_override_address_options():
    dev = open_device("sim:vortex?Q=2.5&max_drive_V=0.3", params=VortexParams(threshold_A=4e-3), threads="1")
    assert dev.params.Q == 2.5 and dev.params.threshold_A == 4e-3 and dev.threads == 1
    assert dev.limits.max_drive_V == 0.3 and dev.limits.max_bias_A == 10e-3
    dev = open_simulator("vortex", limits=SafetyLimits(max_drive_V=0.2))
    with pytest.raises(SafetyLimitError):
        dev.respond(const_drive(10, 0.25))
    with pytest.raises(ConfigError, match="VortexParams"):
        open_simulator("vortex", params="Q=3")
    with pytest.raises(ConfigError, match="power"):
        open_simulator("vortex", output="voltage")


# --- differentiable paths: numba sensitivities and the torch scan ----------------------------
def _drives(batch: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.4, 0.4, (batch, n))


@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_torch_path_equals_the_numba_kernel(n):
    """The parallel-in-time torch scan (Moebius products) is the noise=0 device to rounding."""
    import torch

    from spinlab.sim_backends.vortex_torch import power_response

    drive = _drives(3, n)
    cond = {"bias_A": np.array([6e-3, 7.5e-3, 4e-3]), "field_T": np.array([0.0, 0.1, -0.2])}
    device = VortexDevice(noise=0).respond(Waveform(drive, DT), cond).samples
    scan = power_response(
        {}, torch.from_numpy(drive), torch.from_numpy(cond["bias_A"]), torch.from_numpy(cond["field_T"]), DT
    ).numpy()
    assert np.allclose(scan, device, rtol=1e-12, atol=0)
    fast, _ = vortex.power_and_jacobian({}, drive, cond["bias_A"], cond["field_T"], DT)
    assert np.array_equal(fast, device)


@pytest.mark.parametrize("rest_drive_V", [None, 0.1])
def test_numba_sensitivities_equal_torch_autograd(rest_drive_V):
    """Every column of power_and_jacobian (log-parameters, bias, a drive direction) is the
    gradient autograd finds through the torch path."""
    import torch

    from spinlab.sim_backends.vortex_torch import POWER_PARAMS, power_response

    rng = np.random.default_rng(1)
    drive, tangent = _drives(3, 200, seed=2), rng.normal(size=(1, 3, 200))
    bias, field = np.array([6e-3, 7.5e-3, 4e-3]), np.array([0.0, 0.1, -0.2])
    names = [p for p in POWER_PARAMS if p != "threshold_slope_per_T"] + ["threshold_slope_per_T", "bias_A"]
    _, jac = vortex.power_and_jacobian(
        {}, drive, bias, field, DT, names, drive_tangents=tangent, rest_drive_V=rest_drive_V
    )
    defaults = VortexParams()
    logs = {
        k: torch.tensor(math.log(getattr(defaults, k)), dtype=torch.float64, requires_grad=True)
        for k in names[:-2]
    }
    slope = torch.tensor(defaults.threshold_slope_per_T, dtype=torch.float64, requires_grad=True)
    bias_t = torch.tensor(bias, requires_grad=True)
    drive_t = torch.tensor(drive, requires_grad=True)
    out = power_response(
        {**{k: t.exp() for k, t in logs.items()}, "threshold_slope_per_T": slope},
        drive_t,
        bias_t,
        torch.tensor(field),
        DT,
        rest_drive_V=rest_drive_V,
    )
    weights = rng.normal(size=out.shape)
    (out * torch.from_numpy(weights)).sum().backward()
    autograd = [logs[k].grad for k in names[:-2]] + [
        slope.grad,
        bias_t.grad.sum(),
        (drive_t.grad.numpy() * tangent[0]).sum(),
    ]
    for col, expected in enumerate(autograd):
        assert (jac[..., col] * weights).sum() == pytest.approx(float(expected), rel=1e-9), col


def test_power_and_jacobian_batches_parameter_sets():
    """One value per drive: a batch of parameter sets equals separate calls."""
    drive = _drives(2, 100)
    values = {"threshold_A": np.array([4.5e-3, 5.5e-3]), "Q": np.array([1.5, 3.0])}
    batch, jac = vortex.power_and_jacobian(values, drive, 7e-3, 0.0, DT, ["threshold_A", "Q"])
    for i in range(2):
        single, jac_i = vortex.power_and_jacobian(
            {k: v[i] for k, v in values.items()}, drive[i : i + 1], 7e-3, 0.0, DT, ["threshold_A", "Q"]
        )
        assert np.array_equal(batch[i], single[0]) and np.allclose(jac[i], jac_i[0], rtol=1e-14)
    with pytest.raises(ConfigError, match="differentiate"):
        vortex.power_and_jacobian({}, drive, 7e-3, 0.0, DT, ["tau"])


def test_points_per_sample_average_over_the_hold():
    """points_per_sample = m: the mean of the power at m instants of each hold (what a bench
    averaging m scope points per drive sample reports); numba and torch agree, m = 1 is the
    device, and a fine device grid sampled at those instants gives the same numbers."""
    import torch

    from spinlab.sim_backends.vortex_torch import power_response

    drive = _drives(2, 50)
    fine = VortexDevice(noise=0).respond(Waveform(np.repeat(drive, 5, axis=1), DT / 5)).samples
    expected = fine.reshape(2, 50, 5).mean(axis=2)
    fast, jac = vortex.power_and_jacobian({}, drive, 7.5e-3, 0.0, DT, ["Q"], points_per_sample=5)
    assert np.allclose(fast, expected, rtol=1e-12, atol=0)
    scan = power_response({}, torch.from_numpy(drive), 7.5e-3, 0.0, DT, points_per_sample=5).numpy()
    assert np.allclose(scan, expected, rtol=1e-12, atol=0)
    q = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    power_response({"Q": q}, torch.from_numpy(drive), 7.5e-3, 0.0, DT, points_per_sample=5).sum().backward()
    assert jac.sum() == pytest.approx(2.0 * float(q.grad), rel=1e-9)  # d/dlog Q = Q d/dQ


def test_device_can_read_like_a_bench():
    """points_per_sample and rest_drive_V make the device report what power_and_jacobian
    predicts for a bench (mean of m instants per hold, settled at the rest level first)."""
    drive = _drives(2, 60)
    bench_like = (
        VortexDevice(noise=0, points_per_sample=5, rest_drive_V=0.0).respond(Waveform(drive, DT)).samples
    )
    expected, _ = vortex.power_and_jacobian({}, drive, 7.5e-3, 0.0, DT, rest_drive_V=0.0, points_per_sample=5)
    assert np.allclose(bench_like, expected, rtol=1e-12, atol=0)
    noisy = VortexDevice(seed=3, points_per_sample=5, rest_drive_V=0.0).respond(Waveform(drive, DT)).samples
    assert noisy.shape == drive.shape and np.allclose(noisy, expected, rtol=0.2)
    assert open_device("sim:vortex?points_per_sample=5&rest_drive_V=0").identity()["points_per_sample"] == 5
    with pytest.raises(SafetyLimitError, match="rest_drive_V"):
        VortexDevice(rest_drive_V=0.8)
