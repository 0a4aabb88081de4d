"""Training the Spin-Neural ODE twin, as plans: online on a device, or offline on a MuMax3 table.

Online (``source = "device"``): acquisition batches are recorded steps (stream ``recordings``,
the layout of :mod:`spinlab.protocols.acquire`), taken by a producer thread while the trainer
fits; acquisition stops when the held-out NRMSE meets the target. Offline (``source =
"mumax3"``): the table is split into training, validation and test spans, no device is used.

Every validation writes the best weights so far atomically to ``twin-checkpoint.pt`` in the run
directory. A resumed run re-uses every recorded batch (the device is not asked again for them)
and starts from that checkpoint; the trained twin is written to ``out`` at the end.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, model_validator

from spinlab.config import Config
from spinlab.engine import Plan, RunContext
from spinlab.engine.figures import label, legend, legend_outside, prefix, scaled, symbol_of
from spinlab.engine.plan import Shortcut, assign_setting, command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.acquire import AcquireConfig, check_conditions, condition_shortcuts, recording_batches
from spinlab.twin.checkpoint import TwinMeta, load_twin, save_twin
from spinlab.twin.data import (
    MUMAX_QUANTITIES,
    MumaxSplit,
    condition_ranges,
    drive_ranges,
    estimate_noise_std,
    fit_normalisation,
    load_mumax_table,
    mumax_series,
    mumax_trajectories,
    predict,
    trajectory_nrmse,
)
from spinlab.twin.model import TwinArchitecture, build_model, resolve_torch_device
from spinlab.twin.train import OnlineConfig, TrainConfig, train_offline, train_online

CHECKPOINT = "twin-checkpoint.pt"
#: samples a MuMax3 twin opened as a Device settles at the drive's first level (1 ns at 5 ps)
MUMAX_SETTLE_SAMPLES = 200


class TwinTrainConfig(Config):
    """What to train and on what. The groups are the library's own configs, nested, so the
    whole config dumps to plain JSON (stored in the run file, rebuilt on resume)."""

    out: str = Field(description="Checkpoint to write (twin.pt)")
    source: Literal["device", "mumax3"] = Field(
        "device", description="Train online on the device, or offline on a MuMax3 table"
    )
    architecture: TwinArchitecture = Field(
        default_factory=TwinArchitecture, description="The twin's architecture"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="The optimisation")
    acquire: AcquireConfig = Field(
        default_factory=AcquireConfig, description="Device source: the acquisition"
    )
    online: OnlineConfig = Field(
        default_factory=OnlineConfig, description="Device source: the pacing of acquisition by training"
    )
    rest_drive_V: float | Literal["auto"] | None = Field(
        "auto",
        description="Drive level the device rests at before a drive: a number, first (the "
        "drive's first sample) or auto (whichever fits the held-out data better)",
    )
    table: str | None = Field(None, description="MuMax3 source: the table.txt to train on")
    split: MumaxSplit = Field(default_factory=MumaxSplit, description="MuMax3 source: how the table is split")
    torch_device: str = Field(
        "auto", description="Where the twin trains: auto (a GPU when present), cpu, cuda or cuda:N"
    )

    @model_validator(mode="after")
    def _sources(self) -> TwinTrainConfig:
        # checked now, before any run directory exists
        if not self.out:
            raise ValueError("twin training needs an output checkpoint path (--out)")
        if self.source == "mumax3" and not self.table:
            raise ValueError("MuMax3 training needs the table's path (--mumax)")
        resolve_torch_device(self.torch_device)
        if self.source == "device":
            acq = self.acquire
            if acq.validation_every < 2:
                raise ValueError("online training needs held-out data: --validation-every must be >= 2")
            if acq.n_batches < 2:
                raise ValueError(
                    f"acquire.duration_s = {acq.duration_s:g} s holds {acq.n_batches} batch: online "
                    f"training needs a held-out batch ({acq.batch_device_time_s(0):g} s with "
                    f"validation_repeats = {acq.validation_repeats}) and a training batch "
                    f"({acq.batch_device_time_s(1):g} s); raise the duration or lower validation_repeats"
                )
        return self


def _checkpointing(ctx: RunContext, meta_for: Any) -> Any:
    """A validation hook writing the best weights so far into the run directory (atomic)."""
    path = ctx.path / CHECKPOINT

    def on_validate(trainer: Any) -> None:
        if trainer.best_state is not None and trainer.best_step == trainer.step_count:
            model = trainer.model
            current = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(trainer.best_state)
            try:
                save_twin(path, model, meta_for(trainer))
            finally:
                model.load_state_dict(current)

    return on_validate


def _warm_start(ctx: RunContext, model: Any) -> bool:
    """On a resumed run, start from the last periodic checkpoint if there is one."""
    path = ctx.path / CHECKPOINT
    if not path.is_file():
        return False
    saved, _ = load_twin(path)
    model.load_state_dict(saved.state_dict())
    return True


def run_device(ctx: RunContext, config: TwinTrainConfig) -> dict[str, Any]:
    """Online training on ``ctx.device``."""
    acq, arch = config.acquire, config.architecture
    dev = ctx.device
    check_conditions(dev, acq)  # a field on a bench without a magnet: one line, nothing driven
    missing = [
        n
        for n in arch.condition_names
        if n not in dev.condition_names or (n not in acq.conditions and n not in dev.default_conditions)
    ]
    if missing:  # before anything is driven
        raise ConfigError(
            f"{dev.address or type(dev).__name__} has no value for the twin's condition(s) {missing} "
            f"(it takes {list(dev.condition_names)}, defaults {dev.default_conditions}); sweep them "
            "(--bias-A, --field-T, --condition) or leave them out of the twin's conditions"
        )
    held_out: list[Any] = []  # the latest validation recordings: the figure's test prediction

    def remembered(batches: Any) -> Any:
        for batch in batches:
            if batch.validation:
                held_out[:] = batch.trajectories
            yield batch

    batches = remembered(recording_batches(ctx, acq))
    first = next(batches)
    data = first.trajectories
    model = build_model(arch, fit_normalisation(data, arch.condition_names), seed=ctx.seed)
    model.to(resolve_torch_device(config.torch_device))
    warm = _warm_start(ctx, model)
    # the first batch may be a mean of `repeats` shots: scale back to one shot
    noise_std = estimate_noise_std(np.stack([t.response for t in data])) * math.sqrt(first.repeats)
    tcfg = config.train.replace(seed=ctx.seed, noise_std=noise_std, rest_drive_V=config.rest_drive_V)
    ranges = condition_ranges(data, arch.condition_names)
    quantity = dev.drive_quantity
    amplitude = min(acq.amplitude_V, dev.limits.max_drive_V)  # as acquire clips it
    inputs = [
        {
            "name": "drive",
            "role": "drive",
            "unit": quantity.unit,
            "quantity": quantity.quantity,
            "range": [-amplitude, amplitude],
            "column": None,
        }
    ]
    inputs += [
        {
            "name": n,
            "role": "condition",
            "unit": n.rpartition("_")[2] if "_" in n else "",
            "quantity": n,
            "range": ranges[n],
            "column": None,
        }
        for n in arch.condition_names
    ]

    def meta_for(trainer: Any, result: Any = None) -> TwinMeta:
        return TwinMeta(
            dt_s=acq.dt_s,
            condition_ranges=ranges,
            noise_std=tcfg.noise_std,
            settle_samples=tcfg.settle_samples,
            drive_unit=quantity.unit,
            inputs=inputs,
            rest_drive_V=trainer.best_rest if result is None else result.rest_drive_V,
            output_unit=dev.response_unit,
            provenance={
                "source": {"device": dev.address, "identity": dev.identity(), "run": str(ctx.path)},
                "seed": ctx.seed,
                "train": tcfg.to_dict(),
                "acquire": acq.to_dict(),
                "nrmse_history": list(trainer.history),
                "best_nrmse": trainer.best_nrmse,
            },
        )

    result = train_online(
        model,
        itertools.chain([first], batches),
        tcfg,
        config.online,
        run=ctx,
        on_validate=_checkpointing(ctx, meta_for),
    )
    tcfg = tcfg.replace(rest_drive_V=result.rest_drive_V)
    meta = meta_for(result, result)
    meta.provenance.update(
        {
            "nrmse_history": result.history,
            "best_nrmse": result.best_nrmse,
            "device_time_s": result.acquired_device_time_s,
        }
    )
    save_twin(config.out, model, meta)
    save_history(ctx, result.history)
    if held_out:
        test = held_out[-1]
        prediction = predict(model, [test], settle_samples=tcfg.settle_samples, rest_drive=tcfg.rest_drive_V)
        ctx.save("test/prediction", prediction[0], dt_s=acq.dt_s)
        ctx.save("test/truth", test.response, dt_s=acq.dt_s)
        ctx.save("test/drive", np.asarray(test.drive), dt_s=acq.dt_s)
    summary = {
        "out": str(config.out),
        "best_nrmse": result.best_nrmse,
        "reached_target": result.reached_target,
        "target_nrmse": tcfg.target_nrmse,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "train_wall_s": result.wall_s,
        "device_time_s": result.acquired_device_time_s,
        "dt_s": acq.dt_s,
        "output_unit": dev.response_unit,
        "batches": result.batches,
        "acquired_batches": result.acquired_batches,
        "recordings": result.acquired_batches * len(acq.condition_grid()),
        "noise_std": tcfg.noise_std,
        "conditions": dict(acq.conditions),
        "rest_drive_V": tcfg.rest_drive_V,
        "warm_start": warm,
    }
    ctx.result(**summary)
    return summary


def mumax_inputs(table: Any, split: MumaxSplit, train: list[Any]) -> list[dict[str, Any]]:
    """The named inputs of a MuMax3 twin: drives then conditions, with units and trained ranges."""
    ranges = drive_ranges(train)
    names = split.condition_names(table)
    cond_ranges = condition_ranges(train, names)
    specs = []
    for i, column in enumerate((*split.drives, *split.conditions)):
        drive = i < len(split.drives)
        specs.append(
            {
                "name": column if drive else names[i - len(split.drives)],
                "role": "drive" if drive else "condition",
                "unit": table.unit(column),
                "column": column,
                "quantity": MUMAX_QUANTITIES.get(column.split(".")[0], (column,))[0],
                "range": ranges[i] if drive else cond_ranges[names[i - len(split.drives)]],
            }
        )
    return specs


def run_mumax(ctx: RunContext, config: TwinTrainConfig) -> dict[str, Any]:
    """Offline training on a MuMax3 table; reports the free-running test NRMSE."""
    split = config.split
    table = load_mumax_table(config.table)
    arch = config.architecture.replace(drive_names=split.drives, condition_names=split.condition_names(table))
    series, offset = mumax_series(table, split)
    train_t, val_t, test_t = mumax_trajectories(table, split)
    if val_t is None:
        raise ConfigError("MuMax3 training needs validation data: --val-points must be > 0")
    model = build_model(arch, fit_normalisation([train_t], arch.condition_names), seed=ctx.seed)
    model.to(resolve_torch_device(config.torch_device))
    warm = _warm_start(ctx, model)
    tcfg = config.train.replace(seed=ctx.seed, noise_std=estimate_noise_std(train_t.response))
    inputs = mumax_inputs(table, split, [train_t])
    output = {
        "name": split.output_column,
        "column": split.output_column,
        "unit": table.unit(split.output_column) or "1",
        "offset": offset,
        "scale": split.output_scale,
    }

    def meta_for(trainer: Any) -> TwinMeta:
        # noise in the output's own unit; a Device settles 200 samples at the drive's first level
        return TwinMeta(
            dt_s=train_t.dt_s,
            noise_std=tcfg.noise_std / abs(split.output_scale),
            settle_samples=MUMAX_SETTLE_SAMPLES,
            drive_unit=inputs[0]["unit"],
            output_unit=output["unit"],
            inputs=inputs,
            output=output,
            condition_ranges={s["name"]: s["range"] for s in inputs if s["role"] == "condition"},
            provenance={
                "source": {"mumax3": str(config.table), "split": split.to_dict()},
                "seed": ctx.seed,
                "train": tcfg.to_dict(),
                "nrmse_history": list(trainer.history),
                "best_nrmse": trainer.best_nrmse,
            },
        )

    result = train_offline(
        model, [train_t], [val_t], tcfg, run=ctx, on_validate=_checkpointing(ctx, meta_for)
    )
    test_nrmse = trajectory_nrmse(model, [test_t])
    rest = series.span(split.n_train, series.n)
    rest_nrmse = trajectory_nrmse(model, [rest])
    meta = meta_for(result)
    meta.provenance.update(
        {"nrmse_history": result.history, "best_nrmse": result.best_nrmse, "test_nrmse": test_nrmse}
    )
    save_twin(config.out, model, meta)
    save_history(ctx, result.history)
    unit = meta.output_unit or "1"  # MuMax3's magnetisation columns are dimensionless
    ctx.save("test/prediction", predict(model, [test_t])[0], dt_s=test_t.dt_s, unit=unit)
    ctx.save("test/truth", test_t.response, dt_s=test_t.dt_s, unit=unit)
    summary = {
        "out": str(config.out),
        "best_nrmse": result.best_nrmse,
        "reached_target": result.reached_target,
        "target_nrmse": tcfg.target_nrmse,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "train_wall_s": result.wall_s,
        "test_nrmse": test_nrmse,
        "test_points": test_t.n - arch.history_samples,
        "rest_of_table_nrmse": rest_nrmse,
        "rest_of_table_points": rest.n,
        "dt_s": train_t.dt_s,
        "inputs": [{k: s[k] for k in ("name", "role", "unit", "range")} for s in inputs],
        "warm_start": warm,
        "output": split.output_column,
        "output_unit": output["unit"],
        "output_scale": float(split.output_scale),
        "output_offset": float(offset),
    }
    ctx.result(**summary)
    return summary


# --- the command line (``spinlab run twin-train``, alias ``spinlab twin train``) ------------------
HISTORY_COLUMNS = ("step", "loss", "nrmse", "lr")


def save_history(ctx: RunContext, history: list[dict[str, float]]) -> None:
    """The training's validation history into the run file (``history``: one row per validation,
    columns ``step, loss, nrmse, lr``), for its figure and for anyone comparing trainings."""
    rows = np.array([[float(h.get(c, math.nan)) for c in HISTORY_COLUMNS] for h in history], dtype=float)
    ctx.save("history", rows.reshape(-1, len(HISTORY_COLUMNS)), columns=list(HISTORY_COLUMNS))


def plot_history(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """Training loss and validation NRMSE against the optimisation step, with the target."""
    history = np.asarray(datasets["history"], dtype=float).reshape(-1, len(HISTORY_COLUMNS))
    step, loss, score = history[:, 0], history[:, 1], history[:, 2]
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.semilogy(step, loss, color="0.4", lw=1.0, label="training loss (MSE, normalised)")
    ax.semilogy(step, score, "o-", ms=3, color="tab:red", lw=1.0, label="validation NRMSE")
    ax.axhline(float(results["target_nrmse"]), color="k", lw=0.8, ls=":", label="NRMSE target")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss, NRMSE")
    how = "reached its target" if results.get("reached_target") else "stopped before its target"
    ax.set_title(f"Twin training: best NRMSE {results['best_nrmse']:.4f} ({how})", fontsize=9)
    legend(ax)
    fig.tight_layout()
    return fig


def plot_test(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The trained twin's free-running prediction of held-out data against the reference."""
    truth, twin = np.asarray(datasets["test/truth"]), np.asarray(datasets["test/prediction"])
    # MuMax3 twins work in (y - offset) * scale: drawn in the output's own unit
    scale, offset = float(results.get("output_scale", 1.0)), float(results.get("output_offset", 0.0))
    truth, twin = truth.reshape(-1) / scale + offset, twin.reshape(-1) / scale + offset
    t, t_unit = scaled(np.arange(truth.size) * float(results["dt_s"]), "s")
    symbol, unit = symbol_of(str(results.get("output") or "V_out"))
    unit = unit or str(results.get("output_unit") or "")
    factor, unit = prefix(truth, unit)
    reference = "MuMax3" if results.get("output") else "device"
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.subplots()
    ax.plot(t, truth * factor, color="k", lw=0.9, label=reference)
    ax.plot(t, twin * factor, color="tab:red", lw=0.9, ls="--", label="twin")
    ax.set_xlabel(label("t", t_unit))
    ax.set_ylabel(label(symbol, unit))
    ax.set_xlim(t[0], t[-1])
    score = results.get("test_nrmse")
    ax.set_title(
        f"Held-out prediction against the {reference}"
        + (f": NRMSE {score:.4f}" if isinstance(score, (int, float)) else ""),
        fontsize=9,
    )
    legend_outside(ax)
    fig.tight_layout()
    return fig


