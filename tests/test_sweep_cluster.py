"""Sweeps the way they run in a lab: `spinlab sweep` in its own process on a local cluster of
worker processes, stopped by Ctrl-C (SIGINT to its whole process group, as a terminal sends it)
and run again; and on a real cluster over loopback (`dask scheduler` + two `dask worker`), one
worker killed mid-sweep, hardware points confined to the worker that holds the station."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from spinlab.engine import journal
from spinlab.monitoring import Subscriber
from spinlab.sweeps import SweepSpec, run_sweep
from spinlab.sweeps.summary import JOURNAL, read_records

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from spinlab.cli import main; main()"]
DASK = str(Path(sys.executable).parent / "dask")
#: Characterisations of ~0.5 s (sim:vortex) to ~1 s (bench:emulated).
SETTINGS = ["--set", "bias_points=8", "--set", "step_repeats=512", "--set", "step_batches=4"]
QUICK = {"bias_points": 8, "step_repeats": 256, "step_batches": 2}


def _spinlab(*args, **kwargs):
    return subprocess.Popen(
        [*CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _points(out):
    with h5py.File(Path(out) / "sweep.h5") as f:
        return {name: f[f"points/{name}"][()] for name in f["points"]}


def assert_no_overlap(points):
    order = np.argsort(points["started"])
    started, stopped = points["started"][order], points["stopped"][order]
    assert np.all(stopped > started) and np.all(started[1:] >= stopped[:-1])


class LoopbackCluster:
    """`dask scheduler` and one `dask worker` per entry of ``resources`` (None or
    "NAME=1"), on 127.0.0.1, each in a process group of its own (no nanny, so a kill is final)."""

    def __init__(self, tmp_path, resources=(None, None)):
        self.dir = tmp_path / "cluster"
        self.dir.mkdir()
        file = self.dir / "scheduler.json"
        self.procs = [
            self._start(
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            )
        ]
        deadline = time.monotonic() + 60
        while not file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        self.address = json.loads(file.read_text())["address"]
        self.workers = [
            self._start(
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                f"w{i}",
                *(["--resources", r] if r else []),
            )
            for i, r in enumerate(resources)
        ]
        self.procs += self.workers
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(len(resources), timeout=60)
            self.worker_names = {
                w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }

    def _start(self, *args):
        log = open(self.dir / f"{args[0]}-{len(getattr(self, 'procs', []))}.log", "w")
        return subprocess.Popen(
            [DASK, *args], cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def loopback(tmp_path, request):
    cluster = LoopbackCluster(tmp_path, getattr(request, "param", (None, None)))
    yield cluster
    cluster.close()


@pytest.mark.slow
def test_ctrl_c_stops_a_hardware_sweep_safely_and_running_it_again_runs_only_the_missing_points(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "characterize",
        "-d",
        "bench:emulated",
        "--grid",
        "step_amplitude_V=0.05,0.08,0.11",
        "--seeds",
        "2",
        *SETTINGS,
        "--out",
        str(out),
        "--metric",
        "threshold_A",
        "--json",
    ]
    proc = _spinlab(*args, start_new_session=True)
    deadline = time.monotonic() + 180
    while len(read_records(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the client and its workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "hardware: bench:emulated is one station" in err and "run the same command again" in err
    assert "Traceback" not in err
    first = _points(out)
    status = dict(zip(first["key"].astype(str), first["status"].astype(str)))
    done = {k for k, s in status.items() if s == "completed"}
    assert 2 <= len(done) < 6 and set(status.values()) <= {"completed", "interrupted", "pending"}
    for key, run in zip(first["key"].astype(str), first["run"].astype(str)):
        if key in done:
            with h5py.File(Path(run) / "run.h5") as f:
                assert f.attrs["status"] == "completed"
    stopped = [
        r for k, r in zip(first["key"].astype(str), first["run"].astype(str)) if status[k] == "interrupted"
    ]
    for run in stopped:  # the point was stopped the engine's safe way
        with h5py.File(Path(run) / "run.h5") as f:
            assert f.attrs["status"] == "interrupted"

    again = _spinlab(*args)
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["completed"] == 6 and summary["skipped"] == len(done) and summary["ran"] == 6 - len(done)
    final = _points(out)
    runs = dict(zip(final["key"].astype(str), final["run"].astype(str)))
    assert all(
        runs[k] == r
        for k, r in zip(first["key"].astype(str), first["run"].astype(str))
        if k in done or status[k] == "interrupted" and r
    )  # kept, or resumed in place
    assert len([p for p in (out / "runs").iterdir() if p.is_dir()]) == 6
    assert_no_overlap(final)


def test_a_killed_worker_s_point_runs_again_on_the_other_and_every_point_completes_once(tmp_path, loopback):
    out = tmp_path / "sweep"
    monitor = f"tcp://127.0.0.1:{_free_port()}"
    sub = Subscriber(monitor, topics=("sweep.point",))
    proc = _spinlab(
        "sweep",
        "characterize",
        "-d",
        "sim:vortex",
        "--grid",
        "step_amplitude_V=0.05,0.07,0.09,0.11",
        "--seeds",
        "2",
        *SETTINGS,
        "--scheduler",
        loopback.address,
        "--out",
        str(out),
        "--monitor",
        monitor,
        "--metric",
        "threshold_A",
        "--json",
    )
    victim = loopback.workers[0]
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            msg = sub.recv(0.5)
            if msg is not None and msg.payload["status"] == "running" and msg.payload["pid"] == victim.pid:
                os.killpg(victim.pid, signal.SIGKILL)
                killed = msg.payload
    finally:
        sub.close()
    stdout, err = proc.communicate(timeout=300)
    assert killed is not None, err
    assert proc.returncode == 0, err
    summary = json.loads(stdout.splitlines()[-1])
    keys = [p["key"] for p in summary["points"]]
    assert summary["completed"] == 8 and len(set(keys)) == 8
    records = [r for r in journal.read(out / JOURNAL) if r.get("doc") == "point"]
    assert sorted(r["key"] for r in records) == sorted(keys)  # each point recorded once
    rerun = next(p for p in summary["points"] if p["key"] == killed["key"])
    assert rerun["status"] == "completed"
    assert _points(out)["worker"].astype(str)[keys.index(killed["key"])] == loopback.worker_names["w1"]


@pytest.mark.parametrize("loopback", [(None, "station-emulated=1")], indirect=True)
def test_bench_points_run_one_at_a_time_on_the_one_worker_that_holds_the_station(tmp_path, loopback):
    spec = SweepSpec(
        "characterize", "bench:emulated", grid={"step_amplitude_V": [0.06, 0.09, 0.12]}, settings=QUICK
    )
    result = run_sweep(spec, tmp_path / "sweep", scheduler=loopback.address, metrics=["threshold_A"])
    assert result.count("completed") == 3 and "one at a time" in result.mode
    points = _points(tmp_path / "sweep")
    assert set(points["worker"].astype(str)) == {loopback.worker_names["w1"]}
    assert_no_overlap(points)


def _run_states(out):
    """``{run directory name: status}`` of every run of the sweep in ``out``."""
    states = {}
    for run in sorted(p for p in (Path(out) / "runs").iterdir() if p.is_dir()):
        with h5py.File(run / "run.h5") as f:
            states[run.name] = str(f.attrs["status"])
    return states


def test_after_a_sigkilled_sweep_running_it_again_resumes_the_killed_point_s_run_leaving_no_orphan(tmp_path):
    import psutil

    out = tmp_path / "sweep"
    args = [
        "sweep",
        "characterize",
        "-d",
        "sim:vortex",
        "--grid",
        "step_amplitude_V=0.06,0.12",
        "--set",
        "bias_points=16",
        "--set",
        "step_repeats=2048",
        "--set",
        "step_batches=8",
        "--workers",
        "1",
        "--out",
        str(out),
        "--metric",
        "threshold_A",
        "--json",
    ]
    proc = _spinlab(*args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        journals = list((out / "runs").glob("*/journal.spinlab")) if (out / "runs").is_dir() else []
        if journals and sum(r.get("doc") == "event" for r in journal.read(journals[0])) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()  # SIGKILL: the sweep records nothing more; its workers follow it (or stop the point
    #              the safe way when they find its scheduler gone)
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "the workers outlived the killed sweep"
    states = _run_states(out)
    killed = [name for name, status in states.items() if status in ("running", "interrupted")]
    assert len(killed) == 1, states
    killed = killed[0]

    again = _spinlab(*args)
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"resuming its run {killed}" in err and "Traceback" not in err
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["completed"] == 2
    assert _run_states(out) == {Path(p["run_dir"]).name: "completed" for p in summary["points"]}  # no orphan
    assert killed in _run_states(out)


def test_sighup_stops_a_sweep_with_exit_status_129(tmp_path):
    out = tmp_path / "sweep"
    proc = _spinlab(
        "sweep",
        "characterize",
        "-d",
        "sim:vortex",
        "--grid",
        "step_amplitude_V=0.05,0.08,0.11",
        "--seeds",
        "2",
        *SETTINGS,
        "--workers",
        "1",
        "--out",
        str(out),
        "--metric",
        "threshold_A",
    )
    deadline = time.monotonic() + 120
    while len(read_records(out)) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)  # the terminal closed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err
    assert "run the same command again" in err and "Traceback" not in err
    with h5py.File(out / "sweep.h5") as f:
        assert f.attrs["completed"] >= 1 and f.attrs["pending"] >= 1
