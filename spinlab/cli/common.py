"""Conventions shared by every command: ``--json`` last line, run options, clean errors, and
the one way a command runs a plan (:func:`run_plan`)."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from spinlab.errors import RunAborted, RunInterrupted, SpinlabError, run_path

DeviceOption = typer.Option(
    ...,
    "--device",
    "-d",
    help="Device address: sim:vortex, sim:macrospin, bench:emulated, bench:STATION.toml, twin:PATH.pt",
)
JsonOption = typer.Option(False, "--json", help="Print one JSON summary object as the last line of stdout.")
RunsDirOption = typer.Option(Path("runs"), "--runs-dir", help="Where run directories are created.")
MonitorOption = typer.Option(
    None, "--monitor", help="Publish events on this ZeroMQ address, e.g. tcp://127.0.0.1:5555."
)
ControlOption = typer.Option(
    None, "--control", help="Serve the CURVE-authenticated control channel on this address."
)
ControlKeysOption = typer.Option(
    None,
    "--control-keys",
    help="Directory with the server secret key and authorised client public keys (see `spinlab keys`).",
)
FigureFormatOption = typer.Option(
    "png", "--figure-format", help="Format of the run's figures: png, pdf or svg (recorded in the run file)."
)
DpiOption = typer.Option(120, "--dpi", help="Resolution of the run's figures, in dots per inch.")
#: largest seed a run takes: numpy's SeedSequence and the journal (msgpack) both hold 0 .. 2^64 - 1
MAX_SEED = 2**64 - 1
SeedOption = typer.Option(
    0,
    "--seed",
    min=0,
    max=MAX_SEED,
    help="Seed of every random choice of the run (recorded in the run file); "
    "a seed in the device address wins for the device's noise.",
)


@dataclass(frozen=True)
class RunOptions:
    """The options every run command takes."""

    runs_dir: Path = Path("runs")
    monitor: Optional[str] = None
    control: Optional[str] = None
    control_keys: Optional[Path] = None
    seed: int = 0
    progress: bool = True
    figure_format: str = "png"
    dpi: int = 120


_RUN_OPTIONS = {
    "runs_dir": (Path, RunsDirOption),
    "monitor": (Optional[str], MonitorOption),
    "control": (Optional[str], ControlOption),
    "control_keys": (Optional[Path], ControlKeysOption),
    "seed": (int, SeedOption),
    "figure_format": (str, FigureFormatOption),
    "dpi": (int, DpiOption),
}


def run_command(func: Callable[..., Any] | None = None, *, seed: Any = None) -> Any:
    """Give a command the options every run takes (``--runs-dir``, ``--monitor``,
    ``--control``, ``--control-keys``, ``--seed``, ``--figure-format``, ``--dpi``); the command
    receives them as one :class:`RunOptions` in its ``run`` parameter. ``seed`` replaces the ``--seed`` option
    (another default or help text)."""
    if func is None:
        return functools.partial(run_command, seed=seed)
    hints = typing.get_type_hints(func)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(func).parameters.values()
        if p.name != "run"
    ]
    added = {
        name: (kind, seed if name == "seed" and seed is not None else default)
        for name, (kind, default) in _RUN_OPTIONS.items()
    }
    params = own + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in added.items()
    ]

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


#: set to 1 (or pass ``spinlab --debug``) to see the traceback behind an error line
DEBUG_ENV = "SPINLAB_DEBUG"
_LINE_CHARS = 400


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _LINE_CHARS else text[: _LINE_CHARS - 3] + "..."


def _system_error(exc: BaseException) -> tuple[int | None, str, str] | None:
    """(errno, file, system message) of an OSError, or of an h5py error whose text carries them
    ("filename = '...', errno = 28, error message = 'No space left on device'"); else None."""
    text = str(exc)
    h5 = dict(re.findall(r"(name|filename|error message) = '([^']*)'", text))
    code = re.search(r"errno = (\d+)", text)
    if isinstance(exc, OSError):
        return (
            exc.errno or (int(code.group(1)) if code else None),
            exc.filename or h5.get("name", ""),
            h5.get("error message") or exc.strerror or text,
        )
    if code:
        return int(code.group(1)), h5.get("filename") or h5.get("name", ""), h5.get("error message", text)
    return None


def error_line(exc: BaseException) -> str:
    """What went wrong and what to do, in one line, for an error that reached the user."""
    if isinstance(exc, SpinlabError):
        return str(exc)
    system = _system_error(exc)
    if system is not None:
        code, name, what = system
        where = f"{name}: " if name else ""
        if code == errno.ENOSPC:
            return f"{where}no space left on the device; free some space or choose another --runs-dir"
        if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM, errno.EROFS):
            return (
                f"{where}{what}: spinlab may not write (or read) there; fix the permissions "
                "or choose another path (e.g. --runs-dir)"
            )
        if isinstance(exc, FileNotFoundError) or code == errno.ENOENT:
            return f"{where}no such file or directory; check the path"
        return f"{where}{what}" + ("" if name else f" ({type(exc).__name__})")
    if isinstance(exc, MemoryError):
        return (
            "out of memory: an input or setting is too large for this machine; use a smaller file or setting"
        )
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to read (recursion limit); flatten the file"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        return f"invalid input ({type(exc).__name__}: {exc}); check the options and files given"
    return f"unexpected {type(exc).__name__}: {exc}; rerun with {DEBUG_ENV}=1 for the traceback and report it"


class OneLineLog(logging.Formatter):
    """Log records reach the user as one line each, an exception as its type and message (the
    traceback only with ``SPINLAB_DEBUG=1``): a cleanup that failed is news, not a crash."""

    def format(self, record: logging.LogRecord) -> str:
        if debugging():
            return super().format(record)
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        return _one_line(f"{message}: {type(exc).__name__}: {exc}" if exc is not None else message)


def log_to_stderr() -> None:
    """Where spinlab's warnings go when it runs as the ``spinlab`` command."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineLog())
    logging.getLogger("spinlab").addHandler(handler)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The CLI boundary: every error that reaches the user becomes one line on stderr and an exit
    code (no traceback): 2 for an error, 3 for a remote abort, 128 + signal for a signal (130
    Ctrl-C, 143 SIGTERM). The line names the run directory when the engine gave one. With
    ``SPINLAB_DEBUG=1`` (``spinlab --debug``) the traceback is printed above the line."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
        raise  # the command line's own: exit codes, usage errors
    except RunInterrupted as exc:
        where = run_path(exc)
        hint = f"; continue it with: spinlab resume {where}" if where else ""
        typer.secho(
            f"interrupted by {exc.signal_name}: outputs are off, every completed step is saved{hint}",
            err=True,
            fg="yellow",
        )
        raise typer.Exit(exc.exit_code) from None
    except RunAborted as exc:
        typer.secho(f"aborted: {exc}", err=True, fg="yellow")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: outputs are off, data flushed", err=True, fg="yellow")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the boundary: nothing reaches the user as a traceback
        if debugging():
            traceback.print_exc()
        where = run_path(exc)
        typer.secho(
            _one_line("error: " + error_line(exc) + (f" (run directory {where})" if where else "")),
            err=True,
            fg="red",
        )
        raise typer.Exit(2) from None


