"""`spinlab acquire`, `spinlab twin train`, `spinlab twin eval`: the digital-twin workflow.

    spinlab acquire --device sim:vortex --duration 5e-3 --bias-A 6.5e-3,8.5e-3
    spinlab twin train --device sim:vortex --bias-A 6.5e-3,8.5e-3 --target-nrmse 0.1 --out twin.pt
    spinlab twin train --mumax table.txt --input Ku1.region100 --output mz --out sky.pt
    spinlab twin eval twin.pt --device sim:vortex --bias-A 7.5e-3 --repeats 8
    spinlab twin train --mumax ku_dmi/table.txt --input Ku1.region100,Dind.region100:condition --out kd.pt
    spinlab twin eval kd.pt --mumax ku_dmi/table.txt --span 0.8,1 --json
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from spinlab.cli.common import (MAX_SEED, JsonOption, RunOptions, emit_json, run_command, run_plan,
                                user_errors)
from spinlab.errors import ConfigError

twin_app = typer.Typer(help="Spin-Neural ODE digital twin: train, evaluate.", no_args_is_help=True)


# --- option parsing helpers --------------------------------------------------------------------
def _floats(text: Optional[str], name: str) -> tuple[float, ...]:
    """'6e-3,9e-3' -> (0.006, 0.009); empty/None -> ()."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None
    return values


def _pair(text: str, name: str) -> tuple[float, float]:
    values = _floats(text, name)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ConfigError(f"{name} must be 'MIN,MAX' (or one value), got {text!r}")
    return values[0], values[1]


def _conditions(bias_A: Optional[str], field_T: Optional[str], extra: list[str]) -> dict[str, tuple[float, ...]]:
    conds: dict[str, tuple[float, ...]] = {}
    if bias_A:
        conds["bias_A"] = _floats(bias_A, "--bias-A")
    if field_T:
        conds["field_T"] = _floats(field_T, "--field-T")
    for item in extra or []:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--condition must look like NAME=V1,V2, got {item!r}")
        conds[name.strip()] = _floats(values, f"--condition {name}")
    return conds


def _acquire_config(duration_s: float, dt_s: float, record_s: float, hold_s: str,
                    amplitude_V: float, bias_A: Optional[str], field_T: Optional[str],
                    condition: Optional[list[str]], **extra: Any) -> Any:
    """The AcquireConfig of the drive options shared by `acquire` and `twin train`."""
    from spinlab.protocols.acquire import AcquireConfig

    return AcquireConfig(duration_s=duration_s, dt_s=dt_s, record_s=record_s,
                         hold_s=_pair(hold_s, "--hold-s"), amplitude_V=amplitude_V,
                         conditions=_conditions(bias_A, field_T, condition or []), **extra)


BiasOption = typer.Option(None, "--bias-A", help="Bias currents to sweep, comma separated (A).")
FieldOption = typer.Option(None, "--field-T", help="Fields to sweep, comma separated (T).")
ConditionOption = typer.Option(None, "--condition", help="Any other condition sweep: NAME=V1,V2 (repeatable).")
HoldOption = typer.Option("1e-7,1e-6", "--hold-s", help="Hold time range of each random level: MIN,MAX (s).")
AmplitudeOption = typer.Option(0.4, "--amplitude-V", help="Drive levels are uniform in +-this (V), clipped to the device limit.")
DtOption = typer.Option(1e-7, "--dt-s", help="Sample interval of drives and responses (s).")
RecordOption = typer.Option(1e-4, "--record-s", help="Length of one recording (s).")
TorchDeviceOption = typer.Option("auto", "--torch-device", help="Where the twin computes: auto (a GPU when present), cpu, cuda or cuda:N.")


