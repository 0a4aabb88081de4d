"""Every protocol is a plan a user can run from Python, with the CLI's defaults: the same config
and seed give the same results as the command line."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.protocols import acquire, characterize, spoken_digits

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / ".." / "shared" / "datasets" / "fsdd" / "recordings"
VOLATILE = {"wall_s", "run", "run_dir", "device_s", "device", "plot", "figures"}


def cli(*args):
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def same(python_summary, cli_summary):
    keys = (set(python_summary) | set(cli_summary)) - VOLATILE
    return {
        k: (python_summary.get(k), cli_summary.get(k))
        for k in keys
        if python_summary.get(k) != cli_summary.get(k)
    }


class Counting:
    def __init__(self):
        self.counts = Counter()

    def __call__(self, name, doc):
        self.counts[name] += 1


@pytest.mark.parametrize(
    "name, plan, args",
    [
        (
            "characterize",
            lambda: characterize.plan(bias_points=8, step_repeats=512),
            ["characterize", "--device", "sim:vortex", "--bias-points", "8", "--step-repeats", "512"],
        ),
        (
            "acquire",
            lambda: acquire.plan(duration_s=1e-3, record_s=1e-4, conditions={"bias_A": [6e-3, 8e-3]}),
            [
                "acquire",
                "--device",
                "sim:vortex",
                "--duration",
                "1e-3",
                "--record-s",
                "1e-4",
                "--bias-A",
                "6e-3,8e-3",
            ],
        ),
        (
            "spoken-digits",
            lambda: spoken_digits.plan(data_dir=str(FSDD), limit=40, n_nodes=30),
            [
                "run",
                "spoken-digits",
                "--device",
                "sim:vortex",
                "--data",
                str(FSDD),
                "--limit",
                "40",
                "--nodes",
                "30",
            ],
        ),
    ],
)
def test_plan_from_python_counts_documents_and_matches_the_cli(tmp_path, name, plan, args):
    counting = Counting()
    built = plan()
    if name == "spoken-digits":  # the CLI keeps its feature cache under the runs directory
        built = spoken_digits.plan(built.config, feature_cache_dir=str(tmp_path / "runs" / ".cache"))
    result = RunEngine(tmp_path / "runs").run(built, "sim:vortex", seed=3, subscribers=[counting])
    counts = counting.counts
    assert counts["start"] == counts["stop"] == 1 and counts["result"] >= 1
    assert counts["event"] == result.events > 0 and counts["progress"] >= counts["event"]
    assert counts["descriptor"] >= 1
    from_cli = cli(*args, "--seed", "3", "--runs-dir", str(tmp_path / "runs"))
    assert same(result.summary, from_cli) == {}


def test_no_protocol_calls_a_checkpoint_itself():
    """The engine checkpoints at every step; plans only ask the context to do things."""
    for path in (ROOT / "protocols").glob("*.py"):
        assert not re.search(r"\.checkpoint\(\)", path.read_text()), path.name
