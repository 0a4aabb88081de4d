"""What a new user met (issue 24 items 4, 6, 10): the twin-eval report's warnings, the demo
report's wording, help texts, docs and ignored files (items 1 and 5 are in test_listen.py)."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import click
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.protocols import acquire, demo
from spinlab.protocols.spoken_digits import SpokenDigitsConfig

ROOT = Path(__file__).resolve().parents[1]


# --- item 4: twin eval on a table says when its NRMSE cannot score the twin ---------------------
@pytest.mark.usefixtures("one_torch_thread")
def test_twin_eval_text_report_warns_outside_the_trained_range_and_on_a_flat_reference(tmp_path):
    from twin_helpers import write_mumax_table

    table = write_mumax_table(tmp_path / "table.txt", n=600)
    twin = tmp_path / "kd.pt"
    trained = CliRunner().invoke(
        app,
        [
            "twin", "train", "--mumax", str(table), "--input", "Ku1.region100,Dind.region100:condition",
            "--every", "1", "--discard", "0", "--train-points", "500", "--val-points", "100",
            "--hidden", "8", "--max-steps", "20", "--validate-every", "10", "--out", str(twin),
            "--runs-dir", str(tmp_path / "runs"),
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output

    def evaluate(path, span):
        result = CliRunner().invoke(
            app,
            ["twin", "eval", str(twin), "--mumax", str(path), "--span", span, "--runs-dir", str(tmp_path)],
        )
        assert result.exit_code == 0, result.output
        return [
            line[len("warning: ") :] for line in result.stdout.splitlines() if line.startswith("warning: ")
        ]

    assert evaluate(table, "0,0.8") == []  # what it was trained on
    # the skyrmion vanished: the anisotropy beyond what the twin saw and mz flat, far off
    header = table.read_text().splitlines()[0]
    data = np.loadtxt(table, skiprows=1)
    data[:, 3] = 0.63 + 1e-3 * np.sin(np.arange(len(data)) / 7)
    data[:, 4] += 3e5
    gone = tmp_path / "gone.txt"
    np.savetxt(gone, data, delimiter="\t", header=header, comments="", fmt="%.9g")
    warnings = evaluate(gone, "0,0.8")
    print("\n".join(warnings))
    assert len(warnings) == 3, warnings
    assert "input Ku1.region100 spans" in warnings[0] and "outside the trained" in warnings[0]
    assert "reference output averages 0.63" in warnings[1] and "says nothing about the fit" in warnings[1]
    assert "barely varies" in warnings[2] and "a small offset reads as a large error" in warnings[2]
    scored = CliRunner().invoke(
        app,
        [
            "twin",
            "eval",
            str(twin),
            "--mumax",
            str(gone),
            "--span",
            "0,0.8",
            "--runs-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert len(json.loads(scored.stdout.strip().splitlines()[-1])["warnings"]) == 3


# --- item 6: the demo's report ---------------------------------------------------------------
REPORT = {
    "device": "bench:emulated",
    "device_kind": "emulated",
    "threshold_A": 5e-3,
    "relaxation_time_s": 1.2e-7,
    "bias_A": 6e-3,
    "operating_z": 1.2,
    "twin_nrmse": 0.12,
    "twin_nrmse_noise_corrected": 0.081,
    "twin_training_nrmse": 0.11,
    "twin_steps": 6000,
    "twin_stop_reason": "max_steps",
    "twin_target_nrmse": 0.1,
    "bench_accuracy": 0.9,
    "twin_accuracy": 0.85,
    "baseline_accuracy": 0.7,
    "mfcc_reference_accuracy": 0.8,
    "n_train": 720,
    "n_test": 80,
    "bench_device_s": 32.0,
    "twin_device_s": 10.0,
    "speed_ratio": 3.2,
    "stage_s": {"characterize": 12.3, "twin-train": 150.0, "twin-eval": 0.31, "digits-twin": 20.0},
    "wall_s": 200.0,
    "plots": [],
    "run_dir": "runs/x",
    "twin": "twin.pt",
    "readout": "stages/5-digits-bench",
}


def test_demo_report_says_the_bench_is_emulated_why_the_twin_stopped_and_its_noise_corrected_nrmse():
    text = demo.report(REPORT)
    assert "device bench:emulated (emulated)" in text
    assert "twin 3.2x the bench's speed; the bench here is itself emulated" in text
    assert "stopped on its step cap, not its NRMSE target 0.1" in text
    assert "0.081 with the mean's own noise removed" in text
    # the run's paths are relative to it (item 9); the report shows them from where it was run
    assert "twin runs/x/twin.pt" in text and "--readout runs/x/stages/5-digits-bench" in text
    assert "twin-eval 0.31 s" in text and not re.search(r"(?<![\d.])0 s\b", text)
    lab = {**REPORT, "device": "bench:lab.toml", "device_kind": "hardware", "twin_stop_reason": "target"}
    target = demo.report(lab)
    assert "stopped at its NRMSE target 0.1" in target and "emulated" not in target


def test_device_kind_tells_the_emulated_bench_from_a_simulator():
    with open_device("bench:emulated") as bench:
        assert demo.device_kind(bench) == "emulated"
    assert demo.device_kind(open_device("sim:vortex")) == "simulated"


# --- item 10: small ones -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["emulate", "listen"])
def test_seed_help_of_commands_that_write_no_run_file(name):
    group = typer.main.get_command(app)
    command = group.get_command(click.Context(group), name)  # type: ignore[attr-defined]
    seed = next(p for p in command.params if p.name == "seed")
    assert "run file" in seed.help and "recorded in the run file" not in seed.help


def test_docs_mark_the_default_node_features():
    default = SpokenDigitsConfig.model_fields["node_features"].default
    text = (ROOT / "docs" / "results.md").read_text()
    for row in (line for line in text.splitlines() if "the defaults" in line and line.startswith("|")):
        assert row.split("|")[4].strip() == default, row
    assert f"`--node-features {default}`" in text


def test_the_subscriber_example_lists_every_document_it_gets(tmp_path):
    text = (ROOT / "docs" / "python-api.md").read_text()
    listed = re.search(r"print\(counts\)  # (.*)", text).group(1)
    names = {re.sub(r"\s*\(.*\)", "", name).strip() for name in listed.split(",")}
    counts: Counter = Counter()
    RunEngine(tmp_path / "runs").run(
        acquire.plan(duration_s=2e-3, conditions={"bias_A": [6.5e-3, 8.5e-3]}),
        device="bench:emulated",
        subscribers=[lambda name, doc: counts.update([name])],
    )
    assert names == set(counts), (names, counts)


def test_sweeps_and_twin_files_are_ignored_like_runs():
    paths = ["runs/a/run.h5", "sweeps/abc/summary.json", "twin.pt", "digits-twin.pt"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert ignored == paths
