"""A stop reaches every thread that drives instruments: `spinlab twin train` records in a worker
thread while it trains, on a station served by `spinlab emulate` over TCP. A signal (or the end
of the run) stops that thread within one AWG record; only then do the outputs go off, and the
bias source's current log never rises after it was ramped down."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from tcp_helpers import (
    BIAS_A,
    ask,
    assert_outputs_off_and_ramped,
    emulator,
    spinlab_process,
    station,
    wait_for_steps,
)

from spinlab import Waveform
from spinlab.engine import Plan, RunEngine, journal
from spinlab.errors import InstrumentError, RunInterrupted
from spinlab.instruments.bench import open_bench
from spinlab.protocols import twin_train
from spinlab.twin.model import TwinArchitecture

__all__ = ["emulator", "station"]  # fixtures, used by name

BIASES_A = (6.5e-3, 7.5e-3, 8.5e-3)
RECORD_S = 1e-3  # 10,000 samples at 100 ns: one drive per AWG record (memory below)
REPEATS = 8  # a held-out batch is 3 x 8 AWG records: seconds of work in one step
AWG_MEMORY = 20_000
#: what "within 2 s of the signal" allows on top of one record (the issue's bound)
STOP_S = 2.0


def short_records(station: Path, tmp: Path) -> Path:
    """The TCP station with an AWG memory of one drive, so a step is many short records."""
    path = tmp / "short-records.toml"
    path.write_text(station.read_text().replace("[awg]\n", f"[awg]\nmemory_samples = {AWG_MEMORY}\n"))
    return path


def train_args(station: Path, tmp: Path, *, target: float = 0.001) -> list[str]:
    return [
        "twin",
        "train",
        "--device",
        f"bench:{station}",
        "--bias-A",
        ",".join(map(str, BIASES_A)),
        "--record-s",
        str(RECORD_S),
        "--validation-repeats",
        str(REPEATS),
        "--validation-every",
        "2",
        "--target-nrmse",
        str(target),
        "--max-duration",
        "5",
        "--max-steps",
        "20000",
        "--hidden",
        "16",
        "--validate-every",
        "50",
        "--out",
        str(tmp / "twin.pt"),
        "--seed",
        "2",
        "--runs-dir",
        str(tmp / "runs"),
    ]


def record_wall_s(start: dict, first: dict) -> float:
    """Wall time of one AWG record: the first (held-out) step over its 3 x REPEATS records."""
    return (first["time"] - dt.datetime.fromisoformat(start["started"]).timestamp()) / (3 * REPEATS)


def current_levels(emulator) -> list[float]:
    return [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]


def assert_never_re_energised(emulator) -> None:
    """Outputs off, and once the bias was ramped down to zero it never rose again."""
    assert ask(emulator["awg"], "OUTP1?") == "0"
    assert ask(emulator["source"], "OUTP?") == "0"
    levels = current_levels(emulator)
    on = next(i for i, level in enumerate(levels) if level)
    down = next(i for i in range(on, len(levels)) if levels[i] == 0.0)
    assert not any(levels[down:]), f"the bias rose again after it was ramped down: {levels[down:]}"


def stop_trial(tmp: Path, emulator, station: Path, signals: list[int], gap_s: float = 0.3) -> float:
    """Train, signal once the worker records (``signals`` ``gap_s`` apart); the stop latency: from
    the first signal until the CLI says the run stopped, outputs off (the interpreter's own
    teardown after that, seconds on a loaded machine, is not counted)."""
    tmp.mkdir(exist_ok=True)
    proc = spinlab_process(*train_args(short_records(station, tmp), tmp))
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stderr))
    reader.start()
    try:
        run_dir = wait_for_steps(tmp / "runs", 2, proc, timeout_s=120)
        time.sleep(1.0)  # the worker is inside a held-out step, the trainer trains
        sent = time.monotonic()
        for n, signum in enumerate(signals):
            if n:
                time.sleep(gap_s)
            proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    err = "".join(line for _, line in lines)
    # a second Ctrl-C after the stop completed (outputs off) only shortens the interpreter's teardown
    assert proc.returncode == 128 + signals[0], err  # a late signal does not change the status
    assert "interrupted by" in err
    assert "Traceback" not in err
    assert "could not" not in err and "INTERRUPTED" not in err, err  # no fight over the bench
    assert_never_re_energised(emulator)
    latency = next(t for t, line in lines if "interrupted by" in line) - sent
    records = journal.read(run_dir / "journal.spinlab")
    record_s = record_wall_s(*(next(r for r in records if r.get("doc") == doc) for doc in ("start", "event")))
    assert latency < STOP_S + record_s, (latency, record_s)
    return latency


KINDS = {
    "SIGINT": [signal.SIGINT],
    "double SIGINT": [signal.SIGINT, signal.SIGINT],
    "SIGTERM": [signal.SIGTERM],
}


@pytest.mark.parametrize(
    "signals",
    # SIGTERM stops the thread the way SIGINT does: `.ci/run` runs it with the slow checks
    [pytest.param(v, marks=pytest.mark.slow) if k == "SIGTERM" else v for k, v in KINDS.items()],
    ids=list(KINDS),
)
def test_a_signal_stops_the_acquisition_thread_before_the_outputs_go_off(
    tmp_path, emulator, station, signals
):
    stop_trial(tmp_path, emulator, station, signals)  # a second Ctrl-C lands while it stops


@pytest.mark.slow
def test_twenty_stops_of_twin_training_never_re_energise_the_bias(tmp_path, emulator, station):
    """The issue's trials: single and double SIGINT (0.5 s apart, as reported, and sooner:
    during the stop) and SIGTERM."""
    latencies = []
    for trial in range(20):
        ask(emulator["source"], "DIAG:CURR:LOG:CLE;*CLS;*OPC?")
        kind = list(KINDS.values())[trial % 3]
        gap_s = (0.5, 0.2, 0.05)[trial // 3 % 3]
        latencies.append(stop_trial(tmp_path / str(trial), emulator, station, kind, gap_s))
    print(
        f"stop latency over 20 trials: max {max(latencies):.2f} s, mean "
        f"{sum(latencies) / len(latencies):.2f} s"
    )


def test_a_completed_training_leaves_no_thread_driving_the_bench(tmp_path, emulator, station, monkeypatch):
    """The target is met while the worker is inside a held-out step: the run ends within one
    record of that, not at the end of the step, and nothing drives the bench after it."""
    monkeypatch.chdir(tmp_path)
    met: list[float] = []
    docs: dict[str, dict] = {}

    def watch(name, doc):
        docs.setdefault(name, doc)
        if name == "progress" and doc.get("stage") == "training" and not met:
            met.append(time.monotonic())

    acquire = {
        "duration_s": 5.0,
        "record_s": RECORD_S,
        "conditions": {"bias_A": BIASES_A},
        "validation_every": 2,
        "validation_repeats": REPEATS,
    }
    plan = twin_train.plan(
        out=str(tmp_path / "twin.pt"),
        acquire=acquire,
        architecture=TwinArchitecture(hidden=16, condition_names=("bias_A",)).to_dict(),
        train={"target_nrmse": 1e9, "validate_every": 50},
    )
    result = RunEngine(tmp_path / "runs").run(
        plan, f"bench:{short_records(station, tmp_path)}", seed=2, subscribers=[watch]
    )
    ended = time.monotonic()
    assert result.status == "completed" and result.summary["stop_reason"] == "target"
    assert not [t for t in threading.enumerate() if t.name == "twin-acquisition"]
    assert ended - met[0] < STOP_S + record_wall_s(docs["start"], docs["event"])
    assert_never_re_energised(emulator)


def test_ctrl_c_while_an_instrument_does_not_answer_at_open_interrupts_the_run(tmp_path, station):
    """The signal is held while the station opens; when the open then fails (the AWG never
    answers *IDN?), the held signal wins: exit 130, not a timeout error."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        text = station.read_text().replace("timeout_s = 10.0\n\n[wiring]", "timeout_s = 3.0\n\n[wiring]")
        awg = next(line for line in text.splitlines() if line.startswith("awg = "))
        station.write_text(text.replace(awg, f'awg = "TCPIP::127.0.0.1::{silent.getsockname()[1]}::SOCKET"'))
        proc = spinlab_process(
            "acquire",
            "--device",
            f"bench:{station}",
            "--duration",
            "1e-3",
            "--runs-dir",
            str(tmp_path / "runs"),
        )
        silent.settimeout(60)
        connection, _ = silent.accept()  # the bench is opening the AWG, which stays silent
        with connection:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "error:" not in err and "Traceback" not in err


