"""`spinlab acquire`, `spinlab twin train` (device and MuMax3), `spinlab twin eval`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.twin.checkpoint import load_twin

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TABLE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "datasets"
    / "mumax3-skyrmion"
    / "one_skyrmion_voltage_train"
    / "table.txt"
)


def _json(args):
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_acquire_command(tmp_path):
    summary = _json(
        [
            "acquire",
            "--device",
            "sim:vortex",
            "--duration",
            "2e-4",
            "--record-s",
            "2e-5",
            "--bias-A",
            "6e-3,9e-3",
            "--amplitude-V",
            "0.3",
            "--hold-s",
            "1e-7,4e-7",
            "--runs-dir",
            str(tmp_path),
            "--seed",
            "4",
        ]
    )
    assert summary["recordings"] == 10 and summary["device_time_s"] == pytest.approx(2e-4)
    with h5py.File(Path(summary["run_dir"]) / "run.h5") as f:
        assert f["drive_V"].shape == f["response_V"].shape == (10, 200)
        assert abs(f["drive_V"][()]).max() <= 0.3
        assert f.attrs["seed"] == 4 and json.loads(f.attrs["device"])["seed"] == 4


def test_twin_train_on_device_then_eval_and_open_as_device(tmp_path):
    out = tmp_path / "twin.pt"
    summary = _json(
        [
            "twin",
            "train",
            "--device",
            "sim:vortex",
            "--bias-A",
            "6.5e-3,8.5e-3",
            "--max-duration",
            "2e-4",
            "--record-s",
            "2e-5",
            "--hidden",
            "8",
            "--max-steps",
            "20",
            "--validate-every",
            "10",
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert summary["device_time_s"] <= 2e-4 + 1e-12 and summary["steps"] <= 20
    assert summary["out"] == str(out) and out.is_file()
    model, meta = load_twin(out)
    assert model.arch.condition_names == ("bias_A",) and meta.dt_s == 1e-7
    assert meta.condition_ranges == {"bias_A": [6.5e-3, 8.5e-3]}
    assert meta.provenance["source"]["device"] == "sim:vortex"
    assert meta.provenance["nrmse_history"][-1]["step"] == summary["steps"]
    ev = _json(
        [
            "twin",
            "eval",
            str(out),
            "--device",
            "sim:vortex",
            "--bias-A",
            "7.5e-3",
            "--drives",
            "2",
            "--repeats",
            "2",
            "--record-s",
            "2e-5",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert ev["nrmse"] > 0 and "noise_floor_single_shot" in ev
    assert Path(ev["plot"]).stat().st_size > 0
    with open_device(f"twin:{out}") as twin:
        assert twin.respond(twin_drive(), {"bias_A": 7.5e-3}).samples.shape == (50,)


def twin_drive():
    import numpy as np

    from spinlab import Waveform

    return Waveform(np.linspace(-0.2, 0.2, 50), 1e-7)


@pytest.mark.skipif(not TABLE.is_file(), reason="MuMax3 dataset not present")
def test_twin_train_on_mumax_table(tmp_path):
    short = tmp_path / "table.txt"
    with open(TABLE) as src, open(short, "w") as dst:
        for _ in range(8001):
            dst.write(src.readline())
    summary = _json(
        [
            "twin",
            "train",
            "--mumax",
            str(short),
            "--input",
            "Ku1.region100",
            "--output",
            "mz",
            "--train-points",
            "1500",
            "--val-points",
            "300",
            "--test-points",
            "1000",
            "--hidden",
            "8",
            "--max-steps",
            "20",
            "--validate-every",
            "10",
            "--out",
            str(tmp_path / "sky.pt"),
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert summary["steps"] == 20 and summary["test_points"] == 998
    assert summary["dt_s"] == pytest.approx(5e-12, rel=1e-3)
    _, meta = load_twin(tmp_path / "sky.pt")
    assert meta.provenance["source"]["split"]["drives"] == ["Ku1.region100"]


def test_user_errors_exit_2_with_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["twin", "train", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "exactly one data source" in result.output
    (tmp_path / "bad.pt").write_text("garbage")
    result = runner.invoke(
        app, ["twin", "eval", str(tmp_path / "bad.pt"), "--device", "sim:vortex", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "not a readable twin checkpoint" in result.output
    result = runner.invoke(
        app, ["acquire", "--device", "sim:vortex", "--bias-A", "6e-3,abc", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--bias-A" in result.output
    result = runner.invoke(
        app,
        [
            "twin",
            "train",
            "--mumax",
            str(TABLE),
            "--torch-device",
            "gpu7",
            "--out",
            str(tmp_path / "x.pt"),
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "torch device must be" in result.output


def test_twin_with_a_drive_and_a_condition_trains_evaluates_and_opens_as_a_device(tmp_path):
    from twin_helpers import write_mumax_table

    table = write_mumax_table(tmp_path / "table.txt", n=3000)
    out = tmp_path / "kd.pt"
    summary = _json(
        [
            "twin",
            "train",
            "--mumax",
            str(table),
            "--input",
            "Ku1.region100,Dind.region100:condition",
            "--every",
            "1",
            "--discard",
            "20",
            "--train-points",
            "2380",
            "--val-points",
            "400",
            "--test-points",
            "0",
            "--hidden",
            "16",
            "--max-steps",
            "1500",
            "--validate-every",
            "250",
            "--target-nrmse",
            "0.03",
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert [(i["name"], i["role"], i["unit"]) for i in summary["inputs"]] == [
        ("Ku1.region100", "drive", "J/m3"),
        ("dmi_J_m2", "condition", "J/m2"),
    ]
    assert summary["test_nrmse"] < 0.15, summary
    model, meta = load_twin(out)
    assert model.arch.drive_names == ("Ku1.region100",) and model.arch.condition_names == ("dmi_J_m2",)
    assert meta.inputs[1]["column"] == "Dind.region100" and meta.output["unit"] == "1"
    scored = _json(
        [
            "twin",
            "eval",
            str(out),
            "--mumax",
            str(table),
            "--span",
            "0.8,1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert scored["nrmse"] == pytest.approx(
        summary["test_nrmse"], rel=1e-4
    )  # the same held-out span: 0.8 x 3000 - 20
    assert scored["frequency_error"] < 0.05 and Path(scored["plot"]).stat().st_size > 10_000
    dev = open_device(f"twin:{out}")
    assert dev.drive_quantity.unit == "J/m3" and dev.condition_names == ("dmi_J_m2",)


def test_twin_eval_on_a_table_without_the_twins_columns_is_one_line(tmp_path):
    from twin_helpers import write_mumax_table

    table = write_mumax_table(tmp_path / "table.txt", n=600)
    out = tmp_path / "kd.pt"
    _json(
        [
            "twin",
            "train",
            "--mumax",
            str(table),
            "--input",
            "Ku1.region100,Dind.region100:condition",
            "--every",
            "1",
            "--discard",
            "0",
            "--train-points",
            "500",
            "--val-points",
            "100",
            "--hidden",
            "8",
            "--max-steps",
            "20",
            "--validate-every",
            "10",
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path),
        ]
    )
    wrong = write_mumax_table(
        tmp_path / "ku_only.txt", n=600, columns=["t", "mx", "my", "mz", "Ku1.region100"]
    )
    result = CliRunner().invoke(
        app, ["twin", "eval", str(out), "--mumax", str(wrong), "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "lacks column(s) ['Dind.region100']" in lines[0]
    result = CliRunner().invoke(
        app,
        [
            "twin",
            "train",
            "--mumax",
            str(table),
            "--input",
            "Ku1.region100:fast",
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "COLUMN:condition" in result.output
