"""`spinlab run mackey-glass`: the series, the drive in the device's own unit, the horizon curve,
the no-device baseline and bad data files, as a user sees them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.device import Device, DriveQuantity
from spinlab.engine import RunEngine, build_plan
from spinlab.errors import RunInterrupted
from spinlab.protocols import mackey_glass
from spinlab.sweeps import SweepSpec, run_sweep

ROOT = Path(__file__).resolve().parents[1]
MG_FILE = ROOT / ".." / "shared" / "datasets" / "mumax3-skyrmion" / "mackey_glass.txt"
SHORT = {"n_points": 1200, "n_nodes": 12, "discard": 100, "max_horizon": 20}


def cli(*args):
    return CliRunner().invoke(app, ["run", "mackey-glass", *args])


def last_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def persistence_nrmse(series, h, start):
    """The trivial forecast x(n + h) = x(n) on the points the readout is scored on."""
    truth, guess = series[start + h :], series[start:-h]
    return float(np.sqrt(np.mean((truth - guess) ** 2)) / np.std(truth))


class AnisotropyDevice(Device):
    """A driven damped oscillator that takes its drive in J/m3 (like a skyrmion twin) on a
    fixed 5 ps grid, and keeps every drive it was given."""

    condition_names = ()
    response_unit = ""
    dt_s = 5e-12

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.drives = []
        self.stop_at = stop_at
        self.address = "test:anisotropy"

    @property
    def drive_quantity(self) -> DriveQuantity:
        return DriveQuantity("anisotropy", "J/m3", 0.7e6, 0.9e6)

    def respond(self, drive, conditions=None):
        if len(self.drives) == self.stop_at:
            raise RunInterrupted(2)  # what Ctrl-C does in the middle of a run
        self.drives.append(drive)
        return super().respond(drive, conditions)

    def _respond(self, drive, dt_s, conditions):
        u = (drive - 0.8e6) / 1e5
        x = np.zeros(drive.shape[0])
        v = np.zeros(drive.shape[0])
        out = np.empty_like(drive)
        w, damping = 2 * np.pi * 3e9 * dt_s, 0.05
        for k in range(drive.shape[1]):
            v += -w * w * x - damping * v + w * w * np.tanh(u[:, k])
            x += v
            out[:, k] = x
        return out


def test_the_generated_series_is_the_files_attractor():
    generated = mackey_glass.mackey_glass(4000)
    given = mackey_glass.load_series(MG_FILE, 10_000)
    assert given.shape == (10_000,) and 0.4 < given.min() < 0.45 and 1.3 < given.max() < 1.35
    for series in (generated, given):
        lag = np.argmin([np.corrcoef(series[:-k], series[k:])[0, 1] for k in range(5, 40)]) + 5
        assert 20 <= lag <= 26  # the tau = 17 attractor's quasi-period is ~50 time units
    assert abs(generated.std() - given.std()) < 0.02 and abs(generated.mean() - given.mean()) < 0.03


def test_curve_on_sim_vortex_has_its_fields_and_beats_persistence_at_horizon_1(tmp_path):
    result = RunEngine(tmp_path).run(mackey_glass.plan(**SHORT), "sim:vortex?noise=0", seed=1)
    summary = result.summary
    assert summary["curve"]["horizon"] == list(range(1, 21))
    curve, baseline = np.array(summary["curve"]["nrmse"]), np.array(summary["baseline"]["nrmse"])
    assert curve.shape == baseline.shape == (20,) and np.all(np.isfinite(curve)) and np.all(curve > 0)
    assert "masked input alone" in summary["baseline"]["what"]
    series = mackey_glass.mackey_glass(SHORT["n_points"])
    split = 100 + (1200 - 100) // 2
    assert summary["nrmse_h1"] < persistence_nrmse(series[split:], 1, 0)
    assert curve[0] < curve[4] < curve[9]  # further ahead is harder (up to the quasi-period)
    assert summary["theta_reason"].startswith("half the relaxation time")
    assert summary["drive_unit"] == "V" and summary["drive_range"] == [-0.5, 0.5]
    assert (result.path / "nrmse.png").stat().st_size > 0


def test_the_cli_runs_the_same_plan_as_python(tmp_path):
    alone = (
        RunEngine(tmp_path).run(mackey_glass.plan(**{**SHORT, "discard": 300}), "sim:vortex", seed=2).summary
    )
    summary = last_json(
        cli(
            "--device",
            "sim:vortex",
            "--points",
            "1200",
            "--nodes",
            "12",
            "--max-horizon",
            "20",
            "--seed",
            "2",
            "--runs-dir",
            str(tmp_path),
            "--json",
        )
    )
    assert summary["curve"] == alone["curve"] and summary["baseline"] == alone["baseline"]


def test_the_drive_reaches_the_device_in_its_unit_and_range(tmp_path):
    device = AnisotropyDevice()
    summary = RunEngine(tmp_path).run(mackey_glass.plan(**SHORT, piece_points=400), device).summary
    assert device.drives and all(d.unit == "J/m3" for d in device.drives)
    assert all(np.isclose(d.dt_s, device.dt_s) for d in device.drives)  # 2 samples of its grid
    samples = np.concatenate([d.samples.ravel() for d in device.drives])
    assert samples.min() >= 0.7e6 and samples.max() <= 0.9e6
    assert np.ptp(samples) > 0.1e6  # more than half the range is used
    assert summary["theta_s"] == pytest.approx(10e-12) and summary["drive_unit"] == "J/m3"
    assert summary["nrmse_h1"] < 1.0


def test_an_interrupted_run_resumes_to_the_uninterrupted_curve_driving_only_the_missing_pieces(tmp_path):
    plan = mackey_glass.plan(**SHORT, piece_points=400, pieces_per_step=1)  # three steps
    clean = RunEngine(tmp_path / "a").run(plan, AnisotropyDevice(), seed=5)
    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path / "b").run(plan, AnisotropyDevice(stop_at=2), seed=5)
    again = AnisotropyDevice()
    resumed = RunEngine(tmp_path / "b").resume(caught.value.run_path, again)
    assert len(again.drives) == 1 and resumed.status == "completed"
    assert resumed.summary["curve"] == clean.summary["curve"]


@pytest.mark.parametrize(
    "content, says",
    [
        ("0.9\nabc\n1.0\n", "not one number a line"),
        ("0.9 1.0\n" * 2000, "2 columns"),
        ("0.9\n" * 50, "has 50 values"),
        ("0.9\nnan\n" + "1.0\n" * 2000, "value 2 is nan"),
        ("1.0\n" * 2000, "constant"),
    ],
)
def test_a_bad_data_file_is_one_line(tmp_path, content, says):
    path = tmp_path / "mg.txt"
    path.write_text(content)
    result = cli(
        "--device",
        "sim:vortex",
        "--data",
        str(path),
        "--points",
        "2000",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output


def test_a_missing_data_file_is_one_line(tmp_path):
    result = cli("--device", "sim:vortex", "--data", str(tmp_path / "none.txt"), "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "does not exist" in result.output


def test_a_sweep_runs_mackey_glass_points_that_equal_the_same_runs_alone(tmp_path):
    settings = {k: v for k, v in SHORT.items() if k != "n_nodes"}
    spec = SweepSpec("mackey-glass", "sim:vortex?noise=0", grid={"n_nodes": [8, 12]}, settings=settings)
    result = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["nrmse_h1"])
    assert result.count("completed") == 2 and [p.name for p in result.plots] == ["nrmse_h1.png"]
    for point, row in zip(spec.points(), result.table):
        alone = RunEngine(tmp_path / "alone").run(
            build_plan("mackey-glass", point.config), "sim:vortex?noise=0"
        )
        assert row["results"]["curve"] == alone.summary["curve"]


@pytest.mark.slow
def test_bench_emulated_through_the_cli(tmp_path):
    summary = last_json(
        cli(
            "--device",
            "bench:emulated",
            "--data",
            str(MG_FILE),
            "--points",
            "2000",
            "--nodes",
            "20",
            "--max-horizon",
            "20",
            "--runs-dir",
            str(tmp_path),
            "--json",
        )
    )
    assert summary["device"].startswith("bench:emulated") and summary["drive_unit"] == "V"
    assert len(summary["curve"]["nrmse"]) == 20 and np.isfinite(summary["nrmse_h1"])
    assert summary["nrmse_h1"] < 1.0 and summary["baseline_nrmse_h1"] < 0.2
    assert Path(summary["run_dir"], "nrmse.png").is_file()
