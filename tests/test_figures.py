"""Every plan's figures, drawn from a small run: units with SI prefixes in parentheses on every
physical axis, no file path in a title, and the figure format and resolution as a run option."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.engine import Plan, RunEngine
from spinlab.engine.figures import FigureOptions, axis_label, condition_text, device_name, prefix, quantity
from spinlab.engine.plan import plan_factory
from spinlab.engine.plots import RunDatasets
from spinlab.errors import ConfigError, RunInterrupted
from spinlab.testing import Doubler, plan_lookup, steps_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
FSDD = ROOT / "fsdd" / "recordings"
TABLE = ROOT / "mumax3-skyrmion" / "one_skyrmion_voltage_train" / "table.txt"

#: a unit in parentheses: an SI unit with or without prefix, a percentage, or a ratio's symbol
UNIT = re.compile(r"\(([fpnµmkMGT]?(A|V|s|Hz|T|W|Ω|1/s)|%|[a-z ]+)\)")
#: axes whose quantity is a count, an index or a ratio: no unit to give
DIMENSIONLESS = re.compile(
    r"^(predicted digit|spoken digit|step|optimisation step|evaluation|loss, NRMSE|surrogate loss|"
    r"knob, scaled to its range|best loss \(NRMSE²\)|\$m_[xyz]\$|log10 NRMSE.*|capacity.*|"
    r"prediction horizon.*|delay k.*|cochlear channel|score|accuracy|[a-z_]+)$"
)
#: what the figures used to say and must not any more
BANNED = ("bias_A", "field_T", " us", "(us)", "(1)", "output (")
PATH = re.compile(r"(^|[\s:])(/|[A-Za-z]:\\)[^\s]*/")


def run_figures(run_dir: Path) -> dict[str, object]:
    """The plan's figures redrawn from ``run_dir``'s run file: ``{file name: Figure}``."""
    with h5py.File(run_dir / "run.h5", "r") as f:
        plan = plan_factory(str(f.attrs["plan"]))(json.loads(f.attrs["config"]))
        results = json.loads(f.attrs["results"])
        datasets = RunDatasets(f)
        return {name: plot(datasets, results) for name, plot in plan.plots.items()}


def check_figures(run_dir: Path, minimum: int = 1) -> list[str]:
    """Every declared figure was written and reads as a paper's: returns the axis labels."""
    figures = run_figures(run_dir)
    assert len(figures) >= minimum, f"{run_dir.name} declares no figure"
    labels = []
    for name, fig in figures.items():
        assert (run_dir / name).stat().st_size > 1000, f"{name} was not written"
        titles = [fig._suptitle.get_text() if fig._suptitle else ""]  # type: ignore[attr-defined]
        for ax in fig.axes:
            titles.append(ax.get_title())
            for text in (ax.get_xlabel(), ax.get_ylabel()):
                if not text:
                    continue
                labels.append(text)
                assert UNIT.search(text) or DIMENSIONLESS.match(text), f"{name}: {text!r} has no unit"
                assert not any(b in text for b in BANNED), f"{name}: {text!r}"
        for title in titles:
            assert not PATH.search(title), f"{name}: the title {title!r} holds a path"
            assert "bias, A" not in title and "bias_A" not in title, f"{name}: {title!r}"
    return labels


def test_si_prefixes_symbols_and_options():
    assert quantity(0.00592, "A") == "5.92 mA" and quantity(2e-8, "s") == "20 ns"
    assert quantity(3.2e9, "Hz") == "3.2 GHz" and quantity(0.5, "1") == "0.5"
    assert prefix([1e-7, 4e-6], "s") == (1e6, "µs")
    assert (
        axis_label("bias_A", [6e-3, 9e-3]) == "I (mA)"
        and axis_label("acquire.field_T", [0.3]) == r"$\mu_0 H$ (mT)"
    )
    assert condition_text({"bias_A": 0.00592}) == "I = 5.92 mA"
    assert device_name("twin:/home/me/runs/x/twin.pt") == "twin twin.pt"
    assert FigureOptions("svg").filename("confusion.png") == "confusion.svg"
    with pytest.raises(ConfigError, match="png, pdf, svg"):
        FigureOptions("gif")
    with pytest.raises(ConfigError, match="--dpi"):
        FigureOptions("png", dpi=0)


