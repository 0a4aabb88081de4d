"""`spinlab twin train`, `spinlab twin eval`: the digital-twin workflow (with `spinlab acquire`),
the same commands as `spinlab run twin-train` and `run twin-eval`.

    spinlab twin train --device sim:vortex --bias-A 6.5e-3,8.5e-3 --target-nrmse 0.1 --out twin.pt
    spinlab twin train --mumax table.txt --input Ku1.region100 --output mz --out sky.pt
    spinlab twin eval twin.pt --device sim:vortex --bias-A 7.5e-3 --repeats 8
    spinlab twin train --mumax ku_dmi/table.txt --input Ku1.region100,Dind.region100:condition --out kd.pt
    spinlab twin eval kd.pt --mumax ku_dmi/table.txt --span 0.8,1 --json
"""

from __future__ import annotations

import typer

twin_app = typer.Typer(help="Spin-Neural ODE digital twin: train, evaluate.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `twin` group to the app."""
    from spinlab.cli.plans import register_plan

    register_plan(twin_app, "train", "twin-train")
    register_plan(twin_app, "eval", "twin-eval")
    app.add_typer(twin_app, name="twin")
