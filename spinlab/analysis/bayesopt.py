"""Bayesian optimisation over a box, on plain arrays: BoTorch's Gaussian processes, not our own.

Points live in the unit cube (the caller maps them onto its settings); values are maximised (a
caller minimising passes their negatives). A measurement on a device is noisy, so the model is a
GP whose noise level is fitted with its kernel (``SingleTaskGP``), and the acquisition is noisy
expected improvement (``qLogNoisyExpectedImprovement``), which never trusts one lucky reading.

Screening: evaluations on a cheap stand-in (a twin, a simulator) and on the device are modelled
together by a multi-task GP (``MultiTaskGP``, task 0 the stand-in, task 1 the device), which learns
how far the two agree; candidates for the device are chosen on its task, so a good stand-in saves
device evaluations and a poor one costs little more than none.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

#: Restarts and raw samples of the acquisition's optimisation (botorch.optim.optimize_acqf).
RESTARTS, RAW_SAMPLES = 4, 128


def sobol_points(n: int, dims: int, seed: int) -> np.ndarray:
    """``n`` scrambled Sobol points in the unit cube (the design before the model has data)."""
    engine = torch.quasirandom.SobolEngine(dims, scramble=True, seed=seed)
    return engine.draw(n).to(torch.float64).numpy()


def _fit(x: np.ndarray, y: np.ndarray, tasks: np.ndarray | None) -> object:
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import MultiTaskGP, SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    train_y = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1)
    if tasks is None:
        model = SingleTaskGP(
            torch.as_tensor(x, dtype=torch.float64), train_y, outcome_transform=Standardize(m=1)
        )
    else:
        train_x = torch.as_tensor(np.column_stack([x, tasks]), dtype=torch.float64)
        model = MultiTaskGP(train_x, train_y, task_feature=-1, output_tasks=[1], all_tasks=[0, 1])
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def propose(
    x: np.ndarray, y: np.ndarray, *, seed: int, tasks: np.ndarray | None = None, avoid: float = 1e-3
) -> np.ndarray:
    """The next point to evaluate (on the device: task 1 when ``tasks`` labels the rows) given
    the points ``x`` (rows in the unit cube) and their values ``y`` (to maximise)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # botorch's optimiser warnings (restarts it retries) are not the user's
        warnings.simplefilter("ignore")
        return _propose(x, y, seed, tasks, avoid)


def _propose(x: np.ndarray, y: np.ndarray, seed: int, tasks: np.ndarray | None, avoid: float) -> np.ndarray:
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.optim import optimize_acqf

    model = _fit(x, y, tasks)
    on_device = x if tasks is None else x[np.asarray(tasks) == 1]
    if len(on_device) == 0:  # no device point yet: improve on the stand-in's best, predicted for the device
        on_device = x
    acquisition = qLogNoisyExpectedImprovement(
        model, X_baseline=torch.as_tensor(on_device, dtype=torch.float64), prune_baseline=True
    )
    dims = x.shape[1]
    bounds = torch.stack([torch.zeros(dims), torch.ones(dims)]).to(torch.float64)
    candidate, _ = optimize_acqf(acquisition, bounds, q=1, num_restarts=RESTARTS, raw_samples=RAW_SAMPLES)
    point = candidate.detach().numpy()[0]
    if len(x) and np.min(np.max(np.abs(x - point), axis=1)) < avoid:  # a repeat teaches little
        point = sobol_points(1, dims, seed + 7919)[0]
    return np.clip(point, 0.0, 1.0)


def predicted_best(x: np.ndarray, y: np.ndarray, *, tasks: np.ndarray | None = None) -> tuple[int, float]:
    """Among the device's evaluated points, the one whose model mean is highest (a noisy best
    reading is not the best point), and that mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _fit(x, y, tasks)
    rows = np.arange(len(x)) if tasks is None else np.flatnonzero(np.asarray(tasks) == 1)
    with torch.no_grad():
        mean = model.posterior(torch.as_tensor(x[rows], dtype=torch.float64)).mean.reshape(-1).numpy()  # type: ignore[attr-defined]
    best = int(np.argmax(mean))
    return int(rows[best]), float(mean[best])


__all__ = ["predicted_best", "propose", "sobol_points"]
