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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from spinlab.analysis import statistics
from spinlab.config import Config, Positive, PositiveInt
from spinlab.engine import Plan, RunContext, RunResult
from spinlab.engine.figures import FORMATS, quantity
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols import characterize, spoken_digits, twin_eval, twin_train
from spinlab.protocols.acquire import AcquireConfig, require_conditions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the stages' figures, in whichever format the run writes them
FIGURES = tuple(f".{f}" for f in FORMATS)

TWIN_FILE = "twin.pt"
#: Drives of the twin's training and test: levels held 1-10 relaxation times of the vortex at
#: 7.5 mA (the family the spoken-digit drives lie in; see protocols/acquire.py)
HOLD_S = (2e-7, 2e-6)


class DemoConfig(Config):
    """What the demo runs; the defaults fit a few minutes on a 2-core machine."""

    data_dir: str = Field(
        description="Folder of FSDD .wav recordings (default: $SPINLAB_FSDD, else the "
        "`spinlab data fetch fsdd` cache)"
    )
    limit: Annotated[int, Field(ge=2 * spoken_digits.N_CLASSES)] = Field(
        800,
        description="Utterances of the stratified FSDD subset (by digit and speaker; 10 % of them "
        "test), the same for the twin and the bench",
    )
    augment_speeds: tuple[float, ...] = Field(
        (), description="Speed-perturbed training copies (each a pass of the training set through the device)"
    )
    n_nodes: PositiveInt = Field(
        spoken_digits.SpokenDigitsConfig.model_fields["n_nodes"].default,
        description="Virtual nodes per frame of the spoken-digit reservoir",
    )
    operating_z: Annotated[float, Field(gt=1.0, le=3.0)] = Field(
        1.2, description="Operating bias as a multiple of the measured threshold current"
    )
    bias_spread: Annotated[float, Field(ge=0.0, lt=0.5)] = Field(
        0.08, description="The twin learns biases operating bias x (1 - spread, 1, 1 + spread)"
    )
    field_T: float | None = Field(
        None, description="Magnetic field of every stage (T; none: the device's own); needs field control"
    )
    twin_hidden: PositiveInt = Field(32, description="Units per hidden layer of the twin")
    twin_max_steps: PositiveInt = Field(
        6000, description="Training steps budget of the twin (it stops sooner at twin_target_nrmse)"
    )
    twin_target_nrmse: Positive = Field(
        0.1, description="Validation NRMSE at which the twin's training stops"
    )
    twin_max_duration_s: Positive = Field(2e-2, description="Most device time recorded for the twin")
    eval_drives: PositiveInt = Field(
        8, description="Fresh drives the twin is scored on (each applied 4 times and averaged)"
    )
    feature_cache_dir: str | None = Field(
        None, description="Feature cache folder (none: no cache; the command line uses RUNS_DIR/.cache)"
    )
    threads: PositiveInt = Field(
        1,
        description="CPU threads of torch and of numpy's BLAS (1 is fastest when other jobs share the cores)",
    )

    @model_validator(mode="after")
    def _digits(self) -> DemoConfig:
        self.digits_config(6e-3)  # validates the spoken-digit settings before any stage runs
        return self

    def digits_config(self, bias_A: float) -> spoken_digits.SpokenDigitsConfig:
        return spoken_digits.SpokenDigitsConfig(
            data_dir=self.data_dir,
            limit=self.limit,
            augment_speeds=tuple(self.augment_speeds),
            n_nodes=self.n_nodes,
            bias_A=bias_A,
            field_T=self.field_T,
            feature_cache_dir=self.feature_cache_dir,
        )


def operating_bias(threshold_A: float, config: DemoConfig, max_bias_A: float) -> float:
    """``operating_z`` x threshold, to 10 uA; refused if the twin's bias range leaves the limits."""
    bias = round(config.operating_z * threshold_A, 5)
    if bias * (1 + config.bias_spread) > max_bias_A:
        raise ConfigError(
            f"the operating bias {bias * 1e3:.3g} mA (x {1 + config.bias_spread:g} for the "
            f"twin) exceeds the device's max_bias_A {max_bias_A * 1e3:.3g} mA; lower operating_z"
        )
    return bias


