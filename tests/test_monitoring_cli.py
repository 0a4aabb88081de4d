"""`spinlab monitor`, `spinlab control` and `spinlab keys` as a user runs them."""

import json
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import RunAborted
from spinlab.cli import app
from spinlab.engine import Plan, RunEngine
from spinlab.monitoring import ControlServer
from spinlab.monitoring.documents import MonitorPublisher
from spinlab.monitoring.recording import read_recording

runner = CliRunner()


class LiveRun:
    """A run mid-way in a worker thread: config, progress and a waveform already published,
    then it waits for ``finish()``."""

    def __init__(self, tmp_path):
        self.publisher = MonitorPublisher("tcp://127.0.0.1:0")
        self.events = self.publisher.publisher
        self.release = threading.Event()

        def body(ctx):
            ctx.progress(4, 10, bias_A=7.5e-3)
            ctx.publish("preview", {"name": "resp", "unit": "V"}, {"samples": np.linspace(0, 1, 20_000)})
            self.release.wait(20)

        self.thread = threading.Thread(
            target=RunEngine(tmp_path / "runs").run,
            daemon=True,
            args=(Plan("acquire", {"steps": 10}, body, needs_device=False),),
            kwargs={"subscribers": [self.publisher]},
        )
        self.thread.start()
        deadline = time.monotonic() + 5
        while self.events.stats()["sent"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # sent before anyone watched: a monitor started now is a late joiner

    def finish(self):
        self.release.set()
        self.thread.join(10)
        self.publisher.close()


@pytest.fixture
def live_run(tmp_path):
    run = LiveRun(tmp_path)
    yield run
    run.finish()


def test_monitor_json_streams_the_current_state_to_a_late_joiner(live_run, tmp_path):
    record = tmp_path / "stream.monrec"
    result = runner.invoke(
        app,
        [
            "monitor",
            live_run.events.endpoint,
            "--json",
            "--count",
            "3",
            "--timeout",
            "5",
            "--record",
            str(record),
            "--topic",
            "start",
            "--topic",
            "progress",
            "--topic",
            "preview",
        ],
    )
    assert result.exit_code == 0, result.output
    # one replay per subscription; ZeroMQ sends a socket's subscriptions in no fixed order
    lines = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda x: x["seq"])
    assert [line["topic"] for line in lines] == ["start", "progress", "preview"]
    assert all(line["replay"] for line in lines)
    assert lines[0]["payload"]["config"] == {"steps": 10}
    assert lines[1]["payload"] == {"done": 4, "total": 10, "stage": "", "bias_A": 7.5e-3}
    wave = lines[2]["arrays"]["samples"]
    assert wave["summarised"] and wave["shape"] == [20_000] and wave["max"] == 1.0
    recorded = list(read_recording(record))
    recorded = {m.topic: m for m in recorded}
    assert sorted(recorded) == ["preview", "progress", "start"]
    np.testing.assert_array_equal(recorded["preview"].arrays["samples"], np.linspace(0, 1, 20_000))


def test_monitor_exits_nonzero_when_the_count_is_not_reached_before_the_timeout(live_run):
    result = runner.invoke(
        app,
        [
            "monitor",
            live_run.events.endpoint,
            "--json",
            "--topic",
            "progress",
            "--count",
            "5",
            "--timeout",
            "0.3",
        ],
    )
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    assert "1 of 5 messages" in result.stderr


def test_monitor_live_view_renders_the_state(live_run):
    result = runner.invoke(
        app,
        [
            "monitor",
            live_run.events.endpoint,
            "--count",
            "3",
            "--timeout",
            "5",
            "--topic",
            "start",
            "--topic",
            "progress",
            "--topic",
            "preview",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "acquire" in result.stdout and "4/10" in result.stdout and "resp" in result.stdout


def test_monitor_rejects_a_bad_address():
    result = runner.invoke(app, ["monitor", "udp://nowhere", "--count", "1"])
    assert result.exit_code == 2 and "tcp://HOST:PORT" in result.stderr


def test_keys_then_control_status_and_abort(tmp_path):
    keys = tmp_path / "keys"
    made = runner.invoke(app, ["keys", str(keys), "--name", "alice", "--json"])
    assert made.exit_code == 0, made.output
    paths = json.loads(made.stdout.splitlines()[-1])
    server = ControlServer("tcp://127.0.0.1:0", keys_dir=keys)
    base = [
        "control",
        server.endpoint,
        "--key",
        paths["client_secret"],
        "--server-key",
        paths["server_public"],
        "--timeout",
        "5",
    ]
    replies = {}

    def body(ctx):
        ctx.progress(3, 8)
        status = runner.invoke(app, [*base[:2], "status", *base[2:], "--json"])
        replies["status"] = status
        replies["abort"] = runner.invoke(app, [*base[:2], "abort", *base[2:]])
        ctx.progress(4, 8)  # the next checkpoint obeys the abort
        replies["after"] = True

    def control(state):
        server.run = state
        return server

    with pytest.raises(RunAborted, match="alice") as caught:
        RunEngine(tmp_path / "runs").run(Plan("acquire", {}, body, needs_device=False), control=control)
    status = replies["status"]
    assert status.exit_code == 0, status.output
    reply = json.loads(status.stdout.splitlines()[-1])
    assert reply["state"] == "running"
    assert reply["status"]["progress"] == {"done": 3, "total": 8, "stage": ""}
    assert replies["abort"].exit_code == 0 and "aborting" in replies["abort"].stdout
    assert "after" not in replies
    with h5py.File(caught.value.run_path / "run.h5") as f:
        assert f.attrs["status"] == "aborted"


def test_control_with_an_unauthorised_key_fails_cleanly(tmp_path):
    keys = tmp_path / "keys"
    runner.invoke(app, ["keys", str(keys), "--name", "alice"])
    other = tmp_path / "other"
    mallory = json.loads(runner.invoke(app, ["keys", str(other), "--name", "mallory", "--json"]).stdout)
    server = ControlServer("tcp://127.0.0.1:0", keys_dir=keys)
    outcome = {}

    def body(ctx):
        outcome["cli"] = runner.invoke(
            app,
            [
                "control",
                server.endpoint,
                "abort",
                "--key",
                mallory["client_secret"],
                "--server-key",
                str(keys / "server.key"),
                "--timeout",
                "0.4",
            ],
        )
        ctx.progress(1, 1)  # not aborted

    def control(state):
        server.run = state
        return server

    result = RunEngine(tmp_path / "runs").run(Plan("acquire", {}, body, needs_device=False), control=control)
    assert outcome["cli"].exit_code == 2 and "no reply" in outcome["cli"].stderr
    assert result.status == "completed"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_recording_monitor_run_as_a_script_s_background_job_stops_on_a_signal_with_its_file_whole(
    live_run, tmp_path, signum
):
    """`spinlab monitor ... --record FILE &` in a script starts with SIGINT ignored (POSIX shells do
    that to background jobs): `kill -INT` and `kill -TERM` still stop it, and the recording is
    closed whole (before, SIGTERM ended the process with its buffered tail unwritten)."""
    record = tmp_path / "stream.monrec"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from spinlab.cli import main; main()", "monitor", live_run.events.endpoint]
        + ["--json", "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        for line in proc.stdout:  # the late joiner's replays, up to the waveform preview
            if json.loads(line)["topic"] == "preview":
                break
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and f"recorded to {record}" in err, err
        recorded = {m.topic: m for m in read_recording(record)}
        assert {"start", "progress", "preview"} <= set(recorded)
        np.testing.assert_array_equal(recorded["preview"].arrays["samples"], np.linspace(0, 1, 20_000))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
