"""`spinlab monitor`, `spinlab control`, `spinlab keys`: watch and steer runs remotely."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from spinlab.cli.common import JsonOption, emit_json, stopped_by_signals, user_errors
from spinlab.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this group's commands to the app."""
    app.command("monitor")(monitor)
    app.command("control")(control)
    app.command("keys")(keys)


def monitor(
    address: str = typer.Argument(..., help="Monitor address of a run, e.g. tcp://127.0.0.1:5555."),
    json_lines: bool = typer.Option(
        False, "--json", help="Stream one JSON object per message on stdout instead of the live view."
    ),
    record: Optional[Path] = typer.Option(
        None,
        "--record",
        help="Also save the raw stream to FILE (length-prefixed frames; see spinlab.monitoring.recording).",
    ),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="Exit after N messages."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0.0, help="Exit after S seconds without a message."
    ),
    until_stop: bool = typer.Option(
        False, "--until-stop", help="Exit when the run sends stop (a sweep: sweep.stop)."
    ),
    topic: Optional[List[str]] = typer.Option(
        None, "--topic", help="Only these topic prefixes (repeatable); default all."
    ),
    max_array: int = typer.Option(
        4096, "--max-array", min=0, help="--json: arrays with more elements are summarised (min/max/mean)."
    ),
    web: Optional[str] = typer.Option(
        None,
        "--web",
        metavar="[HOST:]PORT",
        help="Serve a live web page of the run instead (127.0.0.1 unless HOST is given; port 0 picks one); until Ctrl-C.",
    ),
    web_control: bool = typer.Option(
        False,
        "--web-control",
        help="--web: let the page pause/resume/abort, with the token printed at start-up; needs --control, --key, --server-key.",
    ),
    control_address: Optional[str] = typer.Option(
        None, "--control", help="--web-control: the run's control address."
    ),
    key: Optional[Path] = typer.Option(
        None, "--key", help="--web-control: the client secret key the web server uses."
    ),
    server_key: Optional[Path] = typer.Option(
        None, "--server-key", help="--web-control: the run's server public key."
    ),
    runs_dir: Optional[Path] = typer.Option(
        None,
        "--runs-dir",
        help="--web: also serve this runs folder's catalog at /runs (list, filter, open, compare; read-only).",
    ),
) -> None:
    """Watch a run live: progress, waveform and loss sparklines, results, errors, drop counts.

    With --web, serve the same as a web page (any browser; reconnects by itself) until Ctrl-C.
    Exit status: 0 normally, 1 when --count was given and --timeout expired before N messages.
    """
    from spinlab.monitoring import Subscriber
    from spinlab.monitoring.recording import Recorder
    from spinlab.monitoring.view import MonitorState, message_to_json, render

    with user_errors():
        if runs_dir is not None and web is None:
            raise ConfigError("--runs-dir goes with --web [HOST:]PORT")
        if (control_address or key or server_key) and not web_control:
            raise ConfigError("--control, --key and --server-key only apply with --web --web-control")
        if web is not None or web_control:
            if json_lines or count is not None or timeout is not None or until_stop:
                raise ConfigError(
                    "--web serves until Ctrl-C; leave out --json, --count, --timeout and --until-stop"
                )
            _serve_web(address, web, topic, record, web_control, control_address, key, server_key, runs_dir)
            return
        sub = Subscriber(address, topics=topic or ("",))
        recorder = Recorder(record) if record else None
        if recorder is not None:
            sub.on_accept = recorder.write
        state = MonitorState()
        live = None
        if not json_lines:
            from rich.console import Console
            from rich.live import Live

            live = Live(render(state), console=Console(), refresh_per_second=8, transient=False)
            live.start()
        received, idle_since, short, done, last_draw = 0, time.monotonic(), False, False, 0.0
        try:
            with stopped_by_signals():  # also a script's background job, and SIGTERM: the recording closes
                while not done:
                    wait = (
                        0.25
                        if timeout is None
                        else max(0.0, min(0.25, timeout - (time.monotonic() - idle_since)))
                    )
                    first = sub.recv(wait)
                    if first is None:
                        if timeout is not None and time.monotonic() - idle_since >= timeout:
                            short = count is not None and received < count
                            break
                        continue
                    idle_since = time.monotonic()
                    room = 10_000 if count is None else max(0, count - received - 1)
                    for msg in [first, *sub.drain(room)]:  # take the whole batch, draw once
                        received += 1
                        state.update(msg)
                        if json_lines:
                            sys.stdout.write(
                                json.dumps(message_to_json(msg, max_array), allow_nan=False) + "\n"
                            )
                        if (count is not None and received >= count) or (
                            until_stop and msg.topic in ("stop", "sweep.stop")
                        ):
                            done = True
                            break
                    if json_lines:
                        sys.stdout.flush()
                    elif time.monotonic() - last_draw > 0.1:
                        last_draw = time.monotonic()
                        live.update(render(state, missed=sub.missed, rejected=sub.rejected))
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.update(render(state, missed=sub.missed, rejected=sub.rejected))
                live.stop()
            if recorder is not None:
                recorder.close()
            sub.close()
        typer.echo(
            f"{received} messages, {sub.missed} missed, {sub.rejected} rejected"
            + (f", recorded to {record}" if record else ""),
            err=True,
        )
        if short:
            typer.echo(f"timed out after {timeout:g} s idle with {received} of {count} messages", err=True)
            raise typer.Exit(1)


