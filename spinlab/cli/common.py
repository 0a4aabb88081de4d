"""Conventions shared by every command: ``--json`` last line, run options, clean errors, and
the one way a command runs a plan (:func:`run_plan`)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from spinlab.errors import RunAborted, RunInterrupted, SpinlabError

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
SeedOption = typer.Option(0, "--seed", help="Seed of every random choice of the run (recorded in the run file); "
                                            "a seed in the device address wins for the device's noise.")


@dataclass(frozen=True)
class RunOptions:
    """The options every run command takes."""

    runs_dir: Path = Path("runs")
    monitor: Optional[str] = None
    control: Optional[str] = None
    control_keys: Optional[Path] = None
    seed: int = 0
    progress: bool = True


_RUN_OPTIONS = {"runs_dir": (Path, RunsDirOption), "monitor": (Optional[str], MonitorOption),
                "control": (Optional[str], ControlOption),
                "control_keys": (Optional[Path], ControlKeysOption), "seed": (int, SeedOption)}


def run_command(func: Callable[..., Any] | None = None, *, seed: Any = None) -> Any:
    """Give a command the options every run takes (``--runs-dir``, ``--monitor``,
    ``--control``, ``--control-keys``, ``--seed``); the command receives them as one
    :class:`RunOptions` in its ``run`` parameter. ``seed`` replaces the ``--seed`` option
    (another default or help text)."""
    if func is None:
        return functools.partial(run_command, seed=seed)
    hints = typing.get_type_hints(func)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(func).parameters.values() if p.name != "run"]
    added = {name: (kind, seed if name == "seed" and seed is not None else default)
             for name, (kind, default) in _RUN_OPTIONS.items()}
    params = own + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
                    for name, (kind, default) in added.items()]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        options = RunOptions(**{name: kwargs.pop(name) for name in added})
        return func(**kwargs, run=options)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def emit_json(summary: dict[str, Any]) -> None:
    """The one-line JSON convention: the last line of stdout is the summary object."""
    from spinlab.engine.documents import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(summary), sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn spinlab's specific errors into a one-line message and an exit code (no traceback):
    2 for an error, 3 for a remote abort, 128 + signal for a signal (130 Ctrl-C, 143 SIGTERM)."""
    try:
        yield
    except RunInterrupted as exc:
        where = getattr(exc, "run_path", None)
        hint = f"; continue it with: spinlab resume {where}" if where else ""
        typer.secho(f"interrupted by {exc.signal_name}: outputs are off, every completed step is "
                    f"saved{hint}", err=True, fg="yellow")
        raise typer.Exit(exc.exit_code) from None
    except RunAborted as exc:
        typer.secho(f"aborted: {exc}", err=True, fg="yellow")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: outputs are off, data flushed", err=True, fg="yellow")
        raise typer.Exit(130) from None
    except SpinlabError as exc:
        where = getattr(exc, "run_path", None)
        typer.secho(f"error: {exc}" + (f" (run directory {where})" if where else ""), err=True, fg="red")
        raise typer.Exit(2) from None


def run_plan(plan: Any, device: Any, options: RunOptions, *, resume: Optional[Path] = None,
             force: bool = False) -> Any:
    """Run (or resume) ``plan`` with the standard subscribers: the progress display, and the
    ZeroMQ publisher and control channel when their addresses are given."""
    from spinlab.engine import ProgressDisplay, RunEngine

    subscribers: list[Any] = [ProgressDisplay()] if options.progress else []
    if options.monitor:
        from spinlab.monitoring.documents import MonitorPublisher

        publisher = MonitorPublisher(options.monitor)
        subscribers.append(publisher)
        typer.secho(f"monitor: spinlab monitor {publisher.endpoint}", err=True)
    server = None
    if options.control:
        from spinlab.monitoring import ControlServer

        server = ControlServer(options.control, keys_dir=options.control_keys)

    def control(state: Any) -> Any:
        server.run = state
        return server

    engine = RunEngine(options.runs_dir)
    try:
        factory = control if server is not None else None
        if resume is not None:
            return engine.resume(resume, device, force=force, subscribers=subscribers, control=factory)
        return engine.run(plan, device, seed=options.seed, subscribers=subscribers, control=factory)
    finally:
        if server is not None:
            server.close()
        for subscriber in subscribers:
            close = getattr(subscriber, "close", None)
            if close is not None:
                close()
