"""`spinlab.open_run` and `spinlab.runs.search` (issue 25): a run's typed config and results, its
streams as xarray Datasets with time/condition coordinates and units, its saved arrays, figures
and stages, and readable HTML in Jupyter; characterize and acquire runs here, the demo's
twin-train and spoken-digits stages in the slow test."""

from __future__ import annotations

import numpy as np
import pytest

import spinlab
from spinlab.engine import RunEngine
from spinlab.protocols import acquire, characterize
from spinlab.protocols.acquire import AcquireConfig

SMALL_CHARACTERIZE = {"bias_points": 6, "step_repeats": 64, "step_batches": 2}


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINLAB_CATALOG", raising=False)
    return tmp_path / "runs"


def test_a_characterize_run_opens_with_its_typed_config_results_and_traces_in_volts(runs_dir):
    result = RunEngine(runs_dir).run(characterize.plan(**SMALL_CHARACTERIZE), "sim:vortex", seed=2)
    run = spinlab.open_run(result.run_id[:-1], runs_dir=runs_dir)  # a unique prefix
    assert run.id == result.run_id and run.plan == "characterize" and run.status == "completed"
    assert isinstance(run.config, characterize.CharacterizeConfig) and run.config.bias_points == 6
    assert run.results.threshold_A == run.results["threshold_A"] == result.summary["threshold_A"]

    sweep = run.data["sweep"]
    assert sweep.sizes["row"] == 6 and sweep.responses.attrs["units"] == "V"
    assert sweep.bias_A.attrs["units"] == "A" and np.all(np.diff(sweep.bias_A.values) > 0)
    assert sweep.responses_t.attrs["units"] == "s"
    assert sweep.responses_t.values[1] == pytest.approx(run.config.sweep_dt_s)
    assert sweep.time.dtype.kind == "M" and bool((sweep.time.diff("row") >= np.timedelta64(0)).all())
    steps = run.data["steps"]
    assert steps.bias_A.attrs["units"] == "A" and steps.sizes["row"] == 2  # the step's condition
    assert run.saved["steps_mean_response"].attrs["units"] == "V"
    assert {p.name for p in run.figures} == {"sweep.png", "step_response.png"}
    html = run._repr_html_()
    assert result.run_id in html and "threshold_A" in html and "sweep (6 rows)" in html

    assert spinlab.open_run(result.path).id == run.id  # a directory needs no catalog
    table = spinlab.runs.search(runs_dir, plan="characterize", where="threshold_A>0")
    assert list(table.index) == [run.id] and table.loc[run.id, "threshold_A"] == run.results.threshold_A
    assert table.loc[run.id, "config.bias_points"] == 6 and "<table" in table._repr_html_()


def test_an_acquire_run_opens_with_each_drive_at_its_conditions(runs_dir):
    config = AcquireConfig(duration_s=2e-4, dt_s=1e-7, record_s=2e-5, conditions={"bias_A": (6e-3, 8e-3)})
    result = RunEngine(runs_dir).run(acquire.plan(config), "sim:vortex", seed=3)
    run = spinlab.open_run(result.run_id, runs_dir=runs_dir)
    assert isinstance(run.config, AcquireConfig) and run.config.conditions == config.conditions
    data = run.data["recordings"]
    assert data.drive_V.attrs["units"] == data.response_V.attrs["units"] == "V"
    assert data.response_V.dims == ("row", "response_V_t") and data.response_V_t.attrs["units"] == "s"
    assert data.bias_A.attrs["units"] == "A" and data.field_T.attrs["units"] == "T"  # the conditions
    assert bool(((data.bias_A >= 6e-3) & (data.bias_A <= 8e-3)).all())
    assert data.sizes["row"] >= 2 and data.time.dtype.kind == "M"
    assert spinlab.runs.search(runs_dir, plan="acquire").index.tolist() == [run.id]


@pytest.mark.slow
def test_the_demo_stages_twin_train_and_spoken_digits_open_with_units(tmp_path, monkeypatch):
    from test_demo import FSDD, TINY

    from spinlab.protocols import demo

    monkeypatch.delenv("SPINLAB_CATALOG", raising=False)
    plan = demo.plan(data_dir=str(FSDD), feature_cache_dir=str(tmp_path / "cache"), **TINY)
    result = RunEngine(tmp_path / "runs").run(plan, "bench:emulated", seed=1)
    run = spinlab.open_run(result.run_id, runs_dir=tmp_path / "runs")
    assert [s.plan for s in run.stages] == [
        "characterize",
        "twin-train",
        "twin-eval",
        "spoken-digits",
        "spoken-digits",
    ]
    for stage in run.stages:
        units = {v: d[v].attrs.get("units") for d in stage.data.values() for v in d.data_vars}
        assert stage.status == "completed" and any(units.values()), (stage.id, units)
    twin = run.stage("twin-train")
    assert any(d.sizes.get("row", 0) for d in twin.data.values())
    digits = run.stage("digits-bench")
    assert 0 <= digits.results.accuracy <= 1
    found = spinlab.runs.search(tmp_path / "runs", plan="spoken-digits")
    assert {digits.id, run.stage("digits-twin").id} == set(found.index)
    assert set(spinlab.runs.search(tmp_path / "runs", stages=False).index) == {run.id}
    everything = spinlab.runs.search(tmp_path / "runs")  # the demo and its five stages, with results
    assert set(everything.index) == {run.id, *(s.id for s in run.stages)}
    assert set(everything.status) == {"completed"}
    assert everything.loc[digits.id, "accuracy"] == digits.results.accuracy
    assert everything.loc[run.id, "bench_accuracy"] == run.results.bench_accuracy
