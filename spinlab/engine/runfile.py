"""The run-file writer: a subscriber that journals every durable document, then stores it in
``run.h5`` and flushes, so each completed step is on disk before the next one starts.

Layout of ``run.h5`` (NeXus conventions where they cost nothing, so h5web, silx and NeXpy show
a default plot):

* root attributes: ``kind, run_id, plan, config`` (JSON), ``seed, address, device`` (identity,
  JSON), ``versions`` (JSON), ``started, finished, status, reason, results`` (JSON),
  ``events``, ``resumed``; ``NX_class = NXroot``, ``default = entry``.
* every event's arrays are appended along axis 0 of the dataset named by their key
  (``drive_V``, ``sweep/responses``, ...), so h5py users find data where it always was;
* ``dataset`` documents become datasets (overwritten if re-sent);
* ``engine/events``: one JSON line per event (stream, seq, key, time, meta, rows);
* ``entry`` (NXentry) / ``entry/data`` (NXdata): soft links to the plan's main result, with
  ``@signal`` and ``@axes``.

The file is opened with the earliest HDF5 format (no "file open for writing" flag), so a file
whose writer was killed between steps opens normally.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from spinlab.engine import journal as journal_mod
from spinlab.engine.documents import to_jsonable
from spinlab.errors import ConfigError, WaveformError

RUN_FILE = "run.h5"
JOURNAL_FILE = "journal.spinlab"


class RunFileWriter:
    """Subscriber ``writer(name, doc)`` for one run directory."""

    def __init__(self, directory: str | Path, *, sync_interval_s: float | None = 1.0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RUN_FILE
        self.journal = journal_mod.Journal(self.directory / JOURNAL_FILE, sync_interval_s=sync_interval_s)
        self.file = h5py.File(self.path, "w")
        self.events = 0
        self.results: dict[str, Any] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # open handles of the event datasets
        self._rows: dict[str, int] = {}  # their lengths (asking h5py for a shape is slow)
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # their row shape, dtype

    @classmethod
    def rebuild(cls, directory: str | Path, *,
                sync_interval_s: float | None = 1.0) -> tuple["RunFileWriter", list[dict]]:
        """A writer whose ``run.h5`` is rebuilt from the directory's journal (a fresh file, so a
        run file damaged by a hard stop is repaired); returns it and the journal's records."""
        directory = Path(directory)
        path = directory / JOURNAL_FILE
        if not path.is_file():
            raise ConfigError(f"{directory} has no run journal ({JOURNAL_FILE}): it is not a spinlab "
                              "run directory, or the run completed and there is nothing to resume")
        records = journal_mod.read(path)
        writer = cls(directory, sync_interval_s=sync_interval_s)
        for record in records:
            name = record.pop("doc", None)
            if name == "stop":
                continue  # the run goes on; its new stop document comes at the end
            if name in ("start", "descriptor", "event", "dataset", "result"):
                writer._store(name, record)
        writer.file.flush()
        return writer, [dict(r) for r in journal_mod.read(path)]

    # --- the subscriber --------------------------------------------------------------------
    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name not in ("start", "descriptor", "event", "dataset", "result", "stop"):
            return
        if name == "event" and doc.get("replayed"):
            return  # already in the journal and the file
        self.journal.append({"doc": name, **doc})
        self._store(name, doc)
        self.file.flush()
        if name == "stop":
            self.close(completed=doc.get("status") == "completed")

    def _store(self, name: str, doc: Mapping[str, Any]) -> None:
        getattr(self, f"_on_{name}")(doc)

    def _on_start(self, doc: Mapping[str, Any]) -> None:
        attrs = self.file.attrs
        attrs["NX_class"] = "NXroot"
        attrs["default"] = "entry"
        for key in ("kind", "run_id", "plan", "address", "started"):
            if doc.get(key) is not None:
                attrs[key] = str(doc[key])
        attrs["seed"] = int(doc.get("seed", 0))
        attrs["config"] = json.dumps(to_jsonable(doc.get("config", {})))
        attrs["device"] = json.dumps(to_jsonable(doc.get("identity", {})))
        attrs["versions"] = json.dumps(to_jsonable(doc.get("versions", {})))
        attrs["resumed"] = int(doc.get("resumed", 0))
        attrs["status"] = "running"
        self._nexus(doc.get("nexus") or {})

    def _nexus(self, nexus: Mapping[str, Any]) -> None:
        entry = self.file.require_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        signal = nexus.get("signal")
        if not signal:
            return
        entry.attrs["default"] = "data"
        data = entry.require_group("data")
        data.attrs["NX_class"] = "NXdata"
        axes = list(nexus.get("axes") or [])
        for target in [signal, *axes]:
            link = target.replace("/", "_")
            if link not in data and target != ".":
                data[link] = h5py.SoftLink("/" + target.lstrip("/"))
        data.attrs["signal"] = signal.replace("/", "_")
        data.attrs["axes"] = [a.replace("/", "_") for a in axes] or ["."]

    def _on_descriptor(self, doc: Mapping[str, Any]) -> None:
        group = self.file.require_group("engine/streams")
        group.attrs[str(doc["stream"])] = json.dumps(to_jsonable(doc.get("data_keys", {})))

    def _on_event(self, doc: Mapping[str, Any]) -> None:
        rows = {}
        attrs = doc.get("attrs") or {}
        for key, value in doc["data"].items():
            rows[key] = self._append(key, value, attrs.get(key))
        line = json.dumps(to_jsonable({"stream": doc["stream"], "seq": doc["seq"], "key": doc["key"],
                                       "time": doc.get("time"), "meta": doc.get("meta", {}),
                                       "rows": rows}))
        log = self._datasets.get("engine/events")
        if log is None:
            log = self._datasets["engine/events"] = (
                self.file["engine/events"] if "engine/events" in self.file else self.file.create_dataset(
                    "engine/events", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,)))
        n = self._rows.get("engine/events")
        n = log.shape[0] if n is None else n
        log.resize((n + 1,))
        log[n] = line
        self._rows["engine/events"] = n + 1
        self.events += 1

    def _append(self, key: str, value: Any, attrs: Mapping[str, Any] | None) -> int:
        rows = _finite(value, key)
        if rows.ndim == 0:
            rows = rows[None]
        ds = self._datasets.get(key)
        if ds is None and key in self.file:
            ds = self._datasets[key] = self.file[key]
        if ds is None:
            ds = self._datasets[key] = self.file.create_dataset(
                key, data=rows, maxshape=(None, *rows.shape[1:]), chunks=True)
            for name, value in (attrs or {}).items():
                ds.attrs[name] = _attr(value)
            self._rows[key] = int(rows.shape[0])
            self._layout[key] = (rows.shape[1:], ds.dtype)
            return int(rows.shape[0])
        start = self._rows.get(key)
        if start is None:
            start = self._rows[key] = int(ds.shape[0])
            self._layout[key] = (ds.shape[1:], ds.dtype)
        row_shape, dtype = self._layout[key]
        if row_shape != rows.shape[1:]:
            raise ConfigError(f"event data {key!r} has rows of shape {rows.shape[1:]}, but the run "
                              f"file holds rows of shape {row_shape}")
        end = start + int(rows.shape[0])
        ds.resize((end, *row_shape))
        _write_rows(ds, dtype, start, rows)
        self._rows[key] = end
        return int(rows.shape[0])

    def _on_dataset(self, doc: Mapping[str, Any]) -> None:
        name = doc["name"]
        arr = _finite(doc["data"], name)
        if name in self.file:
            self._datasets.pop(name, None)
            self._rows.pop(name, None)
            self._layout.pop(name, None)
            del self.file[name]
        ds = self.file.create_dataset(name, data=arr, compression="gzip" if arr.size > 4096 else None)
        for key, value in (doc.get("attrs") or {}).items():
            ds.attrs[key] = _attr(value)

    def _on_result(self, doc: Mapping[str, Any]) -> None:
        self.results.update(to_jsonable(doc.get("values", {})))
        self.file.attrs["results"] = json.dumps(self.results, default=str)

    def _on_stop(self, doc: Mapping[str, Any]) -> None:
        attrs = self.file.attrs
        attrs["status"] = str(doc.get("status"))
        attrs["finished"] = str(doc.get("time", ""))
        attrs["reason"] = str(doc.get("reason") or "")
        attrs["monitor_dropped"] = int(doc.get("monitor_dropped", 0))
        attrs["events"] = self.events

    # --- lifecycle -------------------------------------------------------------------------
    def close(self, completed: bool = False) -> None:
        """Close the file; a completed run's journal is no longer needed."""
        if self.file.id.valid:
            self.file.flush()
            self.file.close()
        if completed:
            self.journal.remove()
        else:
            self.journal.close()


