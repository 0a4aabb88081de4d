"""`spinlab characterize`: threshold current and relaxation time of the device at an address."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from spinlab.cli.common import (ControlKeysOption, ControlOption, DeviceOption, JsonOption,
                                MonitorOption, RunsDirOption, SeedOption, emit_json, user_errors)


class _ConsoleProgress:
    """Forwards everything to the Run and mirrors ``progress`` on a rich bar (stderr)."""

    def __init__(self, run: Any, bar: Any, task: Any) -> None:
        self._run, self._bar, self._task = run, bar, task

    def progress(self, done: int, total: int, **fields: Any) -> None:
        self._run.progress(done, total, **fields)
        self._bar.update(self._task, completed=done, total=total,
                         description=str(fields.get("stage", "characterize")))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)


def characterize(
    device: str = DeviceOption,
    json_output: bool = JsonOption,
    runs_dir: Path = RunsDirOption,
    monitor: Optional[str] = MonitorOption,
    control: Optional[str] = ControlOption,
    control_keys: Optional[Path] = ControlKeysOption,
    seed: int = SeedOption,
    bias_points: int = typer.Option(20, "--bias-points", help="Points of the zero-drive bias sweep."),
    step_bias_A: Optional[float] = typer.Option(
        None, "--step-bias-A",
        help="Operating bias of the step response (default: the device's operating bias, else 1.5 x threshold)."),
    step_repeats: int = typer.Option(4096, "--step-repeats", help="Step repeats averaged."),
) -> None:
    """Bias sweep (threshold current) and step response (relaxation time) of a device."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from spinlab.protocols.characterize import CharacterizeConfig, config_dict, run_characterize
    from spinlab.registry import open_device
    from spinlab.run import Run

    start = time.perf_counter()
    with user_errors():
        config = CharacterizeConfig(bias_points=bias_points, step_bias_A=step_bias_A,
                                    step_repeats=step_repeats)
        with open_device(device, defaults={"seed": seed}) as dev:
            with Run("characterize", {**config_dict(config), "device": device, "seed": seed},
                     root=runs_dir, device=dev, monitor=monitor, control=control,
                     control_keys=control_keys) as run:
                run.record_seed("device", seed)
                with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                              console=Console(stderr=True), transient=True) as bar:
                    task = bar.add_task("characterize", total=None)
                    summary = run_characterize(dev, config, _ConsoleProgress(run, bar, task))
                run_dir = str(run.path)
    summary = {**summary, "run_dir": run_dir, "device": device,
               "wall_s": time.perf_counter() - start}
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"threshold current   {summary['threshold_A'] * 1e3:.4f} mA "
               f"(+- {summary['threshold_err_A'] * 1e3:.4f})")
    typer.echo(f"relaxation time     {summary['relaxation_time_s'] * 1e9:.2f} ns "
               f"(+- {summary['relaxation_time_err_s'] * 1e9:.2f}) at {summary['relaxation_bias_A'] * 1e3:.3f} mA")
    if summary.get("predicted_relaxation_time_s"):
        typer.echo(f"model prediction    {summary['predicted_relaxation_time_s'] * 1e9:.2f} ns")
    typer.echo(f"run directory       {run_dir}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the app."""
    app.command("characterize")(characterize)
