"""MuMax3 tables, trajectories, normalisation, segments, and the skyrmion twin end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinlab.analysis.metrics import nrmse
from spinlab.errors import ConfigError
from spinlab.twin.evaluation import trajectory_nrmse
from spinlab.twin.model import TwinArchitecture, build_model
from spinlab.twin.mumax import MumaxSplit, load_mumax_table, mumax_trajectories, truncate_table
from spinlab.twin.sampler import SegmentSampler
from spinlab.twin.train import TrainConfig, train_offline
from spinlab.twin.trajectory import Trajectory, estimate_noise_std, fit_normalisation

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mumax3-skyrmion"
TABLE = DATA / "one_skyrmion_voltage_train" / "table.txt"
needs_data = pytest.mark.skipif(not TABLE.is_file(), reason="MuMax3 dataset not present")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_table(path, rows=40):
    t = 1e-9 + 2.5e-12 * np.arange(rows)
    ku = 8e5 + 1e5 * np.sin(2 * np.pi * 4e9 * t)
    mz = 0.75 + 0.01 * np.arange(rows)
    with open(path, "w") as fh:
        fh.write("# t (s)\tmx ()\tmy ()\tmz ()\tKu1.region100 (J/m3)\n")
        for row in zip(t, 0 * t, 0 * t, mz, ku):
            fh.write("\t".join(f"{v:.10g}" for v in row) + "\n")
    return t, ku, mz


def test_mumax_table_header_units_columns_and_split(tmp_path):
    t, ku, mz = _write_table(tmp_path / "table.txt")
    table = load_mumax_table(tmp_path / "table.txt")
    assert table.units == {"t": "s", "mx": "", "my": "", "mz": "", "Ku1.region100": "J/m3"}
    np.testing.assert_allclose(table.column("Ku1.region100 (J/m3)"), ku)
    with pytest.raises(ConfigError, match="available"):
        table.column("mzz")
    split = MumaxSplit(every=2, discard=3, n_train=10, n_val=4, n_test=5, output_scale=10.0)
    train, val, test = mumax_trajectories(table, split)
    assert (train.n, val.n, test.n) == (6, 4, 5)
    assert train.dt_s == pytest.approx(5e-12)
    # every 2nd row, y -> (y - y[0]) * 10, transient of 3 kept samples dropped
    np.testing.assert_allclose(train.response, (mz[::2] - mz[0])[3:9] * 10)
    np.testing.assert_allclose(test.drive, ku[::2][13:18])
    # resampling onto another uniform grid instead of decimating
    train_r, _, _ = mumax_trajectories(table, MumaxSplit(resample_dt_s=5e-12, discard=3, n_train=10, n_val=4))
    np.testing.assert_allclose(train_r.response, train.response, rtol=1e-6, atol=1e-9)


def test_bad_tables_raise_config_errors(tmp_path):
    (tmp_path / "nohead.txt").write_text("1\t2\n")
    with pytest.raises(ConfigError, match="header"):
        load_mumax_table(tmp_path / "nohead.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_mumax_table(tmp_path / "missing.txt")
    _write_table(tmp_path / "short.txt", rows=10)
    with pytest.raises(ConfigError, match="n_train"):
        mumax_trajectories(load_mumax_table(tmp_path / "short.txt"), MumaxSplit())


def test_nrmse_noise_estimate_and_normalisation():
    rng = np.random.default_rng(0)
    truth = np.sin(np.linspace(0, 20, 4000))
    assert nrmse(truth, truth) == 0
    assert nrmse(truth + 0.1 * np.std(truth), truth) == pytest.approx(0.1)
    noisy = np.repeat(rng.uniform(-1, 1, 400), 10) * 0.01 + 0.002 * rng.standard_normal(4000)
    assert estimate_noise_std(noisy) == pytest.approx(0.002, rel=0.15)
    trajs = [
        Trajectory(np.full(10, u), np.full(10, y), 1e-7, {"bias_A": b})
        for u, y, b in [(0.1, 1.0, 6e-3), (-0.1, 3.0, 8e-3)]
    ]
    norm = fit_normalisation(trajs, ("bias_A",))
    assert norm.y_mean == pytest.approx(2.0) and norm.y_std == pytest.approx(1.0)
    assert norm.c_mean == [pytest.approx(7e-3)] and norm.c_std == [pytest.approx(1e-3)]


def test_segments_never_cross_trajectory_boundaries():
    arch = TwinArchitecture(n_delays=2, delay_samples=2, hidden=4)
    model = build_model(arch)
    trajs = [Trajectory(np.zeros(30), np.full(30, float(i)), 1.0) for i in range(3)]
    sampler = SegmentSampler(model, segment_samples=5, seed=0)
    sampler.extend(trajs)
    assert sampler.n_windows == 3 * (30 - 2 - 5)  # starts from index (k-1)d to n-1-L
    x0, u, c, x_true = sampler.sample(200)
    assert x0.shape == (200, 2) and u.shape == (200, 6, 2) and x_true.shape == (200, 5, 2)
    whole = torch.cat([x0[:, None], x_true], dim=1)
    assert torch.all(whole == whole[:, :1, :1])  # every window lies in one trajectory


def test_two_drives_and_a_varying_condition_train_and_predict():
    """Segments carry every drive's delays and the condition per sample; a short training
    on a known two-drive, one-condition system beats the untrained twin free-running."""
    rng = np.random.default_rng(0)
    n = 1200
    u = np.stack([np.sin(np.arange(n) / 7.0) * rng.uniform(0.5, 1, n), np.cos(np.arange(n) / 29.0)])
    dmi = 3e-3 + 3e-4 * np.sin(np.arange(n) / 150.0)
    y = np.zeros(n)
    for i in range(1, n):
        y[i] = 0.9 * y[i - 1] + 0.1 * (u[0, i] * (1 + (dmi[i] - 3e-3) / 3e-4) + 0.5 * u[1, i])
    series = Trajectory(u, y, 1e-12, {"dmi_J_m2": dmi})
    train, val = series.span(0, 1000), series.span(1000, n)
    arch = TwinArchitecture(hidden=16, drive_names=("a", "b"), condition_names=("dmi_J_m2",))
    model = build_model(arch, fit_normalisation([train], arch.condition_names), seed=0)
    sampler = SegmentSampler(model, segment_samples=5, seed=0)
    sampler.extend([train])
    x0, feats, c, x_true = sampler.sample(8)
    assert feats.shape == (8, 6, 4) and c.shape == (8, 6, 1) and x_true.shape == (8, 5, 2)
    before = trajectory_nrmse(model, [val])
    train_offline(model, [train], [val], TrainConfig(max_steps=400, validate_every=100, seed=0))
    assert trajectory_nrmse(model, [val]) < min(0.5, before)


@needs_data
def test_skyrmion_twin_on_truncated_table_learns_quickly():
    """Fast version of the paper protocol: 8,000 rows, 1,200 training points, 300 steps."""
    table = truncate_table(load_mumax_table(TABLE), 8000)
    split = MumaxSplit(discard=1500, n_train=1500, n_val=300, n_test=1000)
    train, val, test = mumax_trajectories(table, split)
    model = build_model(TwinArchitecture(hidden=32), fit_normalisation([train], ()), seed=0)
    before = trajectory_nrmse(model, [test])
    config = TrainConfig(
        n_segments=32, max_steps=300, validate_every=100, learning_rate=1e-2, target_nrmse=1e-3, seed=0
    )
    result = train_offline(model, [train], [val], config)
    after = trajectory_nrmse(model, [test])
    assert result.steps == 300 and [h["step"] for h in result.history] == [100, 200, 300]
    assert after < 0.5 < before  # learnt the response, free-running on unseen data


@needs_data
@pytest.mark.slow
def test_skyrmion_twin_paper_protocol_reaches_nrmse_005():
    """Chen et al.: every 2nd row (5 ps), 1,500 discarded, 10,000 training points; the twin
    predicts the next 10,000 points (50 ns, up to the skyrmion's annihilation) free-running."""
    train, val, test = mumax_trajectories(load_mumax_table(TABLE), MumaxSplit(n_test=10000))
    model = build_model(TwinArchitecture(hidden=64), fit_normalisation([train], ()), seed=0)
    result = train_offline(
        model, [train], [val], TrainConfig(max_steps=12000, validate_every=250, target_nrmse=0.02, seed=0)
    )
    assert result.reached_target
    assert trajectory_nrmse(model, [test]) <= 0.05


@pytest.mark.skipif(not (DATA / "one_skyrmion_ku_dmi_train" / "table.txt").is_file(), reason="no MuMax3 data")
@pytest.mark.slow
def test_two_input_skyrmion_twin_predicts_the_held_out_last_fifth():
    """Ku1 as the drive, the DMI as a condition: trained on the first 80 % of the table (the
    best weights picked on its last 3,000 samples), free-running on the last 20 %."""
    table = load_mumax_table(DATA / "one_skyrmion_ku_dmi_train" / "table.txt")
    split = MumaxSplit(
        drives=("Ku1.region100",),
        conditions=("Dind.region100",),
        every=1,
        discard=1500,
        n_train=int(0.8 * table.time_s.size) - 1500,
        n_val=3000,
    )
    train, val, test = mumax_trajectories(table, split)
    assert test.n == table.time_s.size - 1500 - split.n_train and "dmi_J_m2" in test.conditions
    arch = TwinArchitecture(drive_names=split.drives, condition_names=("dmi_J_m2",))
    model = build_model(arch, fit_normalisation([train], arch.condition_names), seed=0)
    train_offline(
        model,
        [train],
        [val],
        TrainConfig(max_steps=12000, validate_every=250, target_nrmse=0.02, max_wall_s=420, seed=0),
    )
    assert trajectory_nrmse(model, [test]) <= 0.05