def input_columns(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """'Ku1.region100,Dind.region100:condition' -> (drive columns, condition columns)."""
    roles: dict[str, list[str]] = {"drive": [], "condition": []}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        column, _, role = item.rpartition(":") if ":" in item else (item, "", "drive")
        if role not in roles or not column.strip():
            raise ConfigError(
                f"--input items look like COLUMN, COLUMN:drive or COLUMN:condition; got {item!r}"
            )
        roles[role].append(column.strip())
    if not roles["drive"]:
        raise ConfigError(f"--input needs at least one drive column (got {text!r})")
    return tuple(roles["drive"]), tuple(roles["condition"])


def _inputs(settings: dict[str, Any], text: str) -> None:
    drives, conditions = input_columns(text)
    assign_setting(settings, "split.drives", drives)
    assign_setting(settings, "split.conditions", conditions)


def twin_conditions(swept: Mapping[str, Any]) -> list[str]:
    """The twin's conditions on the command line: the swept ones, and the bias with a swept
    field (an oscillator's response depends on both; a bias held at one value is still recorded
    in the checkpoint, so the twin warns when asked at another)."""
    names = list(swept)
    return ["bias_A", *names] if "field_T" in names and "bias_A" not in names else names


def command_line_defaults(
    settings: dict[str, Any], *, device: str | None, runs_dir: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The command line's source (``--device`` or ``--mumax``), its per-source defaults (target
    NRMSE 0.1 on a device, 0.02 on MuMax3; held drives on a device, interpolated MuMax3 inputs)
    and the torch threads of this process (``--threads``, default 1: fastest for H ~ 64)."""
    import torch

    torch.set_num_threads(max(1, options["threads"]))
    source = settings.setdefault(
        "source", "device" if device is not None or not settings.get("table") else "mumax3"
    )
    if (source == "device") != (device is not None):
        raise ConfigError("give exactly one data source: --device ADDRESS or --mumax TABLE")
    train = settings.setdefault("train", {})
    for name, value in {
        "target_nrmse": 0.1 if source == "device" else 0.02,
        "max_steps": 12000,
        "validate_every": 250,
    }.items():
        train.setdefault(name, value)
    architecture = settings.setdefault("architecture", {})
    architecture.setdefault("interpolation", "hold" if source == "device" else "linear")
    if source == "device":
        acquire = settings.setdefault("acquire", {})
        acquire.setdefault("validation_every", 6)
        acquire.setdefault("validation_repeats", 4)
        architecture.setdefault("condition_names", twin_conditions(acquire.get("conditions", {})))
    else:
        split = settings.setdefault("split", {})
        split["n_test"] = split.get("n_test", 10000) or None  # 0: all the rest
    if settings.get("rest_drive_V") == "first":
        settings["rest_drive_V"] = None
    return settings


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run twin-train`` prints."""
    lines = [
        f"twin -> {summary['out']}: best validation NRMSE {summary['best_nrmse']:.4f} "
        f"after {summary['steps']} steps ({summary['stop_reason']})"
    ]
    if "test_nrmse" in summary:
        lines.append(
            f"test NRMSE (free-running, {summary['test_points']} points): {summary['test_nrmse']:.4f}"
        )
    if "device_time_s" in summary:
        lines.append(f"device time used: {summary['device_time_s'] * 1e3:.3g} ms")
    lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)


