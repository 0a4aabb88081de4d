"""Scoring a twin: free-running predictions of whole held-out trajectories, and their NRMSE."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spinlab.analysis.metrics import nrmse
from spinlab.errors import ConfigError
from spinlab.twin.model import SpinNODE
from spinlab.twin.trajectory import Trajectory


def predict(
    model: SpinNODE,
    trajectories: Sequence[Trajectory],
    *,
    settle_samples: int = 0,
    rest_drive: float | None = None,
) -> list[np.ndarray]:
    """Free-running predictions of whole trajectories (batched by length and start kind).

    Returns one array per trajectory on its full grid; for ``initial="measured"`` the first
    ``history_samples - 1`` entries are the measured history itself."""
    return _predict_levels(model, trajectories, settle_samples, (rest_drive,))[0]


def _predict_levels(
    model: SpinNODE,
    trajectories: Sequence[Trajectory],
    settle_samples: int,
    rest_drives: Sequence[float | None],
) -> list[list[np.ndarray]]:
    """:func:`predict` for several settle levels at once: one batched simulation per group of
    trajectories of one length and start kind, every level in the same batch."""
    levels = len(rest_drives)
    out: list[list[np.ndarray | None]] = [[None] * len(trajectories) for _ in rest_drives]
    hist = model.arch.history_samples
    groups: dict[tuple[int, str], list[int]] = {}
    for i, t in enumerate(trajectories):
        groups.setdefault((t.n, t.initial), []).append(i)
    dtype = model.y_mean.dtype
    names = model.arch.condition_names
    for (n, initial), members in groups.items():
        group = [trajectories[i] for i in members]
        drive = torch.as_tensor(np.stack([t.drive for t in group]), dtype=dtype)
        resp = np.stack([t.response for t in group])
        if any(t.varying for t in group):  # per-sample conditions (B, n, C)
            cond = torch.as_tensor(np.stack([t.condition_series(names) for t in group]), dtype=dtype)
        else:
            cond = model.condition_tensor(
                {name: [t.conditions[name] for t in group] for name in names}, len(members)
            )
        if initial == "measured":
            if n < hist:
                raise ConfigError(
                    f"trajectory of {n} samples is shorter than the twin's history of "
                    f"{hist} samples; use longer drives (or fewer --delays/--delay-samples)"
                )
            y = model.simulate(
                drive[..., hist - 1 :],
                cond[:, hist - 1 :] if cond.ndim == 3 else cond,
                y_history=torch.as_tensor(resp[:, :hist], dtype=dtype),
            )
            pred = np.concatenate([resp[:, : hist - 1], y.cpu().double().numpy()], axis=1)
            preds = [pred] * levels  # the measured start does not settle
        else:
            rest = torch.cat(
                [
                    drive[..., 0] if level is None else torch.full(drive.shape[:-1], level, dtype=dtype)
                    for level in rest_drives
                ]
            )
            again = (levels,) + (1,) * (drive.ndim - 1)
            y = model.simulate(
                drive.repeat(*again),
                cond.repeat(levels, *(1,) * (cond.ndim - 1)),
                settle_samples=settle_samples,
                rest_drive=rest,
            )
            preds = y.cpu().double().numpy().reshape(levels, len(members), n)
        for level, pred in enumerate(preds):
            for j, i in enumerate(members):
                out[level][i] = pred[j]
    return out  # type: ignore[return-value]


def trajectory_nrmse(
    model: SpinNODE,
    trajectories: Sequence[Trajectory],
    *,
    settle_samples: int = 0,
    rest_drive: float | None = None,
) -> float:
    """Pooled NRMSE of free-running predictions over the samples actually predicted."""
    return nrmse_per_rest_level(
        model, trajectories, settle_samples=settle_samples, rest_drives=(rest_drive,)
    )[0]


def nrmse_per_rest_level(
    model: SpinNODE,
    trajectories: Sequence[Trajectory],
    *,
    settle_samples: int,
    rest_drives: Sequence[float | None],
) -> list[float]:
    """:func:`trajectory_nrmse` for each settle level (None: the drive's first sample), from
    one batched simulation."""
    hist = model.arch.history_samples
    truth = np.concatenate([t.response[hist if t.initial == "measured" else 0 :] for t in trajectories])
    scores = []
    for preds in _predict_levels(model, trajectories, settle_samples, rest_drives):
        p = [pred[hist if t.initial == "measured" else 0 :] for t, pred in zip(trajectories, preds)]
        scores.append(nrmse(np.concatenate(p), truth))
    return scores
