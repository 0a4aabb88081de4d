"""Reservoir measures against devices and state sets whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab.analysis import reservoir_measures as rm
from spinlab.cli import app
from spinlab.engine import RunEngine
from spinlab.protocols import reservoir_measures
from spinlab.testing import DelayLine


@pytest.fixture(scope="module")
def uniform_input() -> tuple[np.ndarray, rm.Split]:
    u = np.random.default_rng(3).uniform(-1.0, 1.0, 3000)
    return u, rm.split_rows(len(u), 50)


@pytest.mark.parametrize("length", [1, 7, 15])
def test_a_shift_register_of_length_l_has_memory_capacity_l(uniform_input, length):
    u, split = uniform_input
    states = rm.delayed(u, range(length))
    threshold = rm.chance_threshold(states, split)
    mc = rm.memory_capacity(states, u, split, 30, threshold)
    assert mc.total == pytest.approx(length, rel=0.02)
    assert mc.values[length:].sum() < 0.02  # chance beyond the register is thresholded away


def test_ipc_counts_each_degree_of_a_known_feature_set(uniform_input):
    """Linear states of 6 delays plus every degree-2 Legendre product of them: the capacity is
    6 at degree 1, 21 at degree 2 and none at degree 3, within the number of states."""
    u, split = uniform_input
    states = np.hstack([rm.delayed(u, range(6)), rm.legendre_targets(u, rm.legendre_basis({2: 6}))])
    threshold = rm.chance_threshold(states, split)
    ipc = rm.information_processing_capacity(states, u, split, {1: 20, 2: 10, 3: 6}, threshold)
    assert ipc[1] == pytest.approx(6, rel=0.02)
    assert ipc[2] == pytest.approx(21, rel=0.02)
    assert ipc[3] < 0.3
    assert sum(ipc.values()) <= rm.effective_features(states, split) + 0.5


def test_legendre_basis_counts_products_of_every_total_degree():
    assert len(rm.legendre_basis({1: 10})) == 10
    assert len(rm.legendre_basis({2: 10})) == 10 + 45  # P2(u_k) and P1(u_j) P1(u_k)
    assert len(rm.legendre_basis({3: 5})) == 5 + 20 + 10  # P3, P2 P1 (ordered pairs), P1 P1 P1


def test_narma10_needs_memory_and_ranks_see_the_noise(uniform_input):
    u, split = uniform_input
    short = rm.narma10_nrmse(rm.delayed(u, range(3)), u, split)
    long = rm.narma10_nrmse(rm.delayed(u, range(20)), u, split)
    assert long < short and 0.3 < long < 0.6
    rng = np.random.default_rng(0)
    low_rank = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 30))
    noise = 1e-3 * rng.normal(size=(2, 40, 30))
    assert rm.rank_above_noise(low_rank + noise[0], low_rank + noise[1]) == 3
    assert rm.rank_above_noise(rng.normal(size=(40, 30))) == 30


def test_the_plan_recovers_a_delay_lines_memory_and_linearity(tmp_path):
    """Through the real encoding and engine: a delay line of 8 taps has capacity 8 (2 %), no
    nonlinear capacity, NARMA-10 as an ideal 8-register, and the masked input alone has 1."""
    nodes, taps = 20, 8
    config = {
        "n_points": 2000,
        "n_nodes": nodes,
        "theta_s": 1e-8,
        "samples_per_node": 1,
        "node_features": "mean",
        "ipc_delays": (20, 8, 6),
        "rank_streams": 30,
        "max_delay": 20,
    }
    device = DelayLine(taps, delay_samples=nodes - 1)
    result = RunEngine(tmp_path).run(reservoir_measures.plan(config), device)
    summary = result.summary
    assert summary["memory_capacity"] == pytest.approx(taps, rel=0.02)
    assert summary["ipc"]["1"] == pytest.approx(taps, rel=0.02)
    assert summary["ipc"]["2"] + summary["ipc"]["3"] < 0.3
    assert summary["baseline"]["memory_capacity"] == pytest.approx(1.0, abs=0.02)
    u = np.random.default_rng(0).uniform(-1, 1, 2000)  # any input: the ideal register's NRMSE
    ideal = rm.narma10_nrmse(rm.delayed(u, range(taps)), u, rm.split_rows(len(u), 100))
    assert summary["narma10_nrmse"] == pytest.approx(ideal, abs=0.05)
    assert summary["kernel_rank"] == min(taps, nodes)  # 30 streams, a linear register of 8
    assert summary["generalisation_rank"] <= summary["kernel_rank"]
    assert (result.path / "memory_capacity.png").exists() and (result.path / "ipc.png").exists()


def test_reservoir_measures_on_sim_vortex_from_the_command_line(tmp_path):
    done = CliRunner().invoke(
        app,
        ["run", "reservoir-measures", "--device", "sim:vortex", "--points", "800", "--nodes", "10",
         "--rank-streams", "12", "--max-delay", "10", "--ipc-delays", "10,4,3",
         "--runs-dir", str(tmp_path), "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["memory_capacity"] > 0.5 and "baseline" in summary
    assert summary["ipc"]["2"] > summary["baseline"]["ipc"]["2"]  # the oscillator adds nonlinearity
