"""Watching a sweep: one progress display for the whole sweep (points done, running, failed,
ETA) and the ``sweep.*`` topics on the monitoring stream, both observers of
:func:`spinlab.sweeps.run_sweep`.

Topics (payload keys): ``sweep.start`` [plan, device, total, todo, skipped, mode, out,
dashboard, spec], ``sweep.point`` [index, key, values, seed, status, worker, pid, run, error,
results (scalars)] when a point starts running and when it ends, ``sweep.progress`` [done,
total, running, failed, eta_s, elapsed_s], ``sweep.stop`` [status, counts by status, summary,
plots]. ``spinlab monitor ADDRESS`` shows them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from spinlab.engine.documents import to_jsonable
from spinlab.sweeps.summary import flatten


class SweepDisplay:
    """Progress bar and notices on stderr (or ``file``)."""

    def __init__(self, file: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=file or sys.stderr)
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "start":
            self._on_start(doc)
        elif name == "notice":
            self.console.print(doc["text"], highlight=False)
        elif name == "point" and doc.get("status") == "failed":
            self.console.print(
                f"[red]point {doc['index']} ({_values(doc)}) failed:[/] {doc.get('error')}", highlight=False
            )
        elif name == "progress" and self._progress is not None:
            eta = doc.get("eta_s")
            self._progress.update(
                self._task,
                completed=doc["done"],
                running=doc["running"],
                failed=doc["failed"],
                eta="?" if eta is None else _duration(eta),
            )
        elif name == "stop":
            self.close()

    def _on_start(self, doc: Mapping[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console.print(
            f"sweep {doc['plan']} on {doc['device']}: {doc['total']} points, {doc['todo']} "
            f"to run, {doc['skipped']} already completed; in {doc['out']}",
            highlight=False,
        )
        self.console.print(doc["mode"], highlight=False)
        if doc.get("dashboard"):
            self.console.print(f"Dask dashboard: {doc['dashboard']}", highlight=False)
        self._progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "running {task.fields[running]}  failed {task.fields[failed]}  ETA {task.fields[eta]}"
            ),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task(
            "sweep", total=doc["total"], completed=doc["skipped"], running=0, failed=0, eta="?"
        )
        self._progress.start()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class SweepPublisher:
    """The sweep's ``sweep.*`` topics on a ZeroMQ monitor address."""

    def __init__(self, address: str) -> None:
        from spinlab.monitoring.publisher import Publisher

        self.publisher = Publisher(address)
        self.endpoint = self.publisher.endpoint

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "start":
            self.publisher.run_id = f"sweep-{doc['sweep']}"
        if name == "point":
            results = flatten(dict(doc.get("results") or {}))
            doc = {**{k: v for k, v in doc.items() if k not in ("token", "recorded")}, "results": results}
        if name in ("start", "point", "progress", "stop"):
            self.publisher.publish(f"sweep.{name}", to_jsonable(dict(doc)))

    def close(self) -> None:
        self.publisher.close()


def _values(doc: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in (doc.get("values") or {}).items()]
    return ", ".join([*parts, f"seed {doc.get('seed')}"])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


__all__ = ["SweepDisplay", "SweepPublisher"]
