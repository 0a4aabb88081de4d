"""Training-data acquisition: drives within limits, recorded with responses and conditions."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from twin_helpers import LowPassDevice

from spinlab import SafetyLimits
from spinlab.engine import Plan, RunEngine
from spinlab.errors import ConfigError, SafetyLimitError
from spinlab.protocols import acquire
from spinlab.protocols.acquire import AcquireConfig, BatchSource, random_multilevel, recording_batches


def test_acquire_records_drive_response_and_conditions_within_limits(tmp_path):
    dev = LowPassDevice(limits=SafetyLimits(max_drive_V=0.3))
    cfg = AcquireConfig(
        duration_s=2e-4,
        dt_s=1e-7,
        record_s=2e-5,
        hold_s=(1e-7, 5e-7),
        amplitude_V=0.4,
        conditions={"bias_A": (6e-3, 9e-3)},
    )
    result = RunEngine(tmp_path).run(acquire.plan(cfg), dev, seed=3)
    summary, path = result.summary, result.run_file
    assert summary["recordings"] == 10 and summary["device_time_s"] == pytest.approx(2e-4)
    assert summary["amplitude_V"] == 0.3  # clipped to the device's limit
    with h5py.File(path) as f:
        drive, response, cond = f["drive_V"][()], f["response_V"][()], f["conditions"][()]
        assert drive.shape == response.shape == (10, 200)
        assert f["drive_V"].attrs["dt_s"] == 1e-7
        assert np.max(np.abs(drive)) <= 0.3
        assert np.max(np.abs(drive)) > 0.25  # the range is actually used
        assert f["conditions"].attrs["names"] == "bias_A,field_T"
        np.testing.assert_allclose(cond[:, 0], [6e-3, 9e-3] * 5)
        assert f.attrs["seed"] == 3 and json.loads(f.attrs["config"])["duration_s"] == 2e-4
        assert f.attrs["status"] == "completed"
    # what was recorded is what the device answers to that drive
    np.testing.assert_allclose(response[1], dev._respond(drive[1:2], 1e-7, {"bias_A": np.array([9e-3])})[0])


def test_same_seed_same_drives_and_hold_times_respected():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = random_multilevel(rng_a, 500, 1e-7, (3e-7, 6e-7), 0.4)
    np.testing.assert_array_equal(a, random_multilevel(rng_b, 500, 1e-7, (3e-7, 6e-7), 0.4))
    runs = np.diff(np.flatnonzero(np.diff(a)))  # lengths of interior constant stretches
    assert runs.min() >= 3 and runs.max() <= 6
    assert np.abs(a).max() <= 0.4


def test_limits_and_bad_sweeps_are_refused_before_anything_is_sent():
    dev = LowPassDevice()
    cfg = AcquireConfig(duration_s=1e-4, record_s=1e-5, conditions={"bias_A": (6e-3, 12e-3)})
    with pytest.raises(SafetyLimitError, match="before acquisition"):
        BatchSource(dev, cfg, seed=0)
    with pytest.raises(ConfigError, match="no condition"):
        BatchSource(
            dev, AcquireConfig(duration_s=1e-4, record_s=1e-5, conditions={"temperature_K": (300,)}), seed=0
        )
    assert dev.calls == 0
    with pytest.raises(ConfigError, match="shorter than one recording"):
        AcquireConfig(duration_s=1e-5, record_s=1e-5, conditions={"bias_A": (6e-3, 9e-3)})
    with pytest.raises(ConfigError, match="hold_s"):
        AcquireConfig(hold_s=(2e-7, 1e-7))
    with pytest.raises(ConfigError, match="more than 1,000,000"):  # would run for centuries
        AcquireConfig(duration_s=1e12)


def test_validation_batches_are_averaged_repeats_and_count_as_device_time(tmp_path):
    dev = LowPassDevice()
    cfg = AcquireConfig(duration_s=1e-4, record_s=1e-5, validation_every=3, validation_repeats=2)
    batches = []
    RunEngine(tmp_path).run(Plan("demo", {}, lambda ctx: batches.extend(recording_batches(ctx, cfg))), dev)
    # pattern of device time: val(2) train train val(2) train train val(2) = 10 x 1e-5 s
    assert [b.validation for b in batches] == [True, False, False, True, False, False, True]
    assert sum(b.device_time_s for b in batches) == pytest.approx(1e-4)
    assert all(t.initial == "rest" for b in batches for t in b.trajectories)
