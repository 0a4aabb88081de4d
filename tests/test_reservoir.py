"""Mask encoding, drive layout, state extraction, batching and the ridge readout."""

from __future__ import annotations

import numpy as np
import pytest

from spinlab.analysis.ridge import RidgeReadout, select_alpha
from spinlab.errors import ConfigError
from spinlab.speech.encoder import Encoder, length_batches, make_mask, node_states, pack


def test_masks_are_seeded_and_documented_kinds():
    a = make_mask(400, 64, "binary", seed=3)
    assert a.shape == (400, 64) and set(np.unique(a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(a, make_mask(400, 64, "binary", seed=3))
    assert not np.array_equal(a, make_mask(400, 64, "binary", seed=4))
    n = make_mask(400, 64, "normal", seed=3)
    assert abs(n.mean()) < 0.02 and abs(n.std() - 1) < 0.02
    with pytest.raises(ConfigError, match="unknown"):
        make_mask(4, 4, "ternary")


def test_encoder_layout_scaling_and_safety():
    mask = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    train = [np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([[-3.0, 1.0]])]
    enc = Encoder(mask, theta_s=200e-9, samples_per_node=2, amplitude_V=0.4, input_sigma=1.0).fit(train)
    assert enc.dt_s == pytest.approx(100e-9)
    masked = np.concatenate([enc.masked(f) for f in train])
    assert enc.scale == pytest.approx(masked.std())
    drive = enc.drive(train[0])
    assert drive.shape == (2 * 3 * 2,)  # frames x nodes x samples per node
    # node k of frame t occupies samples [2(3t+k), 2(3t+k)+2)
    expected = np.clip(0.4 * enc.masked(train[0]) / enc.scale, -0.4, 0.4).reshape(-1)
    np.testing.assert_allclose(drive[::2], expected)
    np.testing.assert_allclose(drive[1::2], expected)
    assert np.abs(drive).max() <= 0.4 + 1e-12
    with pytest.raises(ConfigError, match="fit"):
        Encoder(mask).drive(train[0])
    with pytest.raises(ConfigError, match="shape"):
        enc.masked(np.zeros((2, 5)))
    with pytest.raises(ConfigError, match="samples_per_node"):
        Encoder(mask, samples_per_node=0)


def test_node_states_mean_and_samples():
    response = np.arange(2 * 3 * 2, dtype=float)  # 2 frames, 3 nodes, 2 samples per node
    mean = node_states(np.concatenate([response, [99.0, 99.0]]), 2, 3, 2, "mean")  # padding ignored
    np.testing.assert_allclose(mean, [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]])
    assert node_states(response, 2, 3, 2, "samples").shape == (2, 6)
    with pytest.raises(ConfigError, match="needs"):
        node_states(response[:5], 2, 3, 2)


def test_pack_pads_at_the_end_and_batches_by_length():
    batch, lengths = pack([np.ones(3), np.full(5, 2.0)])
    np.testing.assert_array_equal(batch, [[1, 1, 1, 0, 0], [2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(lengths, [3, 5])
    lens = [10, 100, 12, 95, 11, 50]
    batches = length_batches(lens, max_samples=150)
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lens[i] for i in b) <= 150
    assert set(batches[0].tolist()) == {0, 2, 4}  # the short ones travel together


def _toy(n_utt=60, frames=8, dim=6, seed=0, noise=0.3):
    """Utterances whose frames scatter around a class centroid: linearly separable on average."""
    centroids = np.random.default_rng(123).normal(size=(10, dim)) * 2  # same classes for every seed
    rng = np.random.default_rng(seed)
    labels = np.arange(n_utt) % 10
    states = [centroids[y] + noise * rng.normal(size=(frames, dim)) for y in labels]
    return states, labels


def test_ridge_readout_classifies_by_summed_frames():
    states, labels = _toy(noise=1.5)
    readout = RidgeReadout(alpha=1e-4).fit(states, labels)
    assert readout.weights.shape == (6 + 1, 10)  # bias column
    test_states, test_labels = _toy(seed=1, noise=1.5)
    # summing over frames averages the frame noise: utterance accuracy beats the frame vote
    utt = np.mean(readout.predict(test_states) == test_labels)
    frame = readout.frame_accuracy(test_states, test_labels)
    assert utt > frame and utt >= 0.9


def test_ridge_is_invariant_to_state_scale():
    states, labels = _toy()
    a = RidgeReadout(1e-3).fit(states, labels).predict(states)
    b = RidgeReadout(1e-3).fit([1e-4 * s + 7 for s in states], labels).predict([1e-4 * s + 7 for s in states])
    np.testing.assert_array_equal(a, b)


def _hidden_direction(n_utt=100, frames=8, seed=0):
    """Class signal lives in a low-variance direction (x1 - x2) under a large shared nuisance:
    strong shrinkage removes exactly that direction, so too large an alpha must lose."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_utt) % 10
    code = np.random.default_rng(7).normal(size=(10, 8))
    states = []
    for y in labels:
        nuisance = rng.normal(size=(frames, 1)) * 10
        signal = code[y] + 0.02 * rng.normal(size=(frames, 8))
        states.append(
            np.hstack(
                [nuisance + 0.05 * signal, nuisance - 0.05 * signal, nuisance + rng.normal(size=(frames, 1))]
            )
        )
    return states, labels


def test_select_alpha_rejects_too_much_shrinkage_and_validates():
    states, labels = _hidden_direction()
    groups = (np.arange(100) // 10) % 5  # every fold holds every class
    best, scores = select_alpha(states, labels, groups, [1e-6, 1e-3, 1e2])
    assert set(scores) == {1e-6, 1e-3, 1e2}
    assert scores[1e2] < 0.5 < scores[best] and best < 1e2
    assert scores[best] == max(scores.values())
    with pytest.raises(ConfigError, match="two groups"):
        select_alpha(states, labels, np.zeros(100), [1e-3])
    with pytest.raises(ConfigError, match="positive"):
        select_alpha(states, labels, groups, [0.0])
    with pytest.raises(ConfigError, match="labels"):
        RidgeReadout().fit(states, labels + 5)


def test_piece_states_match_the_whole_drive_on_a_noiseless_oscillator():
    from spinlab import open_device
    from spinlab.speech.encoder import device_states, piece_states

    rng = np.random.default_rng(0)
    features = [rng.standard_normal((n, 8)) for n in (13, 5)]
    encoder = Encoder(make_mask(30, 8, seed=1), 400e-9, 2, 0.5, 1.75).fit(features)
    device = open_device("sim:vortex?noise=0")
    whole = device_states(device, encoder, features, {"bias_A": 6e-3})
    pieces = piece_states(device, encoder, features, {"bias_A": 6e-3}, piece_frames=4)
    for a, b in zip(whole, pieces):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())
