"""The first-run demo (``spinlab demo``): what a newcomer should see, composed of the other plans.

On one open device (the emulated bench by default), each step a stage with its own run
directory under ``stages/`` of the demo's (:meth:`~spinlab.engine.RunContext.run`):

1. ``characterize``: threshold current and relaxation time. The operating point of everything
   after it is ``operating_z`` times the measured threshold (spoken digits' 6 mA default is
   1.2 x the vortex's 5 mA), so the demo follows the device it finds.
2. ``twin-train``: the Spin-Neural ODE learns the device online, through it, on the
   spoken-digit drive grid and amplitude at the operating bias and ``bias_spread`` either side.
3. ``twin-eval``: the twin against the device on fresh drives at the operating bias.
4. ``digits-twin`` and ``digits-bench``: spoken digits on the twin (with its measured noise) and
   on the device, on the same stratified FSDD subset (by digit and speaker: one seed, one split,
   one mask), at the operating bias.

The summary is the demo's report: accuracies, twin NRMSE, the device-call seconds of both
spoken-digit stages and their ratio, and where the plots and run files are.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, Mapping

import torch
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from spinlab.config import Config, Positive, PositiveInt
from spinlab.engine import Plan, RunContext, RunResult
from spinlab.engine.plan import make_config
from spinlab.errors import ConfigError
from spinlab.protocols import characterize, spoken_digits, twin_eval, twin_train
from spinlab.protocols.acquire import AcquireConfig

TWIN_FILE = "twin.pt"
#: Drives of the twin's training and test: levels held 1-10 relaxation times of the vortex at
#: 7.5 mA (the family the spoken-digit drives lie in; see protocols/acquire.py)
HOLD_S = (2e-7, 2e-6)


class DemoConfig(Config):
    """What the demo runs; the defaults fit a few minutes on a 2-core machine."""

    data_dir: str
    #: utterances of the stratified subset both spoken-digit stages use (10 % of them test)
    limit: Annotated[int, Field(ge=2 * spoken_digits.N_CLASSES)] = 800
    #: speed-perturbed training copies (spoken digits' augmentation for new voices; each costs a
    #: pass of the training set through the device; none by default: the test voices are known)
    augment_speeds: tuple[float, ...] = ()
    #: virtual nodes per frame of the spoken-digit reservoir
    n_nodes: PositiveInt = spoken_digits.SpokenDigitsConfig.model_fields["n_nodes"].default
    #: operating bias = operating_z x the measured threshold current
    operating_z: Annotated[float, Field(gt=1.0, le=3.0)] = 1.2
    #: the twin learns biases operating bias x (1 - spread, 1, 1 + spread)
    bias_spread: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.08
    twin_hidden: PositiveInt = 32
    twin_max_steps: PositiveInt = 6000
    twin_target_nrmse: Positive = 0.1
    #: most device time recorded for the twin (s)
    twin_max_duration_s: Positive = 2e-2
    #: fresh drives the twin is scored on (each applied 4 times and averaged)
    eval_drives: PositiveInt = 8
    feature_cache_dir: str | None = None
    #: CPU threads of torch and of numpy's BLAS while the demo runs (1 is fastest when other jobs
    #: share the cores: there a 2-thread BLAS solved the readout 5-10x slower)
    threads: PositiveInt = 1

    @model_validator(mode="after")
    def _digits(self) -> "DemoConfig":
        self.digits_config(6e-3)  # validates the spoken-digit settings before any stage runs
        return self

    def digits_config(self, bias_A: float) -> spoken_digits.SpokenDigitsConfig:
        return spoken_digits.SpokenDigitsConfig(
            data_dir=self.data_dir, limit=self.limit, augment_speeds=tuple(self.augment_speeds),
            n_nodes=self.n_nodes, bias_A=bias_A, feature_cache_dir=self.feature_cache_dir)


def operating_bias(threshold_A: float, config: DemoConfig, max_bias_A: float) -> float:
    """``operating_z`` x threshold, to 10 uA; refused if the twin's bias range leaves the limits."""
    bias = round(config.operating_z * threshold_A, 5)
    if bias * (1 + config.bias_spread) > max_bias_A:
        raise ConfigError(f"the operating bias {bias * 1e3:.3g} mA (x {1 + config.bias_spread:g} for the "
                          f"twin) exceeds the device's max_bias_A {max_bias_A * 1e3:.3g} mA; lower operating_z")
    return bias


