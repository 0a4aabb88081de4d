"""Signals and hard kills, the way they happen in a lab: `spinlab acquire` in its own process on a
station served by `spinlab emulate` over TCP, stopped by a real signal mid-acquisition. The
outputs are read back from the emulated instruments over their own sockets."""
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

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from spinlab.cli import main; main()"]
RAMP_STEP_A = 0.5e-3
BIAS_A = 7.5e-3


def _spinlab(*args, **kwargs):
    return subprocess.Popen([*CLI, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


@pytest.fixture(scope="module")
def emulator():
    """Noise-free emulated instruments on TCP (so a resumed run can be compared sample by sample)."""
    proc = _spinlab("emulate", "--awg-port", "0", "--scope-port", "0", "--source-port", "0",
                    "--device", "sim:vortex?noise=0", "--scope-noise-V", "0", "--json")
    try:
        resources = json.loads(proc.stdout.readline())["resources"]
        yield resources
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def ask(resource: str, query: str) -> str:
    """One SCPI query over a raw socket (``TCPIP::HOST::PORT::SOCKET``)."""
    _, host, port, _ = resource.split("::")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(query.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "the emulator closed the connection"
            data += chunk
    return data.decode().strip()


def write_station(directory: Path, emulator) -> Path:
    """The built-in emulated station, but reached over TCP through pyvisa-py, with a ramp."""
    text = (ROOT / "instruments" / "stations" / "emulated.toml").read_text()
    text = text.replace('visa_library = "emulated"', 'visa_library = "@py"')
    for role in ("awg", "scope", "source"):
        old = next(line for line in text.splitlines() if line.startswith(f"{role} = "))
        text = text.replace(old, f'{role} = "{emulator[role]}"')
    text = text.replace("[source]\n", f"[source]\nramp_step_A = {RAMP_STEP_A}\nramp_pause_s = 0.001\n")
    path = directory / "tcp-station.toml"
    path.write_text(text)
    return path


@pytest.fixture
def station(tmp_path, emulator):
    ask(emulator["source"], "DIAG:CURR:LOG:CLE;*CLS;*OPC?")
    return write_station(tmp_path, emulator)


def acquire_args(station: Path, runs: Path, duration_s: float = 6e-3) -> list[str]:
    return ["acquire", "--device", f"bench:{station}", "--duration", str(duration_s),
            "--record-s", "1e-4", "--bias-A", str(BIAS_A), "--runs-dir", str(runs), "--seed", "5",
            "--json"]


def wait_for_steps(runs: Path, n: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> Path:
    """The run directory once its journal holds ``n`` completed steps."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in runs.glob("*/journal.spinlab"):
            events = [r for r in journal.read(path) if r.get("doc") == "event"]
            if len(events) >= n:
                return path.parent
        time.sleep(0.05)
    raise AssertionError(f"no run reached {n} steps within {timeout_s} s")


def assert_outputs_off_and_ramped(emulator):
    assert ask(emulator["awg"], "OUTP1?") == "0"
    assert ask(emulator["source"], "OUTP?") == "0"
    assert float(ask(emulator["source"], "SOUR:CURR?")) == 0.0
    levels = [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]
    assert max(levels) == pytest.approx(BIAS_A)
    assert levels[-1] == 0.0
    steps = np.abs(np.diff([0.0, *levels]))
    assert steps.max() <= RAMP_STEP_A * (1 + 1e-9), f"the bias was stepped: {levels}"


def rows(run_dir: Path) -> dict[str, np.ndarray]:
    with h5py.File(run_dir / "run.h5") as f:
        return {name: f[name][()] for name in ("drive_V", "response_V", "conditions")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, emulator):
    """The same acquisition, not interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = _spinlab(*acquire_args(write_station(tmp, emulator), tmp / "runs"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return rows(Path(json.loads(out.splitlines()[-1])["run"]))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_ramps_the_bias_down_switches_the_awg_off_and_the_run_resumes(
        tmp_path, emulator, station, reference, signum):
    runs = tmp_path / "runs"
    proc = _spinlab(*acquire_args(station, runs))
    run_dir = wait_for_steps(runs, 5, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "spinlab resume" in err
    assert "Traceback" not in err
    assert_outputs_off_and_ramped(emulator)
    with h5py.File(run_dir / "run.h5") as f:  # opens, says what happened, keeps every step
        assert f.attrs["status"] == "interrupted"
        recorded = f["drive_V"].shape[0]
        assert recorded >= 5 and recorded == len(f["engine/events"])

    resumed = _spinlab("resume", str(run_dir), "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    got = rows(run_dir)
    np.testing.assert_array_equal(got["drive_V"], reference["drive_V"])
    np.testing.assert_array_equal(got["conditions"], reference["conditions"])
    np.testing.assert_allclose(got["response_V"], reference["response_V"], rtol=0, atol=1e-12)


def test_sigkill_loses_no_completed_step_and_the_next_open_ramps_the_bias_down(
        tmp_path, emulator, station, reference):
    runs = tmp_path / "runs"
    proc = _spinlab(*acquire_args(station, runs))
    run_dir = wait_for_steps(runs, 5, proc)
    proc.kill()  # SIGKILL: nothing runs after it, the bias stays on
    proc.wait(timeout=20)
    assert ask(emulator["source"], "OUTP?") == "1"
    with h5py.File(run_dir / "run.h5") as f:  # the run file opens with every completed step
        assert f.attrs["status"] == "running"
        assert f["drive_V"].shape[0] >= 5
    ask(emulator["source"], "DIAG:CURR:LOG:CLE;*OPC?")
    resumed = _spinlab("resume", str(run_dir), "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    got = rows(run_dir)
    np.testing.assert_array_equal(got["drive_V"], reference["drive_V"])
    np.testing.assert_allclose(got["response_V"], reference["response_V"], rtol=0, atol=1e-12)
    # opening the station found the source on at 7.5 mA and ramped it down before configuring
    levels = [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]
    first_down = levels[: levels.index(0.0) + 1]
    assert first_down[0] < BIAS_A and np.abs(np.diff([BIAS_A, *first_down])).max() <= RAMP_STEP_A * (1 + 1e-9)
    assert_outputs_off_and_ramped(emulator)
