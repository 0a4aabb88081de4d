"""The one progress display: a subscriber that shows ``progress`` documents as rich bars on
stderr (one bar per stage), so stdout stays clean for ``--json``; in a Jupyter notebook, as HTML
bars updated in place in the cell's output (rich's live display needs ipywidgets there)."""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Mapping
from typing import Any


class ProgressDisplay:
    """``ProgressDisplay()`` as a run subscriber; ``close()`` stops the live display."""

    def __init__(self, file: Any = None, *, transient: bool = False) -> None:
        self._file = file if file is not None else sys.stderr
        self._transient = transient
        self._progress: Any = None  # a rich Progress once the first document arrives
        self._tasks: dict[str, Any] = {}

    def _start(self) -> Any:
        if self._progress is None and self._file is sys.stderr and in_notebook():
            self._progress = NotebookBars()
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:<14}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._file),
                transient=self._transient,
            )
            self._progress.start()
        return self._progress

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "progress":
            progress = self._start()
            stage = str(doc.get("stage") or doc.get("kind") or "run")
            note = _note(doc)
            if stage not in self._tasks:
                self._tasks[stage] = progress.add_task(stage, total=doc.get("total") or None, note=note)
            progress.update(
                self._tasks[stage], completed=doc.get("done", 0), total=doc.get("total") or None, note=note
            )
        elif name == "stop":
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell), where stderr is no terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class NotebookBars:
    """The bars as one HTML output of the running cell, redrawn at most every ``interval_s``
    (and on stop); rich Progress's ``add_task``/``update``/``stop`` subset."""

    def __init__(self, interval_s: float = 0.25) -> None:
        from IPython.display import display

        self.interval_s = interval_s
        self.tasks: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._shown = 0.0
        self.handle: Any = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def add_task(self, description: str, total: float | None = None, note: str = "") -> int:
        self.tasks.append({"description": description, "completed": 0, "total": total, "note": note})
        return len(self.tasks) - 1

    def update(self, task: int, *, completed: float, total: float | None, note: str) -> None:
        self.tasks[task].update(completed=completed, total=total, note=note)
        if time.monotonic() - self._shown >= self.interval_s:
            self._draw()

    def stop(self) -> None:
        self._draw()

    def _draw(self) -> None:
        self._shown = time.monotonic()
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)

    def _bundle(self) -> dict[str, str]:
        elapsed = f"{time.monotonic() - self.t0:.1f} s"
        lines, rows = [], []
        for t in self.tasks:
            done, total = t["completed"], t["total"]
            count = f"{done:g}/{total:g}" if total else f"{done:g}"
            lines.append(f"{t['description']:<14} {count} {t['note']}".rstrip())
            bar = f"<progress value='{done}' max='{total}'></progress>" if total else ""
            rows.append(
                f"<tr><td>{html.escape(t['description'])}</td><td>{bar}</td><td>{html.escape(count)}</td>"
                f"<td>{html.escape(t['note'])}</td></tr>"
            )
        return {
            "text/plain": "\n".join([*lines, elapsed]),
            "text/html": f"<table>{''.join(rows)}</table><small>{elapsed}</small>",
        }


def _note(doc: Mapping[str, Any]) -> str:
    """A short text of the progress fields worth reading (numbers only)."""
    skip = {"done", "total", "stage", "run_id"}
    parts = [
        f"{k} {v:.4g}"
        for k, v in doc.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return "  ".join(parts[:3])


__all__ = ["ProgressDisplay", "NotebookBars", "in_notebook"]
