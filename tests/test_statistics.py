"""The statistics every accuracy report carries, against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from spinlab.analysis.statistics import (
    accuracy,
    compare,
    describe_accuracy,
    describe_comparison,
    paired_difference_interval,
    wilson_interval,
)
from spinlab.errors import ConfigError


def test_wilson_interval_against_a_hand_computation():
    # 79 of 80 right (the demo's "98.8 %"): z = 1.959964, p = 0.9875
    z, p = 1.959963984540054, 79 / 80
    centre = (p + z**2 / 160) / (1 + z**2 / 80)
    half = z / (1 + z**2 / 80) * math.sqrt(p * (1 - p) / 80 + z**2 / (4 * 80**2))
    assert wilson_interval(79, 80) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(79, 80) == pytest.approx((0.932537, 0.997790), abs=2e-6)
    # all right: the interval still reaches below 100 %, 20 utterances do not prove 100 %
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(20 / (20 + z**2), abs=1e-12)  # = 0.8389
    stats = accuracy([True] * 20)
    assert stats["n_test"] == 20 and describe_accuracy(stats) == "100.0 % [83.9, 100.0] of 20"


def test_mcnemar_p_value_is_scipys_exact_binomial_test_on_the_discordant_pairs():
    rng = np.random.default_rng(0)
    device = rng.random(200) < 0.9
    baseline = rng.random(200) < 0.8
    c = compare(device, baseline)
    only_device, only_baseline = int(np.sum(device & ~baseline)), int(np.sum(~device & baseline))
    assert (c["only_device"], c["only_baseline"]) == (only_device, only_baseline)
    expected = binomtest(only_device, only_device + only_baseline, 0.5).pvalue
    assert c["mcnemar_p"] == pytest.approx(expected, rel=1e-12)
    assert c["significant"] == (expected < 0.05)
    assert c["difference"] == pytest.approx(device.mean() - baseline.mean())


def test_one_utterance_apart_is_not_significant_and_said_so():
    device = np.ones(80, bool)
    baseline = device.copy()
    baseline[3] = False  # the demo's 100.0 % against 98.8 %
    c = compare(device, baseline)
    assert c["mcnemar_p"] == 1.0 and not c["significant"]
    low, high = c["ci95"]
    assert low < 0 < c["difference"] < high
    assert describe_comparison("no device", c).endswith("McNemar p = 1, not significant")
    assert compare(device, device)["mcnemar_p"] == 1.0


def test_paired_difference_interval_against_a_hand_computation():
    # Cavo et al. (2012), Fagerland et al.'s paired example: 59 both, 6 only first, 16 only second, 80 neither
    n, p1, p2 = 161, 65 / 161, 75 / 161
    (l1, u1), (l2, u2) = wilson_interval(65, n), wilson_interval(75, n)
    phi = (59 * 80 - 6 * 16 - n / 2) / math.sqrt(65 * 96 * 75 * 86)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2))
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1))
    assert paired_difference_interval(59, 6, 16, 80) == pytest.approx((low, high), abs=1e-12)
    assert low < p1 - p2 < high < 0


def test_bad_input_is_one_clear_line():
    with pytest.raises(ConfigError, match="no test utterances"):
        accuracy([])
    with pytest.raises(ConfigError, match="same utterances"):
        compare([True, False], [True])
    with pytest.raises(ConfigError, match="successes"):
        wilson_interval(3, 2)


def test_sweep_summary_puts_the_spread_over_seeds_beside_each_point(tmp_path):
    import csv

    import h5py

    from spinlab.sweeps import summary

    def row(index, value, seed, accuracy, status="completed"):
        return {
            "index": index,
            "key": f"k{index}",
            "seed": seed,
            "status": status,
            "values": {"bias_A": value},
            "config": {},
            "address": "sim:vortex",
            "error": "",
            "run": "",
            "worker": "",
            "started": None,
            "stopped": None,
            "duration_s": None,
            "attempts": 1,
            "results": {"accuracy": accuracy, "device": "sim:vortex"},
        }

    table = [
        row(0, 5e-3, 0, 0.90),
        row(1, 5e-3, 1, 0.94),
        row(2, 6e-3, 0, 0.97),
        row(3, 6e-3, 1, 0.0, "failed"),
    ]
    h5, path = summary.write(tmp_path, table, {"plan": "spoken-digits"})
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    head = list(rows[0])
    assert head.index("accuracy.seeds_mean") == head.index("accuracy") + 1
    assert float(rows[0]["accuracy.seeds_mean"]) == pytest.approx(0.92)
    assert float(rows[1]["accuracy.seeds_std"]) == pytest.approx(np.std([0.90, 0.94], ddof=1))
    assert rows[2]["seeds"] == "1" and rows[2]["accuracy.seeds_std"] == ""  # one seed finished: no spread
    with h5py.File(h5) as f:
        np.testing.assert_allclose(f["spread/accuracy_mean"][:2], 0.92)
        assert list(f["spread/seeds"][:]) == [2, 2, 1, 1]
    single = [row(0, 5e-3, 0, 0.9), row(1, 6e-3, 0, 0.95)]
    assert summary.seed_spread(single, [summary.flatten(r["results"]) for r in single]) == [{}, {}]
