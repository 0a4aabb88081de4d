"""The ``spinlab`` command. Each command group lives in its own module and registers itself."""
from __future__ import annotations

import typer

from spinlab.cli import emulate, hardware, monitoring, reservoir, twin

app = typer.Typer(
    name="spinlab",
    help="Hardware-in-the-loop control of spintronic neuromorphic experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (hardware, emulate, twin, reservoir, monitoring):
    _module.register(app)


def main() -> None:
    app()
