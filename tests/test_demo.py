"""`spinlab demo`: where it finds FSDD, the composed run on the emulated bench, its report, its
ZeroMQ stream, and a demo stopped midway."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from test_monitoring_stream import collect, connected
from typer.testing import CliRunner
from web_helpers import free_port

from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.errors import DatasetError
from spinlab.monitoring import Subscriber
from spinlab.protocols import demo
from spinlab.speech.audio import find_fsdd

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
STAGES = ["1-characterize", "2-twin-train", "3-twin-eval", "4-digits-twin", "5-digits-bench"]
#: a demo small enough for the default suite: few utterances, few nodes, a short twin training
TINY = {"limit": 20, "n_nodes": 20, "twin_max_steps": 250, "eval_drives": 2}


@pytest.fixture
def no_fsdd(tmp_path, monkeypatch):
    """No --data, no SPINLAB_FSDD, an empty download cache."""
    monkeypatch.setenv("SPINLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPINLAB_FSDD", raising=False)
    return tmp_path / "cache" / "fsdd" / "recordings"


def fake_fsdd(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "3_theo_0.wav").write_bytes(b"")  # finding checks names; reading comes later
    return folder


def test_fsdd_is_found_through_data_then_the_environment_then_the_cache(tmp_path, monkeypatch, no_fsdd):
    cache = fake_fsdd(no_fsdd)
    assert find_fsdd() == cache
    env = fake_fsdd(tmp_path / "env" / "recordings")
    monkeypatch.setenv("SPINLAB_FSDD", str(env.parent))  # the folder above recordings/ works too
    assert find_fsdd() == env
    data = fake_fsdd(tmp_path / "data")
    assert find_fsdd(data) == data
    (data / "notes.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="not an FSDD recording name"):
        find_fsdd(data)


def test_plans_from_python_find_fsdd_as_the_command_line_does_and_name_no_flag(
    tmp_path, monkeypatch, no_fsdd
):
    """Issue 24 item 3: ``spoken_digits.plan()`` and ``demo.plan()`` without ``data_dir`` use
    ``$SPINLAB_FSDD``, else the fetch cache; a Python caller's error names no CLI flag."""
    from spinlab.protocols import spoken_digits

    for make in (spoken_digits.plan, demo.plan):
        with pytest.raises(DatasetError) as missing:
            make()
        assert "--" not in str(missing.value) and "data_dir" in str(missing.value)
    cache = fake_fsdd(no_fsdd)
    assert spoken_digits.plan().config.data_dir == str(cache)
    env = fake_fsdd(tmp_path / "env")
    monkeypatch.setenv("SPINLAB_FSDD", str(env))
    assert spoken_digits.plan().config.data_dir == demo.plan().config.data_dir == str(env)
    assert spoken_digits.plan(data_dir=str(cache)).config.data_dir == str(cache)  # named wins
    with pytest.raises(DatasetError) as gone:
        spoken_digits.list_fsdd(tmp_path / "gone")
    assert "--" not in str(gone.value) and "does not exist" in str(gone.value)


