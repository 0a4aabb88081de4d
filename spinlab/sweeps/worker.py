"""What a Dask worker does for one point: a normal run through the run engine.

The task carries only the plan's name, its config (plain JSON), the device address and the
seed, a few hundred bytes: the worker builds the plan, opens the device by its address (the
engine locks a hardware station for the run) and reads datasets from the paths in the config,
so no data is pickled into a task.

Each attempt at a point has its own run directory, named by the sweep (``PLAN-KEY-ATTEMPT``), not
by the clock: a run left there unfinished by a sweep or a worker that was killed (its journal
intact) is resumed in place, and one that completed unheard is taken as it is, so a
killed point never leaves an orphan run beside its re-run.

A point never raises: a failure is returned as a record with the error, so one bad point
does not stop the sweep. Stopping the sweep sets a Dask ``Event``; the engine's control hook
polls it at the run's checkpoints (at most every ``POLL_S``) and stops the run there the safe
way (outputs off, bias ramped down, run file marked ``interrupted``), which a running thread
cannot be made to do from outside.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spinlab.engine import Control, RunEngine, RunResult, RunState, build_plan
from spinlab.engine.figures import FigureOptions
from spinlab.engine.runfile import JOURNAL_FILE, read_outcome
from spinlab.engine.signals import HANDLED
from spinlab.errors import RunInterrupted, run_path

#: Seconds between two looks at the sweep's stop event during a run.
POLL_S = 0.5


class StopPoll(Control):
    """The engine's ``control`` hook: raises RunInterrupted at a checkpoint once the sweep's
    stop event is set, or once the event cannot be read: the sweep or its scheduler is gone
    (killed), and a point nobody will record stops the safe way, resumable, not ``failed``."""

    def __init__(self, event_name: str | None) -> None:
        self._event = None
        if event_name:
            from distributed import Event

            self._event = Event(event_name)
        self._last = 0.0

    def requested(self) -> bool:
        return self.reason() is not None

    def reason(self) -> str | None:
        """Why the point must stop, or None."""
        if self._event is None:
            return None
        try:
            return "the sweep was stopped" if self._event.is_set() else None
        except Exception as exc:  # the scheduler is unreachable: nobody is waiting for this point
            return f"the sweep's Dask scheduler is gone ({type(exc).__name__}: {exc})"

    def __call__(self, state: RunState) -> StopPoll:
        return self

    def service(self) -> None:
        now = time.monotonic()
        if now - self._last < POLL_S:
            return
        self._last = now
        reason = self.reason()
        if reason is not None:
            raise RunInterrupted(signal.SIGINT, reason)

    def close(self) -> None:
        """Nothing to release (the engine calls this at the end of the run)."""


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:  # not inside a Dask worker
        return None


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run (or resume) one point; returns its record: ``key, status`` (completed, failed,
    interrupted or cancelled), ``error, run`` (its run directory), ``results, started,
    stopped`` (unix seconds, taken on this worker), ``worker, pid``."""
    worker = _worker()
    record: dict[str, Any] = {
        "key": task["key"],
        "worker": getattr(worker, "address", ""),
        "pid": os.getpid(),
        "error": "",
        "run": "",
        "results": {},
    }
    stop = StopPoll(task.get("stop_event"))
    if stop.requested():
        return {**record, "status": "cancelled", "started": None, "stopped": None}
    started = time.time()
    if worker is not None and task.get("topic"):
        worker.log_event(
            task["topic"],
            {
                "event": "start",
                "key": task["key"],
                "time": started,
                "worker": record["worker"],
                "pid": record["pid"],
            },
        )
    try:
        result = _run(task, stop)
        record.update(status="completed", run=str(result.path), results=result.summary)
    except RunInterrupted as exc:
        record.update(status="interrupted", error=str(exc), run=str(run_path(exc) or ""))
    except Exception as exc:  # recorded; the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", run=str(run_path(exc) or ""))
    record.update(started=started, stopped=time.time())
    return record


def _run(task: Mapping[str, Any], stop: StopPoll) -> RunResult:
    """The point's run: resumed where one was left (``resume``, or an attempt's directory with a
    journal), taken as it is where it completed, else started in the attempt's directory."""
    path = Path(task.get("resume") or task.get("run_dir") or "")
    engine = RunEngine(Path(task["runs"]), figures=FigureOptions(**task.get("figures", {})))
    if not path.name:  # a task from an older sweep: a run named by the clock
        return engine.run(
            build_plan(task["plan"], task["config"]), task["address"], seed=task["seed"], control=stop
        )
    if (path / JOURNAL_FILE).is_file():
        return engine.resume(path, control=stop)
    done = read_outcome(path)
    if done is not None and done["status"] == "completed":  # the sweep died before it heard
        return RunResult(done["run_id"], path, "completed", done["results"], done["events"])
    if path.is_dir() and not any(path.iterdir()):  # killed between mkdir and its journal
        path.rmdir()
    return engine._execute(
        build_plan(task["plan"], task["config"]),
        task["address"],
        seed=int(task["seed"]),
        run_id=path.name,
        path=path,
        subscribers=[],
        control=stop,
    )


def dask_setup(worker: Any) -> None:
    """Preload of a local cluster's workers: the sweep handles the signals. Ctrl-C in a terminal
    reaches every process of its foreground group; a worker killed by it would abandon its
    point mid-step (outputs on), so local workers ignore SIGINT, SIGTERM and SIGHUP and the
    sweep stops their points the safe way (the stop event)."""
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED:
            signal.signal(signum, signal.SIG_IGN)


__all__ = ["run_point", "dask_setup", "StopPoll", "POLL_S"]
