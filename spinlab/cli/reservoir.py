"""`spinlab run PLAN` (every registered plan, see :mod:`spinlab.cli.plans`) and `spinlab data
fetch fsdd|mumax3`: the protocols and their data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from spinlab.cli.common import JsonOption, emit_json, user_errors
from spinlab.cli.plans import PlanGroup

run_app = typer.Typer(cls=PlanGroup, help="Run a lab protocol on a device.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets used by the protocols.", no_args_is_help=True)
fetch_app = typer.Typer(
    help="Download a dataset into the user cache (the only networked commands).", no_args_is_help=True
)


def fetch_fsdd_command(
    dest: Optional[Path] = typer.Option(None, "--dest", help="Cache folder (default ~/.cache/spinlab/fsdd)."),
    force: bool = typer.Option(False, "--force", help="Download again even if a verified copy exists."),
    json_out: bool = JsonOption,
) -> None:
    """Download FSDD (pinned commit), verify its recordings' SHA-256, install into the cache.

    With ``$SPINLAB_FSDD`` set (and no --dest or --force) the protocols read that copy, so it is
    checked instead and nothing is downloaded: the fetch works offline there."""
    with user_errors():
        from spinlab.speech.audio import (
            FSDD_COMMIT,
            FSDD_ENV,
            FSDD_RECORDINGS_SHA256,
            FSDD_URL,
            directory_digest,
            fetch_fsdd,
            find_fsdd,
        )

        verified, local = True, bool(os.environ.get(FSDD_ENV)) and dest is None and not force
        if local:
            path = find_fsdd()
            verified = directory_digest(path) == FSDD_RECORDINGS_SHA256
            if not verified:
                typer.secho(
                    f"warning: ${FSDD_ENV} = {path} is not the pinned FSDD copy (its recordings differ); "
                    f"the protocols use it as it is; unset {FSDD_ENV} to download the pinned copy",
                    err=True,
                    fg="yellow",
                )
        else:
            typer.echo(f"fetching {FSDD_URL} (commit {FSDD_COMMIT})", err=True)
            path = fetch_fsdd(dest, force=force)
        n = len(list(path.glob("*.wav")))
        if json_out:
            emit_json(
                {
                    "path": str(path),
                    "n_recordings": n,
                    "commit": FSDD_COMMIT,
                    "verified": verified,
                    "downloaded": not local,
                }
            )
        elif local:
            typer.echo(
                f"{n} {'verified ' if verified else ''}recordings in {path} (${FSDD_ENV}); nothing to download"
            )
        else:
            typer.echo(f"{n} verified recordings in {path}")


def fetch_mumax3_command(
    dest: Optional[Path] = typer.Option(
        None, "--dest", help="Cache folder (default ~/.cache/spinlab/mumax3-skyrmion)."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if verified copies exist."),
    json_out: bool = JsonOption,
) -> None:
    """Download the MuMax3 skyrmion traces of Chen et al. (2022) from the paper's repository
    (pinned commits, SHA-256 checked) into the cache: the twin's and Mackey-Glass's reference data.

    With ``$SPINLAB_MUMAX3`` set (and no --dest or --force) that copy is checked instead and
    nothing is downloaded."""
    with user_errors():
        from spinlab.twin.mumax_data import MUMAX3_ENV, REPOSITORY, fetch_mumax3, find_mumax3, verify

        local = bool(os.environ.get(MUMAX3_ENV)) and dest is None and not force
        if local:
            path = find_mumax3()
            differ = verify(path)
            if differ:
                typer.secho(
                    f"warning: ${MUMAX3_ENV} = {path}: {', '.join(differ)} differ from the pinned "
                    f"traces; used as they are; unset {MUMAX3_ENV} to download the pinned copy",
                    err=True,
                    fg="yellow",
                )
        else:
            typer.echo(f"fetching the MuMax3 traces from {REPOSITORY}", err=True)
            path, differ = fetch_mumax3(dest, force=force), []
        if json_out:
            emit_json({"path": str(path), "verified": not differ, "downloaded": not local})
        else:
            typer.echo(
                f"MuMax3 traces in {path}"
                + (f" (${MUMAX3_ENV}); nothing to download" if local else ", verified")
            )


def register(app: typer.Typer) -> None:
    """Add `run PLAN` and `data fetch fsdd|mumax3`."""
    fetch_app.command("fsdd")(fetch_fsdd_command)
    fetch_app.command("mumax3")(fetch_mumax3_command)
    data_app.add_typer(fetch_app, name="fetch")
    app.add_typer(run_app, name="run")
    app.add_typer(data_app, name="data")
