"""Task-independent measures of a reservoir from its states (Jaeger 2001; Dambre et al. 2012).

Every measure here takes the states a reservoir gave for a known input and fits linear readouts,
so the same code scores a device, a twin or the masked input alone (the no-device baseline):

* linear memory capacity: ``MC = sum_k r^2(u(n-k), y_k(n))``, the squared correlation on held-out
  points between each delayed input and its best linear reconstruction;
* information processing capacity (IPC): the same for products of normalised Legendre
  polynomials of delayed inputs, by total degree; for independent uniform inputs the capacities
  of all such functions add up to at most the number of linearly independent states;
* NARMA-10: the NRMSE of predicting the NARMA-10 system driven by the input;
* kernel rank and generalisation rank: the number of singular values of the final states of
  several streams that stand above the noise (distinct streams: high is good; nearly identical
  streams: low is good).

Why held-out and thresholded: a readout with F weights fitted on T points explains about F/T
of any target by chance; scoring on points it was not fitted on removes most of that bias, and
capacities below what an independent random target reaches (:func:`chance_threshold`) are set
to zero, so hundreds of IPC terms do not add up chance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.polynomial import legendre

from spinlab.errors import ConfigError

#: Ridge penalties tried by the blocked cross-validation (relative to the Gram matrix's mean eigenvalue).
DEFAULT_ALPHAS = tuple(10.0**k for k in range(-10, 0))


@dataclass(frozen=True)
class Split:
    """Rows that train the readouts and rows that score them (after the washout)."""

    train: slice
    test: slice


def split_rows(n: int, washout: int, train_fraction: float = 0.5) -> Split:
    """The first ``train_fraction`` of the rows after ``washout`` train, the rest scores."""
    usable = n - washout
    n_train = int(usable * train_fraction)
    if washout < 0 or n_train < 2 or usable - n_train < 2:
        raise ConfigError(f"{n} points with washout {washout} leave too few to train and test")
    return Split(slice(washout, washout + n_train), slice(washout + n_train, n))


def _design(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardised columns (constant ones dropped) with a bias column, scaled on ``train``."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    keep = std > 1e-12 * np.maximum(np.abs(mean), 1.0)
    return [
        np.hstack([(x[:, keep] - mean[keep]) / std[keep], np.ones((len(x), 1))]) for x in (train, *others)
    ]


def _ridge_weights(design: np.ndarray, targets: np.ndarray, alphas: tuple[float, ...]) -> list[np.ndarray]:
    """Ridge weights for every penalty from one eigendecomposition of the Gram matrix."""
    gram = design.T @ design
    eigenvalues, vectors = scipy.linalg.eigh(gram)
    scale = max(float(np.trace(gram)) / gram.shape[0], 1e-300)
    projected = vectors.T @ (design.T @ targets)
    return [vectors @ (projected / (np.maximum(eigenvalues, 0.0) + a * scale)[:, None]) for a in alphas]


def fit_predict(
    states: np.ndarray,
    targets: np.ndarray,
    split: Split,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    folds: int = 4,
) -> np.ndarray:
    """Held-out predictions ``(test rows, targets)``: per target, the penalty with the least
    squared error over ``folds`` contiguous blocks of the training rows, then a fit on them all."""
    x_train, y_train = states[split.train], targets[split.train]
    if len(alphas) > 1:
        errors = np.zeros((len(alphas), targets.shape[1]))
        for held in np.array_split(np.arange(len(x_train)), folds):
            keep = np.ones(len(x_train), bool)
            keep[held] = False
            fit, test = _design(x_train[keep], x_train[held])
            for i, w in enumerate(_ridge_weights(fit, y_train[keep], alphas)):
                errors[i] += np.sum((test @ w - y_train[held]) ** 2, axis=0)
        chosen = np.asarray(alphas)[np.argmin(errors, axis=0)]
    else:
        chosen = np.full(targets.shape[1], alphas[0])
    fit, test = _design(x_train, states[split.test])
    out = np.empty((len(test), targets.shape[1]))
    penalties = tuple(float(a) for a in np.unique(chosen))
    for alpha, w in zip(penalties, _ridge_weights(fit, y_train, penalties)):
        columns = chosen == alpha
        out[:, columns] = test @ w[:, columns]
    return out


def squared_correlation(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Column-wise squared Pearson correlation (0 where either column is constant)."""
    p = prediction - prediction.mean(axis=0)
    t = target - target.mean(axis=0)
    denominator = np.sum(p**2, axis=0) * np.sum(t**2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(denominator > 0, np.sum(p * t, axis=0) ** 2 / denominator, 0.0)
    return np.clip(r2, 0.0, 1.0)


def delayed(u: np.ndarray, delays: np.ndarray | range) -> np.ndarray:
    """``(len(u), len(delays))``: column k holds ``u(n - delays[k])`` (0 before the start)."""
    out = np.zeros((len(u), len(delays)))
    for j, k in enumerate(delays):
        out[k:, j] = u[: len(u) - k] if k else u
    return out


def chance_threshold(
    states: np.ndarray,
    split: Split,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    surrogates: int = 40,
    seed: int = 0,
    quantile: float = 0.99,
) -> float:
    """The capacity an independent random target reaches by chance (its ``quantile`` over
    ``surrogates`` targets): capacities at or below it count as zero."""
    rng = np.random.default_rng(seed)
    targets = rng.uniform(-1.0, 1.0, (len(states), surrogates))
    r2 = squared_correlation(fit_predict(states, targets, split, alphas), targets[split.test])
    return float(np.quantile(r2, quantile))


@dataclass(frozen=True)
class Capacities:
    """Per-target capacities (thresholded) and the chance threshold used."""

    values: np.ndarray
    threshold: float

    @property
    def total(self) -> float:
        return float(self.values.sum())


def capacities(
    states: np.ndarray,
    targets: np.ndarray,
    split: Split,
    threshold: float,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
) -> Capacities:
    """Held-out squared correlations of ``targets`` from ``states``, zero at or below ``threshold``."""
    r2 = squared_correlation(fit_predict(states, targets, split, alphas), targets[split.test])
    return Capacities(np.where(r2 > threshold, r2, 0.0), threshold)


def memory_capacity(
    states: np.ndarray,
    u: np.ndarray,
    split: Split,
    max_delay: int,
    threshold: float,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
) -> Capacities:
    """Linear memory capacity for delays ``0..max_delay - 1`` of the input ``u`` (uniform in
    [-1, 1]); ``values[k]`` is the capacity at delay k."""
    return capacities(states, delayed(u, range(max_delay)), split, threshold, alphas)


def narma10(s: np.ndarray) -> np.ndarray:
    """The NARMA-10 system's output for an input ``s`` in [0, 0.5] (Atiya and Parlos 2000):
    ``y(n+1) = 0.3 y(n) + 0.05 y(n) sum_{i<10} y(n-i) + 1.5 s(n-9) s(n) + 0.1``."""
    y = np.zeros(len(s) + 1)
    for n in range(9, len(s)):
        y[n + 1] = 0.3 * y[n] + 0.05 * y[n] * np.sum(y[n - 9 : n + 1]) + 1.5 * s[n - 9] * s[n] + 0.1
    return y[1:]  # y[n] here is y(n+1): the target of the state at n


def narma10_nrmse(
    states: np.ndarray, u: np.ndarray, split: Split, alphas: tuple[float, ...] = DEFAULT_ALPHAS
) -> float:
    """NRMSE (RMS error over the target's standard deviation) of predicting NARMA-10's next
    output from the states, the system driven by ``s = (u + 1) / 4`` (u uniform in [-1, 1] maps
    onto the usual s in [0, 0.5])."""
    target = narma10((u + 1.0) / 4.0)[:, None]
    prediction = fit_predict(states, target, split, alphas)[:, 0]
    truth = target[split.test, 0]
    return float(np.sqrt(np.mean((prediction - truth) ** 2)) / np.std(truth))


def legendre_basis(max_delays: dict[int, int]) -> list[tuple[tuple[int, int], ...]]:
    """Every product of Legendre polynomials of total degree d (a key of ``max_delays``) over
    delays ``0..max_delays[d] - 1``: each term a tuple of ``(delay, polynomial degree)``."""
    terms: list[tuple[tuple[int, int], ...]] = []
    for degree, span in sorted(max_delays.items()):
        for parts in _partitions(degree):
            for chosen in itertools.combinations(range(span), len(parts)):
                for order in set(itertools.permutations(parts)):
                    terms.append(tuple(zip(chosen, order)))
    return terms


def _partitions(n: int, largest: int | None = None) -> list[tuple[int, ...]]:
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    return [(k, *rest) for k in range(min(n, largest), 0, -1) for rest in _partitions(n - k, k)]


def legendre_targets(u: np.ndarray, terms: list[tuple[tuple[int, int], ...]]) -> np.ndarray:
    """``(len(u), len(terms))``: each term's product of normalised Legendre polynomials (unit
    variance for u uniform in [-1, 1]) of the delayed inputs."""
    delays = sorted({k for term in terms for k, _ in term})
    shifted = dict(zip(delays, delayed(u, delays).T))
    out = np.ones((len(u), len(terms)))
    for j, term in enumerate(terms):
        for k, degree in term:
            coefficients = np.zeros(degree + 1)
            coefficients[degree] = np.sqrt(2 * degree + 1)
            out[:, j] *= legendre.legval(shifted[k], coefficients)
    return out


def information_processing_capacity(
    states: np.ndarray,
    u: np.ndarray,
    split: Split,
    max_delays: dict[int, int],
    threshold: float,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
) -> dict[int, float]:
    """Total capacity per degree (Dambre et al. 2012) over the Legendre products of
    :func:`legendre_basis`."""
    totals: dict[int, float] = {}
    for degree, span in sorted(max_delays.items()):
        terms = legendre_basis({degree: span})
        found = capacities(states, legendre_targets(u, terms), split, threshold, alphas)
        totals[degree] = found.total
    return totals


def effective_features(states: np.ndarray, split: Split) -> int:
    """Linearly independent state columns over the scored rows: the bound on the total capacity."""
    (test,) = _design(states[split.test])
    return int(np.linalg.matrix_rank(test[:, :-1]))


def rank_above_noise(final_states: np.ndarray, repeat_states: np.ndarray | None = None) -> int:
    """Singular values of ``final_states`` (streams x features, centred) above the noise: the
    largest singular value of the difference between two runs of the same streams over sqrt 2
    (``repeat_states``), and never below the rounding of float32 recordings (numpy's
    ``matrix_rank`` tolerance with float32's epsilon)."""
    centred = final_states - final_states.mean(axis=0)
    singular = scipy.linalg.svdvals(centred)
    if not singular.size or singular[0] == 0:
        return 0
    floor = float(singular[0]) * max(centred.shape) * float(np.finfo(np.float32).eps)
    if repeat_states is not None:
        noise = scipy.linalg.svdvals((final_states - repeat_states) / np.sqrt(2.0))
        floor = max(floor, float(noise[0]))
    return int(np.sum(singular > floor))


__all__ = [
    "Capacities",
    "DEFAULT_ALPHAS",
    "Split",
    "capacities",
    "chance_threshold",
    "delayed",
    "effective_features",
    "fit_predict",
    "information_processing_capacity",
    "legendre_basis",
    "legendre_targets",
    "memory_capacity",
    "narma10",
    "narma10_nrmse",
    "rank_above_noise",
    "split_rows",
    "squared_correlation",
]
