"""The characterisation protocol: fits recover known parameters, and the measured threshold and
relaxation time agree with the auto-oscillator's closed forms on sim:vortex and bench:emulated."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import ConfigError, open_device
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.protocols import characterize
from spinlab.protocols.characterize import (
    CharacterizeConfig,
    fit_relaxation,
    fit_threshold,
    relaxation_model,
    steady_state_model,
)


# --- fits on synthetic data --------------------------------------------------------------------
def test_threshold_fit_recovers_parameters_despite_noise_and_outlier() -> None:
    rng = np.random.default_rng(3)
    bias = np.linspace(0, 9.5e-3, 20)
    clean = steady_state_model(bias, 5e-3, 2.0, 0.1, 1e-5)
    noisy = clean + rng.normal(0, 2e-4, bias.size)
    noisy[15] += 5e-3  # one glitched point
    fit = fit_threshold(bias, noisy)
    assert fit["threshold_A"] == pytest.approx(5e-3, rel=0.02)
    assert fit["scale_V"] > 0 and fit["threshold_A_err"] > 0


def test_threshold_fit_refuses_flat_sweep() -> None:
    with pytest.raises(ConfigError, match="no auto-oscillation"):
        fit_threshold(np.linspace(0, 4e-3, 10), np.full(10, 1e-5))


def test_relaxation_fit_recovers_time_constant() -> None:
    rng = np.random.default_rng(4)
    dt = 20e-9
    t = np.arange(60) * dt
    above = 0.0144 + 0.0017 * np.exp(-t / 200e-9) + rng.normal(0, 2e-5, t.size)
    below = 0.0144 - 0.0018 * np.exp(-t / 200e-9) + rng.normal(0, 2e-5, t.size)
    fit = fit_relaxation(above, below, dt)
    assert fit["relaxation_time_s"] == pytest.approx(200e-9, rel=0.03)
    assert fit["relaxation_time_exp_s"] == pytest.approx(200e-9, rel=0.03)
    assert fit["level_V"] == pytest.approx(0.0144, rel=0.01)


def test_relaxation_fit_corrects_the_nonlinearity() -> None:
    """Data from the exact solution of dx/dt = -x/tau - (k/tau) x^2 with large steps: the plain
    exponential is biased, the corrected fit is not."""
    dt, tau, k = 20e-9, 200e-9, 60.0  # k x0 ~ 0.12, like the vortex model at 0.12 V steps
    t = np.arange(60) * dt
    model = relaxation_model(np.concatenate([t, t]), 0.0144, 0.002, -0.0021, tau, k)
    fit = fit_relaxation(model[:60], model[60:], dt)
    assert fit["relaxation_time_s"] == pytest.approx(tau, rel=1e-4)
    assert fit["curvature_per_V"] == pytest.approx(k, rel=1e-3)
    assert abs(fit["relaxation_time_exp_s"] / tau - 1) > 0.01


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bias_points": 3}, "bias_points"),
        ({"step_amplitude_V": -0.1}, "step_amplitude_V"),
        ({"bias_start_A": 5e-3, "bias_stop_A": 1e-3}, "bias_stop_A"),
        ({"step_hold_s": 50e-9}, "step_hold_s"),
        ({"step_dt_s": math.nan}, "step_dt_s"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        CharacterizeConfig(**kwargs)


def test_sweep_beyond_device_limit_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_bias_A"):
        RunEngine(tmp_path).run(characterize.plan(bias_stop_A=20e-3), "sim:vortex")


# --- the protocol on the simulator --------------------------------------------------------------
def test_characterize_sim_matches_closed_forms(tmp_path) -> None:
    config = CharacterizeConfig()
    events = []
    result = RunEngine(tmp_path).run(
        characterize.plan(config),
        "sim:vortex",
        seed=2,
        subscribers=[
            lambda name, doc: (
                events.append((doc["stage"], doc["done"], doc["total"])) if name == "progress" else None
            )
        ],
    )
    summary, path = result.summary, result.path
    assert summary["threshold_A"] == pytest.approx(5e-3, rel=0.03)
    predicted = 1 / (2 * 5e6 * (summary["relaxation_bias_A"] / 5e-3 - 1))
    assert summary["predicted_relaxation_time_s"] == pytest.approx(predicted)
    assert summary["relaxation_time_s"] == pytest.approx(predicted, rel=0.05)
    assert events[config.bias_points - 1] == ("bias sweep", config.bias_points, config.bias_points)
    assert events[-4] == ("step response", config.step_batches, config.step_batches)
    assert events[-3:] == [("figures", 0, 2), ("figures", 1, 2), ("figures", 2, 2)]  # then the figures
    assert (path / "sweep.png").stat().st_size > 0 and (path / "step_response.png").stat().st_size > 0
    with h5py.File(path / "run.h5") as f:
        assert f["sweep/bias_A"].shape == (config.bias_points,)
        assert f["steps/mean_response"].attrs["repeats"] == config.step_repeats
        assert json.loads(f.attrs["results"])["relaxation_time_s"] == summary["relaxation_time_s"]
        assert f.attrs["status"] == "completed"


def run_cli(tmp_path, device: str, *extra: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["characterize", "--device", device, "--json", "--runs-dir", str(tmp_path), "--seed", "1", *extra],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_json_summary_sim(tmp_path) -> None:
    summary = run_cli(tmp_path, "sim:vortex")
    for key in (
        "threshold_A",
        "relaxation_time_s",
        "relaxation_bias_A",
        "predicted_relaxation_time_s",
        "run_dir",
        "device",
        "wall_s",
    ):
        assert key in summary
    assert summary["device"] == "sim:vortex"
    assert summary["relaxation_time_s"] == pytest.approx(summary["predicted_relaxation_time_s"], rel=0.05)


def test_a_seed_in_the_address_equals_the_seed_option_and_reaches_the_noise(tmp_path) -> None:
    def results(device: str, *extra: str) -> tuple[float, float]:
        out = CliRunner().invoke(
            app, ["characterize", "--device", device, "--json", "--runs-dir", str(tmp_path), *extra]
        )
        assert out.exit_code == 0, out.output
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        return summary["threshold_A"], summary["relaxation_time_s"]

    in_address = results("sim:vortex?seed=3")
    assert results("sim:vortex", "--seed", "3") == in_address
    assert results("sim:vortex?seed=3", "--seed", "0") == in_address  # the address wins
    assert results("sim:vortex", "--seed", "0") != in_address


def test_cli_reports_user_errors(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["characterize", "--device", "sim:vortex", "--bias-points", "2", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "bias_points" in result.output


def test_cli_sim_and_emulated_bench_agree(tmp_path) -> None:
    """The acceptance check: the same command on the simulator and on the emulated bench (real
    drivers, SCPI, scope noise and ADC) gives the same threshold and relaxation time, and both
    match the model's closed form tau = 1 / (2 Gamma_G (z - 1))."""
    sim = run_cli(tmp_path, "sim:vortex")
    bench = run_cli(tmp_path, "bench:emulated")
    assert bench["device"] == "bench:emulated"
    assert bench["threshold_A"] == pytest.approx(sim["threshold_A"], rel=0.05)
    assert bench["relaxation_time_s"] == pytest.approx(sim["relaxation_time_s"], rel=0.05)
    for summary in (sim, bench):
        assert summary["threshold_A"] == pytest.approx(5e-3, rel=0.05)
        assert summary["relaxation_time_s"] == pytest.approx(summary["predicted_relaxation_time_s"], rel=0.05)
    with h5py.File(f"{bench['run_dir']}/run.h5") as f:
        identity = json.loads(f.attrs["device"])
        assert "33522B" in identity["instruments"]["awg"]
        assert f.attrs["seed"] == 1 and identity["model"]["seed"] == 1


