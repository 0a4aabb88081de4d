"""FSDD loading, name/format validation, and the checksum-verified install (no network)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from spinlab.errors import SpinlabError
from spinlab.speech.audio import (
    FSDD_RECORDINGS_SHA256,
    DatasetError,
    directory_digest,
    fetch_fsdd,
    install_archive,
    list_fsdd,
    parse_name,
    read_wav,
    recordings_digest,
)

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"


def _wav_bytes(samples: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, rate, samples)
    return buf.getvalue()


def _tone(n: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 3000).astype(np.int16)


def _archive(tmp_path: Path, files: dict[str, bytes], name: str = "fsdd.tar.gz") -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for member, content in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_parse_name_and_errors():
    assert parse_name("3_theo_17.wav") == (3, "theo", 17)
    for bad in ("theo_3_17.wav", "12_theo_1.wav", "3_theo.wav", "3_theo_x.wav"):
        with pytest.raises(DatasetError, match="not an FSDD recording name"):
            parse_name(bad)


def test_list_fsdd_reads_shared_copy():
    utterances = list_fsdd(FSDD)
    assert len(utterances) == 2500
    assert {u.speaker for u in utterances} == {"george", "jackson", "lucas", "theo", "yweweler"}
    first = utterances[0]
    samples = first.load()
    assert samples.dtype == np.float64 and samples.ndim == 1 and np.abs(samples).max() <= 1.0
    assert first.name == f"{first.digit}_{first.speaker}_{first.index}.wav"


def test_list_fsdd_finds_recordings_subfolder_and_rejects_bad_names(tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    (rec / "1_ann_0.wav").write_bytes(_wav_bytes(_tone()))
    assert [u.name for u in list_fsdd(tmp_path)] == ["1_ann_0.wav"]
    (rec / "stray.wav").write_bytes(_wav_bytes(_tone()))
    with pytest.raises(DatasetError, match="stray.wav"):
        list_fsdd(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        list_fsdd(tmp_path / "missing")


def test_read_wav_validates_rate_channels_and_depth(tmp_path):
    good = tmp_path / "good.wav"
    good.write_bytes(_wav_bytes(_tone()))
    assert read_wav(good).shape == (800,)
    wrong_rate = tmp_path / "rate.wav"
    wrong_rate.write_bytes(_wav_bytes(_tone(), rate=16000))
    with pytest.raises(DatasetError, match="16000 Hz, expected 8000"):
        read_wav(wrong_rate)
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(_wav_bytes(np.stack([_tone(), _tone(seed=1)], axis=1)))
    with pytest.raises(DatasetError, match="mono"):
        read_wav(stereo)
    floats = tmp_path / "float.wav"
    floats.write_bytes(_wav_bytes(_tone().astype(np.float32) / 3e4))
    with pytest.raises(DatasetError, match="16-bit"):
        read_wav(floats)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(DatasetError, match="cannot read"):
        read_wav(junk)


def test_digest_depends_on_names_and_contents_not_order():
    a = [("0_x_0.wav", b"aa"), ("1_x_0.wav", b"bb")]
    assert recordings_digest(a) == recordings_digest(a[::-1])
    assert recordings_digest(a) != recordings_digest([("0_x_0.wav", b"aa"), ("1_x_0.wav", b"bc")])
    assert recordings_digest(a) != recordings_digest([("0_x_0.wav", b"aa"), ("1_x_1.wav", b"bb")])


def test_pinned_digest_matches_shared_copy():
    """The pinned checksum is the digest of the 2,500 recordings the project is tested on."""
    assert directory_digest(FSDD) == FSDD_RECORDINGS_SHA256


def test_install_archive_verifies_and_keeps_only_pinned_speakers(tmp_path):
    files = {f"{d}_george_{i}.wav": _wav_bytes(_tone(seed=10 * d + i)) for d in range(2) for i in range(2)}
    members = {f"free-spoken-digit-dataset-26eb9aa/recordings/{k}": v for k, v in files.items()}
    members["free-spoken-digit-dataset-26eb9aa/recordings/0_nicolas_0.wav"] = _wav_bytes(_tone(seed=99))
    members["free-spoken-digit-dataset-26eb9aa/README.md"] = b"readme"
    members["free-spoken-digit-dataset-26eb9aa/../../escape.wav"] = b"evil"
    archive = _archive(tmp_path, members)
    expected = recordings_digest(files.items())
    target = install_archive(archive, tmp_path / "cache", expected_sha256=expected)
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    assert directory_digest(target) == expected
    assert not (tmp_path / "escape.wav").exists()
    assert "sha256 " + expected in (tmp_path / "cache" / "SOURCE.txt").read_text()


def test_install_archive_rejects_corrupt_download_and_installs_nothing(tmp_path):
    files = {"0_george_0.wav": _wav_bytes(_tone())}
    expected = recordings_digest(files.items())
    corrupt = {"x/recordings/0_george_0.wav": _wav_bytes(_tone(seed=5))}
    archive = _archive(tmp_path, corrupt)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        install_archive(archive, tmp_path / "cache", expected_sha256=expected)
    assert not (tmp_path / "cache" / "recordings").exists()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="cannot read FSDD archive"):
        install_archive(broken, tmp_path / "cache", expected_sha256=expected)


def test_fetch_uses_opener_then_cache(tmp_path):
    files = {"5_theo_3.wav": _wav_bytes(_tone(seed=3))}
    archive = _archive(tmp_path, {f"fsdd/recordings/{k}": v for k, v in files.items()})
    expected = recordings_digest(files.items())
    calls = []

    def opener(url):
        calls.append(url)
        return open(archive, "rb")

    target = fetch_fsdd(tmp_path / "cache", expected_sha256=expected, opener=opener)
    assert [p.name for p in target.iterdir()] == ["5_theo_3.wav"]
    fetch_fsdd(tmp_path / "cache", expected_sha256=expected, opener=opener)
    assert len(calls) == 1  # verified cache: no second download

    def offline(url):
        raise OSError("network is unreachable")

    with pytest.raises(SpinlabError, match="network is unreachable"):
        fetch_fsdd(tmp_path / "other", expected_sha256=expected, opener=offline)


def test_cli_fetch_installs_into_dest(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import spinlab.speech.audio as audio
    from spinlab.cli import app

    files = {"7_lucas_1.wav": _wav_bytes(_tone(seed=7))}
    archive = _archive(tmp_path, {f"fsdd-26eb9aa/recordings/{k}": v for k, v in files.items()})
    monkeypatch.setattr(audio, "FSDD_RECORDINGS_SHA256", recordings_digest(files.items()))
    monkeypatch.setattr(audio, "_urlopen", lambda url: open(archive, "rb"))
    result = CliRunner().invoke(app, ["data", "fetch", "fsdd", "--dest", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_recordings"] == 1 and summary["path"] == str(tmp_path / "c" / "recordings")
    monkeypatch.setattr(audio, "FSDD_RECORDINGS_SHA256", "0" * 64)
    bad = CliRunner().invoke(app, ["data", "fetch", "fsdd", "--dest", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "checksum mismatch" in bad.output


def test_read_audio_resample_and_speed_perturb(tmp_path):
    from spinlab.errors import AudioInputError
    from spinlab.speech.audio import read_audio, resample, speed_perturb

    t = np.arange(4410) / 44100
    stereo = (0.5 * np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "s.wav", 44100, stereo)
    samples, rate = read_audio(tmp_path / "s.wav")
    assert rate == 44100 and samples.ndim == 1 and abs(samples.max() - 0.5) < 1e-3
    down = resample(samples, 44100, 8000)
    assert len(down) == 800  # 0.1 s at 8 kHz
    with pytest.raises(AudioInputError, match="below the 8000 Hz"):
        resample(samples, 4000, 8000)
    assert len(speed_perturb(down, 1.25)) == 640 and len(speed_perturb(down, 0.8)) == 1000