def read_outcome(directory: str | Path) -> dict[str, Any] | None:
    """``{run_id, status, results, events}`` of the run in ``directory`` as its ``run.h5`` says,
    or None when there is no readable run file."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            attrs = file.attrs
            return {"run_id": str(attrs.get("run_id", "")), "status": str(attrs.get("status", "")),
                    "results": json.loads(attrs.get("results", "{}")), "events": int(attrs.get("events", 0))}
    except (OSError, ValueError):  # a file torn by a hard stop: the journal has the truth
        return None


def _attr(value: Any) -> Any:
    """An HDF5 attribute value: numbers and strings as they are, anything else as JSON."""
    value = to_jsonable(value)
    return json.dumps(value) if isinstance(value, (dict, list)) or value is None else value


def _finite(data: Any, name: str) -> np.ndarray:
    """``data`` as an array; float data with NaN/inf is refused before it reaches the file."""
    arr = np.asarray(data)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise WaveformError(f"refusing to store non-finite values in {name!r}; check the measurement "
                            "or replace them before saving")
    if arr.dtype.kind not in "biufcS":
        raise ConfigError(f"{name!r}: cannot store an array of dtype {arr.dtype} (numbers, booleans "
                          "or byte strings)")
    return arr


__all__ = ["RunFileWriter", "RUN_FILE", "JOURNAL_FILE", "read_outcome"]


def _write_rows(ds: h5py.Dataset, dtype: np.dtype, start: int, rows: np.ndarray) -> None:
    """``ds[start:start + len(rows)] = rows`` through the low-level API when no conversion is
    needed: h5py's general ``__setitem__`` costs most of a small step's write time."""
    if rows.dtype != dtype or rows.dtype.kind not in "fiub" or rows.size == 0:
        ds[start:start + rows.shape[0]] = rows
        return
    rows = np.ascontiguousarray(rows)
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,) + (0,) * (rows.ndim - 1), rows.shape)
    ds.id.write(h5py.h5s.create_simple(rows.shape), file_space, rows)
