"""Hostile files a user names (issue 19, findings G, H, I, J, P, Q, W): each is refused in one
line before it is read, at the CLI with exit code 2, no traceback and bounded memory.

The CLI runs in a child process under a small wrapper that reports the child's peak RSS
(``RUSAGE_CHILDREN`` of the wrapper holds that one child only) and caps its address space, so a
regression fails as a MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.io import wavfile

from spinlab.analysis.ridge import RidgeReadout
from spinlab.errors import CheckpointError, ConfigError, DatasetError, DeviceAddressError, ReadoutError
from spinlab.instruments.station import load_station
from spinlab.protocols.mackey_glass import load_series
from spinlab.sim_backends.model_file import load_model, save_model
from spinlab.speech.audio import MAX_AUDIO_S, read_audio
from spinlab.speech.encoder import Encoder, make_mask
from spinlab.speech.features import ChannelNormalizer, FeatureConfig
from spinlab.speech.readout import DigitReadout, TrainingStates, load_readout
from spinlab.twin.checkpoint import TwinMeta, load_twin, save_twin
from spinlab.twin.data import load_mumax_table
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

ROOT = Path(__file__).resolve().parents[1]
STATION = ROOT / "instruments" / "stations" / "emulated.toml"
#: Peak RSS a refused file may cost the CLI (imports included: ~300 MB with torch).
MAX_RSS_MB = 700
_WRAPPER = """
import resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
child = subprocess.run([sys.executable, "-c", "from spinlab.cli import main; main()", *sys.argv[1:]],
                       capture_output=True, text=True, timeout=120)
sys.stdout.write(child.stdout)
sys.stderr.write(child.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)
sys.exit(child.returncode)
"""


def cli(*args: str, timeout_s: float = 150) -> tuple[int, str, int, float]:
    """``(exit code, the CLI's stderr, its peak RSS in MB, seconds)`` of `spinlab ARGS`."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    *lines, rss = proc.stderr.strip().splitlines()
    return proc.returncode, "\n".join(lines), int(rss), time.monotonic() - start


def assert_one_line_refusal(rc: int, stderr: str, rss_mb: int, *words: str) -> None:
    assert rc == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert all(w in stderr for w in words), stderr
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb} MB"


def write_wav(path: Path, channels: int, rate: int, bits: int, data: bytes, tag: int = 1) -> Path:
    """A wav written field by field, so the header may say what no wav writer would."""
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# --- a small, valid readout for sim:vortex ----------------------------------------------------
@pytest.fixture(scope="module")
def readout_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    channels, nodes, segments = 64, 20, 3
    width = nodes * (segments + 1)
    encoder = Encoder(make_mask(nodes, channels, seed=1), 400e-9, 2, 0.4, 1.5, scale=1.0)
    ridge = RidgeReadout(
        alpha=1e-3,
        n_classes=10,
        mean=np.zeros(width),
        std=np.ones(width),
        weights=rng.standard_normal((width + 1, 10)),
    )
    training = TrainingStates(
        rng.standard_normal((30, width)), np.arange(30) % 10, np.full(30, "theo"), np.ones(30)
    )
    readout = DigitReadout(
        FeatureConfig(),
        ChannelNormalizer(np.zeros(channels), np.ones(channels)),
        encoder,
        "mean",
        segments,
        ridge,
        "sim:vortex",
        {"bias_A": 7.5e-3},
        training=training,
    )
    return readout.save(tmp_path_factory.mktemp("readout") / "readout.h5")


def hostile_readout(original: Path, tmp_path: Path, case: str) -> Path:
    path = tmp_path / "readout.h5"
    path.write_bytes(original.read_bytes())
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        if case == "samples_per_node 1e6":  # was: 23.8 GB, killed by the OOM killer
            meta["encoder"]["samples_per_node"] = 10**6
            meta["node_features"] = "samples"
        elif case == "node time 1e-30 s":  # was: accepted, accuracy 0
            meta["encoder"]["theta_s"] = 1e-30
        elif case == "weights (2^28,)":  # was: 3.2 GB before the shape check
            del f["ridge_weights"]
            f.create_dataset("ridge_weights", shape=(2**28,), dtype="f8", chunks=(2**16,), compression="gzip")
        elif case == "mask (2^40, 1)":  # was: a MemoryError traceback
            del f["mask"]
            f.create_dataset("mask", shape=(2**40, 1), dtype="f8", chunks=(2**16, 1), compression="gzip")
        elif case == "one huge chunk":  # a small array whose one chunk inflates to 2 GiB
            del f["feature_mean"]
            f.create_dataset(
                "feature_mean", shape=(64,), maxshape=(None,), dtype="f8", chunks=(2**28,), compression="gzip"
            )
        elif case == "soft-link loop":  # was: a RuntimeError traceback
            del f["mask"]
            f["mask"] = h5py.SoftLink("/loop")
            f["loop"] = h5py.SoftLink("/mask")
        elif case == "external link":
            del f["ridge_weights"]
            f["ridge_weights"] = h5py.ExternalLink("/etc/passwd", "/weights")
        elif case == "NaN weights":  # was: accepted, accuracy 0
            f["ridge_weights"][0, 0] = np.nan
        elif case == "deep meta":
            f.attrs["meta"] = "[" * 100_000 + "]" * 100_000
            return path
        f.attrs["meta"] = json.dumps(meta)
    return path


