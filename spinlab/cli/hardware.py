"""`spinlab characterize` and `spinlab spectrum`: the same commands as `spinlab run characterize`
(threshold current and relaxation time) and `spinlab run spectrum` (the line against bias and
field) of the device at an address; `spinlab calibrate-field`: the magnet's T per A."""

from __future__ import annotations

from pathlib import Path

import typer

from spinlab.cli.common import JsonOption, emit_json, user_errors


def calibrate_field(
    station: str = typer.Option(
        ...,
        "--station",
        help="Station file with a [magnet] (or 'emulated', the built-in one: never written).",
    ),
    max_current_A: float = typer.Option(
        None, "--max-current-A", help="Highest current stepped to (default: half of [magnet] max_current_A)."
    ),
    points: int = typer.Option(6, "--points", min=2, max=200, help="Currents stepped, 0 .. max, evenly."),
    write: bool = typer.Option(
        False,
        "--write",
        help="Store T_per_A and remanence_T in the station file's [magnet] (else only print).",
    ),
    json_output: bool = JsonOption,
) -> None:
    """Step the magnet current, read the gaussmeter, fit T per A (stored in the station with --write).

    The current is stepped from the station's approach side, the field read at each step and
    field = T_per_A x current + remanence_T fitted; the field is parked afterwards."""
    import numpy as np

    from spinlab.engine.signals import SignalGuard
    from spinlab.errors import ConfigError
    from spinlab.instruments.bench import open_bench
    from spinlab.instruments.station import write_magnet_calibration

    with user_errors(), SignalGuard():
        if write and station == "emulated":
            raise ConfigError("--write needs a station file of your own; 'emulated' is shipped with spinlab")
        with open_bench(station) as bench:
            if bench.field is None:
                raise ConfigError(f"{bench.station.path} has no [magnet]; there is no field to calibrate")
            settings = bench.field.settings
            top = settings.max_current_A / 2 if max_current_A is None else max_current_A
            fit = bench.field.calibrate([float(i) for i in np.linspace(0.0, top, points)])
        path = bench.station.path
        if write:
            write_magnet_calibration(path, fit.T_per_A, fit.remanence_T)
        summary = {
            "station": str(path),
            "T_per_A": fit.T_per_A,
            "remanence_T": fit.remanence_T,
            "rms_T": fit.rms_T,
            "currents_A": list(fit.currents_A),
            "fields_T": list(fit.fields_T),
            "was": {"T_per_A": settings.T_per_A, "remanence_T": settings.remanence_T},
            "written": write,
        }
        if json_output:
            emit_json(summary)
            return
        for current, field in zip(fit.currents_A, fit.fields_T):
            typer.echo(f"{current:9.4f} A  {field:10.6f} T")
        typer.echo(
            f"T_per_A = {fit.T_per_A:.6g}  remanence_T = {fit.remanence_T:.6g}  (rms residual "
            f"{fit.rms_T:.3g} T; the station has {settings.T_per_A:g} and {settings.remanence_T:g})"
        )
        typer.echo(f"written to {Path(path)}" if write else "not written (pass --write to store it)")


def register(app: typer.Typer) -> None:
    """Add `characterize` and `spectrum`, generated from their plans, and `calibrate-field`."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "characterize", "characterize")
    register_plan(app, "spectrum", "spectrum")
    app.command("calibrate-field")(calibrate_field)
