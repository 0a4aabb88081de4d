"""`spinlab acquire`, `spinlab twin train`, `spinlab twin eval`: the digital-twin workflow.

    spinlab acquire --device sim:vortex --duration 5e-3 --bias-A 6.5e-3,8.5e-3
    spinlab twin train --device sim:vortex --bias-A 6.5e-3,8.5e-3 --target-nrmse 0.1 --out twin.pt
    spinlab twin train --mumax table.txt --input Ku1.region100 --output mz --out sky.pt
    spinlab twin eval twin.pt --device sim:vortex --bias-A 7.5e-3 --repeats 8
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Optional

import typer

from spinlab.cli.common import (ControlKeysOption, ControlOption, JsonOption, MonitorOption,
                                RunsDirOption, SeedOption, emit_json, user_errors)
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
                    condition: Optional[list[str]], seed: int, **extra: Any) -> Any:
    """The AcquireConfig of the drive options shared by `acquire` and `twin train`."""
    from spinlab.protocols.acquire import AcquireConfig

    return AcquireConfig(duration_s=duration_s, dt_s=dt_s, record_s=record_s,
                         hold_s=_pair(hold_s, "--hold-s"), amplitude_V=amplitude_V,
                         conditions=_conditions(bias_A, field_T, condition or []), seed=seed,
                         **extra)


BiasOption = typer.Option(None, "--bias-A", help="Bias currents to sweep, comma separated (A).")
FieldOption = typer.Option(None, "--field-T", help="Fields to sweep, comma separated (T).")
ConditionOption = typer.Option(None, "--condition", help="Any other condition sweep: NAME=V1,V2 (repeatable).")
HoldOption = typer.Option("1e-7,1e-6", "--hold-s", help="Hold time range of each random level: MIN,MAX (s).")
AmplitudeOption = typer.Option(0.4, "--amplitude-V", help="Drive levels are uniform in +-this (V), clipped to the device limit.")
DtOption = typer.Option(1e-7, "--dt-s", help="Sample interval of drives and responses (s).")
RecordOption = typer.Option(1e-4, "--record-s", help="Length of one recording (s).")
TorchDeviceOption = typer.Option("auto", "--torch-device", help="Where the twin computes: auto (a GPU when present), cpu, cuda or cuda:N.")


# --- spinlab acquire -------------------------------------------------------------------------
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
    runs_dir: Path = RunsDirOption,
    monitor: Optional[str] = MonitorOption,
    control: Optional[str] = ControlOption,
    control_keys: Optional[Path] = ControlKeysOption,
    seed: int = SeedOption,
) -> None:
    """Record random multi-level drives and the device's responses (twin training data)."""
    from spinlab.protocols.acquire import run_acquire
    from spinlab.registry import open_device
    from spinlab.run import Run

    start = time.perf_counter()
    with user_errors():
        config = _acquire_config(duration_s, dt_s, record_s, hold_s, amplitude_V,
                                 bias_A, field_T, condition, seed)
        with open_device(device, defaults={"seed": seed}) as dev:
            with Run("acquire", {**config.to_dict(), "device": device}, root=runs_dir, device=dev,
                     monitor=monitor, control=control, control_keys=control_keys) as run:
                run.record_seed("device", seed)
                summary = run_acquire(dev, config, run)
    summary = {**summary, "device": device, "wall_s": time.perf_counter() - start}
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"recorded {summary['recordings']} drives, {summary['device_time_s'] * 1e3:.3g} ms "
               f"of device time -> {summary['run']}")