READOUT_CASES = {
    "samples_per_node 1e6": "samples_per_node",
    "node time 1e-30 s": "theta_s",
    "weights (2^28,)": "ridge_weights",
    "mask (2^40, 1)": "mask",
    "one huge chunk": "feature_mean",
    "soft-link loop": "is a soft link",
    "external link": "is an external link",
    "NaN weights": "NaN",
    "deep meta": "RecursionError",
}


@pytest.mark.parametrize("case", sorted(READOUT_CASES))
def test_hostile_readout_files_are_refused_before_their_arrays_are_read(readout_file, tmp_path, case):
    path = hostile_readout(readout_file, tmp_path, case)
    with pytest.raises(ReadoutError, match=READOUT_CASES[case]):
        load_readout(path)


def test_the_small_readout_of_these_tests_loads(readout_file):
    assert load_readout(readout_file).encoder.n_nodes == 20


@pytest.mark.parametrize("case", ["samples_per_node 1e6", "mask (2^40, 1)", "soft-link loop"])
def test_listen_with_a_hostile_readout_is_one_line_in_bounded_memory(readout_file, tmp_path, case):
    wavfile.write(tmp_path / "3_x_0.wav", 8000, np.zeros(4000, np.int16))
    rc, stderr, rss, _ = cli(
        "listen",
        "--readout",
        hostile_readout(readout_file, tmp_path, case),
        "--device",
        "sim:vortex",
        "--file",
        tmp_path / "3_x_0.wav",
    )
    assert_one_line_refusal(rc, stderr, rss, READOUT_CASES[case])


# --- G, P: audio ------------------------------------------------------------------------------
def test_listen_refuses_an_hour_long_wav_in_one_line_with_bounded_memory(readout_file, tmp_path):
    hour = write_wav(tmp_path / "3_x_0.wav", 1, 8000, 16, bytes(2 * 8000 * 3600))  # 57.6 MB
    rc, stderr, rss, _ = cli("listen", "--readout", readout_file, "--device", "sim:vortex", "--file", hour)
    assert_one_line_refusal(rc, stderr, rss, "3600 s", f"at most {MAX_AUDIO_S:g} s")


def test_enrol_refuses_an_hour_long_wav(readout_file, tmp_path):
    hour = write_wav(tmp_path / "3_x_0.wav", 1, 8000, 16, bytes(2 * 8000 * 3600))
    rc, stderr, rss, _ = cli("enrol", "--readout", readout_file, "--out", tmp_path / "out", "--files", hour)
    assert_one_line_refusal(rc, stderr, rss, "3600 s")
    assert not (tmp_path / "out").exists()


def test_a_wav_with_no_channels_or_nan_samples_is_one_line(tmp_path):
    no_channels = write_wav(tmp_path / "none.wav", 0, 8000, 16, bytes(100))  # was: ZeroDivisionError
    with pytest.raises(DatasetError, match="0 channels"):
        read_audio(no_channels)
    samples = np.sin(np.arange(8000) / 10).astype(np.float32)
    samples[100] = np.nan  # was: IndexError
    wavfile.write(tmp_path / "nan.wav", 8000, samples)
    with pytest.raises(DatasetError, match="NaN"):
        read_audio(tmp_path / "nan.wav")
    (tmp_path / "ogg.wav").write_bytes(b"OggS" + bytes(100))
    with pytest.raises(DatasetError, match="no RIFF"):
        read_audio(tmp_path / "ogg.wav")


def test_listen_with_a_nan_wav_is_one_line(readout_file, tmp_path):
    samples = np.sin(np.arange(8000) / 10).astype(np.float32)
    samples[100] = np.inf
    wavfile.write(tmp_path / "3_x_0.wav", 8000, samples)
    rc, stderr, rss, _ = cli(
        "listen", "--readout", readout_file, "--device", "sim:vortex", "--file", tmp_path / "3_x_0.wav"
    )
    assert_one_line_refusal(rc, stderr, rss, "NaN or infinite")


# --- I: what is not a regular file ----------------------------------------------------------
def special_files(tmp_path: Path) -> dict[str, Path]:
    os.mkfifo(tmp_path / "fifo")
    return {"a FIFO": tmp_path / "fifo", "a character device": Path("/dev/zero"), "a directory": tmp_path}