def twin_train_plan(config: DemoConfig, out: Path, digits: spoken_digits.SpokenDigitsConfig,
                    amplitude_V: float) -> Plan:
    """Online twin training on the spoken-digit grid and drive amplitude, around the bias."""
    biases = sorted({round(digits.bias_A * f, 6) for f in (1 - config.bias_spread, 1.0, 1 + config.bias_spread)})
    acquire = AcquireConfig(duration_s=config.twin_max_duration_s, dt_s=digits.dt_s, hold_s=HOLD_S,
                            amplitude_V=amplitude_V, conditions={"bias_A": biases},
                            validation_every=6, validation_repeats=4)
    return twin_train.plan(out=str(out), source="device", acquire=acquire.to_dict(),
                           architecture={"hidden": config.twin_hidden, "condition_names": ["bias_A"],
                                         "interpolation": "hold"},
                           train={"max_steps": config.twin_max_steps, "target_nrmse": config.twin_target_nrmse,
                                  "validate_every": 250})


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch and BLAS on ``n`` threads inside the block, as they were after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def run(ctx: RunContext, config: DemoConfig) -> dict[str, Any]:
    """The plan body: the five stages on ``ctx.device``; returns the report."""
    with cpu_threads(config.threads):
        return _stages(ctx, config)


def _stages(ctx: RunContext, config: DemoConfig) -> dict[str, Any]:
    device = ctx.device
    stages: dict[str, RunResult] = {}
    stage_s: dict[str, float] = {}

    def stage(name: str, plan: Plan, on: str | None = None) -> dict[str, Any]:
        ctx.progress(len(stages), 5, stage="demo", step=len(stages) + 1)
        start = time.perf_counter()
        stages[name] = ctx.run(plan, on, stage=name)
        stage_s[name] = time.perf_counter() - start
        return stages[name].summary

    char = stage("characterize", characterize.plan())
    bias = operating_bias(char["threshold_A"], config, device.limits.max_bias_A)
    ctx.result(threshold_A=char["threshold_A"], relaxation_time_s=char["relaxation_time_s"], bias_A=bias)

    digits = config.digits_config(bias)
    amplitude_V = digits.drive_fraction * device.limits.max_drive_V
    twin_path = (ctx.path / TWIN_FILE).resolve()
    trained = stage("twin-train", twin_train_plan(config, twin_path, digits, amplitude_V))
    scored = stage("twin-eval", twin_eval.plan(checkpoint=str(twin_path), n_drives=config.eval_drives,
                                               dt_s=digits.dt_s, hold_s=HOLD_S, amplitude_V=amplitude_V,
                                               conditions={"bias_A": [bias]}, repeats=4))
    ctx.result(twin_nrmse=scored["nrmse"], twin_training_nrmse=trained["best_nrmse"])

    on_twin = stage("digits-twin", spoken_digits.plan(digits), on=f"twin:{twin_path}?noise=1")
    ctx.result(twin_accuracy=on_twin["accuracy"])
    on_bench = stage("digits-bench", spoken_digits.plan(digits))
    ctx.progress(5, 5, stage="demo", step=5)

    report = {
        "device": device.address or type(device).__name__,
        "threshold_A": char["threshold_A"], "relaxation_time_s": char["relaxation_time_s"],
        "bias_A": bias, "operating_z": config.operating_z,
        "twin_nrmse": scored["nrmse"], "twin_nrmse_noise_corrected": scored.get("nrmse_noise_corrected"),
        "twin_training_nrmse": trained["best_nrmse"], "twin_steps": trained["steps"],
        "twin_stop_reason": trained["stop_reason"],
        "bench_accuracy": on_bench["accuracy"], "twin_accuracy": on_twin["accuracy"],
        "baseline_accuracy": on_bench["baseline_accuracy"],
        "mfcc_reference_accuracy": on_bench["mfcc_reference_accuracy"],
        "n_train": on_bench["n_train"], "n_test": on_bench["n_test"],
        "bench_device_s": on_bench["device_s"], "twin_device_s": on_twin["device_s"],
        "speed_ratio": on_bench["device_s"] / on_twin["device_s"],
        "stage_s": stage_s,
        "twin": str(twin_path),
        "runs": {name: str(result.path) for name, result in stages.items()},
        "plots": [str(p) for result in stages.values() for p in sorted(result.path.glob("*.png"))],
        "readout": str(stages["digits-bench"].path),
    }
    ctx.result(**report)
    return report


def plan(config: DemoConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The demo as a plan (``spinlab demo``'s defaults unless overridden; ``data_dir`` is required)."""
    cfg = make_config(DemoConfig, config, overrides)
    return Plan("demo", cfg, lambda ctx: run(ctx, cfg))


__all__ = ["DemoConfig", "plan", "run", "operating_bias", "twin_train_plan"]