_OLD_FLAGS: dict[str, str | tuple[str, type]] = {
    "-o": "out",
    "--mumax": "table",
    "--output": "split.output_column",
    "--every": ("split.every", int),
    "--resample-dt-s": ("split.resample_dt_s", float),
    "--discard": ("split.discard", int),
    "--train-points": ("split.n_train", int),
    "--val-points": ("split.n_val", int),
    "--test-points": ("split.n_test", int),
    "--output-scale": ("split.output_scale", float),
    "--target-nrmse": ("train.target_nrmse", float),
    "--segments": ("train.n_segments", int),
    "--segment-samples": ("train.segment_samples", int),
    "--lr": ("train.learning_rate", float),
    "--max-steps": ("train.max_steps", int),
    "--validate-every": ("train.validate_every", int),
    "--max-wall-s": ("train.max_wall_s", float),
    "--max-duration": ("acquire.duration_s", float),
    "--hold-s": "acquire.hold_s",
    "--amplitude-V": ("acquire.amplitude_V", float),
    "--dt-s": ("acquire.dt_s", float),
    "--record-s": ("acquire.record_s", float),
    "--validation-every": ("acquire.validation_every", int),
    "--validation-repeats": ("acquire.validation_repeats", int),
    "--steps-per-batch": ("online.steps_per_batch", int),
    "--delays": ("architecture.n_delays", int),
    "--delay-samples": ("architecture.delay_samples", int),
    "--hidden": ("architecture.hidden", int),
    "--interpolation": "architecture.interpolation",
}


