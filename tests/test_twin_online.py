"""Online training: it fits while data arrives and stops acquisition once the target is met."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from twin_helpers import LowPassDevice

from spinlab.engine import Plan, RunEngine
from spinlab.errors import ConfigError
from spinlab.protocols.acquire import AcquireConfig, device_batches, recording_batches
from spinlab.twin.evaluation import trajectory_nrmse
from spinlab.twin.model import TwinArchitecture, build_model
from spinlab.twin.train import OnlineConfig, TrainConfig, train_online
from spinlab.twin.trajectory import fit_normalisation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(dev, duration_s, **acq_kw):
    acq = AcquireConfig(
        duration_s=duration_s,
        dt_s=1e-7,
        record_s=2e-5,
        hold_s=(1e-7, 1e-6),
        amplitude_V=0.4,
        conditions={"bias_A": (6.5e-3, 8.5e-3)},
        validation_every=4,
        **acq_kw,
    )
    batches = device_batches(dev, acq, seed=1)
    first = next(batches)
    arch = TwinArchitecture(hidden=16, condition_names=("bias_A", "field_T"), interpolation="hold")
    model = build_model(arch, fit_normalisation(first.trajectories, arch.condition_names), seed=0)
    return acq, model, itertools.chain([first], batches)


def test_online_trainer_stops_acquisition_when_target_is_met(tmp_path):
    dev = LowPassDevice(delay_s=0.02)  # a slow instrument: ~20 ms per recording batch
    acq = AcquireConfig(
        duration_s=1.0,
        dt_s=1e-7,
        record_s=2e-5,
        hold_s=(1e-7, 1e-6),  # cap:
        amplitude_V=0.4,
        conditions={"bias_A": (6.5e-3, 8.5e-3)},  # 25,000 batches
        validation_every=4,
    )
    cfg = TrainConfig(
        n_segments=32,
        segment_samples=10,
        learning_rate=1e-2,
        max_steps=3000,
        validate_every=25,
        target_nrmse=0.05,
        settle_samples=10,
        seed=0,
    )
    arch = TwinArchitecture(hidden=16, condition_names=("bias_A", "field_T"), interpolation="hold")
    out = {}

    def body(ctx):  # batches are recorded by the acquisition thread as they arrive
        batches = recording_batches(ctx, acq)
        first = next(batches)
        out["model"] = model = build_model(
            arch, fit_normalisation(first.trajectories, arch.condition_names), seed=0
        )
        out["result"] = train_online(
            model, itertools.chain([first], batches), cfg, OnlineConfig(queue_size=2), run=ctx
        )

    run = RunEngine(tmp_path).run(Plan("twin-train", {}, body), dev, seed=1)
    result, model = out["result"], out["model"]
    assert result.stop_reason == "target" and result.reached_target
    assert result.best_nrmse <= 0.05
    assert result.batches < acq.n_batches / 10  # acquisition stopped early...
    assert dev.calls <= result.batches + 3  # ...and promptly (queue of 2 + one in flight)
    assert result.acquired_batches == dev.calls
    assert result.acquired_device_time_s == pytest.approx(
        sum(acq.batch_device_time_s(i) for i in range(dev.calls))
    )
    import h5py

    with h5py.File(run.run_file) as f:  # everything acquired was recorded, consumed or not
        assert f["drive_V"].shape[0] == 2 * result.acquired_batches
    # the twin generalises to fresh drives at a bias it was not trained at
    fresh = AcquireConfig(duration_s=1e-4, record_s=2e-5, conditions={"bias_A": (7.5e-3,)})
    test = [t for b in device_batches(LowPassDevice(), fresh, seed=9) for t in b.trajectories]
    assert trajectory_nrmse(model, test, settle_samples=10) < 0.1


def test_online_trainer_stops_at_the_duration_cap_and_keeps_best(tmp_path):
    dev = LowPassDevice()
    acq, model, source = _setup(dev, duration_s=2e-4)  # 5 batches only
    cfg = TrainConfig(
        n_segments=8,
        segment_samples=10,
        max_steps=10_000,
        validate_every=10,
        target_nrmse=1e-6,
        settle_samples=10,
    )
    result = train_online(model, source, cfg, OnlineConfig(max_steps_after_data=40))
    assert result.stop_reason == "data_exhausted" and not result.reached_target
    assert result.batches == acq.n_batches == 5
    assert result.best_nrmse == min(h["nrmse"] for h in result.history)


def test_online_trainer_reports_acquisition_errors():
    class Broken(LowPassDevice):
        def _respond(self, drive, dt_s, conditions):
            if self.calls >= 2:
                raise RuntimeError("scope unplugged")
            return super()._respond(drive, dt_s, conditions)

    acq, model, source = _setup(Broken(), duration_s=1e-3)
    with pytest.raises(RuntimeError, match="scope unplugged"):
        train_online(model, source, TrainConfig(max_steps=10_000, validate_every=10, settle_samples=10))


def test_online_trainer_needs_training_and_validation_data():
    dev = LowPassDevice()
    acq = AcquireConfig(duration_s=4e-5, record_s=2e-5, conditions={"bias_A": (7e-3,)}, validation_every=4)
    batches = list(device_batches(dev, acq))
    arch = TwinArchitecture(hidden=8, condition_names=("bias_A", "field_T"), interpolation="hold")
    model = build_model(arch, fit_normalisation(batches[0].trajectories, arch.condition_names))
    only_validation = iter(batches[:1])
    with pytest.raises(ConfigError, match="both training and validation"):
        train_online(model, only_validation, TrainConfig(validate_every=10))


def test_noise_injection_perturbs_segment_starts_reproducibly():
    from spinlab.twin.train import TwinTrainer

    dev = LowPassDevice()
    acq = AcquireConfig(duration_s=1e-4, record_s=2e-5, conditions={"bias_A": (7e-3,)})
    trajs = [t for b in device_batches(dev, acq) for t in b.trajectories]
    arch = TwinArchitecture(hidden=8, condition_names=("bias_A",), interpolation="hold")

    def losses(noise_injection, seed=0):
        model = build_model(arch, fit_normalisation(trajs, ("bias_A",)), seed=0)
        trainer = TwinTrainer(model, TrainConfig(noise_injection=noise_injection, noise_std=2e-3, seed=seed))
        trainer.add_training(trajs)
        return [trainer.step() for _ in range(3)]

    clean = losses(False)
    assert losses(True) == losses(True)  # seeded
    assert losses(True) != clean and losses(True, seed=1) != losses(True)
    assert losses(True)[0] > clean[0]  # noisy starts are harder to predict


@pytest.mark.slow
def test_vortex_twin_from_5ms_generalises_to_an_untrained_bias():
    """Acceptance: online on sim:vortex with <= 5 ms of device time at 6.5 and 8.5 mA, the
    twin predicts fresh drives at 7.5 mA with NRMSE <= 0.10 against the device's response
    (noise-free simulator = the deterministic response the twin models)."""
    from spinlab import open_device
    from spinlab.protocols.twin_eval import EvalConfig, evaluate
    from spinlab.sim_backends.twin_device import TwinDevice
    from spinlab.twin.checkpoint import TwinMeta

    dev = open_device("sim:vortex", seed=0)
    acq = AcquireConfig(
        duration_s=5e-3, conditions={"bias_A": (6.5e-3, 8.5e-3)}, validation_every=6, validation_repeats=4
    )
    batches = device_batches(dev, acq, seed=0)
    first = next(batches)
    arch = TwinArchitecture(hidden=64, condition_names=("bias_A",), interpolation="hold")
    model = build_model(arch, fit_normalisation(first.trajectories, ("bias_A",)), seed=0)
    result = train_online(
        model,
        itertools.chain([first], batches),
        TrainConfig(max_steps=8000, validate_every=250, target_nrmse=0.05),
    )
    assert sum(acq.batch_device_time_s(i) for i in range(result.batches)) <= 5e-3 + 1e-12
    twin = TwinDevice(model, TwinMeta(dt_s=1e-7, condition_ranges={"bias_A": [6.5e-3, 8.5e-3]}))
    rng = np.random.default_rng(1000)
    clean = evaluate(
        twin, open_device("sim:vortex?noise=0"), EvalConfig(conditions={"bias_A": (7.5e-3,)}), rng
    )
    assert clean["nrmse"] <= 0.10
    noisy = evaluate(twin, dev, EvalConfig(conditions={"bias_A": (7.5e-3,)}, repeats=16), rng)
    assert noisy["nrmse"] <= 0.10
