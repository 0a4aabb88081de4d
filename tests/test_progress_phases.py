"""Every phase of the spoken-digit protocol is named in its progress, the accuracy report says
how sure it is, and progress off a terminal is plain lines at a sensible rate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
from typer.testing import CliRunner

from spinlab.engine import ProgressDisplay

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
PHASES = [
    "features",
    "features x0.9",
    "features x1.1",
    "features mfcc",
    "device",
    "readout",
    "baseline inputs",
    "baseline: no device",
    "baseline: drive only",
    "baseline: pooled MFCC",
    "figures",
]


def test_cli_names_every_phase_in_plain_lines_and_reports_intervals_and_paired_tests(tmp_path):
    from spinlab.cli import app

    result = CliRunner().invoke(
        app,
        ["run", "spoken-digits", "--device", "sim:vortex", "--data", str(FSDD), "--limit", "40"]
        + ["--nodes", "30", "--json", "--runs-dir", str(tmp_path / "runs")],
    )
    assert result.exit_code == 0, result.output
    # stderr is no terminal here: plain lines, each naming its phase, in the protocol's order
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    seen = [line.split("] ", 1)[1].rsplit(": ", 1)[0] for line in lines]
    seen = [s for s in seen if s.startswith(("features", "device", "readout", "baseline", "figures"))]
    assert set(seen) == set(PHASES)  # the baselines are fitted while the device plays: interleaved
    assert seen.index("device") < seen.index("readout") and seen[-1] == "figures"
    figures = [line.split("] ", 1)[1] for line in lines if "] figures: " in line]
    assert figures[0] == "figures: 0/2 (0 %)" and figures[-1] == "figures: 2/2 (100 %)"  # drawn, then stop
    assert "\x1b[" not in result.stderr  # no terminal control sequences
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    n = summary["n_test"]
    for key in ("accuracy", "baseline_accuracy", "drive_baseline_accuracy", "mfcc_reference_accuracy"):
        low, high = summary[f"{key}_ci95"]
        assert 0 <= low <= summary[key] <= high <= 1 and high - low > 0.05  # 10 test words: wide
    assert set(summary["comparisons"]) == {"no_device", "drive_only", "pooled_mfcc"}
    for c in summary["comparisons"].values():
        assert c["only_device"] + c["only_baseline"] <= n and 0 < c["mcnemar_p"] <= 1
        assert c["ci95"][0] <= c["difference"] <= c["ci95"][1]
    with h5py.File(Path(summary["run_dir"]) / "run.h5") as f:
        stored = json.loads(f.attrs["results"])
        assert stored["comparisons"] == summary["comparisons"]
        assert f["mfcc_reference_predictions"].shape == (n,)


def test_the_text_report_gives_intervals_test_count_and_says_not_significant(tmp_path):
    from spinlab.protocols.spoken_digits import report

    summary = {
        "accuracy": 1.0,
        "accuracy_ci95": [0.839, 1.0],
        "frame_accuracy": 1.0,
        "n_train": 180,
        "n_test": 20,
        "wall_s": 12.0,
        "device_s": 4.0,
        "per_speaker": {},
        "run_dir": "runs/x",
        "device": "sim:vortex",
    }
    for key in ("baseline_accuracy", "drive_baseline_accuracy", "mfcc_reference_accuracy"):
        summary |= {key: 1.0, f"{key}_ci95": [0.839, 1.0]}
    same = {"difference": 0.0, "ci95": [-0.16, 0.16], "mcnemar_p": 1.0, "significant": False}
    summary["comparisons"] = {"no_device": same, "drive_only": same, "pooled_mfcc": same}
    text = report(summary)
    assert "accuracy 100.0 % [83.9, 100.0] of 20 test utterances" in text
    assert "drive only (node drive as sent, clipped): 100.0 % [83.9, 100.0] of 20" in text
    assert "McNemar p = 1, not significant" in text
    assert "the device's gain over the baselines is not significant" in text


def test_plain_lines_come_at_stage_edges_and_every_ten_percent_or_five_seconds():
    out, now = io.StringIO(), [0.0]
    display = ProgressDisplay(out, clock=lambda: now[0])  # StringIO is no terminal
    for done in range(1, 201):
        now[0] += 0.01
        display("progress", {"done": done, "total": 200, "stage": "device"})
    for done in range(1, 4):  # a slow phase: a line every 5 s even within 10 %
        now[0] += 3.0
        display("progress", {"done": done, "total": 1000, "stage": "readout"})
    display("stop", {})
    lines = out.getvalue().splitlines()
    device = [line for line in lines if "device:" in line]
    assert device[0].endswith("device: 1/200 (0 %)") and device[-1].endswith("device: 200/200 (100 %)")
    assert len(device) == 11  # the first step, then every 10 %
    readout = [line for line in lines if "readout:" in line]
    assert [r.split("readout: ")[1] for r in readout] == ["1/1000 (0 %)", "3/1000 (0 %)"]
    assert ProgressDisplay(io.StringIO(), plain=False)._plain is False


def test_the_demo_report_gives_every_accuracy_its_interval_and_the_drive_only_baseline():
    from test_new_user import REPORT

    from spinlab.protocols import demo

    same = {"difference": 0.0125, "ci95": [-0.03, 0.07], "mcnemar_p": 1.0, "significant": False}
    r = {
        **REPORT,
        "bench_accuracy": 1.0,
        "bench_accuracy_ci95": [0.954, 1.0],
        "twin_accuracy": 1.0,
        "twin_accuracy_ci95": [0.954, 1.0],
        "baseline_accuracy": 0.9875,
        "baseline_accuracy_ci95": [0.933, 0.998],
        "drive_baseline_accuracy": 1.0,
        "drive_baseline_accuracy_ci95": [0.954, 1.0],
        "mfcc_reference_accuracy_ci95": [0.7, 0.87],
        "bench_comparisons": {"no_device": same, "drive_only": same, "pooled_mfcc": same},
    }
    text = demo.report(r)
    assert "bench 100.0 % [95.4, 100.0] of 80   twin 100.0 % [95.4, 100.0] of 80" in text
    assert "drive only (node drive as sent, clipped): 100.0 % [95.4, 100.0] of 80; bench +1.2 points" in text
    assert "no device (masked features, linear): 98.8 % [93.3, 99.8] of 80" in text
    assert "not significant" in text and "stopped on its step cap" in text
