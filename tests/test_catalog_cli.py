"""`spinlab runs` (issue 25): list with filters and conditions over a few hundred runs in under
a second, show, compare, tag, note, export and reindex; the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest
import xarray as xr
from catalog_helpers import BACKENDS, catalog_for
from typer.testing import CliRunner

from spinlab.catalog.store import Catalog
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.testing import Doubler, steps_plan

PLANS = ["spoken-digits", "characterize", "acquire"]


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path, monkeypatch):
    for found in catalog_for(request.param, tmp_path):
        monkeypatch.setenv("SPINLAB_CATALOG", found)
        yield found


def runs(*args):
    result = CliRunner().invoke(app, ["runs", *map(str, args)])
    return result


def generated(url, n=300):
    """``n`` catalogued runs of three plans at several operating points, with accuracies."""
    rng = np.random.default_rng(25)
    t0 = dt.datetime(2026, 11, 1, 9, 0)
    rows = []
    for i in range(n):
        plan = PLANS[i % 3]
        bias = [5e-3, 6e-3, 7.5e-3][i % 5 % 3]
        row = {
            "id": f"20261101-{i:06d}-{plan}-{i:06x}",
            "plan": plan,
            "address": "bench:lab.toml" if i % 2 else "sim:vortex",
            "status": "completed" if i % 7 else "failed",
            "started": t0 + dt.timedelta(hours=i),
            "finished": t0 + dt.timedelta(hours=i, minutes=5),
            "seed": i,
            "config": {"bias_A": bias, "field_T": 0.3 if i % 4 else 0.0, "n_nodes": 50},
            "results": {"accuracy": float(rng.uniform(0.8, 1.0))} if plan == "spoken-digits" else {"x": 1.0},
            "path": f"/nowhere/{i}",
        }
        rows.append(row)
    Catalog(url).record_many(rows)
    return rows


def test_list_finds_exactly_the_matching_runs_of_a_few_hundred_in_under_a_second(url):
    rows = generated(url)
    want = {r["id"] for r in rows if r["plan"] == "spoken-digits" and r["results"]["accuracy"] > 0.95}
    assert 5 < len(want) < 100
    start = time.perf_counter()
    result = runs("list", "--plan", "spoken-digits", "--where", "accuracy>0.95", "--json")
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout.splitlines()[-1])
    assert {r["id"] for r in got["runs"]} == want and got["count"] == len(want)
    assert elapsed < 1.0, f"{elapsed:.3f} s"

    at_6mA = {r["id"] for r in rows if r["config"]["bias_A"] == 6e-3 and r["config"]["field_T"] == 0.3}
    result = runs("list", "--where", "bias_A=6e-3", "--where", "field_T=0.3", "--json")
    assert {r["id"] for r in json.loads(result.stdout)["runs"]} == at_6mA

    result = runs(
        "list",
        "--status",
        "failed",
        "--device",
        "lab.toml",
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-05",
        "--json",
    )
    want = {
        r["id"]
        for r in rows
        if r["status"] == "failed"
        and r["address"] == "bench:lab.toml"
        and dt.datetime(2026, 11, 2) <= r["started"].replace(tzinfo=None) <= dt.datetime(2026, 11, 5)
    }
    # --since/--until are local times; the generated ones are naive (local) too
    assert {r["id"] for r in json.loads(result.stdout)["runs"]} == want

    text = runs("list", "--plan", "spoken-digits", "--where", "accuracy>0.99")
    assert text.exit_code == 0 and "accuracy" in text.stdout.splitlines()[0]


def test_show_compare_tag_note_export_and_reindex_on_real_runs(tmp_path, url):
    engine = RunEngine(tmp_path / "runs")
    a = engine.run(steps_plan(2), Doubler(), seed=1)
    b = engine.run(steps_plan(3), Doubler(), seed=1)

    result = runs("compare", a.run_id, str(b.path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "config: 1 key(s) differ, 0 the same"
    assert [line.split() for line in lines if line.startswith("n ")] == [["n", "2", "3"]]
    assert any(line.startswith("total") for line in lines)
    data = json.loads(runs("compare", a.run_id, b.run_id, "--json").stdout)
    assert data["differs"] == {"n": [2, 3]} and len(data["results"]["total"]) == 2

    assert runs("tag", a.run_id[:-1], "best", "cal").exit_code == 0
    assert runs("note", a.run_id, "re-seated the probe").exit_code == 0
    shown = runs("show", a.run_id)
    assert shown.exit_code == 0, shown.output
    assert "tags      best, cal" in shown.stdout and "re-seated the probe" in shown.stdout
    assert "stream steps: 2 rows; drive_V [V], response_V [V]" in shown.stdout
    listed = json.loads(runs("list", "--tag", "best", "--json").stdout)["runs"]
    assert [r["id"] for r in listed] == [a.run_id]

    out = tmp_path / "a.nc"
    assert runs("export", a.run_id, "--format", "netcdf", "--out", out).exit_code == 0
    with xr.open_dataset(out, group="steps", engine="h5netcdf") as ds:
        assert ds.response_V.attrs["units"] == "V" and ds.sizes["row"] == 2
        assert json.loads(ds.attrs["results"])["total"] == pytest.approx(a.summary["total"])
    result = runs("export", a.run_id, "--format", "csv", "--out", tmp_path / "csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "csv" / "results.json").is_file() and any((tmp_path / "csv").glob("steps*.csv"))

    Catalog(url).forget([a.run_id, b.run_id])
    result = runs("reindex", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0 and "2 added, 0 updated, 0 removed" in result.stdout


def test_bad_input_is_one_line(tmp_path, url):
    engine = RunEngine(tmp_path / "runs")
    engine.run(steps_plan(1), Doubler())
    engine.run(steps_plan(1), Doubler())
    for args, says in [
        (["show", "2026"], "names several runs"),
        (["show", "nope"], "no run 'nope' in the catalog"),
        (["list", "--where", "accuracy=>0.9"], "is not a condition"),
        (["list", "--where", "accuracy>high"], "> needs a number, not 'high'"),
        (["list", "--since", "tuesday"], "--since 'tuesday' is not a time"),
        (["export", "2026", "--format", "xls"], "--format 'xls' is not one of csv, netcdf, bluesky"),
    ]:
        result = runs(*args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, (args, result.stderr)


def test_reading_a_runs_folder_without_a_catalog_says_how_to_build_one_and_creates_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("SPINLAB_CATALOG", raising=False)
    result = runs("list", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "spinlab runs reindex --runs-dir" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
