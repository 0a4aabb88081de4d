"""The ``spinlab`` command. Each command group lives in its own module and registers itself.

Why lazy: a command module imports what its command needs (protocols, torch, scipy), so
``spinlab --help`` and every command pay only for their own imports. The table below is the
top level; its short help texts are checked against the commands' docstrings by the tests.
"""

from __future__ import annotations

import functools
import os
from importlib import import_module

import typer
from typer.core import TyperGroup

#: command name -> (module in spinlab.cli, short help shown by ``spinlab --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "demo",
        "Characterise the emulated bench, train its twin through it, recognise spoken digits on both.",
    ),
    "characterize": (
        "hardware",
        "Bias sweep (threshold current) and step response (relaxation time) of a device.",
    ),
    "spectrum": (
        "hardware",
        "Spectrum against bias and field: frequency, linewidth, power, threshold, N, operating region.",
    ),
    "calibrate-field": (
        "hardware",
        "Step the magnet current, read the gaussmeter, fit T per A (stored in the station with --write).",
    ),
    "acquire": (
        "acquire",
        "Record random multi-level drives and the device's responses (twin training data).",
    ),
    "twin": ("twin", "Spin-Neural ODE digital twin: train, evaluate."),
    "fit-physics": (
        "physics",
        "Fit a physical model's parameters to a recorded run (gradient-based or grid search).",
    ),
    "optimise": (
        "physics",
        "Search a plan's operating point: Bayesian search on any device, or a simulator's gradients.",
    ),
    "run": ("reservoir", "Run a lab protocol on a device."),
    "resume": (
        "runs",
        "Continue an interrupted run from its last completed step, with the same plan, config and seeds.",
    ),
    "runs": ("catalog", "Find, show, compare, tag, export and reindex the runs in the catalog."),
    "sweep": (
        "sweep",
        "Run a protocol over a grid of settings and seeds on Dask: one machine by default, a cluster by address.",
    ),
    "data": ("reservoir", "Datasets used by the protocols."),
    "listen": (
        "listen",
        "Recognise spoken digits live from a microphone (or wav files) with a saved readout.",
    ),
    "enrol": (
        "listen",
        "Adapt a saved readout to a new voice from a few utterances per digit; save it as a new readout.",
    ),
    "emulate": (
        "emulate",
        "Serve the emulated instruments, or a recorded transcript, until Ctrl-C; prints their resources.",
    ),
    "monitor": (
        "monitoring",
        "Watch a run live: progress, waveform and loss sparklines, results, errors, drop counts.",
    ),
    "control": (
        "monitoring",
        "Send one command to a run's authenticated control channel and print the reply.",
    ),
    "keys": (
        "monitoring",
        "Create the control channel's server key pair (once) and an authorised client key pair.",
    ),
}

HELP = "Hardware-in-the-loop control of spintronic neuromorphic experiments."


@functools.cache
def module_commands(module: str) -> TyperGroup:
    """The commands one ``spinlab.cli`` module registers, as a group."""
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    import_module(f"spinlab.cli.{module}").register(sub)
    return typer.main.get_group(sub)


class LazyGroup(TyperGroup):
    """Top-level group: imports a command's module only when that command runs."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        return module_commands(COMMANDS[name][0]).get_command(ctx, name)

    def invoke(self, ctx):
        """The final catch: whatever a command lets through still reaches the user as one line."""
        from spinlab.cli.common import user_errors

        with user_errors():
            return super().invoke(ctx)

    def format_help(self, ctx, formatter) -> None:
        # typer's rich help would resolve (import) every command to draw its panel
        super(TyperGroup, self).format_help(ctx, formatter)

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


app = typer.Typer(
    name="spinlab", cls=LazyGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        typer.echo(f"spinlab {version('spinlab')}")
        raise typer.Exit()


@app.callback(help=HELP)
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Print the traceback behind an error line (same as SPINLAB_DEBUG=1)."
    ),
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print spinlab's version and exit."
    ),
) -> None:
    """The group itself only takes ``--debug`` and ``--version``; its commands are in :data:`COMMANDS`."""
    if debug:
        os.environ["SPINLAB_DEBUG"] = "1"


def main() -> None:
    from spinlab.cli import common

    common.COMMAND_PROCESS = True
    common.log_to_stderr()
    app()
