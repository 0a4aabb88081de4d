"""Signals and hard kills, the way they happen in a lab: `spinlab acquire` in its own process on a
station served by `spinlab emulate` over TCP, stopped by a real signal mid-acquisition. The
outputs are read back from the emulated instruments over their own sockets."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from tcp_helpers import (
    BIAS_A,
    RAMP_STEP_A,
    acquire_args,
    ask,
    assert_outputs_off_and_ramped,
    emulator,
    rows,
    spinlab_process,
    station,
    wait_for_steps,
    write_station,
)

__all__ = ["emulator", "station"]  # fixtures, used by name

#: Each run records 30 steps; the signal comes after 5, so the resume has most of them to do.
RUN_S = 3e-3


@pytest.fixture(scope="module")
def reference(tmp_path_factory, emulator):
    """The same acquisition, not interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = spinlab_process(*acquire_args(write_station(tmp, emulator), tmp / "runs", RUN_S))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return rows(Path(json.loads(out.splitlines()[-1])["run_dir"]))


@pytest.mark.parametrize(
    "signum",
    # SIGHUP takes SIGTERM's path through the same handler: `.ci/run` runs it with the slow checks
    [signal.SIGINT, signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_ramps_the_bias_down_switches_the_awg_off_and_the_run_resumes(
    tmp_path, emulator, station, reference, signum
):
    runs = tmp_path / "runs"
    proc = spinlab_process(*acquire_args(station, runs, RUN_S))
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

    resumed = spinlab_process("resume", str(run_dir), "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    got = rows(run_dir)
    np.testing.assert_array_equal(got["drive_V"], reference["drive_V"])
    np.testing.assert_array_equal(got["conditions"], reference["conditions"])
    np.testing.assert_allclose(got["response_V"], reference["response_V"], rtol=0, atol=1e-12)


def test_sigkill_loses_no_completed_step_and_the_next_open_ramps_the_bias_down(
    tmp_path, emulator, station, reference
):
    runs = tmp_path / "runs"
    proc = spinlab_process(*acquire_args(station, runs, RUN_S))
    run_dir = wait_for_steps(runs, 5, proc)
    proc.kill()  # SIGKILL: nothing runs after it, the bias stays on
    proc.wait(timeout=20)
    assert ask(emulator["source"], "OUTP?") == "1"
    with h5py.File(run_dir / "run.h5") as f:  # the run file opens with every completed step
        assert f.attrs["status"] == "running"
        assert f["drive_V"].shape[0] >= 5
    ask(emulator["source"], "DIAG:CURR:LOG:CLE;*OPC?")
    resumed = spinlab_process("resume", str(run_dir), "--json")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    got = rows(run_dir)
    np.testing.assert_array_equal(got["drive_V"], reference["drive_V"])
    np.testing.assert_allclose(got["response_V"], reference["response_V"], rtol=0, atol=1e-12)
    # opening the station found the source on at 7.5 mA and ramped it down before configuring
    levels = [float(v) for v in ask(emulator["source"], "DIAG:CURR:LOG?").split(",") if v]
    first_down = levels[: levels.index(0.0) + 1]
    assert first_down[0] < BIAS_A and np.abs(np.diff([BIAS_A, *first_down])).max() <= RAMP_STEP_A * (1 + 1e-9)
    assert_outputs_off_and_ramped(emulator, start_A=BIAS_A)