def twin_train_plan(
    config: DemoConfig, out: Path, digits: spoken_digits.SpokenDigitsConfig, amplitude_V: float
) -> Plan:
    """Online twin training on the spoken-digit grid and drive amplitude, around the bias."""
    biases = sorted(
        {round(digits.bias_A * f, 6) for f in (1 - config.bias_spread, 1.0, 1 + config.bias_spread)}
    )
    field = {} if config.field_T is None else {"field_T": [config.field_T]}
    names = ["bias_A", *field]
    acquire = AcquireConfig(
        duration_s=config.twin_max_duration_s,
        dt_s=digits.dt_s,
        hold_s=HOLD_S,
        amplitude_V=amplitude_V,
        conditions={"bias_A": biases, **field},
        validation_every=6,
        validation_repeats=4,
    )
    return twin_train.plan(
        out=str(out),
        source="device",
        acquire=acquire.to_dict(),
        architecture={"hidden": config.twin_hidden, "condition_names": names, "interpolation": "hold"},
        train={
            "max_steps": config.twin_max_steps,
            "target_nrmse": config.twin_target_nrmse,
            "validate_every": 250,
        },
    )


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

    field = {} if config.field_T is None else {"field_T": config.field_T}
    require_conditions(device, field)
    char = stage("characterize", characterize.plan(field_T=config.field_T))
    bias = operating_bias(char["threshold_A"], config, device.limits.max_bias_A)
    ctx.result(threshold_A=char["threshold_A"], relaxation_time_s=char["relaxation_time_s"], bias_A=bias)

    digits = config.digits_config(bias)
    amplitude_V = digits.drive_fraction * device.limits.max_drive_V
    twin_path = (ctx.path / TWIN_FILE).resolve()
    trained = stage("twin-train", twin_train_plan(config, twin_path, digits, amplitude_V))
    scored = stage(
        "twin-eval",
        twin_eval.plan(
            checkpoint=str(twin_path),
            n_drives=config.eval_drives,
            dt_s=digits.dt_s,
            hold_s=HOLD_S,
            amplitude_V=amplitude_V,
            conditions={"bias_A": [bias], **{k: [v] for k, v in field.items()}},
            repeats=4,
        ),
    )
    ctx.result(twin_nrmse=scored["nrmse"], twin_training_nrmse=trained["best_nrmse"])

    on_twin = stage("digits-twin", spoken_digits.plan(digits), on=f"twin:{twin_path}?noise=1")
    ctx.result(twin_accuracy=on_twin["accuracy"])
    on_bench = stage("digits-bench", spoken_digits.plan(digits))
    ctx.progress(5, 5, stage="demo", step=5)

    report = {
        "device": device.address or type(device).__name__,
        "device_kind": device_kind(device),
        "threshold_A": char["threshold_A"],
        "relaxation_time_s": char["relaxation_time_s"],
        "bias_A": bias,
        "field_T": char.get("field_T"),
        "field_control": char.get("field_control", False),
        "operating_z": config.operating_z,
        "twin_nrmse": scored["nrmse"],
        "twin_nrmse_noise_corrected": scored.get("nrmse_noise_corrected"),
        "twin_training_nrmse": trained["best_nrmse"],
        "twin_steps": trained["steps"],
        "twin_stop_reason": trained["stop_reason"],
        "twin_target_nrmse": config.twin_target_nrmse,
        "bench_accuracy": on_bench["accuracy"],
        "bench_accuracy_ci95": on_bench["accuracy_ci95"],
        "twin_accuracy": on_twin["accuracy"],
        "twin_accuracy_ci95": on_twin["accuracy_ci95"],
        **{k: on_bench[k] for key, _ in spoken_digits.BASELINES.values() for k in (key, f"{key}_ci95")},
        "bench_comparisons": on_bench["comparisons"],
        "twin_comparisons": on_twin["comparisons"],
        "n_train": on_bench["n_train"],
        "n_test": on_bench["n_test"],
        "bench_device_s": on_bench["device_s"],
        "twin_device_s": on_twin["device_s"],
        "speed_ratio": on_bench["device_s"] / on_twin["device_s"],
        "stage_s": stage_s,
        # paths inside the run are relative to it (the run directory can move)
        "twin": TWIN_FILE,
        "runs": {name: _inside(result.path, ctx.path) for name, result in stages.items()},
        "plots": [
            _inside(p, ctx.path)
            for result in stages.values()
            for p in sorted(result.path.iterdir())
            if p.suffix in FIGURES
        ],
        "readout": _inside(stages["digits-bench"].path, ctx.path),
    }
    ctx.result(**report)
    return report


