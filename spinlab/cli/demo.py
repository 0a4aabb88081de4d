"""`spinlab demo`: the first run on a fresh machine, the same command as `spinlab run demo` (see
:mod:`spinlab.protocols.demo`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `demo` to the app."""
    from spinlab.cli.plans import register_plan

    register_plan(app, "demo", "demo")