# --- spinlab acquire -------------------------------------------------------------------------
@run_command
def acquire(
    device: str = typer.Option(..., "--device", "-d", help="Device address (sim:vortex, bench:emulated, ...)."),
    duration_s: float = typer.Option(5e-3, "--duration", help="Total device time to record (s)."),
    hold_s: str = HoldOption,
    amplitude_V: float = AmplitudeOption,
    bias_A: Optional[str] = BiasOption,
    field_T: Optional[str] = FieldOption,
    condition: Optional[list[str]] = ConditionOption,
    dt_s: float = DtOption,
    record_s: float = RecordOption,
    json_output: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Record random multi-level drives and the device's responses (twin training data)."""
    from spinlab.protocols import acquire as protocol

    start = time.perf_counter()
    with user_errors():
        config = _acquire_config(duration_s, dt_s, record_s, hold_s, amplitude_V, bias_A, field_T,
                                 condition)
        result = run_plan(protocol.plan(config), device,
                          run)
    summary = {**result.summary, "run": str(result.path), "device": device,
               "wall_s": time.perf_counter() - start}
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"recorded {summary['recordings']} drives, {summary['device_time_s'] * 1e3:.3g} ms "
               f"of device time -> {summary['run']}")


# --- spinlab twin train ----------------------------------------------------------------------
@run_command
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (twin.pt)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Train online on this device."),
    mumax: Optional[Path] = typer.Option(None, "--mumax", help="Train offline on this MuMax3 table.txt."),
    input_columns: str = typer.Option("Ku1.region100", "--input", help="MuMax3 input columns, comma separated, each COLUMN[:drive|:condition]: a drive is fast (at every delay, interpolated; the default), a condition slow (its present value, held), e.g. Ku1.region100,Dind.region100:condition."),
    output_column: str = typer.Option("mz", "--output", help="MuMax3 column used as the output."),
    every: int = typer.Option(2, "--every", help="MuMax3: keep every Nth row."),
    resample_dt_s: Optional[float] = typer.Option(None, "--resample-dt-s", help="MuMax3: interpolate onto this grid instead of decimating."),
    discard: int = typer.Option(1500, "--discard", help="MuMax3: transient samples dropped."),
    train_points: int = typer.Option(10000, "--train-points", help="MuMax3: training span (samples)."),
    val_points: int = typer.Option(2000, "--val-points", help="MuMax3: validation = the end of the training span."),
    test_points: Optional[int] = typer.Option(10000, "--test-points", help="MuMax3: test samples after the training span (0: all the rest)."),
    output_scale: float = typer.Option(10.0, "--output-scale", help="MuMax3: output = (y - y[0]) * scale."),
    target_nrmse: Optional[float] = typer.Option(None, "--target-nrmse", help="Stop when the validation NRMSE is at or below this (default 0.1 device, 0.02 MuMax3)."),
    max_duration_s: float = typer.Option(5e-3, "--max-duration", help="Device: cap on the device time recorded (s)."),
    bias_A: Optional[str] = BiasOption,
    field_T: Optional[str] = FieldOption,
    condition: Optional[list[str]] = ConditionOption,
    hold_s: str = HoldOption,
    amplitude_V: float = AmplitudeOption,
    dt_s: float = DtOption,
    record_s: float = RecordOption,
    validation_every: int = typer.Option(6, "--validation-every", help="Device: every Nth recording batch is held out (batch 0 included)."),
    validation_repeats: int = typer.Option(4, "--validation-repeats", help="Device: held-out drives are applied N times and averaged, so the twin is validated against the device's mean response, not one noisy shot (repeats count as device time)."),
    steps_per_batch: int = typer.Option(50, "--steps-per-batch", help="Device: training steps between two recording batches (paces acquisition by training; 0 = take data as fast as it comes)."),
    rest_drive: str = typer.Option("auto", "--rest-drive-V", help="Device: drive level the device sits at before a drive starts: a number (V), 'first' (the drive's first sample) or 'auto' (whichever fits the held-out data better)."),
    delays: int = typer.Option(2, "--delays", help="k: delayed copies of the output in the state."),
    delay_samples: int = typer.Option(1, "--delay-samples", help="Delay between copies (samples)."),
    hidden: int = typer.Option(64, "--hidden", help="Units per hidden tanh layer."),
    interpolation: Optional[str] = typer.Option(None, "--interpolation", help="Drive between samples: hold (device default) or linear (MuMax3 default)."),
    segments: int = typer.Option(50, "--segments", help="Random segments per step."),
    segment_samples: int = typer.Option(20, "--segment-samples", help="Points per segment."),
    learning_rate: float = typer.Option(3e-3, "--lr", help="Adam learning rate (cosine-decayed)."),
    max_steps: int = typer.Option(12000, "--max-steps", help="Optimisation step budget."),
    validate_every: int = typer.Option(250, "--validate-every", help="Steps between validations."),
    noise_injection: bool = typer.Option(False, "--noise-injection/--no-noise-injection", help="Perturb segment starts with the measured output noise."),
    max_wall_s: Optional[float] = typer.Option(None, "--max-wall-s", help="Wall-time budget of the training (s)."),
    threads: int = typer.Option(1, "--threads", help="torch threads (1 is fastest for H ~ 64)."),
    torch_device: str = TorchDeviceOption,
    json_output: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Train a twin online on a device (fits while it records) or offline on a MuMax3 table."""
    from dataclasses import asdict

    import torch

    from spinlab.protocols import twin_train as protocol
    from spinlab.twin.data import MumaxSplit
    from spinlab.twin.model import TwinArchitecture
    from spinlab.twin.train import OnlineConfig, TrainConfig

    start = time.perf_counter()
    with user_errors():
        if (device is None) == (mumax is None):
            raise ConfigError("give exactly one data source: --device ADDRESS or --mumax TABLE")
        torch.set_num_threads(max(1, threads))
        tcfg = TrainConfig(n_segments=segments, segment_samples=segment_samples,
                           learning_rate=learning_rate, max_steps=max_steps,
                           validate_every=validate_every,
                           target_nrmse=target_nrmse or (0.1 if device else 0.02),
                           noise_injection=noise_injection, max_wall_s=max_wall_s)
        if device is not None:
            acq = _acquire_config(max_duration_s, dt_s, record_s, hold_s, amplitude_V,
                                  bias_A, field_T, condition, validation_every=validation_every,
                                  validation_repeats=validation_repeats)
            arch = TwinArchitecture(n_delays=delays, delay_samples=delay_samples, hidden=hidden,
                                    condition_names=tuple(acq.conditions),
                                    interpolation=interpolation or "hold")
            plan = protocol.plan(out=str(out), source="device", architecture=arch.to_dict(),
                                 train=asdict(tcfg), acquire=acq.to_dict(),
                                 online=asdict(OnlineConfig(steps_per_batch=steps_per_batch)),
                                 rest_drive_V=_rest(rest_drive), torch_device=torch_device)
        else:
            drives, conditions = mumax_inputs(input_columns)
            split = MumaxSplit(drives=drives, conditions=conditions, output_column=output_column, every=every,
                               resample_dt_s=resample_dt_s, discard=discard, n_train=train_points,
                               n_val=val_points, n_test=test_points or None,
                               output_scale=output_scale)
            arch = TwinArchitecture(n_delays=delays, delay_samples=delay_samples, hidden=hidden,
                                    interpolation=interpolation or "linear")
            plan = protocol.plan(out=str(out), source="mumax3", architecture=arch.to_dict(),
                                 train=asdict(tcfg), table=str(mumax), split=asdict(split),
                                 torch_device=torch_device)
        result = run_plan(plan, device, run)
    summary = {**result.summary, "run_dir": str(result.path), "wall_s": time.perf_counter() - start}
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"twin -> {summary['out']}: best validation NRMSE {summary['best_nrmse']:.4f} "
               f"after {summary['steps']} steps ({summary['stop_reason']})")
    if "test_nrmse" in summary:
        typer.echo(f"test NRMSE (free-running, {summary['test_points']} points): {summary['test_nrmse']:.4f}")
    if "device_time_s" in summary:
        typer.echo(f"device time used: {summary['device_time_s'] * 1e3:.3g} ms")
    typer.echo(f"run directory: {summary['run_dir']}")


def mumax_inputs(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """'Ku1.region100,Dind.region100:condition' -> (drive columns, condition columns)."""
    roles: dict[str, list[str]] = {"drive": [], "condition": []}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        column, _, role = item.rpartition(":") if ":" in item else (item, "", "drive")
        if role not in roles or not column.strip():
            raise ConfigError(f"--input items look like COLUMN, COLUMN:drive or COLUMN:condition; got {item!r}")
        roles[role].append(column.strip())
    if not roles["drive"]:
        raise ConfigError(f"--input needs at least one drive column (got {text!r})")
    return tuple(roles["drive"]), tuple(roles["condition"])


def _rest(text: str) -> float | str | None:
    text = text.strip().lower()
    if text in ("auto", "first"):
        return None if text == "first" else "auto"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--rest-drive-V must be a number, 'first' or 'auto', got {text!r}") from None


# --- spinlab twin eval -----------------------------------------------------------------------
@run_command(seed=typer.Option(1000, "--seed", min=0, max=MAX_SEED,
                              help="Seed of the fresh drives (differs from training's 0)."))
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Twin checkpoint (twin.pt)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device to compare with."),
    mumax: Optional[Path] = typer.Option(None, "--mumax", help="Or score the twin free-running on this MuMax3 table.txt (same columns as its training table)."),
    span: str = typer.Option("0,1", "--span", help="MuMax3: the part of the table scored, START,STOP as fractions of its length (0.8,1: the last 20 %; the training transient is never scored)."),
    bias_A: Optional[str] = BiasOption,
    field_T: Optional[str] = FieldOption,
    condition: Optional[list[str]] = ConditionOption,
    n_drives: int = typer.Option(10, "--drives", help="Fresh random drives per condition."),
    repeats: int = typer.Option(1, "--repeats", help="Apply each drive N times; score against the mean."),
    hold_s: str = HoldOption,
    amplitude_V: float = AmplitudeOption,
    record_s: float = RecordOption,
    torch_device: str = TorchDeviceOption,
    json_output: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Score a twin against a device on fresh random drives, or on a MuMax3 table, and plot both."""
    from spinlab.protocols import twin_eval as protocol
    from spinlab.sim_backends.twin_device import open_twin

    start = time.perf_counter()
    with user_errors():
        if (device is None) == (mumax is None):
            raise ConfigError("give exactly one reference: --device ADDRESS or --mumax TABLE")
        if mumax is not None:
            plan = protocol.plan(checkpoint=str(checkpoint), table=str(mumax), span=_pair(span, "--span"))
        else:
            twin = open_twin(checkpoint)
            plan = protocol.plan(checkpoint=str(checkpoint), n_drives=n_drives, record_s=record_s,
                                 dt_s=twin.dt_s, hold_s=_pair(hold_s, "--hold-s"), amplitude_V=amplitude_V,
                                 conditions=_conditions(bias_A, field_T, condition or []) or None,
                                 repeats=repeats, torch_device=torch_device)
            twin.close()
        result = run_plan(plan, device, run)
    plot = "twin_vs_table.png" if mumax is not None else "twin_vs_device.png"
    summary = {**result.summary, "plot": str(result.path / plot), "run_dir": str(result.path),
               "checkpoint": str(checkpoint), "device": device, "wall_s": time.perf_counter() - start}
    if json_output:
        emit_json(summary)
        return
    if mumax is not None:
        typer.echo(f"NRMSE twin vs {mumax} (free-running, {summary['points']} points): {summary['nrmse']:.4f}; "
                   f"dominant frequency {summary['twin_dominant_frequency_Hz'] / 1e9:.4g} GHz vs "
                   f"{summary['dominant_frequency_Hz'] / 1e9:.4g} GHz (error {summary['frequency_error']:.2%})")
        typer.echo(f"plot: {summary['plot']}")
        return
    typer.echo(f"NRMSE twin vs device: {summary['nrmse']:.4f} "
               f"(single shot {summary['nrmse_single_shot']:.4f}, repeats {repeats})")
    if "noise_floor_single_shot" in summary:
        typer.echo(f"device's own single-shot noise floor: {summary['noise_floor_single_shot']:.4f}; "
                   f"floor of the {repeats}-shot mean: {summary['noise_floor_mean']:.4f}; "
                   f"twin error with that removed: {summary['nrmse_noise_corrected']:.4f}")
    for entry in summary["per_condition"]:
        typer.echo("  " + ", ".join(f"{k}={v:.4g}" for k, v in entry.items()))
    typer.echo(f"plot: {summary['plot']}")


def register(app: typer.Typer) -> None:
    """Add `acquire` and the `twin` group to the app."""
    app.command("acquire")(acquire)
    twin_app.command("train")(train)
    twin_app.command("eval")(evaluate)
    app.add_typer(twin_app, name="twin")
