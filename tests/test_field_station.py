"""Issue 21 on the integrated bench: the measured field in every run file, the worked station
file of a real rig, and the fault matrix listing every instrument."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import Waveform
from spinlab.cli import app
from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import builtin_station, load_station
from spinlab.sim_backends.emulated import EmulatedLab

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


def test_calls_over_the_same_fields_sweep_up_and_down_one_change_fewer_each():
    """Each field change costs a ramp and a settle: a call starts at the end of its fields
    nearest the magnet's field, so a second call over 0.2/0.3 T sets one field, not two."""
    fields = np.array([0.3, 0.2, 0.2])
    drive = Waveform(np.full((3, 400), 0.1), 1e-7, "V")
    with open_bench("emulated") as bench:
        first = bench.respond(drive, {"field_T": fields})
        assert [r.set_T for r in bench.field_log] == [0.2, 0.3]
        second = bench.respond(drive, {"field_T": fields})
        assert [r.set_T for r in bench.field_log] == [0.2, 0.3, 0.2]
    for response in (first, second):  # each drive's response and reading at its own field
        np.testing.assert_allclose(response.meta["field_T_measured"], fields, atol=5e-4)
    np.testing.assert_allclose(first.samples.mean(axis=1), second.samples.mean(axis=1), atol=1e-3)
    assert first.samples[0].mean() < first.samples[1].mean() - 1e-3  # 0.3 T: a higher threshold


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


def test_the_worked_field_station_loads_and_opens_with_every_role(tmp_path):
    """The worked rig's file passes every check: it loads (each setting against its named
    driver's ratings), and opened on emulated instruments at its own settings every driver is
    found by *IDN? and the field is a condition."""
    station = load_station(builtin_station("example_field_lab"))
    assert set(station.resources.instruments) == {
        "awg",
        "scope",
        "source",
        "magnet",
        "gaussmeter",
        "analyser",
    }
    assert all(station.driver_name(role) for role in station.resources.instruments)
    assert station.analyser is not None and station.analyser.chain_gain_dB == pytest.approx(20 - 3.5 - 1.5)
    assert station.magnet is not None and station.magnet.rate_A_per_s <= station.magnet.max_ramp_A_per_s
    assert station.magnet.T_per_A * station.magnet.max_current_A == pytest.approx(station.limits.max_field_T)
    text = station.path.read_text().replace('visa_library = "@py"', 'visa_library = "emulated"')
    for role, resource in EmulatedLab.RESOURCES.items():
        text, count = re.subn(rf'^{role} = "[^"]*"', f'{role} = "{resource}"', text, flags=re.M)
        assert count == 1, role
    path = tmp_path / "field_lab.toml"
    path.write_text(text)
    with open_bench(str(path), source="keithley-2450") as bench:
        assert bench.drivers == {role: station.driver_name(role) for role in station.resources.instruments}
        assert bench.condition_names == ("bias_A", "field_T")


def test_characterize_and_spectrum_at_0_3_T_on_the_bench_agree_on_the_threshold(tmp_path):
    """The time-domain and the frequency-domain thresholds on the same emulated bench at 0.3 T,
    as a user types them: within 3 % of each other and of the model's 5 mA x (1 + 0.5 x 0.3)."""
    common = ["--device", "bench:emulated", "--field-T", "0.3", "--seed", "1", "--runs-dir", str(tmp_path)]
    char = cli_json("characterize", *common, "--step-repeats", "64", "--step-batches", "2")
    spec = cli_json(
        "spectrum",
        *common,
        "--bias-A",
        "4.5e-3:9e-3:10",
        "--set",
        "survey_points=801",
        "--set",
        "zoom_points=201",
    )
    assert char["field_T"] == 0.3 and spec["fields_T"] == [0.3]
    assert spec["predicted_threshold_A"] == [pytest.approx(5.75e-3)]
    assert char["threshold_A"] == pytest.approx(5.75e-3, rel=0.03)
    assert spec["threshold_A"][0] == pytest.approx(5.75e-3, rel=0.03)
    assert spec["threshold_A"][0] == pytest.approx(char["threshold_A"], rel=0.03)
    for run in (char, spec):  # every step ran at the gaussmeter's 0.3 T
        measured = [
            r["field_T_measured"] for step in events(run["run_dir"]) for r in step["meta"]["responses"]
        ]
        assert measured and np.allclose(measured, 0.3, atol=5e-4)


@pytest.mark.slow
def test_a_twin_trained_over_fields_on_the_bench_meets_its_target_between_them(tmp_path):
    """Issue 21's twin check on bench:emulated (benchmarks/bench_twin_field.py, one seed, ~1 min):
    trained at 0.2/0.3/0.4 T through the magnet, scored against the bench at 0.25 and 0.35 T."""
    device, drives = ["--device", "bench:emulated", "--runs-dir", str(tmp_path)], ["--amplitude-V", "0.5"]
    out = tmp_path / "field-twin.pt"
    trained = cli_json(
        "twin", "train", *device, "--field-T", "0.2,0.3,0.4", "--dt-s", "2e-7", *drives,
        "--hold-s", "2e-7,2e-6", "--hidden", "32", "--target-nrmse", "0.1", "--max-duration", "2e-2",
        "--out", str(out),
    )  # fmt: skip
    scored = cli_json(
        "twin", "eval", str(out), *device, "--field-T", "0.25,0.35", "--hold-s", "2e-7,2e-6", *drives,
        "--drives", "10", "--repeats", "4", "--target-nrmse", "0.15", "--seed", "1000",
    )  # fmt: skip
    assert trained["conditions"]["field_T"] == [0.2, 0.3, 0.4]
    assert [e["field_T"] for e in scored["per_condition"]] == [0.25, 0.35]
    assert scored["nrmse"] <= 0.15