def test_sweep_figures_name_the_swept_quantities_with_their_units():
    from spinlab.sweeps.plots import plot_metric

    table = [
        {"status": "completed", "values": {"bias_A": b, "field_T": f}, "results": {"accuracy": 100 * b + f}}
        for b in (6e-3, 7e-3)
        for f in (0.1, 0.2)
    ]
    heatmap = plot_metric(table, "accuracy", grid=True).axes[0]
    assert (heatmap.get_xlabel(), heatmap.get_ylabel()) == ("I (mA)", r"$\mu_0 H$ (mT)")
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["6", "7"]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["100", "200"]
    lines = plot_metric(table, "accuracy", grid=False).axes[0]
    assert lines.get_xlabel() == "I (mA)"
    assert [t.get_text() for t in lines.get_legend().get_texts()] == [
        r"$\mu_0 H$ = 100 mT",
        r"$\mu_0 H$ = 200 mT",
    ]
    assert lines.get_lines()[0].get_xdata()[0] == pytest.approx(6.0)  # drawn in mA


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def cli(runs: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


ACQUIRE = ["--duration", "2e-4", "--record-s", "2e-5", "--bias-A", "6.5e-3,8.5e-3", "--hold-s", "1e-7,1e-6"]


@pytest.fixture(scope="module")
def acquired(runs) -> Path:
    return Path(cli(runs, "run", "acquire", "--device", "sim:vortex", *ACQUIRE, "--seed", "2")["run_dir"])


def test_acquire_draws_an_example_per_condition(acquired):
    labels = check_figures(acquired)
    assert {"t (µs)", r"$V_\mathrm{drive}$ (mV)", r"$V_\mathrm{out}$ (mV)"} <= set(labels)
    (fig,) = run_figures(acquired).values()
    assert [ax.get_title() for ax in fig.axes[:2]] == ["I = 6.5 mA", "I = 8.5 mA"]


def test_fit_physics_draws_the_model_against_held_out_data_with_residuals(acquired, runs):
    summary = cli(
        runs, "run", "fit-physics", str(acquired), "--model", "vortex", "--params", "threshold_A",
        "--screen", "8", "--starts", "2",
    )  # fmt: skip
    run_dir = Path(summary["run_dir"])
    labels = check_figures(run_dir, minimum=2)
    assert "residual (mV)" in labels
    assert sorted(summary["figures"]) == [str(run_dir / "fit.png"), str(run_dir / "fit_trace.png")]


TWIN = ["--hidden", "8", "--max-steps", "20", "--validate-every", "10"]


def test_twin_training_keeps_its_history_and_the_twin_is_drawn_against_the_device(runs):
    out = runs / "twin.pt"
    trained = cli(
        runs, "twin", "train", "--device", "sim:vortex", "--bias-A", "6.5e-3,8.5e-3", "--max-duration",
        "2e-4", "--record-s", "2e-5", *TWIN, "--out", str(out),
    )  # fmt: skip
    run_dir = Path(trained["run_dir"])
    with h5py.File(run_dir / "run.h5") as f:
        history = f["history"][()]
        assert json.loads(f["history"].attrs["columns"]) == ["step", "loss", "nrmse", "lr"]
        assert f["test/prediction"].shape == f["test/truth"].shape
    assert history[-1, 0] == trained["steps"] and np.all(np.isfinite(history[:, 1]))
    check_figures(run_dir, minimum=2)
    ev = cli(
        runs, "twin", "eval", str(out), "--device", "sim:vortex", "--bias-A", "7.5e-3", "--drives", "1",
        "--repeats", "2", "--record-s", "2e-5",
    )  # fmt: skip
    labels = check_figures(Path(ev["run_dir"]))
    assert {"t (µs)", r"$V_\mathrm{out}$ (mV)"} <= set(labels)
    (fig,) = run_figures(Path(ev["run_dir"])).values()
    assert fig.axes[0].get_title() == "I = 7.5 mA"
    assert fig.axes[0].get_legend() is None  # the legend sits below the panels, off the data


@pytest.mark.skipif(not TABLE.is_file(), reason="MuMax3 dataset not present")
def test_twin_on_a_mumax_table_is_drawn_in_m_z(runs, tmp_path):
    short = tmp_path / "table.txt"
    with open(TABLE) as src, open(short, "w") as dst:
        for _ in range(8001):
            dst.write(src.readline())
    out = tmp_path / "sky.pt"
    trained = cli(
        runs, "twin", "train", "--mumax", str(short), "--input", "Ku1.region100", "--output", "mz",
        "--train-points", "1500", "--val-points", "300", "--test-points", "1000", *TWIN, "--out", str(out),
    )  # fmt: skip
    assert "$m_z$" in check_figures(Path(trained["run_dir"]), minimum=2)
    ev = cli(runs, "twin", "eval", str(out), "--mumax", str(short))
    run_dir = Path(ev["run_dir"])
    labels = check_figures(run_dir)
    assert labels.count("$m_z$") == 2 and labels.count("t (ns)") == 2  # both panels
    assert ev["plot"] == str(run_dir / "twin_vs_table.png")


def test_reservoir_measures_figures(runs):
    summary = cli(
        runs, "run", "reservoir-measures", "--device", "sim:vortex", "--points", "800", "--nodes", "10",
        "--rank-streams", "12", "--max-delay", "10", "--ipc-delays", "10,4,3",
    )  # fmt: skip
    check_figures(Path(summary["run_dir"]), minimum=2)


def test_figure_format_and_dpi_are_run_options_recorded_in_the_run_file(runs):
    summary = cli(
        runs, "run", "acquire", "--device", "sim:vortex", *ACQUIRE, "--figure-format", "svg", "--dpi", "50"
    )
    run_dir = Path(summary["run_dir"])
    assert summary["figures"] == [str(run_dir / "examples.svg")]
    assert (run_dir / "examples.svg").read_text().lstrip().startswith("<?xml")
    assert not list(run_dir.glob("*.png"))
    with h5py.File(run_dir / "run.h5") as f:
        assert json.loads(f.attrs["figures"]) == {"format": "svg", "dpi": 50}
    bad = CliRunner().invoke(app, ["run", "acquire", "--device", "sim:vortex", "--figure-format", "gif"])
    assert bad.exit_code == 2 and "png, pdf, svg" in bad.output


def test_the_engine_writes_pdf_at_the_asked_resolution(tmp_path):
    from spinlab.protocols import acquire

    engine = RunEngine(tmp_path, figures=FigureOptions("pdf", 72))
    config = {"duration_s": 2e-5, "record_s": 1e-5, "hold_s": (1e-7, 5e-7)}
    result = engine.run(acquire.plan(config), "sim:vortex")
    assert (result.path / "examples.pdf").read_bytes().startswith(b"%PDF")


def steps_with_a_plot(n: int = 3, fail_at: int | None = None) -> Plan:
    """spinlab.testing's steps plan, with a figure of what it measured."""
    plan = steps_plan(n, fail_at=fail_at, exc=RunInterrupted(2))

    def plot(datasets, results):
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot(np.ravel(datasets["response_V"]))
        return fig

    return dataclasses.replace(plan, plots={"steps.png": plot})


def test_a_resumed_run_draws_in_the_format_it_started_with(tmp_path):
    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path, figures=FigureOptions("svg", 40)).run(steps_with_a_plot(4, fail_at=2), Doubler())
    engine = RunEngine(tmp_path, plans=plan_lookup(demo=lambda n=4, **_: steps_with_a_plot(n)))
    resumed = engine.resume(caught.value.run_path, Doubler())
    assert resumed.status == "completed" and sorted(p.name for p in resumed.path.glob("steps.*")) == [
        "steps.svg"
    ]


