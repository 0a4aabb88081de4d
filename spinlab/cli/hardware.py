"""`spinlab characterize`: threshold current and relaxation time of the device at an address."""
from __future__ import annotations

import time
from typing import Optional

import typer

from spinlab.cli.common import DeviceOption, JsonOption, RunOptions, emit_json, run_command, run_plan, user_errors


@run_command
def characterize(
    device: str = DeviceOption,
    json_output: bool = JsonOption,
    bias_points: int = typer.Option(20, "--bias-points", help="Points of the zero-drive bias sweep."),
    step_bias_A: Optional[float] = typer.Option(
        None, "--step-bias-A",
        help="Operating bias of the step response (default: the device's operating bias, else 1.5 x threshold)."),
    step_repeats: int = typer.Option(4096, "--step-repeats", help="Step repeats averaged."),
    run: RunOptions = RunOptions(),
) -> None:
    """Bias sweep (threshold current) and step response (relaxation time) of a device."""
    from spinlab.protocols import characterize as protocol

    start = time.perf_counter()
    with user_errors():
        plan = protocol.plan(bias_points=bias_points, step_bias_A=step_bias_A, step_repeats=step_repeats)
        result = run_plan(plan, device, run)
    summary = {**result.summary, "run_dir": str(result.path), "device": device,
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
    typer.echo(f"run directory       {summary['run_dir']}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the app."""
    app.command("characterize")(characterize)
