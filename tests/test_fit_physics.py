"""fit-physics: parameters recovered from recorded runs, uncertainties, model files, the CLI."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.errors import ConfigError, DeviceAddressError
from spinlab.protocols import acquire, characterize
from spinlab.protocols import fit_physics as fit_plan
from spinlab.protocols.acquire import AcquireConfig
from spinlab.protocols.fit_physics import FitConfig, fit_physics, read_run
from spinlab.sim_backends.macrospin import MacrospinDevice
from spinlab.sim_backends.vortex import VortexDevice

VORTEX_TRUTH = {"threshold_A": 4.6e-3, "gamma_G_per_s": 6.0e6, "Q": 2.6}


def record(tmp_path, address: str, config: AcquireConfig, seed: int = 0):
    return RunEngine(tmp_path).run(acquire.plan(config), address, seed=seed).path


@pytest.fixture(scope="module")
def vortex_run(tmp_path_factory):
    """sim:vortex with hidden parameters and its thermal noise on, at two biases."""
    address = "sim:vortex?" + "&".join(f"{k}={v}" for k, v in VORTEX_TRUTH.items())
    config = AcquireConfig(
        duration_s=4e-4,
        dt_s=1e-7,
        record_s=2e-5,
        hold_s=(1e-7, 1e-6),
        conditions={"bias_A": (6.5e-3, 8.5e-3)},
    )
    return record(tmp_path_factory.mktemp("runs"), address, config, seed=2)


def test_read_run_loads_what_acquire_wrote(vortex_run):
    rec = read_run(vortex_run)
    assert rec.drive_V.shape == rec.response_V.shape == (20, 200)
    assert rec.dt_s == 1e-7 and set(rec.conditions) == {"bias_A", "field_T"}
    np.testing.assert_allclose(rec.conditions["bias_A"][:2], [6.5e-3, 8.5e-3])
    assert rec.device["type"] == "VortexDevice" and not rec.validation.any()


def test_read_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="run.h5"):
        read_run(tmp_path)
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(ConfigError, match="drive_V"):
        read_run(tmp_path)


def test_gradient_fit_recovers_hidden_vortex_parameters_from_random_starts(vortex_run):
    config = FitConfig(model="vortex", params=tuple(VORTEX_TRUTH), seed=1)
    result = fit_physics(read_run(vortex_run), config)
    for name, truth in VORTEX_TRUTH.items():
        entry = result["params"][name]
        assert entry["value"] == pytest.approx(truth, rel=0.03), name
        # the sandwich uncertainty is honest: the error is within a few of it, and it is small
        assert abs(entry["value"] - truth) < 4 * entry["uncertainty"] + 1e-3 * truth, name
        assert 0 < entry["relative_uncertainty"] < 0.05, name
        assert entry["loss"] == result["loss"]
    # the best random candidate was far from the truth: the descent did the work
    assert result["stages"][0]["best_loss"] < 0.5 * result["screened_best_loss"]
    assert result["uncertainty_method"].startswith("sandwich")
    assert result["validation_split"] == "every 5th recording" and result["n_validation"] == 4
    # single shots of a noisy device: the held-out error is its noise, not a misfit
    assert result["validation_nrmse"] == pytest.approx(result["train_nrmse"], rel=0.3)


def test_grid_baseline_is_coarser_and_the_same_command(vortex_run):
    rec = read_run(vortex_run)
    grid = fit_physics(
        rec, FitConfig(model="vortex", params=("threshold_A", "gamma_G_per_s"), method="grid", grid_points=5)
    )
    grad = fit_physics(rec, FitConfig(model="vortex", params=("threshold_A", "gamma_G_per_s")))
    assert grid["stages"] == [{"grid_points": 25}]
    assert grad["loss"] <= grid["loss"]
    assert grid["trace"][-1][1] == pytest.approx(grid["loss"])  # the trace ends at the best loss


def test_fitted_model_file_opens_as_a_device(vortex_run, tmp_path):
    config = FitConfig(
        model="vortex", params=("threshold_A",), screen=8, starts=2, source_run=str(vortex_run)
    )
    run = RunEngine(tmp_path).run(fit_plan.plan(config))
    summary = run.summary
    assert summary["address"] == f"sim:{run.path / 'model.json'}"
    fitted = open_device(summary["address"] + "?noise=0&seed=3")
    assert isinstance(fitted, VortexDevice) and fitted.noise == 0.0 and fitted.seed == 3
    assert fitted.params.threshold_A == pytest.approx(summary["params"]["threshold_A"]["value"])
    assert fitted.params.Q == pytest.approx(VORTEX_TRUTH["Q"])  # not fitted: the recording simulator's
    with h5py.File(run.path / "run.h5") as f:
        assert f["validation/prediction_V"].shape == f["validation/response_V"].shape
        assert json.loads(f.attrs["results"])["model_file"] == str(run.path / "model.json")


def test_model_files_are_validated(tmp_path):
    with pytest.raises(DeviceAddressError, match="does not exist"):
        open_device(f"sim:{tmp_path / 'missing.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a spinlab physics model"):
        open_device(f"sim:{bad}")


def test_macrospin_fit_recovers_damping_and_output_scale():
    """A short noise-free ring-down run (recorded in memory): damping, demagnetising field and
    the MR ratio recovered from random starts."""
    truth = {"alpha": 0.03, "Hd_A_per_m": 4.6e5, "tmr": 1.3}
    dev = MacrospinDevice(initial_tilt_rad=0.6, default_conditions={"bias_A": 1.5e-3})
    for name, value in truth.items():
        getattr(dev.params, "log_" + name).data.fill_(np.log(value))
    rec = _in_memory_run(dev, n=100, count=12, seed=4)
    result = fit_physics(rec, FitConfig(model="macrospin", params=tuple(truth), screen=32, starts=4))
    for name, value in truth.items():
        assert result["params"][name]["value"] == pytest.approx(value, rel=0.01), name


def test_degenerate_and_unknown_parameters_are_refused(vortex_run):
    rec = read_run(vortex_run)
    with pytest.raises(ConfigError, match="cannot fit"):
        fit_physics(rec, FitConfig(model="vortex", params=("f0_Hz",)))
    rec_m = _in_memory_run(MacrospinDevice(), n=20, count=2)
    with pytest.raises(ConfigError, match="eta / \\(Ms_A_per_m volume_m3\\)"):
        fit_physics(rec_m, FitConfig(model="macrospin", params=("eta", "Ms_A_per_m")))
    with pytest.raises(ConfigError, match="horizons"):
        FitConfig(model="vortex", params=("Q",), horizons=(0.5,))
    with pytest.raises(ConfigError, match="--model"):
        FitConfig(model="mumax", params=("Q",))


def _in_memory_run(dev, n: int, count: int, seed: int = 0):
    """A Recordings object as read_run returns it, straight from a device (no files)."""
    from spinlab import Waveform
    from spinlab.protocols.acquire import random_multilevel
    from spinlab.protocols.fit_physics import Recordings

    rng = np.random.default_rng(seed)
    dt = 2e-11
    drives = np.stack([random_multilevel(rng, n, dt, (2e-10, 1e-9), 0.3) for _ in range(count)])
    fields = np.resize([0.04, 0.06], count)
    response = dev.respond(Waveform(drives, dt), {"field_T": fields}).samples
    conditions = dev.resolve_conditions({"field_T": fields}, count)
    return Recordings(drives, response, dt, conditions, np.zeros(count, bool), dev.identity(), "memory")


# --- the command ------------------------------------------------------------------------------
def test_cli_fit_physics_json_reports_every_parameter(vortex_run, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "fit-physics",
            str(vortex_run),
            "--model",
            "vortex",
            "--params",
            "threshold_A,Q",
            "--screen",
            "16",
            "--starts",
            "2",
            "--runs-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["params"]) == {"threshold_A", "Q"}
    for entry in summary["params"].values():
        assert {"value", "uncertainty", "loss"} <= set(entry)
    assert open_device(summary["address"]).params.threshold_A == pytest.approx(
        summary["params"]["threshold_A"]["value"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "tau"], "cannot fit"),
        (["--params", "Q", "--bounds", "Q=3"], "--bounds"),
        (["--params", "Q", "--method", "newton"], "--method"),
    ],
)
def test_cli_fit_physics_bad_options_are_one_line_errors(vortex_run, tmp_path, args, message):
    result = CliRunner().invoke(
        app, ["fit-physics", str(vortex_run), "--model", "vortex", *args, "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


# --- the Done-means checks (slow: run with -m slow) ---------------------------------------------
@pytest.mark.slow
def test_macrospin_parameters_recovered_within_5_percent_with_thermal_noise(tmp_path):
    truth = {"alpha": 0.025, "Hd_A_per_m": 5.2e5, "tmr": 1.2, "R_P_ohm": 60.0}
    address = (
        "sim:macrospin?"
        + "&".join(f"{k}={v}" for k, v in truth.items())
        + "&temperature_K=300&initial_tilt_rad=0.6&bias_A=1.8e-3"
    )
    run_dir = record(
        tmp_path,
        address,
        AcquireConfig(
            duration_s=96 * 3e-9,
            dt_s=2e-11,
            record_s=3e-9,
            hold_s=(2e-10, 1e-9),
            amplitude_V=0.3,
            conditions={"field_T": (0.04, 0.05, 0.06)},
        ),
        seed=1,
    )
    result = fit_physics(read_run(run_dir), FitConfig(model="macrospin", params=tuple(truth)))
    for name, value in truth.items():
        assert result["params"][name]["value"] == pytest.approx(value, rel=0.05), name


@pytest.mark.slow
def test_vortex_fit_on_the_bench_agrees_with_characterize(tmp_path):
    from spinlab.sim_backends.vortex import VortexParams

    reference = RunEngine(tmp_path).run(characterize.plan(), "bench:emulated").summary
    run_dir = record(
        tmp_path,
        "bench:emulated",
        AcquireConfig(duration_s=3e-3, conditions={"bias_A": (6.5e-3, 7.5e-3, 8.5e-3)}),
        seed=2,
    )
    names = ("threshold_A", "gamma_G_per_s", "Q", "detector_V_per_p", "drive_gain_A_per_V")
    fitted = VortexParams(**fit_physics(read_run(run_dir), FitConfig(model="vortex", params=names))["values"])
    assert fitted.threshold_A == pytest.approx(reference["threshold_A"], rel=0.05)
    assert fitted.relaxation_time_s(reference["relaxation_bias_A"]) == pytest.approx(
        reference["relaxation_time_s"], rel=0.05
    )


@pytest.mark.parametrize("seed", [3, 5])
def test_macrospin_interval_covers_the_error_at_random_values_with_thermal_noise(seed):
    """Issue 24 item 8: away from the README's values a parameter came out 8 % off with a 3 %
    uncertainty. The reported uncertainty now adds the noise bias (the same fit repeated on the
    fitted model's own noisy recordings); at random values from the box, with the thermal field
    on, the 95 % interval holds the truth (seeds fixed; the benchmark covers 20 sets)."""
    from spinlab.sim_backends.macrospin import MacrospinParams

    rng = np.random.default_rng(seed)
    while True:
        truth = {
            "alpha": rng.uniform(0.012, 0.035),
            "Hd_A_per_m": rng.uniform(3e5, 8e5),
            "tmr": rng.uniform(0.6, 1.8),
        }
        if 3.0e-3 < 0.9 * float(MacrospinParams(**truth).critical_current_A(0.04).detach()):
            break  # the largest drive current stays sub-threshold, as the experiment is designed
    dev = MacrospinDevice(
        initial_tilt_rad=0.6, temperature_K=300, seed=seed, default_conditions={"bias_A": 1.5e-3}
    )
    for name, value in truth.items():
        getattr(dev.params, "log_" + name).data.fill_(np.log(value))
    rec = _in_memory_run(dev, n=150, count=24, seed=seed)
    result = fit_physics(rec, FitConfig(model="macrospin", params=tuple(truth), screen=32, starts=4))
    assert "noise bias" in result["uncertainty_method"]
    for name, value in truth.items():
        entry = result["params"][name]
        assert entry["relative_noise_bias"] is not None
        assert entry["relative_uncertainty"] >= entry["relative_statistical"]
        error = abs(math.log(entry["value"] / value))
        assert error <= 1.96 * entry["relative_uncertainty"], (name, value, entry)
