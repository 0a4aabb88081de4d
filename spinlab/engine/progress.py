"""The one progress display: a subscriber that shows ``progress`` documents as rich bars on
stderr (one bar per stage), so stdout stays clean for ``--json``."""

from __future__ import annotations

import sys
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


def _note(doc: Mapping[str, Any]) -> str:
    """A short text of the progress fields worth reading (numbers only)."""
    skip = {"done", "total", "stage", "run_id"}
    parts = [
        f"{k} {v:.4g}"
        for k, v in doc.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return "  ".join(parts[:3])


__all__ = ["ProgressDisplay"]