def run_plan(
    plan: Any, device: Any, options: RunOptions, *, resume: Optional[Path] = None, force: bool = False
) -> Any:
    """Run (or resume) ``plan`` with the standard subscribers: the progress display, and the
    ZeroMQ publisher and control channel when their addresses are given."""
    from spinlab.engine import ProgressDisplay, RunEngine
    from spinlab.engine.figures import FigureOptions

    figures = FigureOptions(options.figure_format, options.dpi)  # a bad format: one line, before the run
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

    engine = RunEngine(options.runs_dir, figures=figures)
    late = LateSignals.install()
    try:
        factory = control if server is not None else None
        if resume is not None:
            return engine.resume(resume, device, force=force, subscribers=subscribers, control=factory)
        return engine.run(plan, device, seed=options.seed, subscribers=subscribers, control=factory)
    finally:
        late.finished()  # the run is over, however it ended
        if server is not None:
            server.close()
        for subscriber in subscribers:
            close = getattr(subscriber, "close", None)
            if close is not None:
                close()


#: what ends a command that serves or watches until stopped (``emulate``, ``monitor``)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside the block, so a command that
    serves or watches until stopped closes what it holds (ports, a recording).

    Installed rather than left to Python's default Ctrl-C: a script's background job starts with
    SIGINT ignored, and Python then never raises KeyboardInterrupt (`kill -INT` did nothing); and
    SIGTERM would end the process without closing anything."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS} if in_main else {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: True when this process is the ``spinlab`` command itself (set by :func:`spinlab.cli.main`), not
#: a program that calls a command in-process (a test's CliRunner): only then may a finished run
#: leave the process deaf to late signals, which its child processes would inherit.
COMMAND_PROCESS = False


class LateSignals:
    """The command's own handling of SIGINT, SIGTERM and SIGHUP around a run, outside the run
    engine's (which saves it and puts it back when the run ends). Before the run, a signal stops
    the command as an interrupted run. Once the run has ended (outputs off, files closed), late
    signals - a second Ctrl-C while the command prints its report or the interpreter tears down
    torch - are ignored in the ``spinlab`` process, so it ends with the run's own exit status
    instead of dying of the signal halfway through its teardown (SIGKILL still ends it); called
    in-process, the caller's handlers come back instead."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> LateSignals:
        from spinlab.engine.signals import HANDLED

        late = cls()
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                late.previous[signum] = signal.signal(signum, late._handle)
        return late

    def finished(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, signal.SIG_IGN if COMMAND_PROCESS else previous)
        self.previous.clear()

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        raise RunInterrupted(signum)