# --- spinlab twin train ----------------------------------------------------------------------
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (twin.pt)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Train online on this device."),
    mumax: Optional[Path] = typer.Option(None, "--mumax", help="Train offline on this MuMax3 table.txt."),
    input_column: str = typer.Option("Ku1.region100", "--input", help="MuMax3 column used as the drive."),
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
    runs_dir: Path = RunsDirOption,
    monitor: Optional[str] = MonitorOption,
    control: Optional[str] = ControlOption,
    control_keys: Optional[Path] = ControlKeysOption,
    seed: int = SeedOption,
) -> None:
    """Train a twin online on a device (fits while it records) or offline on a MuMax3 table."""
    import torch

    from spinlab.twin.model import TwinArchitecture, resolve_torch_device
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
                           noise_injection=noise_injection, max_wall_s=max_wall_s, seed=seed)
        common = {"json": json_output, "runs_dir": runs_dir, "monitor": monitor,
                  "control": control, "control_keys": control_keys, "seed": seed,
                  "torch_device": resolve_torch_device(torch_device)}
        if device is not None:
            acq = _acquire_config(max_duration_s, dt_s, record_s, hold_s, amplitude_V,
                                  bias_A, field_T, condition, seed,
                                  validation_every=validation_every,
                                  validation_repeats=validation_repeats)
            arch = TwinArchitecture(n_delays=delays, delay_samples=delay_samples, hidden=hidden,
                                    condition_names=tuple(acq.conditions),
                                    interpolation=interpolation or "hold")
            summary = _train_device(device, out, acq, arch, tcfg, common, _rest(rest_drive),
                                    OnlineConfig(steps_per_batch=steps_per_batch))
        else:
            from spinlab.twin.data import MumaxSplit

            split = MumaxSplit(input_column=input_column, output_column=output_column, every=every,
                               resample_dt_s=resample_dt_s, discard=discard, n_train=train_points,
                               n_val=val_points, n_test=test_points or None,
                               output_scale=output_scale)
            arch = TwinArchitecture(n_delays=delays, delay_samples=delay_samples, hidden=hidden,
                                    interpolation=interpolation or "linear")
            summary = _train_mumax(mumax, out, split, arch, tcfg, common)
    summary["wall_s"] = time.perf_counter() - start
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


def _rest(text: str) -> float | str | None:
    text = text.strip().lower()
    if text in ("auto", "first"):
        return None if text == "first" else "auto"
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--rest-drive-V must be a number, 'first' or 'auto', got {text!r}") from None


