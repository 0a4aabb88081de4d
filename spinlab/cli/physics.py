"""`spinlab fit-physics` and `spinlab optimise spoken-digits`: physical models fitted to runs,
tuned for tasks; the same commands as `spinlab run fit-physics` and `run optimise-spoken-digits`.

    spinlab fit-physics runs/x-acquire-y --model macrospin --params alpha,Hd_A_per_m,eta,tmr --json
    spinlab fit-physics runs/x-acquire-y --model vortex --params threshold_A,gamma_G_per_s,Q --method grid
    spinlab optimise spoken-digits --device sim:vortex --data ../shared/datasets/fsdd/recordings
"""

from __future__ import annotations

import typer

optimise_app = typer.Typer(
    help="Tune a simulator's operating point for a task through its gradients.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add `fit-physics` and `optimise spoken-digits` to the app."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "fit-physics", "fit-physics")
    register_plan(optimise_app, "spoken-digits", "optimise-spoken-digits")
    app.add_typer(optimise_app, name="optimise")
