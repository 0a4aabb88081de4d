"""Work beside the device (spinlab.engine.beside): done while the run drives the device, its
progress sent by the run thread, its error the run's, and abandoned (not waited for) by a run
that stops."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from spinlab.engine import Plan, RunEngine
from spinlab.engine.beside import Beside
from spinlab.errors import RunInterrupted
from spinlab.testing import Doubler
from spinlab.waveform import Waveform


def counting(n: int, pause_s: float):
    """Work with one phase, ``fit``, of ``n`` steps; its value is the thread it ran on."""

    def work(phase):
        report = phase("fit")
        for i in range(n):
            time.sleep(pause_s)
            report(i + 1, n)
        return threading.current_thread().name

    return work


def measure_three(ctx, beside: Beside) -> None:
    for i in range(3):
        ctx.measure("device", lambda dev: {"x": dev.respond(Waveform(np.full(8, 0.1), 1e-9, "V")).samples})
        ctx.progress(i + 1, 3, stage="device")
        beside.relay()


def test_work_beside_the_device_reports_through_the_run_thread_and_returns_its_value(tmp_path):
    progress, threads = [], set()

    def subscriber(name, doc):
        if name == "progress":
            progress.append((doc["stage"], doc["done"], doc["total"]))
            threads.add(threading.current_thread().name)

    def body(ctx):
        with Beside(ctx, counting(4, 0.01)) as beside:
            measure_three(ctx, beside)
            return {"worked_on": beside.result()}

    result = RunEngine(tmp_path).run(Plan("beside", {}, body), Doubler(), subscribers=[subscriber])
    assert result.status == "completed" and result.summary == {"worked_on": "spinlab-beside"}
    assert ("fit", 4, 4) in progress and [p for p in progress if p[0] == "device"][-1] == ("device", 3, 3)
    assert threads == {threading.current_thread().name}  # never the work's own thread


def test_an_error_in_the_work_is_the_runs_error(tmp_path):
    def broken(phase):
        raise ValueError("singular readout")

    def body(ctx):
        with Beside(ctx, broken) as beside:
            measure_three(ctx, beside)
            return {"value": beside.result()}

    with pytest.raises(ValueError, match="singular readout"):
        RunEngine(tmp_path).run(Plan("beside", {}, body), Doubler())


def test_a_run_that_stops_does_not_wait_for_the_work_and_the_work_ends_at_its_next_report(tmp_path):
    device = Doubler()

    def body(ctx):
        with Beside(ctx, counting(600, 0.05)):  # 30 s of work
            time.sleep(0.2)
            raise RunInterrupted(signal.SIGINT)

    t0 = time.monotonic()
    with pytest.raises(RunInterrupted):
        RunEngine(tmp_path).run(Plan("beside", {}, body), device)
    assert time.monotonic() - t0 < 5 and device.outputs_off_calls >= 1
    deadline = time.monotonic() + 2
    while any(t.name == "spinlab-beside" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "spinlab-beside" for t in threading.enumerate())