def _train_device(address: str, out: Path, acq: Any, arch: Any, tcfg: Any, common: dict,
                  rest: float | str | None = "auto", online: Any = None) -> dict:
    """Online training: the first batch fixes the normalisation, the rest streams in.

    What the device does before a drive starts is part of the setup (a simulator starts
    settled at the first sample, a bench sits at 0 V between records); ``rest="auto"`` scores
    both at every validation and keeps the convention of the best one."""
    import math
    from dataclasses import asdict

    import numpy as np

    from spinlab.protocols.acquire import RunRecorder, recording_batches
    from spinlab.registry import open_device
    from spinlab.run import Run
    from spinlab.twin.checkpoint import TwinMeta, save_twin
    from spinlab.twin.data import condition_ranges, estimate_noise_std, fit_normalisation
    from spinlab.twin.model import build_model
    from spinlab.twin.train import OnlineConfig, train_online

    seed = common["seed"]
    if acq.validation_every < 2:
        raise ConfigError("online training needs held-out data: --validation-every must be >= 2")
    online = online or OnlineConfig()
    config = {"source": "device", "device": address, "acquire": acq.to_dict(),
              "online": asdict(online),
              "architecture": arch.to_dict(), "train": asdict(tcfg), "out": str(out)}
    with open_device(address, defaults={"seed": seed}) as dev:
        with Run("twin-train", config, root=common["runs_dir"], device=dev,
                 monitor=common["monitor"], control=common["control"],
                 control_keys=common["control_keys"]) as run:
            for name in ("device", "acquire", "model", "segments"):
                run.record_seed(name, seed)
            recorder = RunRecorder(run, arch.condition_names, acq.dt_s)
            batches = recording_batches(dev, acq)
            first = next(batches)
            data = first.trajectories
            model = build_model(arch, fit_normalisation(data, arch.condition_names),
                                seed=seed).to(common["torch_device"])
            # the first batch may be a mean of `repeats` shots: scale back to one shot
            tcfg.noise_std = estimate_noise_std(np.stack([t.response for t in data])) * math.sqrt(first.repeats)
            tcfg.rest_drive_V = rest
            result = train_online(model, itertools.chain([first], batches), tcfg, online,
                                  run=run, progress=True, on_batch=recorder)
            tcfg.rest_drive_V = result.rest_drive_V
            # the first batch holds one recording at every swept condition
            meta = TwinMeta(dt_s=acq.dt_s, condition_ranges=condition_ranges(data, arch.condition_names), noise_std=tcfg.noise_std,
                            settle_samples=tcfg.settle_samples, rest_drive_V=tcfg.rest_drive_V,
                            output_unit=dev.response_unit, provenance={
                                "source": {"device": address, "identity": dev.identity(),
                                           "run": str(run.path)},
                                "seeds": dict(run.seeds), "train": asdict(tcfg),
                                "acquire": acq.to_dict(), "nrmse_history": result.history,
                                "best_nrmse": result.best_nrmse,
                                "device_time_s": result.acquired_device_time_s,
                                "device_time_used_s": recorder.device_time_s})
            save_twin(out, model, meta)
            summary = {"out": str(out), "best_nrmse": result.best_nrmse,
                       "reached_target": result.reached_target, "target_nrmse": tcfg.target_nrmse,
                       "steps": result.steps, "stop_reason": result.stop_reason,
                       "train_wall_s": result.wall_s,
                       "device_time_s": result.acquired_device_time_s,
                       "device_time_used_s": recorder.device_time_s,
                       "recordings": recorder.n_recordings, "batches": result.batches,
                       "acquired_batches": result.acquired_batches,
                       "noise_std": tcfg.noise_std, "conditions": acq.conditions,
                       "rest_drive_V": tcfg.rest_drive_V,
                       "run_dir": str(run.path)}
            run.result(**{k: v for k, v in summary.items() if k != "run_dir"})
    return summary


def _train_mumax(table_path: Path, out: Path, split: Any, arch: Any, tcfg: Any, common: dict) -> dict:
    """Offline training on a MuMax3 table; reports the free-running test NRMSE."""
    from dataclasses import asdict

    from spinlab.run import Run
    from spinlab.twin.checkpoint import TwinMeta, save_twin
    from spinlab.twin.data import (MumaxSplit, estimate_noise_std, fit_normalisation,
                                   load_mumax_table, mumax_trajectories, predict,
                                   trajectory_nrmse)
    from spinlab.twin.model import build_model
    from spinlab.twin.train import train_offline

    seed = common["seed"]
    table = load_mumax_table(table_path)
    train_t, val_t, test_t = mumax_trajectories(table, split)
    if val_t is None:
        raise ConfigError("MuMax3 training needs validation data: --val-points must be > 0")
    config = {"source": "mumax3", "table": str(table_path), "split": asdict(split),
              "architecture": arch.to_dict(), "train": asdict(tcfg), "out": str(out)}
    with Run("twin-train", config, root=common["runs_dir"], monitor=common["monitor"],
             control=common["control"], control_keys=common["control_keys"]) as run:
        for name in ("model", "segments"):
            run.record_seed(name, seed)
        model = build_model(arch, fit_normalisation([train_t], ()), seed=seed).to(common["torch_device"])
        tcfg.noise_std = estimate_noise_std(train_t.response)
        result = train_offline(model, [train_t], [val_t], tcfg, run=run, progress=True)
        test_nrmse = trajectory_nrmse(model, [test_t])
        rest = mumax_trajectories(table, MumaxSplit(**{**asdict(split), "n_test": None}))[2]
        rest_nrmse = trajectory_nrmse(model, [rest])
        meta = TwinMeta(dt_s=train_t.dt_s, noise_std=tcfg.noise_std, settle_samples=0,
                        drive_unit=table.units.get(split.input_column, ""),
                        output_unit=f"({table.units.get(split.output_column, '')}) x {split.output_scale:g}",
                        provenance={"source": {"mumax3": str(table_path), "split": asdict(split)},
                                    "seeds": dict(run.seeds), "train": asdict(tcfg),
                                    "nrmse_history": result.history,
                                    "best_nrmse": result.best_nrmse, "test_nrmse": test_nrmse})
        save_twin(out, model, meta)
        run.save("test/prediction", predict(model, [test_t])[0], dt_s=test_t.dt_s)
        run.save("test/truth", test_t.response, dt_s=test_t.dt_s)
        summary = {"out": str(out), "best_nrmse": result.best_nrmse,
                   "reached_target": result.reached_target, "target_nrmse": tcfg.target_nrmse,
                   "steps": result.steps, "stop_reason": result.stop_reason,
                   "train_wall_s": result.wall_s, "test_nrmse": test_nrmse,
                   "test_points": test_t.n - arch.history_samples,
                   "rest_of_table_nrmse": rest_nrmse, "rest_of_table_points": rest.n,
                   "dt_s": train_t.dt_s, "run_dir": str(run.path)}
        run.result(**{k: v for k, v in summary.items() if k != "run_dir"})
    return summary


