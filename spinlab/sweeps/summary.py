"""The sweep's record and its summary.

``sweep.journal`` (the run engine's journal format: self-checking records, a torn tail is
dropped) gets one record per finished point attempt, the moment its result reaches the
client: it is what a re-run reads to skip completed points. ``sweep.h5`` and ``sweep.csv`` are
rebuilt from it and the sweep's points, written to a temporary file and renamed, so a reader
(or a Ctrl-C) never sees half a summary. Every point of the sweep is a row, ``pending`` until it
has run.

``sweep.h5``: root attributes ``plan, device, mode, spec`` (JSON), counts, ``updated``;
``points/*`` one entry per point: ``index, key, seed, status, error, started, stopped``
(unix s), ``duration_s, worker, run, config`` (JSON), ``results`` (JSON); ``values/NAME`` the
swept values; ``results/NAME`` every scalar result (numbers as float64, NaN where missing;
text as strings); with several seeds per setting, ``spread/NAME_mean``, ``spread/NAME_std`` and
``spread/seeds`` beside every point: each numeric result over the completed seeds of the
point's setting, so no single seed's luck reads as an effect. ``sweep.csv``: the same columns
(``NAME.seeds_mean``, ``NAME.seeds_std``, ``seeds``), times in ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spinlab.engine import journal as journal_mod
from spinlab.engine.documents import to_jsonable
from spinlab.sweeps.spec import Point

JOURNAL = "sweep.journal"
SUMMARY_H5 = "sweep.h5"
SUMMARY_CSV = "sweep.csv"
STATUSES = ("completed", "failed", "interrupted", "running", "pending")


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """The latest record of every point key in ``out``'s journal (empty for a new sweep)."""
    path = Path(out) / JOURNAL
    if not path.is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for record in journal_mod.read(path):
        if record.get("doc") == "point":
            attempts = latest.get(record["key"], {}).get("attempts", 0) + 1
            latest[record["key"]] = {**record, "attempts": attempts}
    return latest


def flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar results by dotted name (``per_speaker.theo``); lists stay in the JSON column."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
    return flat


