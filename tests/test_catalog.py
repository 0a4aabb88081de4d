"""The catalog (issue 25): every run recorded as it starts and stops, on SQLite and PostgreSQL,
two writers at once, SIGKILL then reindex, a failing catalog that never stops a run, migrations,
and conditions. Through the real engine, no mocks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from catalog_helpers import BACKENDS, catalog_for

from spinlab.catalog import schema
from spinlab.catalog.rundirs import reindex, settle
from spinlab.catalog.store import Catalog
from spinlab.catalog.where import Condition, parse_time
from spinlab.engine import Plan, RunEngine
from spinlab.errors import ConfigError
from spinlab.testing import Doubler, plan_lookup, steps_plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    yield from catalog_for(request.param, tmp_path)


def test_a_run_is_recorded_as_it_starts_and_when_it_stops(tmp_path, url):
    seen = {}

    def peek(name, doc):  # while the run runs, the catalog has it (written beside the run)
        if name == "event" and not seen:
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                seen.update(Catalog(url).get(doc["run_id"]) or {})
                time.sleep(0.01)

    engine = RunEngine(tmp_path / "runs", catalog=url)
    result = engine.run(steps_plan(3), Doubler(), seed=4, subscribers=[peek])
    assert seen["status"] == "running" and seen["results"] is None and seen["config"] == {"n": 3}

    catalog = Catalog(url)
    row = catalog.get(result.run_id)
    assert row["status"] == "completed" and row["results"]["total"] == pytest.approx(result.summary["total"])
    assert row["plan"] == "demo" and row["seed"] == 4 and row["events"] == 3 and row["station"] == "Doubler"
    assert row["path"] == str(result.path.absolute()) and row["user"] and row["host"] and row["version"]
    assert row["finished"] >= row["started"] and row["parent"] is None

    other = engine.run(steps_plan(2), Doubler())
    assert [r["id"] for r in catalog.search(where=["n=3"])] == [result.run_id]
    assert [r["id"] for r in catalog.search(where=["total>0", "n>=2"])] == [other.run_id, result.run_id]
    assert catalog.search(where=["total>1e9"]) == [] and len(catalog.search(plan="demo")) == 2
    assert catalog.search(status="failed") == [] and len(catalog.search(since=row["started"])) == 2

    catalog.tag(result.run_id, "good", "bias-scan")
    catalog.note(result.run_id, "the cable was loose", user="ana")
    assert [r["id"] for r in catalog.search(tags=["good"])] == [result.run_id]
    found = catalog.find(result.run_id[:-2])
    assert found["tags"] == ["bias-scan", "good"] and found["notes"][0]["text"] == "the cable was loose"
    assert catalog.find(str(result.path))["id"] == result.run_id
    with pytest.raises(ConfigError, match="names several runs"):
        catalog.find(result.run_id[:9])
    with pytest.raises(ConfigError, match="no run 'nope' in the catalog"):
        catalog.find("nope")


def test_stages_are_recorded_with_their_run_as_parent(tmp_path, url):
    def body(ctx):
        ctx.run(steps_plan(2), stage="first")
        ctx.run(steps_plan(1), stage="second")
        ctx.result(stages=2)
        return {}

    lookup = plan_lookup(demo=steps_plan)
    result = RunEngine(tmp_path / "runs", plans=lookup, catalog=url).run(Plan("compose", {}, body), Doubler())
    catalog = Catalog(url)
    stages = catalog.search(parent=result.run_id)
    assert sorted(r["id"] for r in stages) == [f"{result.run_id}.1-first", f"{result.run_id}.2-second"]
    assert all(r["status"] == "completed" and r["results"]["total"] for r in stages)
    assert [r["id"] for r in catalog.search(parent=None)] == [result.run_id]
    assert not (tmp_path / "runs" / result.run_id / "stages" / "catalog.sqlite").exists()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spinlab.engine import RunEngine
    from spinlab.testing import Doubler, steps_plan
    url, root, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    root.mkdir()
    (root / "ready").touch()
    while not (root.parent / "go").exists():  # both start together, on a catalog not yet created
        time.sleep(0.005)
    engine = RunEngine(root, catalog=url)
    for i in range(n):
        engine.run(steps_plan(2 + i % 3), Doubler(), seed=i)
    """
)


def test_two_processes_create_and_write_one_catalog_at_once(tmp_path, url):
    n = 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(tmp_path / f"pc{i}"), str(n)], stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"pc{i}" / "ready").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("could not record" in e for e in errors), errors
    rows = Catalog(url).search()
    assert len(rows) == 2 * n and {r["status"] for r in rows} == {"completed"}
    assert {Path(r["path"]).parent.name for r in rows} == {"pc0", "pc1"}
    first = {name: min(r["started"] for r in rows if f"/{name}/" in r["path"]) for name in ("pc0", "pc1")}
    last = {name: max(r["finished"] for r in rows if f"/{name}/" in r["path"]) for name in ("pc0", "pc1")}
    assert first["pc0"] < last["pc1"] and first["pc1"] < last["pc0"]  # they did write at the same time


KILLED = textwrap.dedent(
    """
    import sys
    from spinlab.engine import RunEngine
    from spinlab.testing import Doubler, looping_plan
    RunEngine(sys.argv[2], catalog=sys.argv[1]).run(looping_plan(100000, pause_s=0.01), Doubler())
    """
)


def test_a_run_killed_by_sigkill_is_interrupted_after_reindex(tmp_path, url):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, url, str(runs)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            journals = list(runs.glob("*/journal.spinlab"))
            if journals and journals[0].stat().st_size > 5000 and Catalog(url).search():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never got going")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    catalog = Catalog(url)
    (row,) = catalog.search()
    assert row["status"] == "running"  # nobody recorded its end
    done = reindex(catalog, runs)
    assert done.updated == [row["id"]] and done.added == []
    row = catalog.get(row["id"])
    assert row["status"] == "interrupted" and "ended without recording" in row["reason"]
    assert row["events"] is None or row["events"] >= 0
    assert catalog.search(status="interrupted")[0]["id"] == row["id"]


