"""Recorded drive -> response pairs for the twin, and what training reads off them.

A :class:`Trajectory` is one recorded drive -> response pair (a device recording, or a slice
of a micromagnetic simulation): one or several drives, and conditions that are either fixed for
the recording or, like a slowly modulated material parameter, one value per sample. The
normalisation, the drive and condition ranges and the noise level a twin is trained with are
statistics of its training trajectories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from spinlab.errors import ConfigError
from spinlab.twin.model import Normalisation


@dataclass
class Trajectory:
    """One drive/response pair on a uniform grid.

    ``drive`` is ``(n,)`` (one drive) or ``(D, n)`` (D drives); each condition is a number (the
    same for the whole recording) or ``(n,)`` values (a slow input, held over each step).
    ``initial`` says how a free-running prediction of it must start: ``"measured"`` (from its
    first samples, e.g. a slice out of a longer simulation) or ``"rest"`` (the device sat at
    rest with the drive at 0 before the recording started, as every ``Device.respond`` does).
    """

    drive: np.ndarray
    response: np.ndarray
    dt_s: float
    conditions: dict[str, float | np.ndarray] = field(default_factory=dict)
    initial: str = "measured"

    def __post_init__(self) -> None:
        drive = np.asarray(self.drive, dtype=np.float64)
        self.drive = drive if drive.ndim == 2 and drive.shape[0] > 1 else drive.reshape(-1)
        self.response = np.asarray(self.response, dtype=np.float64).reshape(-1)
        if self.drive.shape[-1] != self.response.size:
            raise ConfigError(
                f"drive and response lengths differ ({self.drive.shape[-1]} vs {self.response.size})"
            )
        if not (np.all(np.isfinite(self.drive)) and np.all(np.isfinite(self.response))):
            raise ConfigError("trajectory has non-finite samples")
        if self.initial not in ("measured", "rest"):
            raise ConfigError(f"initial must be 'measured' or 'rest', got {self.initial!r}")
        conditions: dict[str, float | np.ndarray] = {}
        for name, value in self.conditions.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.size == 1:
                conditions[name] = float(arr.reshape(-1)[0])
            elif arr.shape == (self.n,) and np.all(np.isfinite(arr)):
                conditions[name] = arr
            else:
                raise ConfigError(
                    f"condition {name} must be a number or {self.n} finite values, got shape {arr.shape}"
                )
        self.conditions = conditions

    @property
    def n(self) -> int:
        return int(self.response.size)

    @property
    def drives(self) -> np.ndarray:
        """``(D, n)``, also for one drive."""
        return self.drive.reshape(-1, self.n)

    @property
    def varying(self) -> bool:
        """Whether a condition changes within the recording."""
        return any(isinstance(v, np.ndarray) for v in self.conditions.values())

    def condition_series(self, names: Sequence[str]) -> np.ndarray:
        """``(n, C)``: every condition at every sample."""
        return (
            np.stack([np.broadcast_to(_condition(self, name), self.n) for name in names], axis=-1)
            if names
            else np.zeros((self.n, 0))
        )

    def span(self, start: int, stop: int) -> Trajectory:
        """Samples ``start:stop`` (a held-out span, a validation span)."""
        return replace(
            self,
            drive=self.drive[..., start:stop],
            response=self.response[start:stop],
            conditions={
                k: v[start:stop] if isinstance(v, np.ndarray) else v for k, v in self.conditions.items()
            },
        )


def estimate_noise_std(y: np.ndarray) -> float:
    """White measurement-noise std from the second difference, robust to steps (MAD).

    For white noise e, the second difference has variance 6 var(e); a slow signal barely
    contributes and occasional steps are ignored by the median."""
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[None]
    d2 = np.diff(y, n=2, axis=-1).reshape(-1)
    if d2.size == 0:
        return 0.0
    mad = float(np.median(np.abs(d2 - np.median(d2))))
    return mad / 0.6745 / math.sqrt(6.0)


def fit_normalisation(trajectories: Sequence[Trajectory], condition_names: Sequence[str]) -> Normalisation:
    """Mean/std of output, drive(s) and conditions over the training trajectories (every
    sample counts once)."""
    if not trajectories:
        raise ConfigError("no training data to fit the normalisation on")
    y = np.concatenate([t.response for t in trajectories])
    u = np.concatenate([t.drives for t in trajectories], axis=1)
    c = np.concatenate([t.condition_series(condition_names) for t in trajectories])
    c_mean = [float(v) for v in c.mean(axis=0)]
    c_std = [float(s) if s > 0 else max(abs(m), 1.0) for m, s in zip(c_mean, c.std(axis=0))]
    y_std = float(np.std(y))
    u_mean = [float(v) for v in u.mean(axis=1)]
    u_std = [float(s) if s > 0 else 1.0 for s in u.std(axis=1)]
    one = len(u_mean) == 1
    return Normalisation(
        float(np.mean(y)),
        y_std if y_std > 0 else 1.0,
        u_mean[0] if one else u_mean,
        u_std[0] if one else u_std,
        c_mean,
        c_std,
    )


def drive_ranges(trajectories: Sequence[Trajectory]) -> list[list[float]]:
    """[min, max] of every drive seen in training."""
    u = np.concatenate([t.drives for t in trajectories], axis=1)
    return [[float(lo), float(hi)] for lo, hi in zip(u.min(axis=1), u.max(axis=1))]


def condition_ranges(
    trajectories: Sequence[Trajectory], condition_names: Sequence[str]
) -> dict[str, list[float]]:
    """[min, max] of every condition seen in training (the twin warns outside it)."""
    return {
        n: [
            float(min(np.min(_condition(t, n)) for t in trajectories)),
            float(max(np.max(_condition(t, n)) for t in trajectories)),
        ]
        for n in condition_names
    }


def _condition(t: Trajectory, name: str) -> float | np.ndarray:
    try:
        return t.conditions[name]
    except KeyError:
        raise ConfigError(f"trajectory lacks condition {name!r} (has {sorted(t.conditions)})") from None