def test_every_loader_refuses_fifos_devices_and_directories_at_once(tmp_path):
    loaders = [
        (load_station, ConfigError),
        (load_twin, CheckpointError),
        (load_readout, ReadoutError),
        (read_audio, DatasetError),
        (load_model, DeviceAddressError),
        (load_mumax_table, ConfigError),
        (lambda path: load_series(path, 10), DatasetError),
    ]
    for what, path in special_files(tmp_path).items():
        for loader, error in loaders:
            start = time.monotonic()
            with pytest.raises(
                error, match=what if loader is not load_readout or what != "a directory" else "no readout"
            ):
                loader(path)
            assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("what", ["a FIFO", "a character device"])
def test_acquire_on_a_station_path_that_is_dev_zero_or_a_fifo_is_refused_at_once(tmp_path, what):
    path = special_files(tmp_path)[what]
    rc, stderr, rss, seconds = cli(
        "acquire",
        "--device",
        f"bench:{path}",
        "--duration",
        "1e-3",
        "--runs-dir",
        tmp_path / "runs",
        timeout_s=60,
    )
    assert_one_line_refusal(rc, stderr, rss, what, "not a station file")
    assert seconds < 30


def test_files_far_larger_than_their_kind_are_refused_by_size(tmp_path):
    big = tmp_path / "lab.toml"
    with open(big, "wb") as fh:
        fh.truncate(2 << 20)  # sparse: 2 MiB of zeros
    with pytest.raises(ConfigError, match="at most 1 MiB"):
        load_station(big)


# --- J, W: checkpoints --------------------------------------------------------------------------
def _twin(tmp_path: Path, **meta) -> Path:
    arch = TwinArchitecture(n_delays=2, hidden=4, condition_names=("bias_A",))
    model = build_model(arch, Normalisation(0.01, 0.005, 0.0, 0.2, [7.5e-3], [1e-3]), seed=0)
    defaults = {"dt_s": 1e-7, "condition_ranges": {"bias_A": [6.5e-3, 8.5e-3]}}
    return save_twin(tmp_path / "twin.pt", model, TwinMeta(**{**defaults, **meta}))


def test_twin_eval_refuses_a_checkpoint_that_inflates_to_512_mib(tmp_path):
    path = _twin(tmp_path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("twin/data/99", "w", force_zip64=True) as member:
            zeros = bytes(1 << 24)
            for _ in range(32):
                member.write(zeros)
    assert path.stat().st_size < 4 << 20  # a few MB on disk, 512 MiB once unpacked
    rc, stderr, rss, _ = cli("twin", "eval", path, "--device", "sim:vortex", "--runs-dir", tmp_path / "runs")
    assert_one_line_refusal(rc, stderr, rss, "would unpack to 512 MiB")


@pytest.mark.parametrize(
    "meta, words", [({"settle_samples": 10**7}, "settle_samples"), ({"dt_s": 1e-30}, "dt_s")]
)
def test_checkpoints_with_settings_outside_sane_ranges_are_refused(tmp_path, meta, words):
    path = _twin(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["meta"].update(meta)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=words):
        load_twin(path)


# --- Q: nesting and integers beyond 64 bits ----------------------------------------------------
def test_deeply_nested_station_or_model_files_are_one_config_error(tmp_path):
    (tmp_path / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_station(tmp_path / "deep.toml")
    (tmp_path / "fit.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nests its JSON too deeply"):
        load_model(tmp_path / "fit.json")


def test_station_integers_beyond_64_bits_are_one_config_error(tmp_path):
    text = STATION.read_text().replace("[scope]\n", "[scope]\nmax_points = 18446744073709551616\n", 1)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("max_points = 4"))
    (tmp_path / "lab.toml").write_text(text)
    with pytest.raises(ConfigError, match="at most 64 bits"):
        load_station(tmp_path / "lab.toml")


def test_model_file_options_beyond_64_bits_are_one_config_error(tmp_path):
    path = save_model(tmp_path / "fit.json", "vortex", {"noise": 0.0}, {})
    payload = json.loads(path.read_text())
    payload["options"]["seed"] = 2**70
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="64-bit"):
        load_model(path)


@pytest.mark.parametrize("setting, value", [("theta_s", 1e-30), ("samples_per_node", 10**6)])
def test_spoken_digit_settings_outside_sane_ranges_are_refused_with_the_range(setting, value):
    from spinlab.protocols.spoken_digits import SpokenDigitsConfig

    with pytest.raises(ConfigError, match=r"between 1e-12 and 0\.001 s|1\.\.100"):
        SpokenDigitsConfig(data_dir="x", **{setting: value})
