"""Levers for voices the readout never heard: VTLP of the cochleagram and voice normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinlab.device import Device
from spinlab.engine import RunEngine
from spinlab.errors import ConfigError
from spinlab.protocols import spoken_digits
from spinlab.protocols.spoken_digits import SpokenDigitsConfig
from spinlab.speech.augment import channel_frequencies, vtlp, warp_frequency
from spinlab.speech.features import FeatureConfig, extract
from spinlab.speech.normalise import VoiceNormaliser, by_voice

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
LYON = FeatureConfig()
NYQUIST = LYON.rate_Hz / 2


def _tone(f_Hz: float, seconds: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * LYON.rate_Hz)) / LYON.rate_Hz
    return 0.3 * np.sin(2 * np.pi * f_Hz * t)


def test_warp_scales_frequencies_below_the_knee_and_keeps_nyquist():
    f = np.array([0.0, 500.0, 1000.0, 2000.0, NYQUIST])
    assert np.allclose(warp_frequency(f, 1.1, NYQUIST)[:4], 1.1 * f[:4])
    assert np.allclose(warp_frequency(f, 0.9, NYQUIST)[:4], 0.9 * f[:4])
    for alpha in (0.9, 1.1):
        warped = warp_frequency(np.linspace(0, NYQUIST, 200), alpha, NYQUIST)
        assert warped[-1] == NYQUIST and np.all(np.diff(warped) > 0)


def test_vtlp_moves_a_peak_by_the_factor_on_the_lyon_channel_axis():
    centre = channel_frequencies(LYON)
    assert centre.size == extract(_tone(1000.0)).shape[1] == 64
    peak = np.exp(-0.5 * ((centre - 1000.0) / 60.0) ** 2)[None, :]
    for alpha in (0.9, 1.1):
        moved = vtlp(peak, alpha, centre, NYQUIST)
        assert abs(centre[np.argmax(moved)] - 1000.0 * alpha) < 0.05 * 1000.0  # channels ~4 % apart
    assert np.array_equal(vtlp(peak, 1.0, centre, NYQUIST), peak)


def test_vtlp_of_a_tone_looks_like_the_tone_a_shorter_vocal_tract_would_say():
    centre = channel_frequencies(LYON)
    profile = lambda f: extract(_tone(f))[5:].mean(axis=0)  # noqa: E731 - skip the onset
    low, high = profile(800.0), profile(880.0)
    warped = vtlp(low[None, :], 1.1, centre, NYQUIST)[0]
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    assert corr(warped, high) > 0.95 and corr(warped, high) > corr(low, high) + 0.1


def test_vtlp_refuses_bad_input_in_one_line():
    centre = channel_frequencies(LYON)
    with pytest.raises(ConfigError, match=r"VTLP factor must be in \[0.7, 1.4\], got 2"):
        vtlp(np.ones((3, 64)), 2.0, centre, NYQUIST)
    with pytest.raises(ConfigError, match=r"features must have shape \(frames, 64\)"):
        vtlp(np.ones((3, 13)), 1.1, centre, NYQUIST)
    with pytest.raises(ConfigError, match="lyon or logmel"):
        channel_frequencies(FeatureConfig(kind="mfcc"))


def _voices(rng: np.random.Generator, speakers: list[str], n: int = 4) -> tuple[list, list]:
    feats, names = [], []
    for k, s in enumerate(speakers):
        for _ in range(n):
            feats.append(rng.normal(3.0 * k, 1.0 + k, size=(int(rng.integers(5, 12)), 8)))
            names.append(s)
    return feats, names


@pytest.mark.parametrize("kind", ["channel", "speaker", "utterance"])
def test_normalisation_is_fitted_on_training_speakers_only(kind):
    rng = np.random.default_rng(0)
    train, train_names = _voices(rng, ["a", "b", "c"])
    test, test_names = _voices(rng, ["new"])
    norm = VoiceNormaliser(kind).fit(train, train_names)
    before = norm.transform(train, train_names)
    # the held-out voice, whatever it is, changes nothing fitted on the training speakers
    norm.transform([1e3 * f + 50 for f in test], test_names)
    after = norm.transform(train, train_names)
    refit = VoiceNormaliser(kind).fit(train, train_names).transform(train, train_names)
    for x, y, z in zip(before, after, refit):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    # and the check would see a leak: fitted with the new voice, the training features change
    # (only with "channel": "speaker" and "utterance" standardise every voice or word alone, so
    # the channel statistics on top are 0 and 1 whoever joins, and there is nothing to leak into)
    leaked = VoiceNormaliser(kind).fit(train + test, train_names + test_names)
    assert (kind == "channel") != np.allclose(leaked.transform(train, train_names)[0], before[0])


def test_speaker_normalisation_removes_a_voice_offset_without_labels():
    rng = np.random.default_rng(1)
    train, names = _voices(rng, ["a", "b"])
    norm = VoiceNormaliser("speaker").fit(train, names)
    test, test_names = _voices(rng, ["loud"])
    shifted = [10.0 * f + 7.0 for f in test]  # a louder voice through another microphone
    same = norm.transform(test, test_names)
    for x, y in zip(same, norm.transform(shifted, test_names)):
        assert np.allclose(x, y)
    frames = np.concatenate(same)
    assert np.allclose(frames.mean(axis=0), -norm.channel.mean / norm.channel.std, atol=1e-9)


def test_normalisation_refuses_bad_input_in_one_line():
    with pytest.raises(ConfigError, match=r"normalisation 'cmvn' is unknown; use one of"):
        VoiceNormaliser("cmvn")
    with pytest.raises(ConfigError, match=r"need one speaker per utterance \(2\), got 1"):
        VoiceNormaliser("speaker").fit([np.ones((3, 2)), np.ones((3, 2))], ["a"])


class IdentityDevice(Device):
    """Response = drive: the protocol's plumbing without a device's cost."""

    address = "test:identity"

    def _respond(self, drive, dt_s, conditions):
        return drive.copy()


def test_spoken_digits_trains_on_vtlp_copies_of_the_training_voices_only(tmp_path):
    config = SpokenDigitsConfig(
        data_dir=str(FSDD),
        split="speaker",
        test_speaker="theo",
        limit=60,
        n_nodes=40,
        feature_kind="logmel",
        augment_speeds=(),
        augment_vtlp=(0.9, 1.1),
        normalisation="utterance",
        state_normalisation="speaker",
        feature_cache_dir=str(tmp_path / "cache"),
    )
    summary = RunEngine(tmp_path / "runs").run(spoken_digits.plan(config), IdentityDevice(), seed=1).summary
    assert summary["n_augmented"] == 2 * summary["n_train"]
    assert set(summary["per_speaker"]) == {"theo"}
    assert summary["accuracy"] == summary["drive_baseline_accuracy"]  # the identity adds nothing
    with pytest.raises(ValueError, match="--augment-vtlp warps a frequency axis: use lyon or logmel"):
        SpokenDigitsConfig(data_dir="x", feature_kind="mfcc", augment_vtlp=(1.1,))
    with pytest.raises(ValueError, match=r"--state-normalisation needs pooled states \(--segments > 0\)"):
        SpokenDigitsConfig(data_dir="x", segments=0, state_normalisation="speaker")


def test_states_normalised_by_voice_each_by_its_own_statistics():
    rng = np.random.default_rng(3)
    voices = ["a"] * 5 + ["b"] * 7
    rows = [rng.normal(10.0 * (v == "b"), 1.0 + 4 * (v == "b"), size=(1, 6)) for v in voices]
    out = np.concatenate(by_voice(rows, voices))
    for v in ("a", "b"):
        mine = out[np.array(voices) == v]
        assert np.allclose(mine.mean(axis=0), 0.0) and np.allclose(mine.std(axis=0), 1.0)
    with pytest.raises(ConfigError, match=r"need one voice per utterance \(12\), got 2"):
        by_voice(rows, ["a", "b"])


def test_a_new_voice_can_be_normalised_from_a_few_of_its_words():
    rng = np.random.default_rng(2)
    train, names = _voices(rng, ["a", "b"])
    norm = VoiceNormaliser("speaker").fit(train, names)
    test, test_names = _voices(rng, ["new"], n=6)
    few = [True, True, False, False, False, False]
    own = norm.transform(test[:2], test_names[:2])
    assert all(np.array_equal(x, y) for x, y in zip(own, norm.transform(test, test_names, few)[:2]))
    with pytest.raises(ConfigError, match="every speaker needs at least one utterance"):
        norm.transform(test, test_names, [False] * 6)
