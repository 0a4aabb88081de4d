"""`spinlab acquire`, the same command as `spinlab run acquire`: random multi-level drives and
the device's responses, the twin's training data.

    spinlab acquire --device sim:vortex --duration 5e-3 --bias-A 6.5e-3,8.5e-3

A module of its own so that recording starts without importing the twin's torch (3 s)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `acquire` to the app."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "acquire", "acquire")
