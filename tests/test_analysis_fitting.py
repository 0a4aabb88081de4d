"""The least-squares library of spinlab.analysis.fitting on a model with a known answer: records
``y = amplitude * gain_r * exp(-t / tau)``, fitted by the same calls the physics fit makes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from spinlab.analysis.fitting import BoxObjective, Trace, descend, grid_search, uncertainty
from spinlab.analysis.metrics import nrmse
from spinlab.errors import ConfigError

T = np.linspace(0.0, 1.0, 50)
GAINS = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
TRUTH = {"amplitude": 2.0, "tau": 0.3}
BOX = {"amplitude": (0.1, 10.0), "tau": (0.01, 10.0)}


@dataclass
class Settings:
    screen: int = 32
    starts: int = 4
    horizons: tuple[float, ...] = (0.3, 1.0)
    max_iterations: int = 60
    tolerance: float = 1e-12
    grid_points: int = 12
    seed: int = 0


def decay(values, wrt, length=T.size):
    """(S, R, L) records and their derivatives by the log of each ``wrt`` parameter."""
    t = T[:length]
    amplitude, tau = values["amplitude"][:, None, None], values["tau"][:, None, None]
    y = amplitude * GAINS[None, :, None] * np.exp(-t / tau)
    by_log = {"amplitude": y, "tau": y * t / tau}
    return y, np.stack([by_log[name] for name in wrt], axis=-1) if wrt else np.zeros((*y.shape, 0))


def objective_for(target, horizon=1.0):
    length = max(2, int(round(horizon * len(T))))
    return BoxObjective(
        lambda values, wrt: decay(values, wrt, length),
        ["amplitude", "tau"],
        BOX,
        {},
        target[:, :length],
        float(np.std(target)),
    )


def fitted(objective, found):
    best = found["u"][int(np.argmin(found["loss"]))]
    return {name: float(v[0]) for name, v in objective.values(best[None]).items()}


def test_box_coordinates_round_trip_and_map_far_values_onto_the_edges_of_the_box():
    objective = objective_for(decay({k: np.array([v]) for k, v in TRUTH.items()}, [])[0][0])
    theta = np.array([[2.0, 0.3]])
    assert np.allclose(objective.values(objective.to_u(theta))["tau"], 0.3)
    far = objective.values(np.array([[-1e6, 1e6]]))
    assert far["amplitude"][0] == pytest.approx(BOX["amplitude"][0])  # the edges of the box, to rounding
    assert far["tau"][0] == pytest.approx(BOX["tau"][1])


def test_descent_over_growing_horizons_recovers_the_parameters_of_noise_free_records():
    target = decay({k: np.array([v]) for k, v in TRUTH.items()}, [])[0][0]
    trace = Trace()
    found = descend(lambda horizon: objective_for(target, horizon), Settings(), trace)
    values = fitted(objective_for(target), found)
    assert values == pytest.approx(TRUTH, rel=1e-6)
    assert [stage["horizon"] for stage in found["stages"]] == [0.3, 1.0]
    assert [best for _, best in trace.points] == sorted((best for _, best in trace.points), reverse=True)


def test_the_grid_finds_the_cell_nearest_the_truth_and_the_descent_beats_it():
    target = decay({k: np.array([v]) for k, v in TRUTH.items()}, [])[0][0]
    grid = grid_search(objective_for(target), Settings(), Trace())
    values = fitted(objective_for(target), grid)
    cell = np.log(10.0 / 0.01) / Settings.grid_points  # one grid cell of tau, in log units
    assert abs(np.log(values["tau"] / TRUTH["tau"])) < cell
    assert grid["stages"] == [{"grid_points": Settings.grid_points**2}]


def test_uncertainty_of_noisy_records_covers_the_truth_and_says_how_it_was_computed():
    rng = np.random.default_rng(1)
    clean = decay({k: np.array([v]) for k, v in TRUTH.items()}, [])[0][0]
    target = clean + rng.normal(0.0, 0.02, clean.shape)
    objective = objective_for(target)
    found = descend(lambda horizon: objective_for(target, horizon), Settings(), Trace())
    best = found["u"][int(np.argmin(found["loss"]))]
    log_std, method = uncertainty(objective, best)
    values = fitted(objective, found)
    assert method == "sandwich over 5 recordings"
    for j, name in enumerate(objective.names):
        assert 0 < log_std[j] < 0.05
        assert abs(np.log(values[name] / TRUTH[name])) < 4 * log_std[j]


def test_nrmse_is_the_rms_error_over_the_spread_of_the_truth():
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    assert nrmse(truth, truth) == 0.0
    assert nrmse(truth + 0.5, truth) == pytest.approx(0.5 / np.std(truth))
    with pytest.raises(ConfigError, match="constant"):
        nrmse(truth, np.ones(4))