@pytest.mark.slow
def test_characterize_figures(runs):
    check_figures(Path(cli(runs, "run", "characterize", "--device", "sim:vortex")["run_dir"]), minimum=2)


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD not present")
def test_spoken_digits_confusion_is_titled_by_its_accuracy_and_test_count(runs):
    summary = cli(
        runs, "run", "spoken-digits", "--device", "sim:vortex", "--data", str(FSDD), "--limit", "60",
        "--nodes", "40",
    )  # fmt: skip
    labels = check_figures(Path(summary["run_dir"]), minimum=2)
    assert {"cochlear channel", r"$V_\mathrm{drive}$ (mV)", r"$V_\mathrm{out}$ (mV)"} <= set(labels)
    (fig, *_) = run_figures(Path(summary["run_dir"])).values()
    title = fig.axes[0].get_title()
    assert (
        f"of {summary['n_test']} test utterances" in title and f"{100 * summary['accuracy']:.1f} %" in title
    )


@pytest.mark.slow
def test_mackey_glass_figures(runs):
    summary = cli(
        runs, "run", "mackey-glass", "--device", "sim:vortex?noise=0", "--points", "1200", "--nodes", "12",
    )  # fmt: skip
    check_figures(Path(summary["run_dir"]))


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD not present")
def test_optimisation_figure(runs):
    summary = cli(
        runs, "run", "optimise-spoken-digits", "--device", "sim:vortex", "--data", str(FSDD), "--limit", "60",
        "--nodes", "40", "--set", "subset=40", "--set", "iterations=3", "--no-evaluate",
    )  # fmt: skip
    check_figures(Path(summary["run_dir"]))


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD not present")
def test_demo_summary_figure_and_its_stages(runs):
    summary = cli(
        runs, "run", "demo", "--device", "sim:vortex", "--data", str(FSDD), "--set", "limit=20",
        "--set", "n_nodes=20", "--set", "twin_max_steps=250", "--set", "eval_drives=2",
    )  # fmt: skip
    run_dir = Path(summary["run_dir"])
    check_figures(run_dir)
    for stage in sorted((run_dir / "stages").iterdir()):
        check_figures(stage)


def test_a_sweep_writes_its_figures_and_its_runs_in_the_asked_format(tmp_path):
    from spinlab.sweeps import SweepSpec, run_sweep

    spec = SweepSpec(
        "acquire",
        "sim:vortex",
        grid={"amplitude_V": [0.2, 0.3]},
        settings={"duration_s": 2e-5, "record_s": 1e-5, "hold_s": (1e-7, 5e-7)},
    )
    result = run_sweep(
        spec,
        tmp_path / "sw",
        workers=1,
        processes=False,
        metrics=["recordings"],
        figures=FigureOptions("svg", 50),
    )
    assert result.count("completed") == 2
    assert [p.name for p in result.plots] == ["recordings.svg"]
    assert sorted(p.name for p in (tmp_path / "sw" / "runs").glob("*/examples.*")) == ["examples.svg"] * 2