# --- spinlab twin eval -----------------------------------------------------------------------
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Twin checkpoint (twin.pt)."),
    device: str = typer.Option(..., "--device", "-d", help="Device to compare with."),
    bias_A: Optional[str] = BiasOption,
    field_T: Optional[str] = FieldOption,
    condition: Optional[list[str]] = ConditionOption,
    n_drives: int = typer.Option(10, "--drives", help="Fresh random drives per condition."),
    repeats: int = typer.Option(1, "--repeats", help="Apply each drive N times; score against the mean."),
    hold_s: str = HoldOption,
    amplitude_V: float = AmplitudeOption,
    record_s: float = RecordOption,
    json_output: bool = JsonOption,
    runs_dir: Path = RunsDirOption,
    monitor: Optional[str] = MonitorOption,
    control: Optional[str] = ControlOption,
    control_keys: Optional[Path] = ControlKeysOption,
    seed: int = typer.Option(1000, "--seed", help="Seed of the fresh drives (differs from training's 0)."),
    torch_device: str = TorchDeviceOption,
) -> None:
    """Score a twin against a device on fresh random drives (NRMSE) and plot both."""
    from spinlab.registry import open_device
    from spinlab.run import Run
    from spinlab.protocols.twin_eval import EvalConfig, evaluate as run_eval, plot_examples
    from spinlab.sim_backends.twin_device import open_twin

    start = time.perf_counter()
    with user_errors():
        twin = open_twin(checkpoint, torch_device=torch_device)
        cfg = EvalConfig(n_drives=n_drives, record_s=record_s, dt_s=twin.dt_s,
                         hold_s=_pair(hold_s, "--hold-s"), amplitude_V=amplitude_V,
                         conditions=_conditions(bias_A, field_T, condition or []) or None,
                         repeats=repeats, seed=seed)
        with open_device(device, defaults={"seed": seed}) as dev:
            with Run("twin-eval", {"checkpoint": str(checkpoint), "device": device,
                                   **{k: v for k, v in cfg.__dict__.items()}},
                     root=runs_dir, device=dev, monitor=monitor, control=control,
                     control_keys=control_keys) as run:
                run.record_seed("drives", seed)
                summary = run_eval(twin, dev, cfg, run)
                examples = summary.pop("examples")
                plot = plot_examples(examples, cfg.dt_s, str(run.figure_path("twin_vs_device.png")),
                                     f"twin {checkpoint.name} vs {device}: NRMSE {summary['nrmse']:.4f} "
                                     f"(vs the mean of {repeats} shot{'s' if repeats > 1 else ''})")
                run.result(**summary)
                summary.update({"plot": plot, "run_dir": str(run.path)})
    summary.update({"checkpoint": str(checkpoint), "device": device,
                    "wall_s": time.perf_counter() - start})
    if json_output:
        emit_json(summary)
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
