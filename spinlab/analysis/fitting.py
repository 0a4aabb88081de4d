"""Batched least squares over a box of positive parameters (Levenberg-Marquardt, grid, errors).

The library under the physics fit (``protocols/fit_physics.py``): a model predicts R records of
L samples for S parameter sets at once, with the derivatives of its prediction with respect to
the log-parameters. The parameters are fitted in box coordinates
``log theta = log lo + (log hi - log lo) sigmoid(u)``, so every step stays inside the box.

``descend`` scores random candidates, then runs batched Levenberg-Marquardt (damped Gauss-Newton:
gradient ``J^T r``, curvature ``J^T J``) from the best, first on the beginning of every record and
then on more of it (a rugged objective on a whole record can be smooth on its first tenth).
``grid_search`` scores every point of a log-spaced grid: the baseline. ``uncertainty`` is the
sandwich covariance ``H^-1 (sum_rec g g^T) H^-1`` in log-parameters, honest when the noise is
correlated within a record; ``s^2 H^-1`` when there are too few records for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: ``predict(values, wrt)``: ``values`` maps every parameter to its (S,) values; returns the
#: prediction (S, R, L) and its derivative with respect to the log of each ``wrt`` parameter
#: (S, R, L, len(wrt)).
Predict = Callable[[dict[str, np.ndarray], Sequence[str]], tuple[np.ndarray, np.ndarray]]


class SearchSettings(Protocol):
    """How :func:`descend` and :func:`grid_search` search (a plan's config supplies these)."""

    screen: int
    starts: int
    horizons: tuple[float, ...]
    max_iterations: int
    tolerance: float
    grid_points: int
    seed: int


class BoxObjective:
    """Mean squared normalised residual ``(prediction - target) / scale`` of ``names`` over their
    box, in box coordinates u (one row of u per parameter set); the other parameters keep their
    ``base`` values."""

    def __init__(
        self,
        predict: Predict,
        names: Sequence[str],
        box: Mapping[str, tuple[float, float]],
        base: Mapping[str, float],
        target: np.ndarray,
        scale: float,
    ) -> None:
        self.predict, self.names, self.base = predict, list(names), dict(base)
        self.lo = np.log([box[n][0] for n in self.names])
        self.hi = np.log([box[n][1] for n in self.names])
        self.target, self.scale = target, scale

    @property
    def n_records(self) -> int:
        return int(self.target.shape[0])

    def values(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """All parameters for each row of u (S, P)."""
        theta = np.exp(self.lo + (self.hi - self.lo) / (1.0 + np.exp(-np.clip(u, -40, 40))))
        out = {k: np.full(u.shape[0], v) for k, v in self.base.items()}
        out.update({n: theta[:, j] for j, n in enumerate(self.names)})
        return out

    def to_u(self, theta: np.ndarray) -> np.ndarray:
        frac = np.clip((np.log(theta) - self.lo) / (self.hi - self.lo), 1e-9, 1 - 1e-9)
        return np.log(frac / (1.0 - frac))

    def residuals(
        self, u: np.ndarray, jacobian: bool = True, *, log_space: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """r (S, N) and dr/du (S, N, P) (dr/dlog theta with ``log_space``)."""
        wrt = self.names if jacobian else []
        predicted, jac = self.predict(self.values(u), wrt)
        r = ((predicted - self.target) / self.scale).reshape(u.shape[0], -1)
        if not jacobian:
            return r, None
        jac = jac.reshape(u.shape[0], -1, len(self.names)) / self.scale
        if not log_space:
            s = 1.0 / (1.0 + np.exp(-np.clip(u, -40, 40)))
            jac = jac * ((self.hi - self.lo) * s * (1 - s))[:, None, :]
        return r, jac

    def loss(self, u: np.ndarray) -> np.ndarray:
        r, _ = self.residuals(u, jacobian=False)
        return np.mean(r * r, axis=1)


@dataclass
class Trace:
    """Best loss on the whole recordings against wall time (the grid-vs-descent comparison)."""

    start: float = field(default_factory=time.perf_counter)
    points: list[tuple[float, float]] = field(default_factory=list)

    def record(self, loss: float) -> None:
        best = min([loss] + [p[1] for p in self.points])
        self.points.append((time.perf_counter() - self.start, best))


def levenberg_marquardt(
    objective: BoxObjective,
    u: np.ndarray,
    max_iterations: int,
    tolerance: float,
    trace: Trace | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Batched Levenberg-Marquardt from every row of ``u``; returns (u, loss, iterations)."""
    u = u.copy()
    r, jac = objective.residuals(u)
    loss = np.mean(r * r, axis=1)
    damping = np.full(len(u), 1e-3)
    active = np.ones(len(u), bool)
    quiet = np.zeros(len(u), int)
    if trace is not None:
        trace.record(float(loss.min()))
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        g = np.einsum("snp,sn->sp", jac[idx], r[idx])
        h = np.einsum("snp,snq->spq", jac[idx], jac[idx])
        diag = np.einsum("spp->sp", h)
        diag = diag + 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300
        step = -np.linalg.solve(
            h + damping[idx, None, None] * np.eye(u.shape[1]) * diag[:, :, None], g[..., None]
        )[..., 0]
        trial = u[idx] + step
        r_new, jac_new = objective.residuals(trial)
        new = np.mean(r_new * r_new, axis=1)
        better = new < loss[idx]
        gain = np.where(better, (loss[idx] - new) / np.maximum(loss[idx], 1e-300), 0.0)
        take = idx[better]
        u[take], r[take], jac[take], loss[take] = trial[better], r_new[better], jac_new[better], new[better]
        damping[idx] = np.where(better, np.maximum(damping[idx] / 3.0, 1e-9), damping[idx] * 4.0)
        # converged: three accepted steps in a row that gain less than the tolerance, or a
        # damping so large that no step is left
        quiet[idx] = np.where(better, np.where(gain > tolerance, 0, quiet[idx] + 1), quiet[idx])
        active[idx] = (quiet[idx] < 3) & (damping[idx] < 1e10)
        if trace is not None:
            trace.record(float(loss.min()))
        if progress is not None:
            progress(iterations, float(loss.min()))
    return u, loss, iterations


def descend(
    objective_at: Callable[[float], BoxObjective],
    settings: SearchSettings,
    trace: Trace,
    progress: Callable[[str, int, float], None] | None = None,
) -> dict[str, Any]:
    """Random candidates -> the best ``starts`` -> LM on growing horizons of the records
    (``objective_at(fraction)`` scores the first fraction of every record). The trace holds the
    whole-record loss after the screen, after each shorter horizon and at every iteration of the
    last."""
    whole = objective_at(1.0)
    rng = np.random.default_rng(settings.seed)
    frac = rng.uniform(0.02, 0.98, (settings.screen, len(whole.names)))  # log-uniform in the box
    candidates = np.log(frac / (1.0 - frac))
    screened = objective_at(settings.horizons[0]).loss(candidates)
    u = candidates[np.argsort(screened)[: settings.starts]]
    stages = []
    for horizon in settings.horizons:
        if horizon < 1.0 or not stages:
            trace.record(float(whole.loss(u).min()))
        objective = whole if horizon == 1.0 else objective_at(horizon)
        u, loss, iterations = levenberg_marquardt(
            objective,
            u,
            settings.max_iterations,
            settings.tolerance,
            trace if horizon == 1.0 else None,
            (lambda i, best, h=horizon: progress(f"horizon {h:g}", i, best)) if progress else None,
        )
        stages.append({"horizon": horizon, "iterations": iterations, "best_loss": float(loss.min())})
    return {"u": u, "loss": loss, "stages": stages, "screened_best_loss": float(screened.min())}


def grid_search(
    objective: BoxObjective,
    settings: SearchSettings,
    trace: Trace,
    progress: Callable[[str, int, float], None] | None = None,
    chunk_samples: int = 2_000_000,
) -> dict[str, Any]:
    """Every point of a grid (cell centres, log-spaced) over the box, on the whole records."""
    k, p = settings.grid_points, len(objective.names)
    centres = np.log((np.arange(k) + 0.5) / (k - np.arange(k) - 0.5))  # logit((i + 0.5) / k)
    points = np.stack(np.meshgrid(*[centres] * p, indexing="ij"), axis=-1).reshape(-1, p)
    chunk = max(1, chunk_samples // objective.target.size)
    losses = np.empty(len(points))
    for i in range(0, len(points), chunk):
        losses[i : i + chunk] = objective.loss(points[i : i + chunk])
        trace.record(float(losses[: i + chunk].min()))
        if progress is not None:
            progress("grid", min(i + chunk, len(points)), float(losses[: i + chunk].min()))
    order = np.argsort(losses)[: settings.starts]
    return {"u": points[order], "loss": losses[order], "stages": [{"grid_points": len(points)}]}


def uncertainty(objective: BoxObjective, u_best: np.ndarray) -> tuple[np.ndarray, str]:
    """Std of each log-parameter at ``u_best`` (sandwich over recordings, else s^2 H^-1)."""
    r, jac = objective.residuals(u_best[None], log_space=True)
    r, jac = r[0], jac[0]
    n_rec, p = objective.n_records, jac.shape[1]
    try:
        h_inv = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return np.full(p, np.inf), "singular curvature (parameters not identifiable from these data)"
    if n_rec > p:
        scores = np.einsum("rnp,rn->rp", jac.reshape(n_rec, -1, p), r.reshape(n_rec, -1))
        cov = h_inv @ (scores.T @ scores) @ h_inv * n_rec / (n_rec - 1)
        method = f"sandwich over {n_rec} recordings"
    else:
        cov = h_inv * float(r @ r) / max(len(r) - p, 1)
        method = "curvature (s^2 H^-1; fewer recordings than parameters for the sandwich)"
    return np.sqrt(np.clip(np.diag(cov), 0, None)), method
