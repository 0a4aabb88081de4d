"""optimise spoken-digits: the surrogate's gradient, the descent within bounds, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import open_device
from spinlab.cli import app
from spinlab.errors import ConfigError
from spinlab.protocols.optimise import (
    OptimiseConfig,
    Surrogate,
    differentiable_vortex,
    optimise_spoken_digits,
)
from spinlab.protocols.spoken_digits import SpokenDigitsConfig, select_data
from spinlab.speech.encoder import Encoder, make_mask
from spinlab.speech.features import ChannelNormalizer, FeatureConfig, utterance_features

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"


def small_protocol(tmp_path, **overrides) -> SpokenDigitsConfig:
    return SpokenDigitsConfig(
        data_dir=str(FSDD), limit=60, n_nodes=40, feature_cache_dir=str(tmp_path / "cache"), **overrides
    )


def test_surrogate_gradient_matches_finite_differences(tmp_path):
    """d loss / d (bias, drive fraction, mask scale) from the kernel's forward sensitivities and
    the ridge's autograd: a central difference for the bias; for the two drive knobs, whose loss
    has a kink wherever a node input crosses the clipping level, the mean derivative over an
    interval equals the secant across it."""
    protocol = small_protocol(tmp_path)
    train, _ = select_data(protocol, np.random.default_rng(1))
    raw = utterance_features(train[:24], FeatureConfig(), protocol.feature_cache_dir)
    features = [ChannelNormalizer().fit(raw).transform(f) for f in raw]
    encoder = Encoder(
        make_mask(40, features[0].shape[1], "binary", 1),
        protocol.theta_s,
        protocol.samples_per_node,
        1.0,
        protocol.input_sigma,
    ).fit(features)
    config = OptimiseConfig(protocol=protocol, subset=40, ridge_alpha=1e-2)
    surrogate = Surrogate(
        open_device("sim:vortex"),
        features,
        np.array([u.digit for u in train[:24]]),
        np.array([u.index % 2 for u in train[:24]]),
        encoder,
        config,
    )

    def loss(knobs):
        return surrogate.loss(surrogate.states(knobs, tangents=False)[0])[0]

    def gradient(knobs):
        states, slopes = surrogate.states(knobs)
        grads = surrogate.loss(states)[1]
        return np.array([sum(float(np.sum(g * s[j])) for g, s in zip(grads, slopes)) for j in range(3)])

    knobs = np.array([6.2e-3, 0.8, 1.5])
    up, down = knobs + [1e-5, 0, 0], knobs - [1e-5, 0, 0]
    assert gradient(knobs)[0] == pytest.approx((loss(up) - loss(down)) / 2e-5, rel=0.01)
    for j, width in ((1, 0.1), (2, 0.2)):
        points = [knobs + np.eye(3)[j] * width * (t - 0.5) for t in np.linspace(0, 1, 5)]
        mean_slope = np.trapezoid([gradient(p)[j] for p in points], dx=1 / 4)
        assert mean_slope == pytest.approx((loss(points[-1]) - loss(points[0])) / width, rel=0.15), j


def test_optimise_descends_within_the_box(tmp_path):
    config = OptimiseConfig(protocol=small_protocol(tmp_path), subset=40, iterations=3)
    result = optimise_spoken_digits(open_device("sim:vortex"), config, seed=1)
    losses = [h["loss"] for h in result["history"]]
    assert result["best"]["loss"] == min(losses) and result["best"]["loss"] <= losses[0]
    tuned = result["tuned"]
    box = result["box"]
    assert box["bias_A"][0] == pytest.approx(1.02 * 5e-3) and box["bias_A"][1] == pytest.approx(10e-3)
    assert box["bias_A"][0] < tuned.bias_A < box["bias_A"][1]
    assert 0 < tuned.drive_fraction <= 1 and 0.25 < tuned.input_sigma < 8
    assert tuned.n_nodes == 40 and tuned.data_dir == str(FSDD)  # everything else is the protocol's
    assert result["ridge_alpha"] in SpokenDigitsConfig(data_dir="x").alphas


def test_only_a_differentiable_vortex_can_be_optimised():
    with pytest.raises(ConfigError, match="sim:vortex"):
        differentiable_vortex(open_device("sim:macrospin"))
    with pytest.raises(ConfigError, match="output=power"):
        differentiable_vortex(open_device("sim:vortex?output=rf"))
    with pytest.raises(ConfigError, match="subset"):
        OptimiseConfig(protocol=SpokenDigitsConfig(data_dir="x"), subset=10)


def test_cli_optimise_reports_before_and_after(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "optimise",
            "spoken-digits",
            "--device",
            "sim:vortex",
            "--data",
            str(FSDD),
            "--limit",
            "40",
            "--nodes",
            "40",
            "--subset",
            "40",
            "--iterations",
            "1",
            "--runs-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["before"]["bias_A"] == 6e-3 and summary["after"]["bias_A"] == summary["tuned"]["bias_A"]
    assert summary["improvement"] == pytest.approx(
        summary["after"]["accuracy"] - summary["before"]["accuracy"]
    )
    for label in ("before", "after"):
        assert Path(summary[label]["run_dir"], "run.h5").is_file()


def test_cli_optimise_refuses_a_bench_in_one_line(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "optimise",
            "spoken-digits",
            "--device",
            "sim:macrospin",
            "--data",
            str(FSDD),
            "--limit",
            "40",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "differentiable simulator" in result.output