def test_reindex_rebuilds_a_lost_catalog_from_the_run_directories(tmp_path, url):
    engine = RunEngine(tmp_path / "runs", catalog=False)  # recorded nowhere
    results = [engine.run(steps_plan(n), Doubler(), seed=n) for n in (1, 2)]
    catalog = Catalog(url)
    done = reindex(catalog, tmp_path / "runs")
    assert sorted(done.added) == sorted(r.run_id for r in results)
    row = catalog.get(results[1].run_id)
    assert row["status"] == "completed" and row["config"] == {"n": 2} and row["seed"] == 2
    assert row["results"]["total"] == pytest.approx(results[1].summary["total"])
    catalog.tag(row["id"], "keep")
    results[0].path.rename(tmp_path / "elsewhere")
    again = reindex(catalog, tmp_path / "runs", prune=True)
    assert again.removed == [results[0].run_id] and again.updated == [row["id"]]
    assert catalog.get(row["id"])["tags"] == ["keep"]  # reindexing keeps what only the catalog has


def test_a_catalog_that_fails_is_logged_once_and_never_stops_the_run(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    bad = f"sqlite:///{blocker / 'catalog.sqlite'}"
    with caplog.at_level(logging.WARNING, logger="spinlab.catalog"):
        result = RunEngine(tmp_path / "runs", catalog=bad).run(steps_plan(2), Doubler())
        assert settle()  # the writes are done beside the run
    assert result.status == "completed" and (result.path / "run.h5").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "spinlab.catalog"]
    assert len(warnings) == 1 and "the run goes on, `spinlab runs reindex` adds it later" in warnings[0]
    assert "\n" not in warnings[0]
    good = Catalog(f"sqlite:///{tmp_path / 'good.sqlite'}")
    reindex(good, tmp_path / "runs")
    assert good.get(result.run_id)["status"] == "completed"


def test_the_default_catalog_is_a_sqlite_file_in_the_runs_folder_or_the_configured_url(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINLAB_CATALOG", raising=False)
    engine = RunEngine(tmp_path / "runs")
    result = engine.run(steps_plan(1), Doubler())
    assert Catalog.for_runs(tmp_path / "runs").get(result.run_id)["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_file()) == ["catalog.sqlite"]

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "catalog.toml").write_text(f'url = "sqlite:///{tmp_path / "shared.sqlite"}"\n')
    other = RunEngine(tmp_path / "lab").run(steps_plan(1), Doubler())
    assert Catalog(f"sqlite:///{tmp_path / 'shared.sqlite'}").get(other.run_id) is not None

    monkeypatch.setenv("SPINLAB_CATALOG", "off")
    assert RunEngine(tmp_path / "quiet").catalog is None
    RunEngine(tmp_path / "quiet").run(steps_plan(1), Doubler())
    assert not (tmp_path / "quiet" / "catalog.sqlite").exists()


def test_the_schema_is_versioned_and_a_newer_catalog_is_refused(tmp_path, url):
    catalog = Catalog(url)
    with catalog.engine.connect() as conn:
        assert conn.execute(sa.select(schema.version_table.c.version)).scalar() == schema.VERSION
        assert set(sa.inspect(conn).get_table_names()) >= {
            "runs",
            "run_values",
            "tags",
            "notes",
            "catalog_schema",
        }
    with catalog.engine.begin() as conn:
        assert schema.migrate(conn) == schema.VERSION  # nothing left to do
        conn.execute(schema.version_table.update().values(version=schema.VERSION + 1))
    with catalog.engine.begin() as conn, pytest.raises(RuntimeError, match="newer than this spinlab's"):
        schema.migrate(conn)


def test_conditions_and_times_refuse_bad_input_in_one_line():
    assert Condition.parse("accuracy>0.95") == Condition("accuracy", ">", 0.95)
    assert Condition.parse("bias_A == 6e-3") == Condition("bias_A", "=", 6e-3)
    assert Condition.parse("device.type=Bench") == Condition("device.type", "=", "Bench")
    for bad, says in [
        ("accuracy~0.9", "is not a condition; write KEY OP VALUE"),
        ("accuracy>high", "> needs a number, not 'high'"),
    ]:
        with pytest.raises(ConfigError, match=says):
            Condition.parse(bad)
    assert parse_time("2026-12-01") < parse_time("1d")
    with pytest.raises(ConfigError, match="'last tuesday' is not a time"):
        parse_time("last tuesday")


def test_every_sweep_point_is_recorded_with_its_results(tmp_path, url, monkeypatch):
    from spinlab.sweeps import SweepSpec, run_sweep

    monkeypatch.setenv("SPINLAB_CATALOG", url)
    spec = SweepSpec(
        plan="characterize",
        device="sim:vortex",
        grid={"step_amplitude_V": [0.06, 0.12]},
        settings={"bias_points": 8, "step_repeats": 128, "step_batches": 2},
        seeds=1,
    )
    result = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["threshold_A"])
    assert result.count("completed") == 2
    rows = Catalog(url).search(plan="characterize")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert sorted(r["config"]["step_amplitude_V"] for r in rows) == [0.06, 0.12]
    assert all(r["results"]["threshold_A"] > 0 for r in rows)
    assert [r["id"] for r in Catalog(url).search(where=["step_amplitude_V=0.12"])] == [
        r["id"] for r in rows if r["config"]["step_amplitude_V"] == 0.12
    ]