def _noise_injection(settings: dict[str, Any], on: bool) -> None:
    assign_setting(settings, "train.noise_injection", on)


_SHORTCUTS = (
    *condition_shortcuts("acquire.conditions"),
    Shortcut(
        ("--input",),
        "MuMax3 input columns, comma separated, each COLUMN[:drive|:condition]: a drive "
        "is fast (interpolated), a condition slow (held).",
        _inputs,
    ),
    Shortcut(
        ("--noise-injection/--no-noise-injection",),
        "Perturb segment starts with the measured output noise.",
        _noise_injection,
        bool,
    ),
    Shortcut(("--threads",), "torch threads (1 is fastest for H ~ 64).", kind=int, name="threads", default=1),
)


@command(
    config=TwinTrainConfig,
    report=report,
    prepare=command_line_defaults,
    device="optional",
    aliases=_OLD_FLAGS,
    shortcuts=_SHORTCUTS,
    help="Train a twin online on a device (fits while it records) or offline on a MuMax3 table.",
)
def plan(config: TwinTrainConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Twin training as a plan (``spinlab twin train``'s defaults unless overridden)."""
    cfg = make_config(TwinTrainConfig, config, overrides)
    body = run_device if cfg.source == "device" else run_mumax
    return Plan(
        "twin-train",
        cfg,
        lambda ctx: body(ctx, cfg),
        needs_device=cfg.source == "device",
        plots={"training.png": plot_history, "test_prediction.png": plot_test},
        nexus={"signal": "test/prediction"} if cfg.source == "mumax3" else {"signal": "response_V"},
    )


__all__ = [
    "TwinTrainConfig",
    "plan",
    "run_device",
    "run_mumax",
    "CHECKPOINT",
    "input_columns",
    "report",
    "twin_conditions",
]
