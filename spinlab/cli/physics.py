"""`spinlab fit-physics` and `spinlab optimise`: physical models fitted to runs, tuned for tasks.

    spinlab fit-physics runs/x-acquire-y --model macrospin --params alpha,Hd_A_per_m,eta,tmr --json
    spinlab fit-physics runs/x-acquire-y --model vortex --params threshold_A,gamma_G_per_s,Q --method grid
    spinlab optimise spoken-digits --device sim:vortex --data ../shared/datasets/fsdd/recordings
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from spinlab.cli.common import JsonOption, RunsDirOption, SeedOption, emit_json, user_errors
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


class _Progress:
    """One rich status line on stderr (stdout stays clean for --json)."""

    def __enter__(self):
        from rich.console import Console

        self._status = Console(file=sys.stderr).status("starting")
        self._status.__enter__()
        return self

    def __call__(self, stage: str, step: int, loss: float) -> None:
        self._status.update(f"{stage}: step {step}, best loss {loss:.5g}")

    def __exit__(self, *exc):
        return self._status.__exit__(*exc)


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
    runs_dir: Path = RunsDirOption,
    seed: int = SeedOption,
) -> None:
    """Fit a physical model's parameters to a recorded run (gradient-based or grid search)."""
    with user_errors():
        from spinlab.protocols.fit_physics import FitConfig, read_run, run_fit_physics
        from spinlab.run import Run

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
        config = FitConfig(model=model.strip().lower(), params=tuple(params.split(",")), method=method,
                           screen=screen, starts=starts, horizons=horizon_list,
                           max_iterations=max_iterations, grid_points=grid_points,
                           bounds=_assignments(bounds, "--bounds", _box),
                           fixed=_assignments(fixed, "--set", float), temperature_K=temperature_K,
                           rest_drive_V=None if rest == "first" else rest,
                           points_per_sample=points_per_sample, seed=seed)
        recordings = read_run(run_dir)
        with Run("fit-physics", {**config.to_dict(), "source_run": str(run_dir)}, root=runs_dir) as run, \
                _Progress() as progress:
            summary = run_fit_physics(recordings, config, run, out, progress)
            summary["run"] = str(run.path)
    if json_output:
        emit_json(summary)
        return
    for name, entry in summary["params"].items():
        typer.echo(f"{name:<22} {entry['value']:.6g} +- {entry['uncertainty']:.2g}")
    typer.echo(f"loss {summary['loss']:.4g} (NRMSE {summary['nrmse']:.4f})"
               + (f", held-out NRMSE {summary['validation_nrmse']:.4f}" if "validation_nrmse" in summary else "")
               + f", {summary['wall_s']:.1f} s")
    typer.echo(f"model: {summary['address']}")


def register(app: typer.Typer) -> None:
    """Add `fit-physics` to the app."""
    app.command("fit-physics")(fit_physics)
