"""`spinlab characterize`: the same command as `spinlab run characterize` (threshold current and
relaxation time of the device at an address)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `characterize`, generated from its plan."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "characterize", "characterize")
