"""Cochleagram / MFCC / log-mel features, training-set normalisation and the feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinlab.errors import ConfigError
from spinlab.speech.audio import list_fsdd
from spinlab.speech.features import ChannelNormalizer, FeatureConfig, extract, utterance_features

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def few():
    return list_fsdd(FSDD)[:6]


def test_lyon_shape_rate_and_scale(few):
    samples = few[0].load()
    feats = extract(samples)
    assert feats.shape == (len(samples) // 64, 64)  # 64 channels at 8 kHz, 125 frames/s
    assert FeatureConfig().frame_rate_Hz == 125.0
    assert np.all(np.isfinite(feats)) and 0 < np.abs(feats).mean() < 1e-2  # raw values are tiny


def test_lyon_keeps_one_frame_for_very_short_clips():
    assert extract(np.full(10, 0.1)).shape == (1, 64)


def test_mfcc_and_logmel_share_the_frame_rate(few):
    samples = few[0].load()
    lyon = extract(samples)
    mfcc = extract(samples, FeatureConfig(kind="mfcc"))
    logmel = extract(samples, FeatureConfig(kind="logmel", n_mels=32))
    assert mfcc.shape[1] == 13 and logmel.shape[1] == 32
    assert abs(mfcc.shape[0] - lyon.shape[0]) <= 3 and abs(logmel.shape[0] - lyon.shape[0]) <= 3
    assert np.all(np.isfinite(mfcc)) and np.all(np.isfinite(logmel))


def test_mel_energy_follows_a_tone():
    t = np.arange(4000) / 8000
    low = extract(np.sin(2 * np.pi * 300 * t), FeatureConfig(kind="logmel"))
    high = extract(np.sin(2 * np.pi * 3000 * t), FeatureConfig(kind="logmel"))
    assert np.argmax(low.mean(0)) < np.argmax(high.mean(0))


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown"):
        FeatureConfig(kind="wavelet")
    with pytest.raises(ConfigError, match="n_mfcc"):
        FeatureConfig(kind="mfcc", n_mfcc=50, n_mels=40)


def test_normalizer_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = [rng.normal(5e-4, 2e-4, size=(30, 4)) for _ in range(5)]
    test = rng.normal(1.0, 1.0, size=(10, 4))
    norm = ChannelNormalizer().fit(train)
    z = np.concatenate([norm.transform(f) for f in train])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-12)
    assert norm.transform(test).mean() > 100  # test data is not re-centred with its own stats
    const = ChannelNormalizer().fit([np.ones((4, 2))])
    assert np.all(np.isfinite(const.transform(np.ones((3, 2)))))
    with pytest.raises(ConfigError, match="before fit"):
        ChannelNormalizer().transform(test)
    with pytest.raises(ConfigError, match="channels"):
        norm.transform(np.zeros((2, 3)))


def test_cache_round_trip_and_invalidation(few, tmp_path):
    calls = []
    first = utterance_features(few, cache_dir=tmp_path, progress=lambda d, t: calls.append(d))
    assert calls == list(range(1, len(few) + 1))
    assert len(list(tmp_path.glob("features-lyon-*.npz"))) == 1
    calls.clear()
    again = utterance_features(few, cache_dir=tmp_path, progress=lambda d, t: calls.append(d))
    assert calls == []  # served from the cache
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    utterance_features(few[:3], cache_dir=tmp_path)  # different file list -> different cache entry
    assert len(list(tmp_path.glob("features-lyon-*.npz"))) == 2
