"""The fast ridge (one factorisation per fold) chooses the same penalty and predicts the same
classes as the solve-per-penalty implementation it replaced, kept here to compare against."""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from spinlab.analysis.ridge import (
    RidgeReadout,
    _normal_equations,
    _solve,
    _standardiser,
    fit_cv,
    ridge_weights,
)

ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def old_fit_cv(states, labels, groups, alphas, n_classes=10):
    """spinlab's fit_cv before issue 23: one Cholesky solve per (fold, penalty)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    readout = RidgeReadout(n_classes=n_classes)
    readout.mean, readout.std = _standardiser(states)
    sums, grams, crosses = [], {}, {}
    keys = np.unique(groups)
    for k in keys:
        members = np.flatnonzero(groups == k)
        design = readout._design(states[i] for i in members)
        grams[k], crosses[k], held_sums = _normal_equations(design, labels[members], n_classes)
        sums.append((members, held_sums))
    total_gram, total_cross = sum(grams.values()), sum(crosses.values())
    hits = {float(a): 0 for a in alphas}
    ridge = np.trace(total_gram) / total_gram.shape[0]
    for k, (members, held_sums) in zip(keys, sums):
        for a in hits:
            w = _solve(total_gram - grams[k], total_cross - crosses[k], a, ridge)
            hits[a] += int(np.sum(np.argmax(held_sums @ w, axis=1) == labels[members]))
    scores = {a: h / len(labels) for a, h in hits.items()}
    readout.alpha = max(sorted(scores, reverse=True), key=lambda a: scores[a])
    readout.weights = _solve(total_gram, total_cross, readout.alpha)
    return readout, scores


def digit_like(n: int, width: int, frames: tuple[int, int], seed: int, noise: float = 2.5):
    """Noisy class prototypes through a random nonlinearity: states of ``n`` utterances."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    prototypes = rng.standard_normal((10, width))
    states = []
    for label in labels:
        length = rng.integers(*frames)
        x = prototypes[label] + noise * rng.standard_normal((length, width))
        states.append(np.tanh(x).astype(np.float32))
    return states, labels, np.arange(n) % 5


@pytest.mark.parametrize(
    ("n", "width", "frames", "noise"),
    [(300, 400, (1, 2), 4.0), (300, 40, (20, 40), 8.0)],
    ids=["pooled-dual", "per-frame-primal"],
)
def test_same_penalty_and_predictions_as_the_solve_per_penalty_readout(n, width, frames, noise):
    states, labels, groups = digit_like(n, width, frames, seed=23, noise=noise)
    test_states, test_labels, _ = digit_like(100, width, frames, seed=24, noise=noise)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):  # small solves: threads only fight on a busy machine
        old, old_scores = old_fit_cv(states, labels, groups, ALPHAS)
    t1 = time.perf_counter()
    new, new_scores = fit_cv(states, labels, groups, ALPHAS)
    t2 = time.perf_counter()
    print(f"old {t1 - t0:.2f} s, new {t2 - t1:.2f} s, alpha {new.alpha:g}")
    assert new.alpha == old.alpha
    assert new_scores == pytest.approx(old_scores, abs=2 / n)  # a near-tie may flip one utterance
    np.testing.assert_array_equal(new.predict(test_states), old.predict(test_states))
    np.testing.assert_allclose(new.weights, old.weights, rtol=1e-6, atol=1e-9 * np.abs(old.weights).max())


def test_ridge_weights_dual_and_primal_agree_with_the_normal_equations():
    rng = np.random.default_rng(5)
    for rows, cols in ((30, 80), (80, 30)):
        x, y = rng.standard_normal((rows, cols)), rng.standard_normal((rows, 3))
        scale = float(np.trace(x.T @ x)) / cols
        for a, w in zip((1e-4, 1.0), ridge_weights(x, y, (1e-4, 1.0))):
            direct = np.linalg.solve(x.T @ x + a * scale * np.eye(cols), x.T @ y)
            np.testing.assert_allclose(w, direct, rtol=1e-7, atol=1e-10)


def test_progress_after_each_fold():
    states, labels, groups = digit_like(60, 100, (1, 2), seed=1)
    seen = []
    fit_cv(states, labels, groups, ALPHAS, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
