"""The bench owns its station: it reads the outputs back before configuring (a source left on is
ramped down, never stepped), locks the instruments against a second process, clears stale
errors, and answers instrument faults with retries, reconnection and restored state - or one
clear error, within seconds, outputs off."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from spinlab import Waveform, open_device
from spinlab.errors import ConfigError, InstrumentError, InstrumentFaultError, StationBusyError
from spinlab.instruments.bench import open_bench
from spinlab.instruments.station import STATIONS_DIR
from spinlab.sim_backends.emulated import EmulatedLab, serve_tcp

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sim:vortex?noise=0"
DT = 100e-9
BIAS = 7.5e-3
STEP = 0.5e-3


@pytest.fixture(autouse=True)
def private_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINLAB_LOCK_DIR", str(tmp_path / "locks"))


def station_text(
    resources: dict[str, str] | None = None, *, timeout_s: float = 10.0, ramp: bool = True
) -> str:
    """The emulated station, optionally reaching instruments over TCP (pyvisa-py)."""
    text = (STATIONS_DIR / "emulated.toml").read_text()
    text = text.replace("timeout_s = 10.0\n\n[wiring]", f"timeout_s = {timeout_s}\n\n[wiring]")
    if ramp:
        text = text.replace("compliance_V = 2.0", f"compliance_V = 2.0\nramp_step_A = {STEP}")
    if resources:
        text = text.replace('visa_library = "emulated"', 'visa_library = "@py"')
        for role, default in (
            ("awg", "TCPIP::127.0.0.1::5025::SOCKET"),
            ("scope", "TCPIP::127.0.0.1::5026::SOCKET"),
            ("source", "GPIB0::24::INSTR"),
            ("analyser", "GPIB0::20::INSTR"),
            ("magnet", EmulatedLab.MAGNET_RESOURCE),
            ("gaussmeter", EmulatedLab.GAUSSMETER_RESOURCE),
        ):
            text = text.replace(f'{role} = "{default}"', f'{role} = "{resources[role]}"')
    return text


def write_station(tmp_path: Path, text: str, name: str = "station.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def tcp_lab(tmp_path):
    """An emulated lab served over TCP, and a ramped station file that reaches it."""
    lab = EmulatedLab(open_device(MODEL), seed=0)
    with serve_tcp(lab, "127.0.0.1", 0, 0, 0, magnet=0, gaussmeter=0) as servers:
        yield lab, servers, write_station(tmp_path, station_text(servers.resources, timeout_s=1.0))


def assert_ramped(levels: list[float], start: float, stop: float) -> None:
    steps = np.abs(np.diff([start] + levels))
    assert levels and np.max(steps) <= STEP + 1e-12, levels
    assert levels[-1] == pytest.approx(stop, abs=1e-15)


def respond(bench, n: int = 400, bias: float = BIAS):
    drive = np.random.default_rng(1).uniform(-0.3, 0.3, n)
    return bench.respond(Waveform(drive, DT), {"bias_A": bias}).samples


# --- read back before configuring ----------------------------------------------------------------
def test_a_source_left_on_is_ramped_down_when_the_station_opens(tcp_lab, caplog):
    lab, servers, path = tcp_lab
    lab.source.write(b":SOUR:FUNC CURR;:SOUR:CURR 7.5e-3;:OUTP ON\n")  # what a crashed run leaves
    lab.awg.write(b"OUTP1 ON\n")
    lab.source.current_log.clear()
    with caplog.at_level(logging.WARNING, logger="spinlab.bench"):
        with open_bench(path) as bench:
            opened = list(lab.source.current_log)
            assert not lab.source.output_on and not lab.awg.output_on
            lab.source.current_log.clear()
            respond(bench)
            assert_ramped(list(lab.source.current_log), 0.0, BIAS)  # and up again, in steps
    assert_ramped(opened, BIAS, 0.0)  # 7.0, 6.5, ... 0 mA: never the old 7.5 -> 0 step
    assert len(opened) >= 15
    assert "bias source was on at 0.0075 A" in caplog.text and "AWG output was on" in caplog.text


def test_after_sigkill_the_next_open_ramps_the_bias_down(tcp_lab):
    """A killed run cannot switch anything off; the next one must not step the current."""
    lab, servers, path = tcp_lab
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time, numpy as np
        from spinlab import Waveform
        from spinlab.instruments.bench import open_bench
        bench = open_bench({path!r})
        bench.respond(Waveform(np.zeros(200), 1e-7), {{"bias_A": {BIAS}}})
        print("biased", flush=True)
        time.sleep(60)
        """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout.readline().strip() == "biased"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert lab.source.output_on and lab.source.output_current_A() == pytest.approx(BIAS)  # left on
    lab.source.current_log.clear()
    with open_bench(path):  # the OS released the dead holder's locks
        assert_ramped(list(lab.source.current_log[:-2]), BIAS, 0.0)
        assert not lab.source.output_on


