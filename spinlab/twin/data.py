"""The twin's training data, by its old import path (``spinlab.twin.data``).

The modules are split by job: :mod:`.trajectory` (recordings, normalisation, ranges),
:mod:`.sampler` (random training segments), :mod:`.evaluation` (free-running predictions and
their NRMSE), :mod:`.mumax` (MuMax3 tables); ``nrmse`` lives in :mod:`spinlab.analysis.metrics`.
Every name stays importable from here for code written against the old module.
"""

from __future__ import annotations

from spinlab.analysis.metrics import nrmse
from spinlab.twin.evaluation import nrmse_per_rest_level, predict, trajectory_nrmse
from spinlab.twin.mumax import (
    MUMAX_QUANTITIES,
    MumaxSplit,
    MumaxTable,
    condition_name,
    load_mumax_table,
    mumax_series,
    mumax_trajectories,
    require_columns,
    truncate_table,
)
from spinlab.twin.sampler import SegmentSampler
from spinlab.twin.trajectory import (
    Trajectory,
    condition_ranges,
    drive_ranges,
    estimate_noise_std,
    fit_normalisation,
)

__all__ = [
    "Trajectory",
    "nrmse",
    "estimate_noise_std",
    "fit_normalisation",
    "condition_ranges",
    "SegmentSampler",
    "predict",
    "trajectory_nrmse",
    "nrmse_per_rest_level",
    "MumaxTable",
    "load_mumax_table",
    "MumaxSplit",
    "mumax_series",
    "mumax_trajectories",
    "truncate_table",
    "condition_name",
    "require_columns",
    "drive_ranges",
    "MUMAX_QUANTITIES",
]
