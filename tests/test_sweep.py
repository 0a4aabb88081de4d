"""`spinlab sweep` and spinlab.sweeps: points, the summary, plots, failures, re-runs, monitor
topics and the command line. Sweeps here run on a local Dask cluster of threads (fast to start);
tests/test_sweep_cluster.py runs them on worker processes and a real `dask scheduler`."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab.cli import app
from spinlab.engine import RunEngine, build_plan
from spinlab.errors import ClusterError, ConfigError, DatasetError
from spinlab.monitoring import Subscriber
from spinlab.monitoring.view import MonitorState
from spinlab.sweeps import SweepSpec, run_sweep, with_cache
from spinlab.sweeps.display import SweepPublisher
from spinlab.sweeps.spec import parse_assignment, parse_value, split_values

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
#: A characterisation of ~0.2 s on sim:vortex.
QUICK = {"bias_points": 8, "step_repeats": 128, "step_batches": 2}
runner = CliRunner()


def quick_spec(**kw):
    base = dict(
        plan="characterize",
        device="sim:vortex",
        grid={"step_amplitude_V": [0.06, 0.12]},
        settings=QUICK,
        seeds=2,
    )
    return SweepSpec(**{**base, **kw})


def h5_table(out):
    with h5py.File(Path(out) / "sweep.h5") as f:
        table = {name: f[f"points/{name}"][()] for name in f["points"]}
        table["results"] = [json.loads(r) for r in f["points/results"].asstr()[()]]
        return table, dict(f.attrs)


# --- the points -------------------------------------------------------------------------------
def test_values_parse_as_json_numbers_or_text_and_commas_inside_brackets_stay():
    assert [parse_value(v) for v in ("6e-3", ".5", "12", "true", "binary", "[1e-7, 1e-6]")] == [
        6e-3,
        0.5,
        12,
        True,
        "binary",
        [1e-7, 1e-6],
    ]
    assert split_values('1,[2,3],{"a": [4, 5]}, x') == ["1", "[2,3]", '{"a": [4, 5]}', "x"]
    assert parse_assignment("train.lr=1e-3,3e-3", many=True) == ("train.lr", [1e-3, 3e-3])
    for bad in ("bias_A", "=1,2", "1x=2"):
        with pytest.raises(ConfigError, match="NAME="):
            parse_assignment(bad, many=True)


def test_grid_times_seeds_with_keys_that_do_not_depend_on_spelling_or_order():
    spec = quick_spec(
        grid={"step_amplitude_V": [0.06, 0.12], "bias_points": [8, 10]},
        settings={"step_repeats": 128, "step_batches": 2},
        seeds=3,
        seed=5,
    )
    points = spec.points()
    assert len(points) == 2 * 2 * 3 and len({p.key for p in points}) == 12
    assert sorted({p.seed for p in points}) == [5, 6, 7]
    assert points[0].config["step_amplitude_V"] == 0.06 and points[0].config["bias_points"] == 8
    assert points[0].config["step_hold_s"] == 1.2e-6  # every default is in the config
    swapped = quick_spec(
        grid={"bias_points": [10, 8], "step_amplitude_V": [0.12, 0.06]},
        settings={"step_batches": 2, "step_repeats": 128},
        seeds=3,
        seed=5,
    )
    assert {p.key for p in swapped.points()} == {p.key for p in points}


def test_a_bad_setting_or_a_missing_one_is_one_clear_error_before_anything_runs(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match=r"no setting\(s\) \['bias_pionts'\]"):
        quick_spec(grid={"bias_pionts": [8, 10]}).points()
    with pytest.raises(ConfigError, match=r"step_amplitude_V=-1.*greater than 0"):
        quick_spec(grid={"step_amplitude_V": [0.1, -1]}).points()
    # FSDD is found as by the plan from Python (issue 24 item 3); with none, one line says how
    monkeypatch.delenv("SPINLAB_FSDD", raising=False)
    monkeypatch.setenv("SPINLAB_CACHE", str(tmp_path))
    with pytest.raises(DatasetError, match="spinlab data fetch fsdd.*set data_dir or SPINLAB_FSDD"):
        SweepSpec("spoken-digits", "sim:vortex", grid={"n_nodes": [10, 20]}).points()
    with pytest.raises(ConfigError, match="no plan named 'charactrize'"):
        SweepSpec("charactrize", "sim:vortex").points()
    with pytest.raises(ConfigError, match="both swept"):
        quick_spec(settings={"step_amplitude_V": 0.1})
    with pytest.raises(ConfigError, match="--seeds"):
        quick_spec(grid={"device.seed": [1, 2]})
    with pytest.raises(ConfigError, match="needs --samples"):
        quick_spec(method="lhs")


def test_device_options_go_into_the_address_and_bench_is_one_station():
    spec = quick_spec(grid={"device.noise": [0, 0.5]}, settings={**QUICK, "device.output": "power"}, seeds=1)
    assert [p.address for p in spec.points()] == [
        "sim:vortex?noise=0&output=power",
        "sim:vortex?noise=0.5&output=power",
    ]
    assert spec.station is None and spec.station_resource is None
    bench = quick_spec(device="bench:emulated?device=sim:vortex")
    assert bench.station == "bench:emulated" and bench.station_resource == "station-emulated"
    assert quick_spec(device="bench:/labs/probe 2.toml").station_resource == "station-probe-2"


def test_latin_hypercube_samples_cover_each_range_once_per_stratum_and_repeat_with_the_seed():
    spec = quick_spec(
        grid={"step_amplitude_V": [0.04, 0.12], "bias_points": [6, 25]},
        samples=10,
        method="lhs",
        seeds=1,
        seed=3,
        settings={"step_repeats": 128},
    )
    combos = spec.combinations()
    amps = np.array([c["step_amplitude_V"] for c in combos])
    assert np.all((amps >= 0.04) & (amps <= 0.12))
    assert sorted(np.floor((amps - 0.04) / 0.008).astype(int)) == list(range(10))  # one per stratum
    assert all(isinstance(c["bias_points"], int) and 6 <= c["bias_points"] <= 25 for c in combos)
    assert (
        combos == spec.combinations()
        and combos
        != quick_spec(grid=spec.grid, settings={}, samples=10, method="lhs", seeds=1, seed=4).combinations()
    )
    assert len(spec.points()) == 10
    random = quick_spec(grid={"mask": ["binary", "normal"]}, samples=6, method="random").combinations()
    assert {c["mask"] for c in random} <= {"binary", "normal"}


def test_point_placeholder_and_shared_cache(tmp_path):
    spec = SweepSpec(
        "spoken-digits",
        "sim:vortex",
        grid={"n_nodes": [10, 20]},
        settings={"data_dir": str(FSDD), "limit": 40},
    )
    cached = with_cache(spec, tmp_path / "cache")
    assert {p.config["feature_cache_dir"] for p in cached.points()} == {str(tmp_path / "cache")}
    twins = SweepSpec(
        "twin-train",
        "sim:vortex",
        grid={"train.learning_rate": [1e-3, 3e-3]},
        settings={"out": str(tmp_path / "twins" / "{point}.pt"), "acquire.validation_every": 6},
    )
    outs = [(p.key, p.config["out"]) for p in twins.points()]
    assert all(out == str(tmp_path / "twins" / f"{key}.pt") for key, out in outs)


# --- running ----------------------------------------------------------------------------------
def test_a_sweep_writes_one_summary_whose_results_equal_each_point_run_alone(tmp_path):
    spec = quick_spec()
    result = run_sweep(spec, tmp_path / "sw", workers=2, processes=False)
    assert result.count("completed") == 4 and result.ran == 4 and not result.interrupted
    table, attrs = h5_table(tmp_path / "sw")
    assert attrs["plan"] == "characterize" and attrs["completed"] == 4 and "parallel" in attrs["mode"]
    assert list(table["seed"]) == [0, 1, 0, 1] and set(table["status"].astype(str)) == {"completed"}
    assert np.all(table["stopped"] > table["started"])
    for point, results, run in zip(spec.points(), table["results"], table["run"].astype(str)):
        alone = RunEngine(tmp_path / "alone").run(
            build_plan("characterize", point.config), point.address, seed=point.seed
        )
        assert results == alone.summary
        with h5py.File(Path(run) / "run.h5") as f:
            assert json.loads(f.attrs["config"]) == point.config and f.attrs["seed"] == point.seed
    with open(tmp_path / "sw" / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["step_amplitude_V"]) for r in rows] == [0.06, 0.06, 0.12, 0.12]
    assert float(rows[0]["threshold_A"]) == table["results"][0]["threshold_A"]
    assert json.loads(rows[0]["config"])["bias_points"] == 8 and rows[0]["started"].endswith("+00:00")
    assert {p.name for p in result.plots} >= {"threshold_A.png", "relaxation_time_s.png"}

    again = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["threshold_A"])
    assert again.ran == 0 and again.skipped == 4 and again.count("completed") == 4
    assert len([p for p in (tmp_path / "sw" / "runs").iterdir() if p.is_dir()]) == 4


def test_a_failing_point_records_its_error_and_the_others_complete(tmp_path):
    # 20 mA is beyond sim:vortex's 10 mA limit: refused when the run starts, not when built
    spec = quick_spec(grid={"bias_stop_A": [8e-3, 20e-3]}, seeds=1)
    result = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["threshold_A"])
    assert [r["status"] for r in result.table] == ["completed", "failed"]
    assert "ConfigError" in result.table[1]["error"] and "max_bias_A" in result.table[1]["error"]
    assert [p.name for p in result.plots] == ["threshold_A.png"]
    retry = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["threshold_A"])
    assert retry.ran == 1 and retry.table[1]["attempts"] == 2


def test_an_interrupted_sweep_has_a_consistent_summary_and_a_rerun_runs_only_the_missing_points(tmp_path):
    spec = quick_spec(grid={"step_amplitude_V": [0.05, 0.07, 0.09, 0.11]}, seeds=2)
    sent = []

    def ctrl_c_after_the_first_point(name, doc):
        if name == "point" and doc["status"] == "completed" and not sent:
            sent.append(doc["key"])
            os.kill(os.getpid(), signal.SIGINT)

    first = run_sweep(
        spec,
        tmp_path / "sw",
        workers=1,
        processes=False,
        observers=[ctrl_c_after_the_first_point],
        metrics=["threshold_A"],
    )
    assert first.interrupted and first.count("completed") >= 1 and first.count("pending") >= 5
    table, attrs = h5_table(tmp_path / "sw")
    assert attrs["completed"] == first.count("completed") and attrs["pending"] == first.count("pending")
    status = dict(zip(table["key"].astype(str), table["status"].astype(str)))
    runs = dict(zip(table["key"].astype(str), table["run"].astype(str)))
    for key, run in runs.items():
        if status[key] in ("completed", "interrupted"):
            with h5py.File(Path(run) / "run.h5") as f:
                assert f.attrs["status"] == status[key]  # a running point stopped the engine's way
    second = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["threshold_A"])
    assert second.count("completed") == 8 and second.skipped == first.count("completed")
    assert second.ran == 8 - first.count("completed")
    for row in second.table:
        if status[row["key"]] in ("completed", "interrupted"):
            assert row["run"] == runs[row["key"]]  # kept, or resumed where it stopped
    assert len([p for p in (tmp_path / "sw" / "runs").iterdir() if p.is_dir()]) == 8


def test_hardware_needs_exactly_one_worker_that_holds_the_station(tmp_path):
    from distributed import LocalCluster

    spec = quick_spec(device="bench:emulated", seeds=1)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(ClusterError, match=r"no worker .* offers it.*--resources station-emulated=1"):
            run_sweep(spec, tmp_path / "a", scheduler=cluster)
    with LocalCluster(
        n_workers=2, processes=False, dashboard_address=None, resources={"station-emulated": 1}
    ) as cluster:
        with pytest.raises(ClusterError, match="exactly one worker may offer station-emulated=1"):
            run_sweep(spec, tmp_path / "b", scheduler=cluster)
    assert not (tmp_path / "a" / "runs").exists()  # nothing ran


def test_two_swept_names_make_a_heatmap_one_makes_lines(tmp_path):
    from spinlab.sweeps.plots import plot_metric

    two = [
        {"status": "completed", "values": {"a": a, "b": b}, "results": {"m": a + (b == "y") + s}}
        for a in (1, 2, 3)
        for b in ("x", "y")
        for s in (0.0, 0.5)
    ]  # two seeds: s = 0, 0.5
    heat = plot_metric(two, "m", grid=True)
    image = heat.axes[0].images[0].get_array()
    assert image.shape == (2, 3) and np.allclose(image, [[1.25, 2.25, 3.25], [2.25, 3.25, 4.25]])
    one = [
        {"status": "completed", "values": {"a": a}, "results": {"m": float(a + s)}}
        for a in (1, 2)
        for s in (0, 2)
    ]
    lines = plot_metric(one, "m", grid=True).axes[0]
    (line,) = lines.get_lines()[:1]
    assert list(line.get_ydata()) == [2.0, 3.0] and not lines.images


def test_monitor_gets_sweep_topics_and_spinlab_monitor_shows_them(tmp_path):
    publisher = SweepPublisher("tcp://127.0.0.1:0")
    sub = Subscriber(publisher.endpoint)
    try:
        run_sweep(
            quick_spec(seeds=1),
            tmp_path / "sw",
            workers=1,
            processes=False,
            observers=[publisher],
            metrics=["threshold_A"],
        )
        state, topics = MonitorState(), []
        while (msg := sub.recv(2.0)) is not None:
            topics.append((msg.topic, msg.payload.get("status")))
            state.update(msg)
            if msg.topic == "sweep.stop":
                break
    finally:
        sub.close()
        publisher.close()
    assert topics[0][0] == "sweep.start" and topics[-1] == ("sweep.stop", "completed")
    assert ("sweep.point", "running") in topics and ("sweep.point", "completed") in topics
    assert "sweep.progress" in {t for t, _ in topics}
    assert state.progress["done"] == state.progress["total"] == 2 and state.status == "completed"
    assert state.kind.startswith("sweep of characterize on sim:vortex; parallel")


def test_cli_runs_a_sweep_and_reports_bad_input_in_one_line(tmp_path, monkeypatch):
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "sweep",
            "characterize",
            "-d",
            "sim:vortex",
            "--grid",
            "step_amplitude_V=0.06,0.12",
            *[f"--set={k}={v}" for k, v in QUICK.items()],
            "--workers",
            "1",
            "--metric",
            "threshold_A",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["completed"] == 2 and summary["out"] == str(out.resolve())
    assert [p["values"] for p in summary["points"]] == [
        {"step_amplitude_V": 0.06},
        {"step_amplitude_V": 0.12},
    ]
    bad = runner.invoke(app, ["sweep", "characterize", "-d", "sim:vortex", "--grid", "bias_pionts=1,2"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.output.count("\n") == 1 and "bias_pionts" in bad.output
    monkeypatch.setattr("spinlab.sweeps.runner.CONNECT_TIMEOUT_S", 1.0)
    nowhere = runner.invoke(
        app,
        [
            "sweep",
            "characterize",
            "-d",
            "sim:vortex",
            "--scheduler",
            "tcp://127.0.0.1:9",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert nowhere.exit_code == 2 and "cannot reach the Dask scheduler" in nowhere.output


@pytest.mark.skipif(not FSDD.is_dir(), reason="needs the FSDD recordings in ../shared")
def test_spoken_digit_points_equal_the_same_runs_alone(tmp_path):
    spec = with_cache(
        SweepSpec(
            "spoken-digits",
            "sim:vortex",
            grid={"n_nodes": [12, 24]},
            settings={"data_dir": str(FSDD), "limit": 40},
        ),
        tmp_path / "cache",
    )
    result = run_sweep(spec, tmp_path / "sw", workers=2, processes=False, metrics=["accuracy"])
    assert result.count("completed") == 2
    for point, row in zip(spec.points(), result.table):
        alone = RunEngine(tmp_path / "alone").run(
            build_plan("spoken-digits", point.config), "sim:vortex", seed=0
        )
        timing = {"wall_s", "device_s"}
        assert {k: v for k, v in row["results"].items() if k not in timing} == {
            k: v for k, v in alone.summary.items() if k not in timing
        }
        with h5py.File(Path(row["run"]) / "run.h5") as a, h5py.File(alone.run_file) as b:
            for name in ("predictions", "states_pooled", "readout_weights"):
                assert np.array_equal(a[name][()], b[name][()]), name


# --- exposure ----------------------------------------------------------------------------------
def _lan_addresses():
    import socket

    import psutil

    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def test_the_dask_dashboard_of_a_sweep_is_reachable_from_this_machine_only(tmp_path):
    import socket
    import urllib.request

    from distributed import default_client

    if not _lan_addresses():
        pytest.skip("this machine has no address but loopback to probe from")
    seen = {}

    def probe(name, doc):
        if name != "start":
            return
        port = default_client().scheduler_info(n_workers=0)["services"]["dashboard"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            seen["loopback"] = reply.read().decode()
        seen["lan"] = {}
        for address in _lan_addresses():
            with socket.socket() as sock:
                sock.settimeout(2)
                seen["lan"][address] = sock.connect_ex((address, port))

    result = run_sweep(
        quick_spec(seeds=1), tmp_path / "sw", workers=1, processes=False, observers=[probe], metrics=[]
    )
    assert result.count("completed") == 2
    assert seen["loopback"] == "ok"
    assert all(code != 0 for code in seen["lan"].values()), seen  # refused on the LAN


def test_a_dashboard_on_another_host_is_warned_about_and_a_bad_one_is_one_line(tmp_path, caplog):
    from spinlab.sweeps.runner import dashboard_address

    assert dashboard_address(True) == dashboard_address("8787") == "127.0.0.1:8787"
    assert dashboard_address("localhost:0") == "localhost:0" and not caplog.records
    assert dashboard_address("off") is None and dashboard_address(False) is None
    assert dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"
    assert "readable from other machines" in caplog.text
    bad = runner.invoke(
        app,
        [
            "sweep",
            "characterize",
            "-d",
            "sim:vortex",
            "--dashboard",
            "every:where",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "--dashboard 'every:where'" in bad.output


def test_a_point_whose_sweep_is_gone_stops_the_safe_way_not_as_a_failure():
    from distributed import Client, Event, LocalCluster

    from spinlab.errors import RunInterrupted
    from spinlab.sweeps.worker import StopPoll

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        client = Client(cluster)
        Event("spinlab-sweep-stop-test", client=client)
        stop = StopPoll("spinlab-sweep-stop-test")
        stop.service()  # the sweep is there and has not asked: the run goes on
        client.close()
    with pytest.raises(RunInterrupted, match="the sweep's Dask scheduler is gone"):
        stop._last = 0.0
        stop.service()