def _serve_web(
    address: str,
    web: Optional[str],
    topic: Optional[List[str]],
    record: Optional[Path],
    web_control: bool,
    control_address: Optional[str],
    key: Optional[Path],
    server_key: Optional[Path],
    runs_dir: Optional[Path] = None,
) -> None:
    """``monitor --web``: the web bridge (spinlab.monitoring.web) until Ctrl-C."""
    from spinlab.monitoring.control import ControlClient
    from spinlab.monitoring.recording import Recorder
    from spinlab.monitoring.web import WebMonitor, parse_web_address

    if web is None:
        raise ConfigError("--web-control goes with --web [HOST:]PORT")
    host, port = parse_web_address(web)
    client = None
    if web_control:
        if not (control_address and key and server_key):
            raise ConfigError(
                "--web-control needs the run's --control ADDRESS and the keys to use it: "
                "--key CLIENT.key_secret --server-key server.key (as for `spinlab control`)"
            )
        client = ControlClient(control_address, key, server_key)
    recorder = Recorder(record) if record else None
    try:
        bridge = WebMonitor(
            address,
            host=host,
            port=port,
            topics=topic or ("",),
            control=client,
            on_accept=recorder.write if recorder else None,
            runs_dir=runs_dir,
        )

        def ready(url: str) -> None:
            if bridge.token:
                typer.echo(f"web monitor on {url}#token={bridge.token}")
                typer.echo(
                    "control enabled: whoever has this link (or the token) can pause, resume and abort the run"
                )
            else:
                typer.echo(f"web monitor on {url} (read-only)")
            if runs_dir is not None:
                typer.echo(f"runs of {runs_dir} on {url}runs (read-only)")

        bridge.run(ready)
    finally:
        if recorder is not None:
            recorder.close()
    stats = bridge.stats()
    typer.echo(
        f"{stats['stream']['received']} messages, {stats['stream']['missed']} missed, "
        f"{stats['stream']['rejected']} rejected; {stats['web']['connections']} pages served, "
        f"{stats['web']['refused_connections']} refused, {stats['web']['rejected_frames']} bad frames"
        + (f", recorded to {record}" if record else ""),
        err=True,
    )


def control(
    address: str = typer.Argument(..., help="Control address of a run, e.g. tcp://127.0.0.1:5556."),
    command: str = typer.Argument(..., help="status, pause, resume or abort."),
    key: Path = typer.Option(
        ..., "--key", help="Your client secret key file (NAME.key_secret from `spinlab keys`)."
    ),
    server_key: Path = typer.Option(..., "--server-key", help="The server's public key file (server.key)."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="Seconds to wait for the reply."),
    json_out: bool = JsonOption,
) -> None:
    """Send one command to a run's authenticated control channel and print the reply."""
    from spinlab.monitoring.control import COMMANDS, ControlClient

    with user_errors():
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        reply = ControlClient(address, key, server_key, timeout_s=timeout).request(command)
        if json_out:
            emit_json(reply)
            return
        status = reply.get("status") or {}
        progress = status.get("progress") or {}
        line = f"{command}: ok, run {status.get('run_id', '?')} is {reply.get('state')}"
        if "done" in progress and "total" in progress:
            line += f", progress {progress['done']}/{progress['total']}"
        typer.echo(line)


def keys(
    directory: Path = typer.Argument(..., help="Key directory (created if missing)."),
    name: str = typer.Option(..., "--name", help="Client name, e.g. your user name."),
    json_out: bool = JsonOption,
) -> None:
    """Create the control channel's server key pair (once) and an authorised client key pair.

    Layout: DIR/server.key (public, for clients), DIR/server.key_secret (lab PC only),
    DIR/authorized_clients/NAME.key, DIR/clients/NAME.key_secret (hand to NAME).
    """
    from spinlab.monitoring.keys import create_keys

    with user_errors():
        paths = create_keys(directory, name)
        if json_out:
            emit_json({k: str(v) for k, v in paths.items()})
            return
        typer.echo(f"server public key  (clients: --server-key): {paths['server_public']}")
        typer.echo(f"server secret key  (run: --control-keys {directory}): {paths['server_secret']}")
        typer.echo(f"authorised client  {name}: {paths['client_public']}")
        typer.echo(f"client secret key  (give to {name}: --key): {paths['client_secret']}")
