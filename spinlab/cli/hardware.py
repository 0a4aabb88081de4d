"""`spinlab characterize` and `spinlab spectrum`: the same commands as `spinlab run characterize`
(threshold current and relaxation time) and `spinlab run spectrum` (the line against bias and
field) of the device at an address."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `characterize` and `spectrum`, generated from their plans."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "characterize", "characterize")
    register_plan(app, "spectrum", "spectrum")
