"""Stations served by `spinlab emulate` over TCP, for tests that stop, kill or damage runs the
way it happens in a lab: the CLI in its own process, outputs read back over the instruments' own
sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from spinlab.engine import journal

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from spinlab.cli import main; main()"]
RAMP_STEP_A = 0.5e-3
BIAS_A = 7.5e-3


def spinlab_process(*args, **kwargs):
    return subprocess.Popen(
        [*CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


@contextlib.contextmanager
def emulated_instruments(*options: str) -> Iterator[tuple[subprocess.Popen, dict[str, str]]]:
    """``spinlab emulate`` in its own process on free ports: (process, VISA resources by role);
    stopped with Ctrl-C (then killed) on exit."""
    proc = spinlab_process(
        "emulate",
        "--awg-port",
        "0",
        "--scope-port",
        "0",
        "--source-port",
        "0",
        "--magnet-port",
        "0",
        "--gaussmeter-port",
        "0",
        "--analyser-port",
        "0",
        *options,
        "--json",
    )
    try:
        yield proc, json.loads(proc.stdout.readline())["resources"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def emulator():
    """Noise-free emulated instruments on TCP (so a resumed run can be compared sample by sample)."""
    with emulated_instruments("--device", "sim:vortex?noise=0", "--scope-noise-V", "0") as (_, resources):
        yield resources


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
    for role in ("awg", "scope", "source", "magnet", "gaussmeter", "analyser"):
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


def acquire_args(station: Path, runs: Path, duration_s: float = 3e-2) -> list[str]:
    """`spinlab acquire` on ``station``: records of 0.1 ms (about 12 ms each over TCP), 300 of
    them by default, so a test that stops the run after a few steps stops it mid-run."""
    return [
        "acquire",
        "--device",
        f"bench:{station}",
        "--duration",
        str(duration_s),
        "--record-s",
        "1e-4",
        "--bias-A",
        str(BIAS_A),
        "--runs-dir",
        str(runs),
        "--seed",
        "5",
        "--json",
    ]


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


def assert_outputs_off_and_ramped(emulator, start_A=0.0):
    """AWG and source off, and every level the source was given since ``start_A`` at most one
    ramp step from the last."""
    assert ask(emulator["awg"], "OUTP1?") == "0"
    assert ask(emulator["source"], "OUTP?") == "0"
    assert float(ask(emulator["source"], "SOUR:CURR?")) == 0.0
    levels = [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]
    assert max(levels) == pytest.approx(BIAS_A)
    assert levels[-1] == 0.0
    steps = np.abs(np.diff([start_A, *levels]))
    assert steps.max() <= RAMP_STEP_A * (1 + 1e-9), f"the bias was stepped: {levels}"


def rows(run_dir: Path) -> dict[str, np.ndarray]:
    with h5py.File(run_dir / "run.h5") as f:
        return {name: f[name][()] for name in ("drive_V", "response_V", "conditions")}
