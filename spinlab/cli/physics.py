"""`spinlab fit-physics` and `spinlab optimise PLAN`: physical models fitted to runs, operating
points searched for tasks; the same commands as `spinlab run fit-physics`, `run search --plan PLAN`
and (the gradient method) `run optimise-spoken-digits`.

    spinlab fit-physics runs/x-acquire-y --model macrospin --params alpha,Hd_A_per_m,eta,tmr --json
    spinlab fit-physics runs/x-acquire-y --model vortex --params threshold_A,gamma_G_per_s,Q --method grid
    spinlab optimise reservoir-measures --device bench:emulated --over bias_A --objective memory_capacity
    spinlab optimise spoken-digits --device sim:vortex --data DIR        # gradients of a simulator
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

#: ``spinlab optimise spoken-digits`` without ``--over`` is the gradient method of this plan
GRADIENT_PLANS = {"spoken-digits": "optimise-spoken-digits"}


class OptimiseGroup(TyperGroup):
    """``spinlab optimise PLAN``: a Bayesian search (plan ``search``) of any installed plan, or,
    for a plan with a gradient method on differentiable simulators and no ``--over``, that method."""

    def list_commands(self, ctx: Any) -> list[str]:
        from spinlab.engine.plan import plan_names

        return [name for name in plan_names() if name not in ("search", *GRADIENT_PLANS.values())]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, rest = args[0], args[1:]
        if name not in self.list_commands(ctx):
            return super().resolve_command(ctx, args)
        if name in GRADIENT_PLANS and not any(a == "--over" or a.startswith("--over=") for a in rest):
            return name, self.get_command(ctx, name), rest
        return name, self._search(name), ["--plan", name, *rest]

    def get_command(self, ctx: Any, name: str) -> Any:
        """The search of plan ``name`` (the gradient method where the plan has one: what
        ``spinlab optimise NAME`` runs without ``--over``)."""
        if name not in self.list_commands(ctx):
            return None
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        from spinlab.cli.plans import register_plan

        if name in GRADIENT_PLANS:
            register_plan(single, name, GRADIENT_PLANS[name])
            return typer.main.get_command(single)
        return self._search(name)

    def _search(self, name: str) -> Any:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        from spinlab.cli.plans import register_plan

        register_plan(single, name, "search")
        command = typer.main.get_command(single)
        command.short_help = f"Search {name}'s result over its operating point (each evaluation a run)."
        return command


optimise_app = typer.Typer(
    cls=OptimiseGroup,
    help="Search a plan's operating point: Bayesian search on any device, or a simulator's gradients.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add `fit-physics` and `optimise PLAN` to the app."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "fit-physics", "fit-physics")
    app.add_typer(optimise_app, name="optimise")