@pytest.mark.parametrize(
    "args, env, says",
    [
        ([], None, "no FSDD recordings found: run `spinlab data fetch fsdd` once"),
        (["--data", "{tmp}/missing"], None, "--data '{tmp}/missing' is not a folder"),
        ([], "{tmp}", "SPINLAB_FSDD '{tmp}' holds no .wav recordings"),
    ],
)
def test_demo_without_fsdd_says_what_to_do_in_one_line(tmp_path, monkeypatch, no_fsdd, args, env, says):
    if env:
        monkeypatch.setenv("SPINLAB_FSDD", env.format(tmp=tmp_path))
    result = CliRunner().invoke(
        app, ["demo", *[a.format(tmp=tmp_path) for a in args], "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says.format(tmp=tmp_path) in lines[0], lines
    assert not (tmp_path / "runs").exists()  # refused before anything was opened or written


def test_fetch_with_a_local_copy_named_checks_it_and_downloads_nothing(tmp_path, monkeypatch):
    """The README's first command fetches FSDD before the demo; offline, SPINLAB_FSDD makes it a check."""
    import spinlab.speech.audio as audio

    monkeypatch.setattr(audio, "_urlopen", lambda url: pytest.fail(f"downloaded {url}"))
    monkeypatch.setenv("SPINLAB_FSDD", str(FSDD))
    result = CliRunner().invoke(app, ["data", "fetch", "fsdd", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["verified"] and not summary["downloaded"] and summary["n_recordings"] == 2500
    monkeypatch.setenv("SPINLAB_FSDD", str(fake_fsdd(tmp_path / "mine")))
    result = CliRunner().invoke(app, ["data", "fetch", "fsdd"])
    assert result.exit_code == 0, result.output
    assert "is not the pinned FSDD copy" in result.stderr and "nothing to download" in result.stdout


def check_stages(path: Path, report: dict) -> None:
    """Every stage completed in its own run directory under the demo's; the report points there."""
    assert sorted(p.name for p in (path / "stages").iterdir()) == STAGES
    for name in STAGES:
        with h5py.File(path / "stages" / name / "run.h5") as f:
            assert f.attrs["status"] == "completed", name
    # paths inside the run are relative to it (issue 24, item 9)
    assert report["runs"] == {name.split("-", 1)[1]: f"stages/{name}" for name in STAGES}
    assert {Path(p).name for p in report["plots"]} == {
        "sweep.png",
        "step_response.png",
        "training.png",
        "test_prediction.png",
        "twin_vs_device.png",
        "confusion.png",
        "example.png",
    }
    assert all((path / p).is_file() and not Path(p).is_absolute() for p in report["plots"])
    assert report["twin"] == demo.TWIN_FILE and (path / report["twin"]).is_file()
    assert (path / report["readout"] / "readout.h5").is_file()
    with h5py.File(path / "run.h5") as f:
        assert f.attrs["status"] == "completed" and f.attrs["plan"] == "demo"


def test_tiny_demo_on_the_emulated_bench_reports_and_publishes_every_stage(tmp_path):
    publisher, watcher = connected()
    plan = demo.plan(data_dir=str(FSDD), feature_cache_dir=str(tmp_path / "cache"), **TINY)
    try:
        result = RunEngine(tmp_path / "runs").run(plan, "bench:emulated", seed=1, subscribers=[publisher])
        got = collect(watcher, "stop", timeout_s=10)
    finally:
        publisher.close()
        watcher.close()
    report = result.summary
    check_stages(result.path, report)
    # the subset is the same for both: one seed, one stratified split
    with (
        h5py.File(result.path / "stages" / STAGES[3] / "run.h5") as twin,
        h5py.File(result.path / "stages" / STAGES[4] / "run.h5") as bench,
    ):
        assert list(twin["utterances"][()]) == list(bench["utterances"][()])
    assert report["n_test"] == 10 and report["n_train"] == 10
    assert 0 <= report["twin_accuracy"] <= 1 and 0 <= report["bench_accuracy"] <= 1
    assert report["speed_ratio"] == pytest.approx(report["bench_device_s"] / report["twin_device_s"])
    assert report["bias_A"] == pytest.approx(1.2 * report["threshold_A"], abs=1e-5)
    assert set(report["stage_s"]) == set(report["runs"])
    # one run on the wire: the demo's, with every stage's progress and the twin's loss in it
    got = got[[m.topic for m in got].index("start") :]
    assert {m.run_id for m in got} == {result.run_id}
    assert got[0].payload["kind"] == "demo"
    assert got[-1].topic == "stop" and got[-1].payload["status"] == "completed"
    stages = {m.payload["stage"].split(":")[0] for m in got if m.topic == "progress"}
    # every stage draws its figures with progress (twin-eval's are its only phase), the demo too
    assert stages == {
        "demo",
        "characterize",
        "twin-train",
        "twin-eval",
        "digits-twin",
        "digits-bench",
        "figures",
    }
    assert any(m.topic == "twin.loss" for m in got)
    assert got[-1].payload["results"]["bench_accuracy"] == report["bench_accuracy"]


def spinlab(*args, **kwargs):
    env = {**os.environ, "SPINLAB_FSDD": str(FSDD)}
    return subprocess.Popen(
        [sys.executable, "-c", "from spinlab.cli import main; main()", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


@pytest.mark.slow
def test_demo_command_end_to_end_json_report_run_directories_and_stream(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    watcher = Subscriber(address)
    start = time.monotonic()
    proc = spinlab(
        "demo",
        "--limit",
        "40",
        "--twin-steps",
        "500",
        "--json",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--monitor",
        address,
    )
    try:
        got = collect(watcher, "stop", timeout_s=600)
    finally:
        watcher.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    print(f"demo --limit 40: {time.monotonic() - start:.0f} s, stages {report['stage_s']}")
    check_stages(Path(report["run_dir"]), report)
    assert f"monitor: spinlab monitor {address}" in err
    assert report["n_test"] == 10 and report["bench_accuracy"] >= 0.5 and report["twin_accuracy"] >= 0.5
    assert report["twin_nrmse"] < 0.5
    assert {m.payload["stage"].split(":")[0] for m in got if m.topic == "progress"} >= {
        "twin-train",
        "digits-bench",
    }


@pytest.mark.slow
def test_a_demo_stopped_midway_is_marked_interrupted_and_resumes_to_completion(tmp_path):
    runs = tmp_path / "runs"
    proc = spinlab("demo", "--limit", "20", "--twin-steps", "3000", "--runs-dir", str(runs))
    deadline = time.monotonic() + 300
    while not list(runs.glob("*-demo-*/stages/2-twin-train/twin-checkpoint.pt")):  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    (path,) = runs.glob("*-demo-*")
    assert f"spinlab resume {path}" in err
    for run_file in (path / "run.h5", path / "stages" / "2-twin-train" / "run.h5"):
        with h5py.File(run_file) as f:
            assert f.attrs["status"] == "interrupted"
    resumed = spinlab("resume", str(path), "--json")
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == "completed"
    check_stages(path, report)
    with h5py.File(path / "stages" / "1-characterize" / "run.h5") as f:
        assert f.attrs["resumed"] == 0  # read back, not run again
    with h5py.File(path / "stages" / "2-twin-train" / "run.h5") as f:
        assert f.attrs["resumed"] == 1


def test_mumax3_traces_fetch_pinned_and_verified_or_found_through_the_environment(tmp_path, monkeypatch):
    """Issue 24 item 3: `spinlab data fetch mumax3` installs the paper's traces (served here from
    the shared copy, as the pinned upstream files), refuses a corrupt download, and with
    $SPINLAB_MUMAX3 set checks that copy and downloads nothing."""
    from spinlab.twin import mumax_data

    shared = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mumax3-skyrmion"
    upstream = {f"{c}/{p}": shared / name for name, (c, p, _) in mumax_data.FILES.items()}
    asked = []

    def opener(url):
        asked.append(url)
        return open(upstream[url.split("NeuralODEs_for_physics/", 1)[1]], "rb")

    monkeypatch.setenv("SPINLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPINLAB_MUMAX3", raising=False)
    with pytest.raises(DatasetError, match="run `spinlab data fetch mumax3` once"):
        mumax_data.find_mumax3()
    root = mumax_data.fetch_mumax3(opener=opener)
    assert root == tmp_path / "cache" / "mumax3-skyrmion" and mumax_data.find_mumax3() == root
    assert mumax_data.verify(root) == [] and len(asked) == 3
    assert all(
        u.startswith("https://raw.githubusercontent.com/Xing-CHEN18/NeuralODEs_for_physics/") for u in asked
    )
    mumax_data.fetch_mumax3(opener=opener)
    assert len(asked) == 3  # verified copies are kept
    with pytest.raises(DatasetError, match="checksum mismatch"):
        mumax_data.fetch_mumax3(tmp_path / "other", opener=lambda url: io.BytesIO(b"not the file"))
    assert not (tmp_path / "other" / "mackey_glass.txt").exists()

    monkeypatch.setenv("SPINLAB_MUMAX3", str(shared))
    result = CliRunner().invoke(app, ["data", "fetch", "mumax3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "path": str(shared),
        "verified": True,
        "downloaded": False,
    }