def plot_summary(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The demo at a glance: test accuracy on the bench, on its twin and without a device."""
    from matplotlib.figure import Figure

    names = ["bench", "twin", "no device\n(linear)", "MFCC\nreference"]
    keys = ["bench_accuracy", "twin_accuracy", "baseline_accuracy", "mfcc_reference_accuracy"]
    values = [100 * float(results.get(k) or 0.0) for k in keys]
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), values, color=["tab:blue", "tab:red", "0.6", "0.8"])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f} %", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title(
        f"Spoken digits, {results['n_test']} test utterances; twin NRMSE {results['twin_nrmse']:.3f} "
        f"at {quantity(float(results['bias_A']), 'A')}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def device_kind(device: Any) -> str:
    """What answered as "the bench": ``emulated`` (a simulator behind emulated instruments),
    ``simulated`` (a simulator or twin addressed directly) or ``hardware``."""
    if "emulator" in device.identity():
        return "emulated"
    return "simulated" if str(device.address).split(":", 1)[0] in ("sim", "twin") else "hardware"


#: What the speed ratio compares, by :func:`device_kind`.
_AGAINST = {
    "emulated": "; the bench here is itself emulated (a simulator behind emulated instruments), "
    "so this compares two simulations, not the twin with hardware",
    "simulated": "; the bench here is a simulator, so this compares two simulations",
    "hardware": "",
}


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"


def _inside(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run directory, with / as separator."""
    return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()


def _stopped(r: Mapping[str, Any]) -> str:
    reason, target = r.get("twin_stop_reason"), r.get("twin_target_nrmse")
    if reason == "target":
        return f"stopped at its NRMSE target {target:g}"
    if reason == "max_steps":
        goal = f" {target:g}" if target is not None else ""
        return f"stopped on its step cap, not its NRMSE target{goal}"
    return f"stopped: {reason}" if reason else "stopped"


def _accuracy_lines(r: Mapping[str, Any]) -> list[str]:
    """The bench and the twin with their 95 % intervals, then each no-device baseline (of the
    bench's run) with the bench against it, McNemar's test on the same utterances."""
    n = r["n_test"]
    if "bench_comparisons" not in r:  # a report from before the statistics: the numbers alone
        return [
            f"  bench {100 * r['bench_accuracy']:.1f} %   twin {100 * r['twin_accuracy']:.1f} %   "
            f"no device {100 * r['baseline_accuracy']:.1f} %   "
            f"pooled MFCC {100 * r['mfcc_reference_accuracy']:.1f} % (no intervals recorded)"
        ]

    def accuracy(key: str) -> str:
        return statistics.describe_accuracy({"accuracy": r[key], "n_test": n, "ci95": r[f"{key}_ci95"]})

    lines = [f"  bench {accuracy('bench_accuracy')}   twin {accuracy('twin_accuracy')}  (95 % intervals)"]
    summary = {"n_test": n, "comparisons": r["bench_comparisons"]}
    summary |= {
        k: v for k, v in r.items() if k.startswith(("baseline_", "drive_baseline_", "mfcc_reference_"))
    }
    return lines + [
        line.replace("; device ", "; bench ") for line in spoken_digits.statistics_lines(summary, "  ")
    ]


def report(r: Mapping[str, Any]) -> str:
    """The report a newcomer reads (``spinlab demo``)."""
    stages = ", ".join(f"{name} {_seconds(seconds)}" for name, seconds in r["stage_s"].items())
    corrected = r.get("twin_nrmse_noise_corrected")
    twin_scores = f"NRMSE {r['twin_nrmse']:.3f} on fresh drives against the device's mean response" + (
        "" if corrected is None else f" ({corrected:.3f} with the mean's own noise removed)"
    )
    kind = r.get("device_kind", "hardware")
    run_dir = r.get("run_dir", ".")  # the report's paths are relative to it
    return "\n".join(
        [
            f"device {r['device']}{' (emulated)' if kind == 'emulated' else ''}: threshold "
            f"{r['threshold_A'] * 1e3:.3f} mA, relaxation time "
            f"{r['relaxation_time_s'] * 1e9:.0f} ns; operating point {r['bias_A'] * 1e3:.2f} mA "
            f"({r['operating_z']:g} x threshold), {characterize.field_text(r)}",
            f"twin: {twin_scores}; {r['twin_training_nrmse']:.3f} held out in training, "
            f"{r['twin_steps']} steps, {_stopped(r)}",
            f"spoken digits, {r['n_train']} training / {r['n_test']} test utterances "
            "(stratified by digit and speaker):",
            *_accuracy_lines(r),
            f"  device calls: bench {r['bench_device_s']:.1f} s, twin {r['twin_device_s']:.1f} s "
            f"(twin {r['speed_ratio']:.2g}x the bench's speed{_AGAINST.get(kind, '')})",
            f"stages: {stages}; total {r['wall_s'] / 60:.1f} min",
            "plots: " + "  ".join(str(Path(run_dir, p)) for p in r["plots"]),
            f"run files: {run_dir}/run.h5 and stages/*/run.h5; twin {Path(run_dir, r['twin'])}",
            f"try next: spinlab listen --device {r['device']} --readout {Path(run_dir, r['readout'])}",
        ]
    )


@command(
    config=DemoConfig,
    report=report,
    prepare=spoken_digits.command_line_defaults,
    device="optional",
    device_default="bench:emulated",
    monitor="tcp://127.0.0.1:0",
    aliases={"--data": "data_dir", "--twin-steps": "twin_max_steps"},
    help="Characterise the emulated bench, train its twin through it, recognise spoken digits on both.",
)
def plan(config: DemoConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The demo as a plan (``spinlab demo``'s defaults unless overridden; FSDD found as by
    :func:`spoken_digits.plan` without ``data_dir``)."""
    cfg = make_config(DemoConfig, config, spoken_digits.with_fsdd(config, overrides))
    return Plan("demo", cfg, lambda ctx: run(ctx, cfg), plots={"summary.png": plot_summary})


__all__ = ["DemoConfig", "plan", "run", "operating_bias", "twin_train_plan", "device_kind", "report"]
