"""The command line's boundary: whatever goes wrong reaches the user as one line that says what
and what to do, exit code 2 (signals keep 128 + N), never a traceback unless asked for with
SPINLAB_DEBUG=1 or --debug. Each test runs `spinlab` in its own process, as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from tcp_helpers import CLI, ROOT, wait_for_steps

SIM = ["--device", "sim:vortex", "--record-s", "1e-3"]


def spinlab(
    *args: str, tmp: Path, unprivileged: bool = False, debug: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the CLI; ``unprivileged``: as a user the file permissions apply to (root ignores them)."""
    env = {**os.environ, "HOME": str(tmp), "NUMBA_CACHE_DIR": str(tmp / "numba"), "MPLCONFIGDIR": str(tmp)}
    env.pop("SPINLAB_DEBUG", None)
    if debug:
        env["SPINLAB_DEBUG"] = "1"
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*prefix, *CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, after checking it is the only thing on stderr."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def shared_tmp():
    """A temporary directory an unprivileged user may reach and write to (pytest's tmp_path
    may sit in root's private directory)."""
    with tempfile.TemporaryDirectory(prefix="spinlab-cli-") as name:
        path = Path(name)
        (path / "numba").mkdir()
        for directory in (path, path / "numba"):
            directory.chmod(0o777)
        yield path


def test_a_runs_dir_spinlab_may_not_write_is_one_line_naming_it(shared_tmp):
    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o555)
    result = spinlab(
        "acquire",
        *SIM,
        "--duration",
        "2e-3",
        "--runs-dir",
        str(locked / "runs"),
        tmp=shared_tmp,
        unprivileged=True,
    )
    line = one_error_line(result)
    assert str(locked) in line and "Permission denied" in line and "--runs-dir" in line


def test_resuming_a_read_only_run_is_one_line_and_leaves_the_run_as_it_was(shared_tmp):
    runs = shared_tmp / "runs"
    proc = subprocess.Popen(
        [*CLI, "acquire", *SIM, "--duration", "1", "--runs-dir", str(runs)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = wait_for_steps(runs, 2, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    files = sorted(p for p in run_dir.iterdir() if p.is_file())
    before = {p.name: p.read_bytes() for p in files}
    for path in files:
        path.chmod(0o444)
    run_dir.chmod(0o555)  # a run copied from a read-only share
    try:
        result = spinlab("resume", str(run_dir), tmp=shared_tmp, unprivileged=True)
    finally:
        run_dir.chmod(0o755)
    line = one_error_line(result)
    assert "Permission denied" in line and str(run_dir) in line
    assert {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()} == before


@pytest.mark.parametrize("seed", [str(2**70), str(2**64), "-1"])
def test_a_seed_outside_0_to_2_64_is_refused_at_the_option(tmp_path, seed):
    result = spinlab(
        "acquire",
        *SIM,
        "--duration",
        "2e-3",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seed",
        seed,
        tmp=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--seed'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_largest_seed_runs_and_is_recorded(tmp_path):
    result = spinlab(
        "acquire",
        *SIM,
        "--duration",
        "2e-3",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seed",
        str(2**64 - 1),
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_a_config_integer_the_journal_cannot_hold_is_one_line_naming_the_setting(tmp_path):
    result = spinlab(
        "twin",
        "train",
        *SIM,
        "--max-duration",
        "1e-2",
        "--max-steps",
        str(2**70),
        "--out",
        str(tmp_path / "x.pt"),
        "--runs-dir",
        str(tmp_path / "runs"),
        tmp=tmp_path,
    )
    line = one_error_line(result)
    assert "max_steps" in line and "cannot journal" not in line
    assert not (tmp_path / "runs").exists()


def test_twin_training_whose_validation_does_not_fit_the_duration_is_one_line_naming_the_settings(tmp_path):
    result = spinlab(
        "twin",
        "train",
        *SIM,
        "--bias-A",
        "7e-3",
        "--validation-repeats",
        "10",
        "--max-duration",
        "5e-3",
        "--out",
        str(tmp_path / "x.pt"),
        "--runs-dir",
        str(tmp_path / "runs"),
        tmp=tmp_path,
    )
    line = one_error_line(result)
    assert "duration_s" in line and "validation_repeats" in line
    assert not (tmp_path / "runs").exists()


def test_a_station_nested_too_deeply_is_one_line_and_debug_shows_the_traceback(tmp_path):
    station = tmp_path / "deep.toml"
    station.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    args = [
        "acquire",
        "--device",
        f"bench:{station}",
        "--duration",
        "2e-3",
        "--record-s",
        "1e-3",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    line = one_error_line(spinlab(*args, tmp=tmp_path))
    assert "nested too deeply" in line
    for debug_args, debug_env in ((["--debug"], False), ([], True)):
        shown = spinlab(*debug_args, *args, tmp=tmp_path, debug=debug_env)
        assert shown.returncode == 2
        assert "Traceback" in shown.stderr and "ConfigError" in shown.stderr  # the loader's own
        assert shown.stderr.rstrip().splitlines()[-1] == line


LOGGED = """
import logging
from spinlab.cli.common import log_to_stderr
log_to_stderr()
try:
    open("/nonexistent/run.h5", "rb")
except OSError:
    logging.getLogger("spinlab.engine.engine").exception("could not record the end of run %s", "x")
"""


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "SPINLAB_DEBUG"])
def test_a_cleanup_failure_the_engine_logs_is_one_line_unless_debugging(tmp_path, debug):
    env = {**os.environ, "SPINLAB_DEBUG": "1" if debug else "0"}
    result = subprocess.run(
        [CLI[0], "-c", LOGGED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert ("Traceback" in result.stderr) == debug
    if not debug:
        assert result.stderr == (
            "could not record the end of run x: FileNotFoundError: [Errno 2] "
            "No such file or directory: '/nonexistent/run.h5'\n"
        )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_named_as_such():
    from spinlab.cli.common import error_line

    with pytest.raises(OSError) as caught:
        with open("/dev/full", "w") as fh:
            fh.write("x")
    assert (
        error_line(caught.value)
        == "no space left on the device; free some space or choose another --runs-dir"
    )


def test_an_h5py_error_names_the_file_and_what_the_system_said(tmp_path):
    import h5py

    from spinlab.cli.common import error_line

    missing = tmp_path / "gone" / "run.h5"
    with pytest.raises(OSError) as caught:
        h5py.File(missing, "w")
    assert error_line(caught.value) == f"{missing}: no such file or directory; check the path"


@pytest.mark.parametrize("model", ["vortex", "macrospin"])
def test_a_seed_in_the_device_address_beyond_2_64_is_one_line_before_any_run(tmp_path, model):
    result = spinlab(
        "acquire",
        "--device",
        f"sim:{model}?seed={2**64}",
        "--duration",
        "2e-3",
        "--record-s",
        "1e-3",
        "--runs-dir",
        str(tmp_path / "runs"),
        tmp=tmp_path,
    )
    assert "seed must be an integer in 0 .. 2^64 - 1" in one_error_line(result)
    assert not list((tmp_path / "runs").glob("*"))
