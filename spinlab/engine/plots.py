"""The plot writer: a subscriber that draws a completed run's figures into its directory.

Plans declare their plots as functions ``plot(datasets, results) -> Figure``: ``datasets``
reads arrays by name from the finished run file (only what the plot asks for is loaded), and
``results`` holds the run's result values. A plot is declared under a PNG name
(``confusion.png``); the run's :class:`~spinlab.engine.figures.FigureOptions` choose the format
and resolution it is written in. Figures are built with
:class:`matplotlib.figure.Figure`, without pyplot, so no global backend is switched (a notebook
user's backend stays theirs). A plot that fails is logged and skipped: plots never fail a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from spinlab.engine.figures import FigureOptions

log = logging.getLogger("spinlab.engine.plots")


class RunDatasets(Mapping[str, np.ndarray]):
    """Read-only, lazy ``name -> array`` view of a run file."""

    def __init__(self, file: h5py.File) -> None:
        self._file = file

    def __getitem__(self, name: str) -> np.ndarray:
        node = self._file.get(name)
        if not isinstance(node, h5py.Dataset):
            raise KeyError(name)
        return np.asarray(node[()])

    def attrs(self, name: str) -> dict[str, Any]:
        """The attributes ``ctx.save`` stored with dataset ``name`` (``dt_s``, ``unit``, ...)."""
        node = self._file.get(name)
        if not isinstance(node, h5py.Dataset):
            raise KeyError(name)
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in node.attrs.items()}

    def __iter__(self) -> Iterator[str]:
        names: list[str] = []
        self._file.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        return iter(names)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class PlotWriter:
    """``PlotWriter({"sweep.png": plot_fn, ...}, run_dir)``; draws on a ``completed`` stop."""

    def __init__(
        self,
        plots: Mapping[str, Any],
        directory: str | Path,
        *,
        options: FigureOptions | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.plots = dict(plots)
        self.directory = Path(directory)
        self.options = options or FigureOptions()
        self.progress = progress  # (drawn, total): before the first figure and after each
        self.results: dict[str, Any] = {}
        self.written: list[Path] = []

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if not self.plots:
            return
        if name == "result":
            self.results.update(doc.get("values", {}))
        elif name == "stop" and doc.get("status") == "completed":
            self.draw()

    def draw(self) -> list[Path]:
        with h5py.File(self.directory / "run.h5", "r") as file:
            datasets = RunDatasets(file)
            for done, (filename, plot) in enumerate(self.plots.items()):
                if self.progress is not None:
                    self.progress(done, len(self.plots))
                path = self.directory / self.options.filename(filename)
                try:
                    # tight: titles and labels are never cut off at the figure's edge
                    plot(datasets, self.results).savefig(path, dpi=self.options.dpi, bbox_inches="tight")
                except Exception:
                    log.exception("plot %s failed; the run's data is unaffected", filename)
                    continue
                self.written.append(path)
        if self.progress is not None:
            self.progress(len(self.plots), len(self.plots))
        return self.written


__all__ = ["PlotWriter", "RunDatasets"]
