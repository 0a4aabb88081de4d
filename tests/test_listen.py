"""`spinlab listen` / `spinlab enrol` and the readout file, with FSDD audio fed through
sounddevice's stream API (no sound hardware: sounddevice.InputStream is replaced at that boundary)."""

from __future__ import annotations

import _thread
import ctypes.util
import json
import signal
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.errors import AudioDeviceError, AudioInputError, ReadoutError
from spinlab.speech.audio import list_fsdd, read_audio
from spinlab.speech.features import extract
from spinlab.speech.microphone import WordDetector, check_level, import_sounddevice, prepare, trim_silence
from spinlab.speech.normalise import TRAINING_VOICES
from spinlab.speech.readout import device_key, load_readout

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
sd = pytest.importorskip("sounddevice", reason="needs the PortAudio library (apt-get install libportaudio2)")


def _train(root: Path, *options: str) -> Path:
    """A small readout trained by `spinlab run spoken-digits` on sim:vortex; its run directory."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            "spoken-digits",
            "--device",
            "sim:vortex",
            "--data",
            str(FSDD),
            "--limit",
            "500",
            "--nodes",
            "200",
            "--augment-speeds",
            "none",
            "--runs-dir",
            str(root / "runs"),
            "--json",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout.strip().splitlines()[-1])["run_dir"])


@pytest.fixture(scope="module")
def readout_dir(tmp_path_factory) -> Path:
    """One readout for the module: lucas held out (the new voice of the enrolment test); channel
    normalisation, the version-1 readout (the voice-normalised one has a test of its own)."""
    return _train(
        tmp_path_factory.mktemp("readout"),
        *("--split", "speaker", "--test-speaker", "lucas", "--normalisation", "channel"),
    )


def _held_out(readout_dir: Path, speaker: str, n: int = 10) -> list:
    """``n`` utterances of ``speaker`` that the readout was not trained on, one per digit first."""
    with h5py.File(readout_dir / "run.h5") as f:
        trained = {name.decode() for name in f["utterances"][: f["utterances"].attrs["n_train"]]}
    utts = [u for u in list_fsdd(FSDD) if u.speaker == speaker and u.name not in trained]
    return sorted(utts, key=lambda u: (u.index, u.digit))[:n]


class FakeInputStream:
    """Stands in for ``sounddevice.InputStream``: feeds ``SIGNAL`` to the callback block by block
    (``SPEEDUP`` times faster than real time), then silence, and presses Ctrl-C once the signal
    and ``TAIL_S`` of silence have been delivered."""

    SIGNAL = np.zeros(0, dtype=np.float32)
    SPEEDUP = 4.0
    TAIL_S = 1.0
    opened: list = []

    def __init__(self, samplerate, blocksize, device, channels, dtype, callback, **kwargs):
        assert channels == 1 and dtype == "float32"
        self.rate, self.blocksize, self.callback = int(samplerate), int(blocksize), callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        FakeInputStream.opened.append(self)

    def _feed(self):
        signal = np.concatenate([self.SIGNAL, np.zeros(int(self.TAIL_S * self.rate), np.float32)])
        pos, interrupted = 0, False
        while not self._stop.is_set():
            block = signal[pos : pos + self.blocksize]
            if len(block) < self.blocksize:
                block = np.zeros(self.blocksize, np.float32)
                if not interrupted:
                    _thread.interrupt_main()  # the user presses Ctrl-C
                    interrupted = True
            pos += self.blocksize
            self.callback(block[:, None].copy(), self.blocksize, None, sd.CallbackFlags())
            time.sleep(self.blocksize / self.rate / self.SPEEDUP)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)

    def close(self):
        self._stop.set()


@pytest.fixture
def fake_microphone(monkeypatch):
    """sounddevice with one 16 kHz input device whose stream is :class:`FakeInputStream`."""
    # Ctrl-C must raise KeyboardInterrupt even where the test runner was started with SIGINT
    # ignored (a background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield from _fake_sounddevice(monkeypatch)
    signal.signal(signal.SIGINT, previous)


def _fake_sounddevice(monkeypatch):
    info = {"name": "fake microphone", "default_samplerate": 16000.0, "max_input_channels": 1}
    monkeypatch.setattr(sd, "query_devices", lambda device=None, kind=None: info)
    monkeypatch.setattr(sd, "check_input_settings", lambda *a, **k: None)
    monkeypatch.setattr(sd, "InputStream", FakeInputStream)
    FakeInputStream.opened = []
    yield FakeInputStream


def _spoken(utterances, rate: int = 16000, gap_s: float = 0.7, seed: int = 0) -> np.ndarray:
    """Utterances upsampled to ``rate`` with quiet room noise (-70 dBFS) between them."""
    rng = np.random.default_rng(seed)
    gap = int(gap_s * rate)
    parts = [np.zeros(gap)]
    for u in utterances:
        parts += [resample_poly(u.load(), rate // 8000, 1), np.zeros(gap)]
    signal = np.concatenate(parts)
    return (signal + 10 ** (-70 / 20) * rng.standard_normal(signal.size)).astype(np.float32)


def test_listen_recognises_fsdd_fed_through_the_input_stream(readout_dir, fake_microphone):
    utterances = _held_out(readout_dir, "jackson")
    fake_microphone.SIGNAL = _spoken(utterances)
    result = CliRunner().invoke(
        app, ["listen", "--device", "sim:vortex", "--readout", str(readout_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    words = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(words) == len(utterances), result.output  # every word found, nothing else
    hits = sum(int(w["digit"]) == u.digit for w, u in zip(words, utterances))
    assert hits >= 9, [(w["digit"], u.digit) for w, u in zip(words, utterances)]
    assert {"features_s", "device_s", "readout_s", "prepare_s", "latency_s"} <= set(words[0]["timings_s"])
    assert all(len(w["scores"]) == 10 for w in words)
    assert fake_microphone.opened[0].rate == 16000  # opened at the device's rate, resampled to 8 kHz
    assert "stopped after 10 words" in result.stderr


def test_listen_files_json_reports_accuracy_and_text_shows_scores_and_times(readout_dir):
    files = [str(u.path) for u in _held_out(readout_dir, "theo")]
    result = CliRunner().invoke(
        app,
        [
            "listen",
            "-d",
            "sim:vortex",
            "--readout",
            str(readout_dir),
            "--json",
            *[a for f in files for a in ("--file", f)],
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_labelled"] == 10 and summary["accuracy"] >= 0.8
    assert [row["file"] for row in summary["files"]] == files
    text = CliRunner().invoke(
        app, ["listen", "-d", "sim:vortex", "--readout", str(readout_dir), "--file", files[0]]
    )
    assert text.exit_code == 0, text.output
    assert "scores" in text.stdout and "device" in text.stdout and "ms" in text.stdout


def test_listen_one_line_errors(readout_dir, tmp_path):
    def run(*args):
        result = CliRunner().invoke(app, ["listen", "--readout", str(readout_dir), *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
        return result.stderr

    assert "trained on sim:vortex" in run("--device", "sim:macrospin", "--file", "x.wav")
    assert "bias_A" in run("--device", "sim:vortex", "--bias-A", "7e-3", "--file", "x.wav")
    rng = np.random.default_rng(0)
    wavfile.write(tmp_path / "quiet.wav", 8000, np.zeros(4000, np.int16))
    assert "silent" in run("-d", "sim:vortex", "--file", str(tmp_path / "quiet.wav"))
    loud = np.clip(3 * rng.standard_normal(4000), -1, 1)
    wavfile.write(tmp_path / "loud.wav", 8000, (loud * 32767).astype(np.int16))
    assert "clipped" in run("-d", "sim:vortex", "--file", str(tmp_path / "loud.wav"))
    wavfile.write(tmp_path / "low.wav", 4000, (0.1 * rng.standard_normal(2000) * 32767).astype(np.int16))
    assert "below the 8000 Hz" in run("-d", "sim:vortex", "--file", str(tmp_path / "low.wav"))
    # this machine has PortAudio but no sound card: the real query fails
    assert "no audio input device" in run("-d", "sim:vortex")
    assert (
        "no readout at"
        in CliRunner().invoke(app, ["listen", "-d", "sim:vortex", "--readout", str(tmp_path)]).stderr
    )


def test_microphone_rate_the_device_refuses_is_one_line(readout_dir, fake_microphone, monkeypatch):
    def refuse(*args, samplerate=None, **kwargs):
        raise sd.PortAudioError("Invalid sample rate", -9997)

    monkeypatch.setattr(sd, "check_input_settings", refuse)
    result = CliRunner().invoke(
        app, ["listen", "-d", "sim:vortex", "--readout", str(readout_dir), "--rate", "11025"]
    )
    assert result.exit_code == 2 and "does not support 11025 Hz" in result.stderr


def test_silent_microphone_is_an_error_not_a_hang(readout_dir, fake_microphone):
    fake_microphone.SIGNAL = np.zeros(16000 * 12, np.float32)
    fake_microphone.SPEEDUP = 20.0
    try:
        result = CliRunner().invoke(app, ["listen", "-d", "sim:vortex", "--readout", str(readout_dir)])
    finally:
        fake_microphone.SPEEDUP = 4.0
    assert result.exit_code == 2 and "silent" in result.stderr


def test_missing_portaudio_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(AudioDeviceError, match="apt-get install libportaudio2"):
        import_sounddevice()


def test_word_detector_finds_words_in_noise_and_ignores_clicks():
    rate = 8000
    rng = np.random.default_rng(1)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.4 * rate)) / rate)
    click = np.zeros(int(0.02 * rate)) + 0.5
    signal = np.concatenate(
        [np.zeros(rate), tone, np.zeros(rate), click, np.zeros(rate), tone, np.zeros(rate)]
    )
    signal += 1e-3 * rng.standard_normal(signal.size)
    detector = WordDetector(rate)
    words = [w for block in np.array_split(signal, 97) for w in detector.feed(block)]
    assert len(words) == 2
    assert words[0].start_s == pytest.approx(1.0, abs=0.03) and words[0].end_s == pytest.approx(1.4, abs=0.03)
    assert words[0].duration_s == pytest.approx(0.4 + 2 * detector.margin_s, abs=0.03)


def test_trim_silence_keeps_fsdd_words_and_level_checks():
    utt = list_fsdd(FSDD)[0]
    x = utt.load()
    padded = np.concatenate([np.zeros(4000), x, np.zeros(4000)])
    trimmed = trim_silence(padded, 8000)
    assert len(x) <= len(trimmed) <= len(x) + 1600 + 80  # the word, 0.1 s margins (10 ms frames)
    check_level(x, 8000)
    with pytest.raises(AudioInputError, match="silent"):
        check_level(1e-5 * x, 8000)
    with pytest.raises(AudioInputError, match="clipped"):
        check_level(np.clip(50 * x, -1, 1), 8000)


def test_readout_round_trip_and_refusals(readout_dir, tmp_path):
    readout = load_readout(readout_dir)
    assert readout.device_address == "sim:vortex" and readout.conditions == {"bias_A": 6e-3}
    assert readout.training.states.shape[0] == 400 and readout.class_names == tuple("0123456789")
    assert "lucas" not in set(readout.training.speakers)
    device = open_device("sim:vortex")
    samples = [u.load() for u in _held_out(readout_dir, "lucas", 5)]
    before = [r.scores for r in readout.recognise(device, samples)]
    copy = readout.save(tmp_path / "copy")
    again = load_readout(copy)
    np.testing.assert_allclose(
        [r.scores for r in again.recognise(open_device("sim:vortex"), samples)], before
    )
    with pytest.raises(ReadoutError, match="trained on sim:vortex, not sim:macrospin"):
        readout.check_device(open_device("sim:macrospin"))
    with pytest.raises(ReadoutError, match="bias_A = 0.006, not 0.007"):
        readout.check_device(open_device("sim:vortex"), {"bias_A": 7e-3})
    with h5py.File(copy, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ReadoutError, match="upgrade spinlab"):
        load_readout(copy)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ReadoutError, match="not a readable"):
        load_readout(tmp_path / "junk.h5")
    assert device_key("sim:vortex?seed=3&noise=0") == "sim:vortex"
    assert device_key("twin:./a.pt?noise=1") == device_key(f"twin:{Path('a.pt').resolve()}")


def test_enrol_from_files_adapts_to_a_new_voice(readout_dir, tmp_path):
    run_dir = readout_dir
    own = [u for u in list_fsdd(FSDD) if u.speaker == "lucas"]
    enrol_files = [str(u.path) for u in own if 5 <= u.index <= 9]
    test_files = [a for u in own if 10 <= u.index < 16 for a in ("--file", str(u.path))]

    def accuracy(readout_dir):
        result = CliRunner().invoke(
            app, ["listen", "-d", "sim:vortex", "--readout", str(readout_dir), "--json", *test_files]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["accuracy"]

    result = CliRunner().invoke(
        app,
        [
            "enrol",
            "--readout",
            str(run_dir),
            "--out",
            str(tmp_path / "lucas"),
            "--speaker",
            "lucas",
            "--json",
            "--files",
            *enrol_files,
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["utterances"] == 50 and set(summary["per_digit"].values()) == {5}
    adapted = load_readout(tmp_path / "lucas")
    assert adapted.provenance["enrolled"] == [{"speaker": "lucas", "utterances": 50, "weight": 1.0}]
    # the 50 new rows weigh as much as all the stored ones together
    assert adapted.training.weights[-50:].sum() == pytest.approx(adapted.training.weights[:-50].sum())
    before, after = accuracy(run_dir), accuracy(tmp_path / "lucas")
    assert after >= 0.9 and after > before
    bad = CliRunner().invoke(
        app,
        [
            "enrol",
            "--readout",
            str(run_dir),
            "--out",
            str(tmp_path / "x"),
            "--files",
            str(tmp_path / "nameless.wav"),
        ],
    )
    assert bad.exit_code == 2 and "cannot tell which digit" in bad.stderr


def test_listen_files_without_device_several_per_flag_and_a_bad_one_in_the_middle(readout_dir, tmp_path):
    """issue 24 item 5: --device defaults to the readout's; --file takes several paths; a silent
    file gets file advice and one line, the others their own device time; exit status 1."""
    good = [str(u.path) for u in _held_out(readout_dir, "theo", 3)]
    wavfile.write(tmp_path / "quiet.wav", 8000, np.zeros(4000, np.int16))
    files = [good[0], str(tmp_path / "quiet.wav"), *good[1:]]
    result = CliRunner().invoke(app, ["listen", "--readout", str(readout_dir), "--json", "--file", *files])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["file"] for row in summary["files"]] == files and summary["n_failed"] == 1
    assert summary["device"] == "sim:vortex" and summary["n_labelled"] == 3
    bad = summary["files"][1]
    assert "silent" in bad["error"] and "--input" not in bad["error"] and "microphone" not in bad["error"]
    assert result.stderr.strip().splitlines() == [f"error: {bad['error']}"]
    rows = [row for row in summary["files"] if "error" not in row]
    assert all(isinstance(row["digit"], int) and isinstance(row["expected"], int) for row in rows)
    # each word's own device time, not one batch average repeated
    assert len({row["timings_s"]["device_s"] for row in rows}) == len(rows)
    assert all(row["timings_s"]["prepare_s"] > 0 for row in rows)
    text = CliRunner().invoke(app, ["listen", "--readout", str(readout_dir), str(tmp_path / "quiet.wav")])
    assert text.exit_code == 2 and "record it again" in text.stderr, text.output


def test_enrol_refuses_an_existing_out_unless_forced_and_warns_on_thin_digits(readout_dir, tmp_path):
    """issue 24 item 1: one utterance of one digit is enrolled with a warning; a second enrolment
    into the same --out is refused (the first is kept) unless --force."""
    one = str(next(u for u in list_fsdd(FSDD) if u.speaker == "lucas" and u.digit == 1).path)
    out = tmp_path / "my-voice"

    def enrol(*extra):
        return CliRunner().invoke(
            app, ["enrol", "--readout", str(readout_dir), "--out", str(out), "--json", *extra, "--files", one]
        )

    first = enrol()
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert "no utterances of 0, 2, 3, 4, 5, 6, 7, 8, 9" in summary["warning"]
    assert "fewer than 3 of 1 (1)" in summary["warning"]
    assert f"warning: {summary['warning']}" in first.stderr
    stamp = (out / "readout.h5").stat().st_mtime_ns
    again = enrol()
    assert again.exit_code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert (out / "readout.h5").stat().st_mtime_ns == stamp
    forced = enrol("--force")
    assert forced.exit_code == 0, forced.output


def test_a_speaker_normalised_readout_listens_through_the_enrolled_voice(readout_dir, tmp_path):
    """issue 23 item 4: a readout trained with voice normalisation of features and states is saved
    (format 2) with the training voices' statistics; listen without enrolment says so in one line;
    enrol takes the new voice's statistics from its enrolment words (features and device states),
    and the adapted readout recognises it."""
    options = ["--normalisation", "speaker", "--state-normalisation", "speaker", "--limit", "300"]
    run_dir = _train(tmp_path, "--split", "speaker", "--test-speaker", "lucas", *options)
    readout = load_readout(run_dir)
    assert readout.normalisation == "speaker" and readout.voice_unknown
    assert readout.state_voice.source == readout.voice.source == TRAINING_VOICES
    with h5py.File(run_dir / "readout.h5") as f, h5py.File(readout_dir / "readout.h5") as g:
        assert (f.attrs["format_version"], g.attrs["format_version"]) == (2, 1)  # channel ones stay 1
    own = [u for u in list_fsdd(FSDD) if u.speaker == "lucas"]
    enrol_files = [str(u.path) for u in own if 5 <= u.index <= 9]
    test_files = [str(u.path) for u in own if 10 <= u.index < 14]

    def listen(readout_dir):
        result = CliRunner().invoke(app, ["listen", "--readout", str(readout_dir), "--json", *test_files])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["accuracy"], result.stderr

    before, note = listen(run_dir)
    assert len(note.strip().splitlines()) == 1 and "no voice is enrolled" in note and "spinlab enrol" in note
    out = tmp_path / "lucas"
    result = CliRunner().invoke(
        app,
        ["enrol", "--readout", str(run_dir), "--out", str(out), "--speaker", "lucas", "--json", *enrol_files],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["normalisation"] == "speaker"
    adapted = load_readout(out)
    # the voice's statistics are those of its 50 enrolment words, by hand
    words = [prepare(*read_audio(path), readout.rate_Hz, path, source="file") for path in enrol_files]
    frames = np.concatenate([extract(word, readout.features) for word in words])
    assert adapted.voice.source == adapted.state_voice.source == "lucas" and not adapted.voice_unknown
    np.testing.assert_allclose(adapted.voice.mean, frames.mean(axis=0))
    np.testing.assert_allclose(adapted.voice.std, frames.std(axis=0))
    # its 50 stored states are standardised by their own statistics, like every training voice's
    new = adapted.training.states[-50:].astype(float)
    np.testing.assert_allclose(new.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(new.std(axis=0)[new.std(axis=0) > 0], 1.0, atol=1e-3)
    after, quiet = listen(out)
    assert quiet == "" and after >= 0.9 and after >= before