def test_repeated_ctrl_c_while_the_bench_plays_never_cuts_its_outputs_off(tmp_path, emulator, station):
    """Five Ctrl-C 30 ms apart while `acquire` drives the bench from the run's own thread: the
    bench's own outputs-off is shielded like the engine's, so the log never says an output
    could not be switched off before it says the outputs are off."""
    args = ["--duration", "0.2", "--record-s", "1e-3", "--bias-A", str(BIAS_A), "--seed", "5"]
    proc = spinlab_process(
        "acquire", "--device", f"bench:{station}", *args, "--runs-dir", str(tmp_path / "runs")
    )
    try:
        wait_for_steps(tmp_path / "runs", 3, proc)
        for _ in range(5):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.03)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "could not" not in err and "Traceback" not in err, err
    assert "interrupted by SIGINT: outputs are off" in err
    assert_outputs_off_and_ramped(emulator)


# --- thread-safe links ---------------------------------------------------------------------------
def drives(n: int = 4) -> Waveform:
    return Waveform(np.random.default_rng(3).uniform(-0.2, 0.2, (n, 2000)), 1e-7)


def test_two_threads_driving_one_bench_take_turns(station, monkeypatch, tmp_path):
    """Each respond is whole: two threads at two biases get what each would get alone, and no
    instrument ever saw the other's SCPI mid-exchange (no fault, no retry)."""
    monkeypatch.setenv("SPINLAB_LOCK_DIR", str(tmp_path / "locks"))
    biases = (6.5e-3, 8.5e-3)
    with open_bench(str(station)) as bench:
        alone = {b: bench.respond(drives(), {"bias_A": b}).samples for b in biases}
        together: dict[float, list[np.ndarray]] = {b: [] for b in biases}

        def work(bias: float) -> None:
            for _ in range(3):
                together[bias].append(bench.respond(drives(), {"bias_A": bias}).samples)

        threads = [threading.Thread(target=work, args=(b,)) for b in biases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert bench.fault_log == []
    for bias in biases:
        assert len(together[bias]) == 3
        for got in together[bias]:
            np.testing.assert_allclose(got, alone[bias], rtol=0, atol=1e-12)


def test_a_closed_bench_refuses_every_use_and_never_reconnects(station, monkeypatch, tmp_path):
    monkeypatch.setenv("SPINLAB_LOCK_DIR", str(tmp_path / "locks"))
    bench = open_bench(str(station))
    bench.close()
    for link in bench.links.values():
        with pytest.raises(InstrumentError, match="is closed"):
            with link.step("driving after close"):
                pass
        with pytest.raises(InstrumentError, match="is closed"):
            link.reconnect(1.0)
    with pytest.raises(InstrumentError, match="closed"):
        bench.respond(drives(), {"bias_A": BIAS_A})


# --- a signal is never lost, whatever it surfaced as ---------------------------------------------
def signalled_plan(then):
    """A plan that signals its own process mid-body and lets ``then`` handle the interruption the
    way some libraries do (torch's ``load_state_dict`` wraps it, a broad ``except`` swallows it)."""

    def body(ctx):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except RunInterrupted as exc:
            then(ctx, exc)
        return {}

    return Plan("signalled", {}, body, needs_device=False)


def wrap(ctx, exc):
    raise RuntimeError("Error(s) in loading state_dict") from exc


def swallow(ctx, exc):
    ctx.checkpoint()  # the next checkpoint


@pytest.mark.parametrize("then", [wrap, swallow], ids=["wrapped", "swallowed"])
def test_a_signal_wins_over_the_error_it_surfaced_as(tmp_path, then):
    with pytest.raises(RunInterrupted) as info:
        RunEngine(tmp_path).run(signalled_plan(then))
    assert info.value.exit_code == 130
    with h5py.File(info.value.run_path / "run.h5") as f:
        assert f.attrs["status"] == "interrupted"
