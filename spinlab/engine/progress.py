"""The one progress display: a subscriber that shows ``progress`` documents on stderr, so stdout
stays clean for ``--json``. On a terminal: rich bars, one per stage (the phase named). In a Jupyter
notebook: HTML bars updated in place in the cell's output (rich's live display needs ipywidgets
there). Anywhere else (nohup, SLURM, a pipe) a redrawn line would arrive as one line at the end, so
plain lines go out instead: a stage's first and last step, and between them every 10 % or 5 s."""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Plain-line mode: a line at least every this many seconds, or this fraction of a stage.
PLAIN_EVERY_S = 5.0
PLAIN_EVERY_FRACTION = 0.1


class ProgressDisplay:
    """``ProgressDisplay()`` as a run subscriber; ``close()`` stops the live display.
    ``plain`` forces plain lines (True) or bars (False); default: bars only on a terminal."""

    def __init__(
        self,
        file: Any = None,
        *,
        transient: bool = False,
        plain: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file if file is not None else sys.stderr
        self._transient = transient
        notebook = self._file is sys.stderr and in_notebook()  # HTML bars, not plain lines
        self._plain = not (notebook or _is_terminal(self._file)) if plain is None else plain
        self._clock = clock
        self._progress: Any = None  # a rich Progress once the first document arrives
        self._tasks: dict[str, Any] = {}
        self._lines: dict[str, tuple[float, float]] = {}  # stage -> (time, fraction) of its last line
        self._started = clock()

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
            stage = str(doc.get("stage") or doc.get("kind") or "run")
            if self._plain:
                self._line(stage, doc)
                return
            progress = self._start()
            note = _note(doc)
            if stage not in self._tasks:
                self._tasks[stage] = progress.add_task(stage, total=doc.get("total") or None, note=note)
            progress.update(
                self._tasks[stage], completed=doc.get("done", 0), total=doc.get("total") or None, note=note
            )
        elif name == "stop":
            self.close()

    def _line(self, stage: str, doc: Mapping[str, Any]) -> None:
        """One plain line when the stage starts or ends, or moved 10 % or 5 s since its last."""
        done, total = int(doc.get("done", 0)), int(doc.get("total") or 0)
        fraction = done / total if total > 0 else 0.0
        now = self._clock()
        last = self._lines.get(stage)
        due = (
            last is None
            or (total > 0 and done >= total and last[1] < 1.0)
            or fraction - last[1] >= PLAIN_EVERY_FRACTION
            or now - last[0] >= PLAIN_EVERY_S
        )
        if not due:
            return
        self._lines[stage] = (now, fraction)
        count = f"{done}/{total} ({100 * fraction:.0f} %)" if total > 0 else f"{done}"
        note = _note(doc)
        elapsed = now - self._started
        print(
            f"[{elapsed:7.1f} s] {stage}: {count}" + (f"  {note}" if note else ""),
            file=self._file,
            flush=True,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _is_terminal(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


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