# --- the station is exclusive --------------------------------------------------------------------
def test_a_second_process_on_the_station_is_refused_at_once_naming_the_first(tmp_path):
    emulate = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from spinlab.cli import main; main()",
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
            "--device",
            MODEL,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    holder = None
    try:
        resources = dict(emulate.stdout.readline().split() for _ in range(6))
        path = write_station(tmp_path, station_text(resources))
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
            import sys
            from spinlab.instruments.bench import open_bench
            from spinlab.locks import current_run
            with current_run("run-A"), open_bench({path!r}):
                print("holding", flush=True)
                sys.stdin.read()
            """),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert holder.stdout.readline().strip() == "holding"
        t = time.monotonic()
        with pytest.raises(StationBusyError) as info:
            open_bench(path)
        elapsed = time.monotonic() - t
        message = str(info.value)
        assert elapsed < 1.0
        assert f"PID {holder.pid}" in message and "run run-A" in message and "\n" not in message
        holder.stdin.close()  # the first process ends: the station is free again
        assert holder.wait(timeout=20) == 0
        with open_bench(path) as bench:
            assert bench.locks is not None
    finally:
        for proc in (holder, emulate):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_locks_are_released_when_opening_fails(tcp_lab, tmp_path):
    import socket

    lab, servers, path = tcp_lab
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"TCPIP::127.0.0.1::{probe.getsockname()[1]}::SOCKET"
    broken = write_station(tmp_path, station_text({**servers.resources, "scope": dead}), "broken.toml")
    for _ in range(2):  # the second attempt is not "busy": nothing was left held
        with pytest.raises(InstrumentError, match=f"cannot reach the oscilloscope at {dead}"):
            open_bench(broken)
    with open_bench(path):  # the AWG and source locks went too
        pass


def test_emulated_stations_take_no_lock():
    with open_bench("emulated", device=MODEL) as a, open_bench("emulated", device=MODEL) as b:
        assert a.locks is None and b.locks is None


# --- stale errors, silent and vanished instruments ----------------------------------------------
def test_stale_errors_are_cleared_and_logged_when_the_station_opens(tcp_lab, caplog):
    from spinlab.sim_backends.emulated.scpi_syntax import ScpiError

    lab, servers, path = tcp_lab
    lab.awg.push_error(ScpiError(-222, "left over"))
    lab.source.push_error(ScpiError(-113, "left over"))
    with caplog.at_level(logging.WARNING, logger="spinlab.bench"):
        with open_bench(path) as bench:
            respond(bench)
            assert bench.last_timing["retries"] == 0 and bench.fault_log == []
    assert "cleared 1 stale error(s) from the AWG's queue when the station opened: -222" in caplog.text
    assert "cleared 1 stale error(s) from the bias source's queue" in caplog.text


@pytest.mark.parametrize(
    "instrument,role", [("scope", "oscilloscope"), ("awg", "AWG"), ("source", "bias source")]
)
def test_a_silent_instrument_is_reported_within_seconds_of_its_timeout(tmp_path, instrument, role):
    timeout_s = 0.5
    path = write_station(tmp_path, station_text(timeout_s=timeout_s, ramp=False))
    with open_bench(path, device=MODEL) as bench:
        respond(bench)
        bench.lab.inject(f"silent@{instrument}:count=inf")
        t = time.monotonic()
        with pytest.raises(InstrumentFaultError) as info:
            respond(bench)
        elapsed = time.monotonic() - t
        assert elapsed < timeout_s + 3.0
        message = str(info.value)
        assert f"the {role} at" in message and "stopped answering" in message and "\n" not in message
        assert not bench.lab.awg.output_on and not bench.lab.source.output_on


def test_a_vanished_instrument_is_one_error_not_a_traceback(tcp_lab):
    lab, servers, path = tcp_lab
    with open_bench(path) as bench:
        respond(bench)
        servers.close()  # the instruments are gone (connections reset)
        with pytest.raises(InstrumentFaultError, match="stopped answering.*(Broken pipe|reset|refused)"):
            respond(bench)


# --- faults the bench survives ------------------------------------------------------------------
def test_a_reset_source_is_ramped_up_again_not_stepped(tmp_path):
    path = write_station(tmp_path, station_text(timeout_s=1.0))
    with open_bench(path, device=MODEL, seed=0, scope_noise_V=0.0) as bench:
        first = respond(bench)
        bench.lab.inject("reset@source")  # the next message finds the source reset (off)
        second = respond(bench)
        log = list(bench.lab.source.current_log)  # since the reset
    assert bench.last_timing["retries"] >= 1
    assert "was it reset?" in " ".join(f["error"] for f in bench.fault_log)
    assert_ramped(log, 0.0, BIAS)
    np.testing.assert_array_equal(first, second)  # the record was re-run, whole


def test_a_damaged_upload_is_caught_before_it_is_played(tmp_path):
    path = write_station(tmp_path, station_text(timeout_s=1.0))
    with open_bench(path, device=MODEL, seed=0, faults="corrupt@awg:at=2") as bench:
        respond(bench)
        respond(bench)
        assert bench.fault_log[0]["step"] == "uploading the record"
        assert "damaged in transfer" in bench.fault_log[0]["error"]
        assert bench.lab.awg.trigger_count == 2  # the damaged arb was never triggered


def test_bench_options_from_the_address():
    with open_device(
        "bench:emulated?faults=delay@scope:s=0.01&scope_noise_V=0&device=sim:vortex?noise=0"
    ) as b:
        assert b.identity()["emulator"]["faults"] == "delay@scope:s=0.01"
        assert b.lab.scope_noise_V == 0.0
    with pytest.raises(ConfigError, match="unknown kind"):
        open_device("bench:emulated?faults=melt@awg")


def test_faults_are_for_emulated_stations_only(tcp_lab):
    lab, servers, path = tcp_lab
    with pytest.raises(ConfigError, match="emulated stations only"):
        open_bench(path, faults="drop@awg")


def test_declared_awg_model_must_match_the_instrument(tmp_path):
    text = station_text().replace(
        "max_sample_rate_Hz = 160e6", 'model = "33600A"\nmax_sample_rate_Hz = 160e6'
    )
    with pytest.raises(ConfigError, match=r"\[awg\] model = '33600A', but the AWG .* is a 33500B"):
        open_bench(write_station(tmp_path, text), device=MODEL)


def test_fault_log_reads_as_json(tmp_path):
    path = write_station(tmp_path, station_text(timeout_s=0.3))
    with open_bench(path, device=MODEL, faults="silent@scope:at=5") as bench:
        respond(bench)
        entry = json.loads(json.dumps(bench.fault_log))[0]
    assert entry["instrument"] == "oscilloscope" and "Timeout" in entry["error"]
