"""The reference a reservoir result is judged against: what a user would pick instead of a
device, here sequence features (MFCCs of utterances, say) pooled into a linear classifier."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spinlab.analysis.ridge import fit_cv


def pooled_reference(
    train: Sequence[np.ndarray],
    labels: np.ndarray,
    test: Sequence[np.ndarray],
    groups: np.ndarray,
    alphas: Sequence[float],
) -> np.ndarray:
    """Predicted classes of ``test``: every sequence (frames x coefficients) pooled to the mean
    and standard deviation of each coefficient, into a ridge classifier whose penalty is chosen
    by grouped cross-validation on ``train`` (the same choice the reservoir's readout gets)."""
    pooled = [np.concatenate([f.mean(axis=0), f.std(axis=0)])[None, :] for f in (*train, *test)]
    ridge, _ = fit_cv(pooled[: len(train)], np.asarray(labels), groups, alphas)
    return ridge.predict(pooled[len(train) :])


__all__ = ["pooled_reference"]