def test_ctrl_c_during_characterize_on_bench_leaves_outputs_off(tmp_path, monkeypatch) -> None:
    """Ctrl-C in the middle of the bias sweep (outside the engine's signal handling, as in a
    notebook thread): the run is marked interrupted, its data so far is in the file, and the
    AWG and bias source are off."""
    bench = open_device("bench:emulated")
    real = bench.scope.read_waveform
    calls = {"n": 0}

    def read_then_interrupt(channel):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(channel)

    monkeypatch.setattr(bench.scope, "read_waveform", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt) as caught:
        RunEngine(tmp_path).run(characterize.plan(), bench)
    assert not bench.lab.awg.output_on and not bench.lab.source.output_on
    with h5py.File(caught.value.run_path / "run.h5") as f:
        assert f.attrs["status"] == "interrupted"
        assert f["sweep/responses"].shape[0] == 4
    bench.close()


def test_threshold_interval_says_what_it_covers_and_adds_the_corner_systematic(tmp_path) -> None:
    """Issue 24 item 7: the +- was the fit's statistical error only (bench 4.931 +- 0.026 mA
    against the model's 5.000). The systematic part of the model's sharp corner (a refit without
    the points near threshold) is in the text, the JSON and the run file, and the sum covers it."""
    from spinlab.protocols.characterize import threshold_systematic

    # a thermally rounded corner (softplus) where the model is sharp: the fit's window matters
    bias = np.linspace(0, 9.5e-3, 20)
    z = bias / 5e-3
    rounded = 0.1 * 0.08 * np.log1p(np.exp((z - 1) / 0.08)) / (z + 2.0) + 1e-5
    fit = fit_threshold(bias, rounded)
    sys_A = threshold_systematic(bias, rounded, fit)
    assert sys_A is not None and sys_A > 0
    assert abs(fit["threshold_A"] - 5e-3) <= 2 * math.hypot(fit["threshold_A_err"], sys_A)

    result = CliRunner().invoke(
        app,
        ["characterize", "--device", "bench:emulated", "--step-repeats", "256", "--step-batches", "2",
         "--runs-dir", str(tmp_path), "--seed", "0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    stat, sys_A, total = (summary[k] for k in ("threshold_err_A", "threshold_sys_A", "threshold_total_err_A"))
    assert sys_A > 0 and total == pytest.approx(math.hypot(stat, sys_A))
    assert abs(summary["threshold_A"] - summary["predicted_threshold_A"]) <= 2 * total
    assert "statistical" in summary["uncertainty"]["threshold_err_A"]
    assert "systematic" in summary["uncertainty"]["threshold_sys_A"]
    text = characterize.report({**summary, "run_dir": "runs/x"})
    assert "(stat., 1 s.e.)" in text and "(sys., fit without the rounded corner)" in text
    with h5py.File(f"{summary['run_dir']}/run.h5") as f:
        assert json.loads(f.attrs["results"])["threshold_sys_A"] == sys_A
        assert f["sweep/fit"].attrs["threshold_sys_A"] == sys_A
