"""Recorded data is never lost: a resume beside a live run, damaged journals, a changed station
and a full disk, each on a run of `spinlab acquire` in its own process over `spinlab emulate`
TCP. One interrupted run serves the module; each test damages its own copy of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from tcp_helpers import ROOT, acquire_args, emulator, rows, spinlab_process, wait_for_steps, write_station

from spinlab.engine import journal

__all__ = ["emulator"]  # fixture, used by name

KEPT = 20  # steps of the interrupted run (of 150)


def _events(run_dir: Path) -> list[dict]:
    with h5py.File(run_dir / "run.h5") as f:
        return [json.loads(line) for line in f["engine/events"][()]]


def _resume(run_dir: Path, *args: str) -> tuple[int, str, str]:
    proc = spinlab_process("resume", str(run_dir), "--json", *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, emulator):
    """An acquisition started with a relative station path, which a second `spinlab resume`
    tried to take over while it ran (held still meanwhile: a run that is slow, not finished),
    then stopped by SIGINT after ``KEPT`` steps."""
    tmp = tmp_path_factory.mktemp("interrupted")
    station = write_station(tmp, emulator)
    runs = tmp / "runs"
    proc = spinlab_process(*acquire_args(Path(os.path.relpath(station, ROOT)), runs, duration_s=1.5e-2))
    run_dir = wait_for_steps(runs, 3, proc)
    proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        intruder = spinlab_process("resume", str(run_dir))
        _, intruder_err = intruder.communicate(timeout=60)
        intruder_s = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_for_steps(runs, KEPT, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    return {
        "run_dir": run_dir,
        "station": station,
        "rows": rows(run_dir),
        "events": _events(run_dir),
        "intruder": (intruder.returncode, intruder_err, intruder_s),
    }


@pytest.fixture
def copy(tmp_path, interrupted):
    """This test's own copy of the interrupted run directory."""
    target = tmp_path / interrupted["run_dir"].name
    shutil.copytree(interrupted["run_dir"], target)
    return target


def _assert_kept(run_dir: Path, interrupted, n: int) -> None:
    """The first ``n`` steps are the interrupted run's own: same rows, same times (not measured again)."""
    got, before = rows(run_dir), interrupted["rows"]
    per_step = before["drive_V"].shape[0] // len(interrupted["events"])
    for name in before:
        np.testing.assert_array_equal(got[name][: n * per_step], before[name][: n * per_step])
    assert [e["time"] for e in _events(run_dir)[:n]] == [e["time"] for e in interrupted["events"][:n]]


def _record_offsets(path: Path) -> list[int]:
    """Start offset of every journal record."""
    raw, offsets, at = path.read_bytes(), [], len(journal.MAGIC)
    while at < len(raw):
        offsets.append(at)
        at += journal._HEAD.size + journal._HEAD.unpack_from(raw, at)[1]
    return offsets


def test_a_resume_beside_a_live_run_is_refused_at_once_and_the_run_keeps_every_step(interrupted):
    rc, err, seconds = interrupted["intruder"]
    assert rc == 2 and seconds < 10
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "is in use by PID" in err and "acquire" in err
    with h5py.File(interrupted["run_dir"] / "run.h5") as f:
        assert f.attrs["status"] == "interrupted"
        assert f["drive_V"].shape[0] == interrupted["rows"]["drive_V"].shape[0]
        assert len(f["engine/events"]) == len(interrupted["events"]) >= KEPT
    # the address names the station by its absolute path, though it was given relative
    with h5py.File(interrupted["run_dir"] / "run.h5") as f:
        assert f.attrs["address"] == f"bench:{interrupted['station']}"


