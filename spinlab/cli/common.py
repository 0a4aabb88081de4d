"""Conventions shared by every command: ``--json`` last line, run options, clean errors."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from spinlab.errors import RunAborted, SpinlabError
from spinlab.run import to_jsonable

DeviceOption = typer.Option(..., "--device", "-d",
                            help="Device address: sim:vortex, sim:macrospin, bench:emulated, bench:STATION.toml, twin:PATH.pt")
JsonOption = typer.Option(False, "--json", help="Print one JSON summary object as the last line of stdout.")
RunsDirOption = typer.Option(Path("runs"), "--runs-dir", help="Where run directories are created.")
MonitorOption = typer.Option(None, "--monitor",
                             help="Publish events on this ZeroMQ address, e.g. tcp://127.0.0.1:5555.")
ControlOption = typer.Option(None, "--control",
                             help="Serve the CURVE-authenticated control channel on this address.")
ControlKeysOption = typer.Option(None, "--control-keys",
                                 help="Directory with the server secret key and authorised client public keys (see `spinlab keys`).")
SeedOption = typer.Option(0, "--seed", help="Seed for every random choice of the run (recorded in the run file).")


def emit_json(summary: dict[str, Any]) -> None:
    """The one-line JSON convention: the last line of stdout is the summary object."""
    sys.stdout.write(json.dumps(to_jsonable(summary), sort_keys=True) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn spinlab's specific errors into a one-line message and exit code 2 (no traceback)."""
    try:
        yield
    except RunAborted as exc:
        typer.secho(f"aborted: {exc}", err=True, fg="yellow")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: outputs are off, data flushed", err=True, fg="yellow")
        raise typer.Exit(130) from None
    except SpinlabError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


def optional_path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None

