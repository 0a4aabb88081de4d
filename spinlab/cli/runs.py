"""`spinlab resume`: continue a run that did not complete, from its last completed step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from spinlab.cli.common import (
    ControlKeysOption,
    ControlOption,
    JsonOption,
    MonitorOption,
    RunOptions,
    emit_json,
    run_plan,
    user_errors,
)


def resume(
    run_dir: Path = typer.Argument(..., help="Run directory of an interrupted, aborted or failed run."),
    device: Optional[str] = typer.Option(
        None, "--device", "-d", help="Device address (default: the one the run was started on)."
    ),
    json_output: bool = JsonOption,
    monitor: Optional[str] = MonitorOption,
    control: Optional[str] = ControlOption,
    control_keys: Optional[Path] = ControlKeysOption,
    force: bool = typer.Option(
        False,
        "--force",
        help="Resume even if the device, its station file or "
        "its instruments are not the ones the run started on.",
    ),
) -> None:
    """Continue an interrupted run from its last completed step, with the same plan, config and seeds."""
    start = time.perf_counter()
    with user_errors():
        result = run_plan(
            None,
            device,
            RunOptions(run_dir.parent, monitor, control, control_keys),
            resume=run_dir,
            force=force,
        )
    summary = {
        **result.summary,
        "run_dir": str(result.path),
        "status": result.status,
        "wall_s": time.perf_counter() - start,
    }
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"run {result.run_id} {result.status}: {result.events} steps in {result.path}")


def register(app: typer.Typer) -> None:
    """Add `resume` to the app."""
    app.command("resume")(resume)