def rows(
    points: Sequence[Point], records: Mapping[str, Mapping[str, Any]], running: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """One row per point: its settings and, where it has run, its latest record."""
    running = set(running)
    out = []
    for p in points:
        rec = records.get(p.key, {})
        status = rec.get("status") or ("running" if p.key in running else "pending")
        started, stopped = rec.get("started"), rec.get("stopped")
        out.append(
            {
                "index": p.index,
                "key": p.key,
                "seed": p.seed,
                "status": status,
                "values": dict(p.values),
                "config": dict(p.config),
                "address": p.address or "",
                "error": rec.get("error", ""),
                "run": rec.get("run", ""),
                "worker": rec.get("worker", ""),
                "started": started,
                "stopped": stopped,
                "duration_s": stopped - started if started is not None and stopped is not None else None,
                "attempts": rec.get("attempts", 0),
                "results": dict(rec.get("results") or {}),
            }
        )
    return out


def seed_spread(
    table: Sequence[Mapping[str, Any]], flat: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per row: every numeric result's mean and standard deviation (ddof 1) over the completed
    points of the same setting (values and address; only the seed differs), and their count.
    Empty dicts when no setting has more than one seed."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(table):
        key = json.dumps([to_jsonable(r["values"]), r["address"]], sort_keys=True)
        groups.setdefault(key, []).append(i)
    if all(len(members) < 2 for members in groups.values()):
        return [{} for _ in table]
    spread: list[dict[str, Any]] = [{} for _ in table]
    for members in groups.values():
        done = [i for i in members if table[i]["status"] == "completed"]
        fields: dict[str, Any] = {"seeds": len(done)}
        for name in dict.fromkeys(n for i in done for n in flat[i]):
            values = [flat[i].get(name) for i in done]
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                fields[f"{name}.seeds_mean"] = float(np.mean(values))
                fields[f"{name}.seeds_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        for i in members:
            spread[i] = fields
    return spread


def write(out: Path, table: Sequence[Mapping[str, Any]], attrs: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``sweep.h5`` and ``sweep.csv`` (each atomically); returns their paths."""
    out = Path(out)
    names = list(dict.fromkeys(n for r in table for n in r["values"]))
    flat = [flatten(r["results"]) for r in table]
    metrics = list(dict.fromkeys(n for f in flat for n in f))
    spread = seed_spread(table, flat)
    if any(spread):  # beside each metric, its spread over seeds
        spread_names = list(dict.fromkeys(n for s in spread for n in s))
        flat = [{**f, **s} for f, s in zip(flat, spread)]
        metrics = [
            n
            for m in metrics
            for n in (m, f"{m}.seeds_mean", f"{m}.seeds_std")
            if n in spread_names or n == m
        ] + ["seeds"]
    h5 = _atomic(out / SUMMARY_H5, lambda tmp: _write_h5(tmp, table, flat, names, metrics, attrs))
    csv_path = _atomic(out / SUMMARY_CSV, lambda tmp: _write_csv(tmp, table, flat, names, metrics))
    return h5, csv_path


def _atomic(path: Path, writer: Any) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _column(values: list[Any]) -> np.ndarray:
    """Numbers (bool included) as float64 with NaN for gaps; anything else as UTF-8 text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (bool, int, float)) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(["" if v is None else _text(v) for v in values], dtype=h5py.string_dtype())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(to_jsonable(value), sort_keys=True)


def _write_h5(
    path: Path,
    table: Sequence[Mapping[str, Any]],
    flat: list[dict],
    names: list[str],
    metrics: list[str],
    attrs: Mapping[str, Any],
) -> None:
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(to_jsonable(value))
        f.attrs["updated"] = _iso(_dt.datetime.now(_dt.timezone.utc).timestamp())
        for status in STATUSES:
            f.attrs[status] = sum(r["status"] == status for r in table)
        points = f.create_group("points")
        for column in ("index", "seed", "attempts"):
            points[column] = np.array([r[column] for r in table], dtype=np.int64)
        for column in ("key", "status", "error", "run", "worker", "address"):
            points[column] = np.array([str(r[column]) for r in table], dtype=h5py.string_dtype())
        for column in ("started", "stopped", "duration_s"):
            points[column] = _column([r[column] for r in table])
        points["config"] = _column([json.dumps(r["config"], sort_keys=True) for r in table])
        points["results"] = _column([json.dumps(to_jsonable(r["results"]), sort_keys=True) for r in table])
        values = f.create_group("values")
        for name in names:
            values[name] = _column([r["values"].get(name) for r in table])
        results = f.create_group("results")
        spread = None
        for name in metrics:
            column = _column([fl.get(name) for fl in flat])
            if name == "seeds" or name.endswith((".seeds_mean", ".seeds_std")):
                spread = spread or f.create_group("spread")
                spread[name.replace("/", "_").replace(".seeds_", "_")] = column
            else:
                results[name.replace("/", "_")] = column


def _write_csv(
    path: Path, table: Sequence[Mapping[str, Any]], flat: list[dict], names: list[str], metrics: list[str]
) -> None:
    head = [
        "index",
        "key",
        "seed",
        "status",
        *names,
        *(f"result.{m}" if m in names else m for m in metrics),
        "started",
        "stopped",
        "duration_s",
        "attempts",
        "worker",
        "run",
        "error",
        "config",
    ]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        for r, fl in zip(table, flat):
            writer.writerow(
                [
                    r["index"],
                    r["key"],
                    r["seed"],
                    r["status"],
                    *(_cell(r["values"].get(n)) for n in names),
                    *(_cell(fl.get(m)) for m in metrics),
                    _iso(r["started"]),
                    _iso(r["stopped"]),
                    _cell(r["duration_s"]),
                    r["attempts"],
                    r["worker"],
                    r["run"],
                    r["error"],
                    json.dumps(r["config"], sort_keys=True),
                ]
            )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else _text(value)


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


__all__ = [
    "JOURNAL",
    "SUMMARY_H5",
    "SUMMARY_CSV",
    "STATUSES",
    "read_records",
    "flatten",
    "rows",
    "seed_spread",
    "write",
]
