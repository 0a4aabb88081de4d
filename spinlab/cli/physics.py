"""`spinlab fit-physics` and `spinlab optimise`: physical models fitted to runs, tuned for tasks.

    spinlab fit-physics runs/x-acquire-y --model macrospin --params alpha,Hd_A_per_m,eta,tmr --json
    spinlab fit-physics runs/x-acquire-y --model vortex --params threshold_A,gamma_G_per_s,Q --method grid
    spinlab optimise spoken-digits --device sim:vortex --data ../shared/datasets/fsdd/recordings
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spinlab.cli.common import JsonOption, RunOptions, emit_json, run_command, run_plan, user_errors
from spinlab.errors import ConfigError

optimise_app = typer.Typer(help="Tune a simulator's operating point for a task through its gradients.",
                           no_args_is_help=True)


def _assignments(items: Optional[list[str]], flag: str, parse) -> dict:
    """['a=1', 'b=2'] -> {'a': parse('1'), ...} with errors that name the flag."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{flag} must look like NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = parse(value.strip())
        except ValueError:
            raise ConfigError(f"{flag} {item!r}: {value!r} is not valid here") from None
    return out


def _box(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ValueError(text)
    return float(lo), float(hi)


@run_command
def fit_physics(
    run_dir: Path = typer.Argument(..., help="Run directory written by `spinlab acquire`."),
    model: str = typer.Option(..., "--model", help="Physical model: macrospin or vortex."),
    params: str = typer.Option(..., "--params", help="Comma-separated parameter names to fit."),
    method: str = typer.Option("grad", "--method", help="grad (gradient-based, multi-start) or grid (baseline)."),
    starts: int = typer.Option(8, "--starts", help="grad: descents started from the best screened candidates."),
    screen: int = typer.Option(64, "--screen", help="grad: random candidates scored before the descent."),
    horizons: str = typer.Option("0.1,0.3,1", "--horizons", help="grad: fractions of every recording fitted in turn (ending at 1)."),
    max_iterations: int = typer.Option(40, "--max-iterations", help="grad: iterations per horizon."),
    grid_points: int = typer.Option(6, "--grid-points", help="grid: points per parameter."),
    bounds: Optional[list[str]] = typer.Option(None, "--bounds", help="Search box NAME=LO:HI (repeatable)."),
    fixed: Optional[list[str]] = typer.Option(None, "--set", help="Value of a parameter that is not fitted, NAME=VALUE (repeatable)."),
    temperature_K: Optional[float] = typer.Option(None, "--temperature-K", help="macrospin: temperature of the fitted model as a device (default: the recording simulator's, else 0)."),
    rest_drive: str = typer.Option("auto", "--rest-drive-V", help="vortex: drive level the device idles at before a record (a number, 'first' or 'auto')."),
    points_per_sample: Optional[int] = typer.Option(None, "--points-per-sample", help="vortex: instants averaged into each response sample (default: the bench's scope points, else 1)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Model file to write (default: model.json in the fit's run directory)."),
    json_output: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Fit a physical model's parameters to a recorded run (gradient-based or grid search)."""
    with user_errors():
        from spinlab.protocols import fit_physics as protocol

        rest: float | str | None = rest_drive.strip().lower()
        if rest not in ("auto", "first"):
            try:
                rest = float(rest)
            except ValueError:
                raise ConfigError(f"--rest-drive-V must be a number, 'first' or 'auto', got {rest_drive!r}") from None
        try:
            horizon_list = tuple(float(h) for h in horizons.split(","))
        except ValueError:
            raise ConfigError(f"--horizons must be comma-separated fractions, got {horizons!r}") from None
        config = protocol.FitConfig(
            model=model.strip().lower(), params=tuple(params.split(",")), method=method, screen=screen,
            starts=starts, horizons=horizon_list, max_iterations=max_iterations, grid_points=grid_points,
            bounds=_assignments(bounds, "--bounds", _box), fixed=_assignments(fixed, "--set", float),
            temperature_K=temperature_K, rest_drive_V=None if rest == "first" else rest,
            points_per_sample=points_per_sample, source_run=str(run_dir), out=str(out) if out else None)
        protocol.read_run(run_dir)  # a wrong directory is refused before a run directory is made
        result = run_plan(protocol.plan(config), None, run)
        summary = {**result.summary, "run": str(result.path)}
    if json_output:
        emit_json(summary)
        return
    for name, entry in summary["params"].items():
        typer.echo(f"{name:<22} {entry['value']:.6g} +- {entry['uncertainty']:.2g}")
    typer.echo(f"loss {summary['loss']:.4g} (NRMSE {summary['nrmse']:.4f})"
               + (f", held-out NRMSE {summary['validation_nrmse']:.4f}" if "validation_nrmse" in summary else "")
               + f", {summary['wall_s']:.1f} s")
    typer.echo(f"model: {summary['address']}")


@run_command
def spoken_digits(
    device: str = typer.Option(..., "--device", "-d", help="Differentiable simulator: sim:vortex or a fitted vortex model sim:PATH.json."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder of FSDD .wav recordings (default: the `spinlab data fetch fsdd` cache)."),
    subset: int = typer.Option(300, "--subset", help="Training utterances in the differentiable surrogate."),
    iterations: int = typer.Option(20, "--iterations", help="Adam steps."),
    learning_rate: float = typer.Option(0.15, "--learning-rate", help="Adam step size in the bounded coordinates."),
    mask_scale: bool = typer.Option(True, "--mask-scale/--no-mask-scale", help="Tune the mask scale (input_sigma) too."),
    bias_A: Optional[float] = typer.Option(None, "--bias-A", help="Starting bias current (default: the protocol's)."),
    drive_fraction: Optional[float] = typer.Option(None, "--drive-fraction", help="Starting drive amplitude / max_drive_V (default: the protocol's)."),
    input_sigma: Optional[float] = typer.Option(None, "--input-sigma", help="Starting mask scale (default: the protocol's)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Virtual nodes per frame (default: the protocol's)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use a stratified subset of N utterances for everything (quick runs)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Run the protocol before and after and report held-out accuracy."),
    json_output: bool = JsonOption,
    run: RunOptions = RunOptions(),
) -> None:
    """Tune bias, drive amplitude and mask scale of a differentiable simulator for spoken digits."""
    with user_errors():
        from spinlab.audio import default_cache_dir
        from spinlab.engine.plan import make_config
        from spinlab.protocols import optimise, spoken_digits as digits

        overrides = {k: v for k, v in {"bias_A": bias_A, "drive_fraction": drive_fraction,
                                       "input_sigma": input_sigma, "n_nodes": nodes}.items() if v is not None}
        base = digits.SpokenDigitsConfig(
            data_dir=str(data if data is not None else default_cache_dir() / "recordings"), limit=limit,
            feature_cache_dir=str(Path(run.runs_dir) / ".cache"), **overrides)
        config = optimise.OptimiseConfig(protocol=base, subset=subset, iterations=iterations,
                                         learning_rate=learning_rate, mask_scale=mask_scale)
        result = run_plan(optimise.plan(config), device, run)
        summary = {**result.summary, "run": str(result.path), "device": device}
        tuned = make_config(digits.SpokenDigitsConfig, summary.pop("protocol"))
        if evaluate:  # the protocol itself, before and after, on its held-out test split
            for label, cfg in (("before", base), ("after", tuned)):
                done = run_plan(digits.plan(cfg), device, run)
                summary[label] = {"accuracy": done.summary["accuracy"], "n_test": done.summary["n_test"],
                                  "bias_A": cfg.bias_A, "drive_fraction": cfg.drive_fraction,
                                  "input_sigma": cfg.input_sigma, "run": str(done.path)}
            summary["improvement"] = summary["after"]["accuracy"] - summary["before"]["accuracy"]
    if json_output:
        emit_json(summary)
        return
    from spinlab.protocols.optimise import KNOBS

    typer.echo("operating point   " + "   ".join(f"{k} {summary['start'][k]:.4g} -> {summary['tuned'][k]:.4g}"
                                                 for k in KNOBS))
    typer.echo(f"surrogate loss    {summary['best']['loss']:.4f} (subset of {summary['subset']} training utterances)")
    if evaluate:
        typer.echo(f"held-out accuracy {100 * summary['before']['accuracy']:.1f} % -> "
                   f"{100 * summary['after']['accuracy']:.1f} % ({summary['after']['n_test']} test utterances)")
    typer.echo(f"run: {summary['run']}")


def register(app: typer.Typer) -> None:
    """Add `fit-physics` and `optimise spoken-digits` to the app."""
    app.command("fit-physics")(fit_physics)
    optimise_app.command("spoken-digits")(spoken_digits)
    app.add_typer(optimise_app, name="optimise")
