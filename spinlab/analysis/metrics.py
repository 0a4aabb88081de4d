"""Scores of a prediction against the truth, shared by the plans and the twin."""

from __future__ import annotations

import numpy as np

from spinlab.errors import ConfigError


def nrmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """RMSE divided by the standard deviation of the true signal (pooled over everything)."""
    prediction, truth = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    std = float(np.std(truth))
    if std == 0:
        raise ConfigError("NRMSE is undefined for a constant true signal")
    return float(np.sqrt(np.mean((prediction - truth) ** 2)) / std)