def test_a_damaged_start_record_is_recovered_from_the_run_file_and_no_step_is_measured_again(
    copy, interrupted
):
    path = copy / "journal.spinlab"
    raw = bytearray(path.read_bytes())
    raw[46] ^= 0xFF  # inside the start document
    path.write_bytes(bytes(raw))
    n = len(interrupted["events"])
    rc, out, err = _resume(copy)
    assert rc == 0, err
    assert "start document recovered from run.h5" in err
    assert f"kept {n} steps (0 from the journal, {n} from run.h5); measuring again from step {n}" in err
    assert (copy / "journal.spinlab.damaged").read_bytes() == bytes(raw)  # the damaged one is kept
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    _assert_kept(copy, interrupted, n)


def test_a_damaged_start_record_with_no_run_file_to_recover_from_is_refused_and_nothing_changes(copy):
    path = copy / "journal.spinlab"
    raw = bytearray(path.read_bytes())
    raw[46] ^= 0xFF
    path.write_bytes(bytes(raw))
    (copy / "run.h5").write_bytes(b"not an HDF5 file")
    rc, _, err = _resume(copy)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no start document (bytes 16-" in err and "nothing was changed" in err
    assert path.read_bytes() == bytes(raw)
    assert (copy / "run.h5").read_bytes() == b"not an HDF5 file"


def test_a_damaged_record_mid_journal_keeps_the_later_steps_from_the_run_file(copy, interrupted):
    path = copy / "journal.spinlab"
    events = [i for i, r in enumerate(journal.read(path)) if r.get("doc") == "event"]
    offsets = _record_offsets(path)
    damaged = offsets[events[5]]  # the record of step 5
    raw = bytearray(path.read_bytes())
    raw[damaged + 40] ^= 0xFF
    path.write_bytes(bytes(raw))
    n = len(interrupted["events"])
    rc, out, err = _resume(copy)
    assert rc == 0, err
    assert f"journal damaged at bytes {damaged}-{len(raw)}" in err
    assert f"kept {n} steps (5 from the journal, {n - 5} from run.h5); measuring again from step {n}" in err
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    _assert_kept(copy, interrupted, n)


def test_a_torn_journal_tail_resumes_quietly_and_a_second_resume_meanwhile_is_refused(copy, interrupted):
    path = copy / "journal.spinlab"
    path.write_bytes(path.read_bytes()[:-7])  # the stop record, cut short
    first = spinlab_process("resume", str(copy), "--json")
    deadline = time.monotonic() + 30
    while not (copy / ".spinlab.lock").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    rc, _, err = _resume(copy)
    assert rc == 2 and "is in use by PID" in err and "Traceback" not in err, err
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "damaged" not in err and not (copy / "journal.spinlab.damaged").exists()
    n = len(interrupted["events"])
    assert f"kept {n} steps; measuring again from step {n}" in err
    _assert_kept(copy, interrupted, n)


def test_a_changed_station_file_is_refused_and_nothing_changes(copy, interrupted):
    station = interrupted["station"]
    text = station.read_text()
    before = {name: (copy / name).read_bytes() for name in ("journal.spinlab", "run.h5")}
    try:
        station.write_text(text.replace("response_gain = 1.0", "response_gain = 2.0"))
        rc, _, err = _resume(copy)
    finally:
        station.write_text(text)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{station} has changed since the run started" in err and "--force" in err
    assert {name: (copy / name).read_bytes() for name in before} == before


def test_resuming_a_bench_run_on_another_device_is_refused_in_one_line(copy):
    before = (copy / "journal.spinlab").read_bytes()
    rc, _, err = _resume(copy, "--device", "sim:vortex?noise=0")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the run was started on bench:" in err and "not sim:vortex?noise=0" in err
    assert (copy / "journal.spinlab").read_bytes() == before


def test_a_journal_length_field_past_the_end_of_the_file_reads_as_damage_without_allocating(tmp_path):
    path = tmp_path / "journal.spinlab"
    j = journal.Journal(path)
    j.append({"doc": "start", "run_id": "x"})
    j.close()
    with open(path, "ab") as fh:
        fh.write(journal._HEAD.pack(b"REC1", (1 << 40) - 1, 0) + b"\0" * 64)
    assert journal.read(path) == [{"doc": "start", "run_id": "x"}]
    found = journal.scan(path)
    assert found.size == found.end + journal._HEAD.size + 64 and found.records == journal.read(path)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (tmpfs), or a skip where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_fails_the_run_in_one_line_and_leaves_a_run_file_that_opens(
    tmp_path, emulator, small_disk
):
    station = write_station(tmp_path, emulator)
    args = acquire_args(station, small_disk, duration_s=1.5e-2)
    args[args.index("--record-s") + 1] = "1e-3"
    proc = spinlab_process(*args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "No space left on device" in err and "spinlab resume" in err, err
    assert len([line for line in err.splitlines() if "error" in line.lower()]) == 1, err
    (run_dir,) = (p for p in small_disk.iterdir() if p.is_dir())  # beside the catalog
    with h5py.File(run_dir / "run.h5") as f:  # opens, says what happened, holds whole steps only
        assert f.attrs["status"] == "failed"
        n = len(f["engine/events"])
        assert n >= 1 and f["drive_V"].shape[0] % n == 0 and f["response_V"].shape == f["drive_V"].shape
        recorded = f["drive_V"][()]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rc, out, err = _resume(run_dir)
    assert rc == 0, err
    kept = int(re.search(r"kept (\d+) steps", err).group(1))
    assert kept in (n, n + 1)  # the journal may hold the step whose run-file write failed
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    np.testing.assert_array_equal(rows(run_dir)["drive_V"][: len(recorded)], recorded)


def test_resuming_on_an_instrument_with_another_identity_is_refused_unless_forced(tmp_path):
    """Instruments swapped between the stop and the resume (another serial number): refused,
    nothing touched; ``force`` resumes anyway."""
    from spinlab.engine import RunEngine
    from spinlab.errors import ConfigError, RunInterrupted
    from spinlab.testing import Doubler, plan_lookup, steps_plan

    class Serial(Doubler):
        def __init__(self, serial):
            super().__init__()
            self.serial = serial

        def identity(self):
            return {**super().identity(), "instruments": {"awg": f"Keysight,33522B,{self.serial}"}}

    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path).run(steps_plan(6, fail_at=3, exc=RunInterrupted(2)), Serial("MY1"))
    path = caught.value.run_path
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with pytest.raises(
        ConfigError, match=r"instruments\.awg: 'Keysight,33522B,MY1' -> 'Keysight,33522B,MY2'"
    ):
        RunEngine(tmp_path, plans=plan_lookup(demo=steps_plan)).resume(path, Serial("MY2"))
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    engine = RunEngine(tmp_path, plans=plan_lookup(demo=steps_plan))
    assert engine.resume(path, Serial("MY2"), force=True).status == "completed"


def test_a_journal_with_a_damaged_header_is_rebuilt_from_the_run_file(tmp_path):
    """Even the journal's magic: every step run.h5 holds is kept; the damaged journal too."""

    from spinlab.engine import Plan, RunEngine
    from spinlab.errors import RunInterrupted
    from spinlab.testing import plan_lookup

    def plan(stop_at=None):
        def body(ctx):
            for i in range(5):
                if i == stop_at:
                    raise RunInterrupted(2)
                ctx.record("s", {"x": np.full((1, 3), float(i))})

        return Plan("demo", {}, body, needs_device=False)

    with pytest.raises(RunInterrupted) as caught:
        RunEngine(tmp_path).run(plan(stop_at=3))
    path = caught.value.run_path
    raw = bytearray((path / "journal.spinlab").read_bytes())
    raw[3] ^= 0x01
    (path / "journal.spinlab").write_bytes(bytes(raw))
    assert RunEngine(tmp_path, plans=plan_lookup(demo=plan)).resume(path).status == "completed"
    with h5py.File(path / "run.h5") as f:
        np.testing.assert_array_equal(f["x"][:, 0], [0, 1, 2, 3, 4])
    assert (path / "journal.spinlab.damaged").read_bytes() == bytes(raw)
