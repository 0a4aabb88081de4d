"""Issue 21 on the integrated bench: the measured field in every run file, the worked station
file of a real rig, and the fault matrix listing every instrument."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from spinlab.cli import app

runner = CliRunner()


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def events(run_dir: str | Path) -> list[dict]:
    with h5py.File(Path(run_dir) / "run.h5") as f:
        return [json.loads(line) for line in f["engine/events"][()]]


def test_an_acquire_over_fields_on_the_bench_records_the_set_and_measured_field(tmp_path):
    summary = cli_json(
        "acquire",
        "--device",
        "bench:emulated",
        "--field-T",
        "0.1,0.3",
        "--duration",
        "8e-5",
        "--record-s",
        "2e-5",
        "--runs-dir",
        str(tmp_path),
    )
    assert summary["recordings"] == 4
    with h5py.File(Path(summary["run_dir"]) / "run.h5") as f:
        names = f["conditions"].attrs["names"].split(",")
        set_T = f["conditions"][()][:, names.index("field_T")]
    np.testing.assert_array_equal(set_T, [0.1, 0.3] * 2)
    steps = events(summary["run_dir"])
    assert len(steps) == 2
    for step in steps:
        (response,) = step["meta"]["responses"]  # one device call per batch
        assert response["field_T"] == [0.1, 0.3]
        measured = np.array(response["field_T_measured"])
        np.testing.assert_allclose(measured, [0.1, 0.3], atol=5e-4)  # the station's settle_tolerance_T


def test_a_run_on_a_device_that_measures_no_field_records_no_responses(tmp_path):
    summary = cli_json(
        "acquire",
        "--device",
        "sim:vortex",
        "--field-T",
        "0.1",
        "--duration",
        "2e-5",
        "--record-s",
        "2e-5",
        "--runs-dir",
        str(tmp_path),
    )
    assert [step["meta"] for step in events(summary["run_dir"])] == [{"batch": 0}]
