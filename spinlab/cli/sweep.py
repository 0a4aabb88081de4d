"""`spinlab sweep`: a protocol over a grid of settings and seeds, on Dask."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import List, Optional

import typer

from spinlab.cli.common import (
    DpiOption,
    FigureFormatOption,
    JsonOption,
    MonitorOption,
    emit_json,
    user_errors,
)


def register(app: typer.Typer) -> None:
    """Add `sweep`."""
    app.command("sweep")(sweep)


def sweep(
    protocol: str = typer.Argument(
        ...,
        help="The plan each point runs: characterize, acquire, spoken-digits, mackey-glass, "
        "twin-train, twin-eval (any registered plan).",
    ),
    device: Optional[str] = typer.Option(
        None,
        "--device",
        "-d",
        help="Device address of every point (sim:vortex, bench:emulated, twin:PATH.pt, ...).",
    ),
    grid: List[str] = typer.Option(
        [],
        "--grid",
        help="NAME=V1,V2,...: a swept setting (repeatable; the points "
        "are the product). NAME is a plan setting, named as in "
        "`spinlab run PLAN --help` (--n-nodes: n_nodes), GROUP.SETTING "
        "(train.learning_rate) or device.OPTION (an address option).",
    ),
    settings: List[str] = typer.Option(
        [],
        "--set",
        help="NAME=VALUE: a setting fixed for every point "
        "(repeatable), e.g. --set data_dir=/data/fsdd --set limit=500. "
        "{point} in a text value becomes the point's key.",
    ),
    seeds: int = typer.Option(
        1, "--seeds", min=1, help="Seeds per point (error bars): --seed, --seed+1, ..."
    ),
    seed: int = typer.Option(0, "--seed", help="The first seed (also seeds --samples)."),
    samples: Optional[int] = typer.Option(
        None,
        "--samples",
        min=1,
        help="Sample N points between each --grid name's least and greatest value instead of the product.",
    ),
    method: Optional[str] = typer.Option(
        None, "--method", help="How --samples are drawn: lhs (Latin hypercube, default) or random."
    ),
    scheduler: Optional[str] = typer.Option(
        None,
        "--scheduler",
        help="An existing Dask cluster, e.g. "
        "tcp://HOST:8786 (default: a local cluster, one worker per core).",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="Local cluster size (default: every core)."
    ),
    dashboard: Optional[str] = typer.Option(
        None,
        "--dashboard",
        metavar="[HOST:]PORT|off",
        help="The local cluster's Dask dashboard (default 127.0.0.1:8787, this machine only; "
        "another HOST exposes it, with a warning).",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Sweep directory (default sweeps/PROTOCOL-HASH of "
        "the sweep); running the same sweep again continues it.",
    ),
    metric: List[str] = typer.Option(
        [], "--metric", help="A result to plot (repeatable; default every numeric result that varies)."
    ),
    monitor: Optional[str] = MonitorOption,
    figure_format: str = FigureFormatOption,
    dpi: int = DpiOption,
    json_out: bool = JsonOption,
) -> None:
    """Run a protocol over a grid of settings and seeds on Dask: one machine by default, a cluster by address.

    Each point is a normal run (OUT/runs); OUT/sweep.h5 and OUT/sweep.csv summarise them all.

    Points on a bench: address run one at a time; simulators and twins in parallel.

    Exit status: 0 all completed, 1 some failed or lost, 128 + the signal when one stopped it (130 Ctrl-C,
    143 SIGTERM, 129 SIGHUP; run it again to continue).
    """
    with user_errors():
        from spinlab.engine.figures import FigureOptions
        from spinlab.sweeps import SweepSpec, run_sweep, with_cache
        from spinlab.sweeps.display import SweepDisplay, SweepPublisher
        from spinlab.sweeps.spec import parse_assignment

        figures = FigureOptions(figure_format, dpi)

        spec = SweepSpec(
            protocol,
            device,
            grid=dict(parse_assignment(g, many=True) for g in grid),
            settings=dict(parse_assignment(s, many=False) for s in settings),
            seeds=seeds,
            seed=seed,
            samples=samples,
            method=method or ("lhs" if samples else "grid"),
        )
        directory = (out or Path("sweeps") / f"{protocol}-{spec.digest()}").resolve()
        spec = with_cache(spec, directory / "cache")
        observers: list = [SweepDisplay()]
        publisher = None
        if monitor:
            publisher = SweepPublisher(monitor)
            observers.append(publisher)
            typer.secho(f"monitor: spinlab monitor {publisher.endpoint}", err=True)
        try:
            result = run_sweep(
                spec,
                directory,
                scheduler=scheduler,
                workers=workers,
                observers=observers,
                metrics=metric or None,
                dashboard=True if dashboard is None else dashboard,
                figures=figures,
            )
        finally:
            observers[0].close()
            if publisher is not None:
                publisher.close()
    counts = {s: result.count(s) for s in ("completed", "failed", "interrupted", "pending")}
    if json_out:
        emit_json(
            {
                "out": str(result.out),
                "summary_h5": str(result.files["h5"]),
                "summary_csv": str(result.files["csv"]),
                "plots": [str(p) for p in result.plots],
                "mode": result.mode,
                "total": len(result.table),
                "ran": result.ran,
                "skipped": result.skipped,
                "interrupted": result.interrupted,
                **counts,
                "points": [
                    {
                        **{
                            k: r[k]
                            for k in (
                                "index",
                                "key",
                                "seed",
                                "status",
                                "values",
                                "error",
                                "started",
                                "stopped",
                                "results",
                            )
                        },
                        "run_dir": r["run"],
                    }
                    for r in result.table
                ],
            }
        )
    else:
        typer.echo(
            f"{len(result.table)} points: "
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + f" (ran {result.ran}, {result.skipped} already completed)"
        )
        typer.echo(f"summary: {result.files['h5']}, {result.files['csv']}")
        if result.plots:
            typer.echo("plots: " + ", ".join(str(p) for p in result.plots))
    if result.interrupted:
        typer.secho(
            f"interrupted: {counts['completed']} of {len(result.table)} points completed, the summary is "
            "up to date; run the same command again to run the rest",
            err=True,
            fg="yellow",
        )
        raise typer.Exit(128 + (result.signal or signal.SIGINT))
    if counts["failed"]:
        typer.secho(
            f"{counts['failed']} point(s) failed; their errors are in {result.files['csv']} "
            "(run the same command again to retry them)",
            err=True,
            fg="red",
        )
    missing = counts["pending"] + counts["interrupted"]
    if missing:
        typer.secho(
            f"{missing} point(s) did not run to the end (the cluster lost them); run the same "
            "command again to run them",
            err=True,
            fg="red",
        )
    if counts["failed"] or missing:
        raise typer.Exit(1)
