"""The sweep's figures, one per result metric: a heatmap over two swept names of a grid,
otherwise the metric against the first swept name, a line per combination of the others
(markers only for samples), the mean over seeds with their standard deviation as error bars.
Built with :class:`matplotlib.figure.Figure` (no pyplot, no global backend)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spinlab.engine.figures import axis_label, condition_text, legend, prefix, symbol_of
from spinlab.sweeps.summary import flatten


def metrics(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """Numeric scalar results of the completed points that vary between them (a swept name
    echoed in the results is left out)."""
    done = [flatten(r["results"]) for r in table if r["status"] == "completed"]
    swept = {n for r in table for n in r["values"]}
    names = list(dict.fromkeys(n for d in done for n in d))
    out = []
    for name in names:
        vals = [d.get(name) for d in done]
        if name in swept or not all(_number(v) for v in vals):
            continue
        if len({float(v) for v in vals}) > 1:
            out.append(name)
    return out


def plot_metric(table: Sequence[Mapping[str, Any]], metric: str, *, grid: bool) -> Figure:
    """The figure of ``metric`` over the sweep's points (see the module docstring)."""
    names = list(dict.fromkeys(n for r in table for n in r["values"]))
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in table:
        value = flatten(r["results"]).get(metric) if r["status"] == "completed" else None
        combo = tuple(_hashable(r["values"].get(n)) for n in names)
        groups[combo].append(float(value) if _number(value) else math.nan)
    if grid and len(names) == 2:
        return _heatmap(groups, names, metric)
    return _lines(groups, names, metric, markers_only=not grid)


def _heatmap(groups: Mapping[tuple, list[float]], names: list[str], metric: str) -> Figure:
    xs = _ordered({c[0] for c in groups})
    ys = _ordered({c[1] for c in groups})
    mean = np.full((len(ys), len(xs)), np.nan)
    for (x, y), vals in groups.items():
        mean[ys.index(y), xs.index(x)] = _nanmean(vals)
    fig = Figure(figsize=(max(4.5, 1.5 + 0.9 * len(xs)), max(3.5, 1.2 + 0.6 * len(ys))), dpi=120)
    ax = fig.subplots()
    im = ax.imshow(mean, origin="lower", aspect="auto", cmap="viridis")
    finite = mean[np.isfinite(mean)]
    mid = 0.5 * (finite.min() + finite.max()) if finite.size else 0.0
    for (i, j), v in np.ndenumerate(mean):
        ax.text(
            j,
            i,
            "failed" if not np.isfinite(v) else f"{v:.3g}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if np.isfinite(v) and v < mid else "black",
        )
    xlabel, xticks = _axis(names[0], xs)
    ylabel, yticks = _axis(names[1], ys)
    ax.set_xticks(range(len(xs)), xticks)
    ax.set_yticks(range(len(ys)), yticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{metric} (mean over seeds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def _lines(
    groups: Mapping[tuple, list[float]], names: list[str], metric: str, *, markers_only: bool
) -> Figure:
    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.subplots()
    if not names:  # seeds only: one error bar
        vals = next(iter(groups.values()), [])
        ax.errorbar([0], [_nanmean(vals)], yerr=[_nanstd(vals)], fmt="o", capsize=4)
        ax.set_xticks([0], [f"{len(vals)} seeds"])
    else:
        xs = _ordered({c[0] for c in groups})
        numeric = all(_number(x) for x in xs)
        xlabel, xticks = _axis(names[0], xs)
        factor = prefix(xs, symbol_of(names[0])[1])[0] if numeric else 1.0
        lines: dict[tuple, list[tuple[Any, list[float]]]] = defaultdict(list)
        for combo, vals in groups.items():
            lines[combo[1:]].append((combo[0], vals))
        for rest, pts in sorted(lines.items(), key=lambda kv: [_sort_key(v) for v in kv[0]]):
            pts.sort(key=lambda p: _sort_key(p[0]))
            x = [p[0] * factor if numeric else xs.index(p[0]) for p in pts]
            label = _legend_text(names[1:], rest)
            ax.errorbar(
                x,
                [_nanmean(p[1]) for p in pts],
                yerr=[_nanstd(p[1]) for p in pts],
                fmt="o" if markers_only else "o-",
                capsize=3,
                ms=4,
                label=label,
            )
        if not numeric:
            ax.set_xticks(range(len(xs)), xticks)
        ax.set_xlabel(xlabel)
        if len(lines) > 1 and len(lines) <= 12:
            legend(ax, fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean +- std over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _axis(name: str, values: Sequence[Any]) -> tuple[str, list[str]]:
    """An axis's label (``I (mA)``) and its tick labels in that prefixed unit."""
    unit = symbol_of(name)[1]
    if not all(_number(v) for v in values):
        return axis_label(name), [_label(v) for v in values]
    factor = prefix(values, unit)[0]
    return axis_label(name, values), [_label(float(v) * factor) for v in values]


def _legend_text(names: Sequence[str], values: Sequence[Any]) -> str | None:
    """``I = 6 mA, µ0H = 300 mT`` for a line's other swept values."""
    parts = []
    for name, value in zip(names, values):
        if _number(value) and symbol_of(name)[1]:
            parts.append(condition_text({name.rsplit(".", 1)[-1]: value}))
        else:
            parts.append(f"{symbol_of(name)[0]} = {_label(value)}")
    return ", ".join(parts) or None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hashable(value: Any) -> Any:
    """A swept value as a key: scalars as they are, groups (``acquire.conditions``) as JSON."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sort_key(value: Any) -> tuple:
    return (0, float(value), "") if _number(value) else (1, 0.0, str(value))


def _ordered(values: set) -> list:
    return sorted(values, key=_sort_key)


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _nanmean(vals: Sequence[float]) -> float:
    arr = np.asarray(vals, dtype=float)
    return float(np.mean(arr[np.isfinite(arr)])) if np.isfinite(arr).any() else math.nan


def _nanstd(vals: Sequence[float]) -> float:
    arr = np.asarray(vals, dtype=float)
    return float(np.std(arr[np.isfinite(arr)])) if np.isfinite(arr).sum() > 1 else 0.0


__all__ = ["metrics", "plot_metric"]
