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
* every numeric dataset has a ``unit`` attribute: the one its plan gave, else the SI unit its
  name ends in (``response_V`` -> ``V``, ``bias_A`` -> ``A``, :data:`UNIT_SUFFIXES`), else ``1``
  (dimensionless: counts, labels, weights); time series also carry ``dt_s``. Names are paths
  of Python identifiers (:func:`check_name`), so they work as attribute and column names;
* ``engine/events``: one JSON line per event (stream, seq, key, time, meta, rows);
* ``entry`` (NXentry) / ``entry/data`` (NXdata): soft links to the plan's main result, with
  ``@signal`` and ``@axes``.

The file is opened with the earliest HDF5 format (no "file open for writing" flag), so a file
whose writer was killed between steps opens normally.

Nothing is rebuilt in place: a resume reads the journal and ``run.h5`` (:func:`recover`), writes
the new journal and run file beside them, checks that they hold every step the old ones did, and
only then renames them over the old ones. Steps a damaged journal no longer holds are taken from
``run.h5``, a damaged start document too. A write that fails (a full disk) ends the run with
:class:`~spinlab.errors.RunFileError`: a small reserve file kept in the directory is deleted so
that ``run.h5`` can be closed cleanly, trimmed to its completed steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from spinlab.engine import journal as journal_mod
from spinlab.engine.documents import (
    DatasetDoc,
    DescriptorDoc,
    EventDoc,
    ResultDoc,
    StartDoc,
    StopDoc,
    to_jsonable,
)
from spinlab.errors import ConfigError, JournalError, RunFileError, WaveformError

log = logging.getLogger("spinlab.engine")

RUN_FILE = "run.h5"
JOURNAL_FILE = "journal.spinlab"
STAGED = ".new"  # suffix of a journal and run file being rebuilt beside the old ones
DAMAGED = ".damaged"  # suffix of the copy kept of a damaged journal
RESERVE_FILE = ".spinlab.reserve"
RESERVE_BYTES = 512 * 1024  # freed when a write fails, so the run file can still be closed


#: Name endings that give a dataset's unit when its plan names none (``device_mean_V``).
UNIT_SUFFIXES = ("V", "A", "s", "T", "Hz", "W", "Ohm", "K", "J", "m", "dB", "dBm", "rad")
_IDENTIFIER_HELP = "letters, digits and _, not starting with a digit"


def unit_of(name: str, attrs: Mapping[str, Any] | None = None) -> str:
    """The unit a dataset is stored with: ``attrs["unit"]``, else its name's suffix, else ``1``."""
    given = (attrs or {}).get("unit")
    if isinstance(given, str) and given:
        return given
    head, sep, suffix = name.rsplit("/", 1)[-1].rpartition("_")
    return suffix if sep and head and suffix in UNIT_SUFFIXES else "1"


def _set_units(ds: h5py.Dataset, name: str, attrs: Mapping[str, Any] | None) -> None:
    """``unit``; a vector of named values (``names=[...]``) also gets ``units``, one per name."""
    names = (attrs or {}).get("names")
    if "unit" not in (attrs or {}) and isinstance(names, (list, tuple)) and names:
        units = [unit_of(str(n)) for n in names]
        ds.attrs["units"] = units
        ds.attrs["unit"] = units[0] if len(set(units)) == 1 else "mixed (see units)"
    else:
        ds.attrs["unit"] = unit_of(name, attrs)


def check_name(name: str) -> str:
    """``name`` if every ``/``-separated part is a Python identifier; one-line ConfigError if not
    (``eval/bias_A=0.00592`` cannot be an attribute, a column or a NeXus name)."""
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split("/")):
        raise ConfigError(
            f"dataset name {name!r}: each /-separated part must be an identifier ({_IDENTIFIER_HELP}); "
            "put values such as conditions in attributes or an index"
        )
    return name


class RunFileWriter:
    """Subscriber ``writer(name, doc)`` for one run directory."""

    def __init__(
        self, directory: str | Path, *, sync_interval_s: float | None = 1.0, suffix: str = ""
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / (RUN_FILE + suffix)
        self.reserve = self.directory / RESERVE_FILE
        if suffix:  # left by a rebuild that died: ours to replace (the directory is locked)
            for stale in (self.path, self.directory / (JOURNAL_FILE + suffix)):
                stale.unlink(missing_ok=True)
        _reserve(self.reserve)
        self.journal = journal_mod.Journal(
            self.directory / (JOURNAL_FILE + suffix), sync_interval_s=sync_interval_s
        )
        self.file = h5py.File(self.path, "w-")  # never truncates a file that exists
        self.events = 0
        self.results: dict[str, Any] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # open handles of the event datasets
        self._rows: dict[str, int] = {}  # their lengths (asking h5py for a shape is slow)
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # their row shape, dtype
        self._broken: dict[str, int] | None = None  # rows of the last complete step, once a write failed

    @classmethod
    def rebuild(
        cls, directory: str | Path, recovery: Recovery | None = None, *, sync_interval_s: float | None = 1.0
    ) -> RunFileWriter:
        """A writer on a new journal and ``run.h5`` holding everything ``recovery`` (by default
        :func:`recover` of the directory) kept: built beside the old files, checked, then renamed
        over them. A damaged journal is kept as ``journal.spinlab.damaged``."""
        directory = Path(directory)
        recovery = recovery if recovery is not None else recover(directory)
        try:
            writer = cls(directory, sync_interval_s=sync_interval_s, suffix=STAGED)
        except OSError as exc:
            raise _rebuild_failed(directory, exc) from None
        try:
            for record in recovery.records:
                writer.journal.append(record)
                record = dict(record)
                name = record.pop("doc", None)
                if name in ("start", "descriptor", "event", "dataset", "result"):
                    writer._store(name, record)  # a stop is not: the run goes on
            writer.file.flush()
            writer.journal.sync()
            steps = sum(1 for r in recovery.records if r.get("doc") == "event")
            if writer.events != steps or writer.events < recovery.stored_steps:
                raise RunFileError(
                    f"rebuilding the run file in {directory} gave {writer.events} steps, "
                    f"not {max(steps, recovery.stored_steps)}; the old files are unchanged"
                )
        except OSError as exc:
            writer._discard()
            raise _rebuild_failed(directory, exc) from None
        except BaseException:
            writer._discard()
            raise
        journal_path = directory / JOURNAL_FILE
        if recovery.damage is not None:
            recovery.kept_as = _keep_copy(journal_path, directory / (JOURNAL_FILE + DAMAGED)).name
        for staged, final in ((writer.journal.path, journal_path), (writer.path, directory / RUN_FILE)):
            os.replace(staged, final)
        writer.journal.path, writer.path = journal_path, directory / RUN_FILE
        _sync_dir(directory)
        return writer

    def _discard(self) -> None:
        """Close and delete a staged rebuild that is not used."""
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(Exception):
            self.journal.close()
        for path in (self.path, self.journal.path, self.reserve):
            path.unlink(missing_ok=True)

    # --- the subscriber --------------------------------------------------------------------
    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name not in ("start", "descriptor", "event", "dataset", "result", "stop"):
            return
        if name == "event" and doc.get("replayed"):
            return  # already in the journal and the file
        if self._broken is not None:
            if name == "stop":
                self._close_broken(doc)  # type: ignore[arg-type]  # a StopDoc
            return
        rows = dict(self._rows)
        try:
            self.journal.append({"doc": name, **doc})
            self._store(name, doc)
            self.file.flush()
        except (OSError, RuntimeError) as exc:  # a full disk, an I/O error (h5py raises either)
            self._broken = rows
            self.reserve.unlink(missing_ok=True)
            raise RunFileError(
                f"cannot write the run files in {self.directory} ({_reason(exc)}); every completed "
                f"step is in its journal: free space or fix the disk, then spinlab resume "
                f"{self.directory}"
            ) from None
        if name == "stop":
            self.close(completed=doc.get("status") == "completed")

    def _store(self, name: str, doc: Mapping[str, Any]) -> None:
        getattr(self, f"_on_{name}")(doc)

    def _on_start(self, doc: StartDoc) -> None:
        attrs = self.file.attrs
        attrs["NX_class"] = "NXroot"
        attrs["default"] = "entry"
        for key in ("kind", "run_id", "plan", "address", "address_sha256", "started"):
            if doc.get(key) is not None:
                attrs[key] = str(doc[key])
        attrs["seed"] = int(doc.get("seed", 0))
        attrs["config"] = json.dumps(to_jsonable(doc.get("config", {})))
        attrs["device"] = json.dumps(to_jsonable(doc.get("identity", {})))
        attrs["versions"] = json.dumps(to_jsonable(doc.get("versions", {})))
        attrs["resumed"] = int(doc.get("resumed", 0))
        attrs["figures"] = json.dumps(to_jsonable(doc.get("figures", {})))
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

    def _on_descriptor(self, doc: DescriptorDoc) -> None:
        group = self.file.require_group("engine/streams")
        group.attrs[str(doc["stream"])] = json.dumps(to_jsonable(doc.get("data_keys", {})))

    def _on_event(self, doc: EventDoc) -> None:
        rows = {}
        attrs = doc.get("attrs") or {}
        for key, value in doc["data"].items():
            rows[key] = self._append(key, value, attrs.get(key))
        line = json.dumps(
            to_jsonable(
                {
                    "stream": doc["stream"],
                    "seq": doc["seq"],
                    "key": doc["key"],
                    "time": doc.get("time"),
                    "meta": doc.get("meta", {}),
                    "rows": rows,
                }
            )
        )
        log = self._datasets.get("engine/events")
        if log is None:
            log = self._datasets["engine/events"] = (
                self.file["engine/events"]
                if "engine/events" in self.file
                else self.file.create_dataset(
                    "engine/events", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,)
                )
            )
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
                key, data=rows, maxshape=(None, *rows.shape[1:]), chunks=True
            )
            for name, value in (attrs or {}).items():
                ds.attrs[name] = _attr(value)
            if rows.dtype.kind != "S":
                _set_units(ds, key, attrs)
            self._rows[key] = int(rows.shape[0])
            self._layout[key] = (rows.shape[1:], ds.dtype)
            return int(rows.shape[0])
        start = self._rows.get(key)
        if start is None:
            start = self._rows[key] = int(ds.shape[0])
            self._layout[key] = (ds.shape[1:], ds.dtype)
        row_shape, dtype = self._layout[key]
        if row_shape != rows.shape[1:]:
            raise ConfigError(
                f"event data {key!r} has rows of shape {rows.shape[1:]}, but the run "
                f"file holds rows of shape {row_shape}"
            )
        end = start + int(rows.shape[0])
        ds.resize((end, *row_shape))
        _write_rows(ds, dtype, start, rows)
        self._rows[key] = end
        return int(rows.shape[0])

    def _on_dataset(self, doc: DatasetDoc) -> None:
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
        if arr.dtype.kind != "S":
            _set_units(ds, name, doc.get("attrs"))

    def _on_result(self, doc: ResultDoc) -> None:
        self.results.update(to_jsonable(doc.get("values", {})))
        self.file.attrs["results"] = json.dumps(self.results, default=str)

    def _on_stop(self, doc: StopDoc) -> None:
        attrs = self.file.attrs
        attrs["status"] = str(doc.get("status"))
        attrs["finished"] = str(doc.get("time", ""))
        attrs["reason"] = str(doc.get("reason") or "")
        attrs["monitor_dropped"] = int(doc.get("monitor_dropped", 0))
        attrs["events"] = self.events

    # --- lifecycle -------------------------------------------------------------------------
    def close(self, completed: bool = False) -> None:
        """Close the file; a completed run's journal is no longer needed."""
        if self._broken is not None:
            self._close_broken(None)
            return
        if self.file.id.valid:
            self.file.flush()
            self.file.close()
        if completed:
            self.journal.remove()
        else:
            self.journal.close()
        self.reserve.unlink(missing_ok=True)

    def _close_broken(self, stop: StopDoc | None) -> None:
        """After a failed write: close both files, then trim ``run.h5`` to its completed steps
        and record the stop in it (the reserve file's space is free for that)."""
        for close in (self.file.close, self.journal.close):
            with contextlib.suppress(Exception):
                close()
        rows, self._broken = self._broken or {}, None
        rows.update({key: 0 for key in self._datasets if key not in rows})  # made by the failed step
        try:
            with h5py.File(self.path, "r+") as file:
                for key, n in rows.items():
                    if key in file and file[key].shape[0] > n:
                        file[key].resize(n, axis=0)
                self.file = file
                if stop:
                    self._on_stop({**stop, "status": "failed"})
                    file.attrs["events"] = int(rows.get("engine/events", 0))
        except Exception as exc:
            log.warning(
                "run.h5 in %s could not be closed cleanly (%s); spinlab resume rebuilds it from the journal",
                self.directory,
                _reason(exc),
            )
        self.reserve.unlink(missing_ok=True)


def read_outcome(directory: str | Path) -> dict[str, Any] | None:
    """``{run_id, status, results, events}`` of the run in ``directory`` as its ``run.h5`` says,
    or None when there is no readable run file."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            attrs = file.attrs
            return {
                "run_id": str(attrs.get("run_id", "")),
                "status": str(attrs.get("status", "")),
                "results": json.loads(attrs.get("results", "{}")),
                "events": int(attrs.get("events", 0)),
            }
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
        raise WaveformError(
            f"refusing to store non-finite values in {name!r}; check the measurement "
            "or replace them before saving"
        )
    if arr.dtype.kind not in "biufcS":
        raise ConfigError(
            f"{name!r}: cannot store an array of dtype {arr.dtype} (numbers, booleans or byte strings)"
        )
    return arr


__all__ = [
    "RunFileWriter",
    "check_name",
    "unit_of",
    "UNIT_SUFFIXES",
    "RUN_FILE",
    "JOURNAL_FILE",
    "Recovery",
    "recover",
    "read_outcome",
]


def _write_rows(ds: h5py.Dataset, dtype: np.dtype, start: int, rows: np.ndarray) -> None:
    """``ds[start:start + len(rows)] = rows`` through the low-level API when no conversion is
    needed: h5py's general ``__setitem__`` costs most of a small step's write time."""
    if rows.dtype != dtype or rows.dtype.kind not in "fiub" or rows.size == 0:
        ds[start : start + rows.shape[0]] = rows
        return
    rows = np.ascontiguousarray(rows)
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,) + (0,) * (rows.ndim - 1), rows.shape)
    ds.id.write(h5py.h5s.create_simple(rows.shape), file_space, rows)


# --- recovery ----------------------------------------------------------------------------------
@dataclass
class Recovery:
    """What a run directory still holds (read by :func:`recover`, which changes nothing)."""

    records: list[dict[str, Any]]  # the documents the rebuilt journal holds, in order
    from_journal: int  # steps read from the journal
    from_runfile: int  # steps only run.h5 still had (after a damaged journal record)
    stored_steps: int  # steps the old run.h5 held
    damage: tuple[int, int] | None  # bytes of the journal that could not be read (not a torn tail)
    start_from_runfile: bool = False
    kept_as: str = JOURNAL_FILE + DAMAGED  # the name the damaged journal is kept under

    @property
    def start(self) -> dict[str, Any]:
        """The latest start document: the device the run was last (re)started on."""
        return [r for r in self.records if r.get("doc") == "start"][-1]

    @property
    def steps(self) -> int:
        return self.from_journal + self.from_runfile

    def summary(self) -> str:
        """One line: what was kept, from where, and where measuring starts again."""
        parts = []
        if self.damage is not None:
            parts.append(
                f"journal damaged at bytes {self.damage[0]}-{self.damage[1]} (kept as {self.kept_as})"
            )
        if self.start_from_runfile:
            parts.append("start document recovered from run.h5")
        origin = (
            f" ({self.from_journal} from the journal, {self.from_runfile} from run.h5)"
            if self.from_runfile
            else ""
        )
        parts.append(f"kept {self.steps} steps{origin}; measuring again from step {self.steps}")
        return "; ".join(parts)


def recover(directory: str | Path) -> Recovery:
    """Everything that can still be read in run directory ``directory``: the journal's intact
    records, then the steps (and, if the journal lost it, the start document) that only
    ``run.h5`` still holds. Raises :class:`JournalError` when no start can be found; changes
    nothing on disk."""
    directory = Path(directory)
    path = directory / JOURNAL_FILE
    if not path.is_file():
        raise ConfigError(
            f"{directory} has no run journal ({JOURNAL_FILE}): it is not a spinlab "
            "run directory, or the run completed and there is nothing to resume"
        )
    try:
        scan = journal_mod.scan(path)
    except JournalError:  # its magic is damaged: all of it is, as far as reading goes
        scan = journal_mod.Scan([], 0, path.stat().st_size, torn=False)
    records = [dict(r) for r in scan.records]
    damage = (scan.end, scan.size) if scan.damaged else None
    in_journal = {(str(r.get("stream")), int(r.get("seq", -1))) for r in records if r.get("doc") == "event"}
    stored = _stored(directory / RUN_FILE, in_journal)
    starts = [r for r in records if r.get("doc") == "start"]
    from_runfile = False
    if not starts:
        if stored is None:
            where = f" (bytes {damage[0]}-{damage[1]} are damaged)" if damage else ""
            raise JournalError(
                f"{directory}: the journal holds no start document{where} and run.h5 "
                "does not hold it either; nothing to resume, nothing was changed"
            )
        records.insert(0, stored["start"])
        from_runfile = True
    run_id = records[0].get("run_id") if from_runfile else starts[0].get("run_id")
    same = stored is not None and stored["start"]["run_id"] == run_id
    extra: list[dict[str, Any]] = []
    if stored is not None and same and stored["events"]:
        described = {r.get("stream") for r in records if r.get("doc") == "descriptor"}
        extra = [d for d in stored["descriptors"] if d["stream"] not in described] + stored["events"]
    elif stored is not None and not same and stored["count"] > len(in_journal):
        raise JournalError(
            f"{directory}: run.h5 belongs to run {stored['start']['run_id']}, the journal "
            f"to run {run_id}; move one of them away; nothing was changed"
        )
    return Recovery(
        records + extra,
        from_journal=len(in_journal),
        from_runfile=len(stored["events"]) if stored is not None and same else 0,
        stored_steps=stored["count"] if stored is not None and same else 0,
        damage=damage,
        start_from_runfile=from_runfile,
    )


def _stored(path: Path, skip: set[tuple[str, int]]) -> dict[str, Any] | None:
    """The start document, descriptors and the events not in ``skip`` that ``run.h5`` holds
    (``count``: all its events), or None when it does not open or holds no run."""
    try:
        with h5py.File(path, "r") as file:
            attrs = file.attrs
            if not attrs.get("run_id") or not attrs.get("plan"):
                return None
            run_id = str(attrs["run_id"])
            start = {
                "doc": "start",
                "run_id": run_id,
                "kind": str(attrs.get("kind", attrs["plan"])),
                "plan": str(attrs["plan"]),
                "config": json.loads(attrs.get("config", "{}")),
                "seed": int(attrs.get("seed", 0)),
                "address": _text(attrs.get("address")),
                "address_sha256": _text(attrs.get("address_sha256")),
                "identity": json.loads(attrs.get("device", "{}")),
                "versions": json.loads(attrs.get("versions", "{}")),
                "started": _text(attrs.get("started")),
                "resumed": int(attrs.get("resumed", 0)),
                "nexus": {},
                "figures": json.loads(attrs.get("figures", "{}")),
            }
            streams = file["engine/streams"].attrs if "engine/streams" in file else {}
            descriptors = [
                {"doc": "descriptor", "run_id": run_id, "stream": str(name), "data_keys": json.loads(value)}
                for name, value in streams.items()
            ]
            lines = file["engine/events"][()] if "engine/events" in file else []
            events: list[dict[str, Any]] = []
            offsets: dict[str, int] = {}
            count = 0
            for line in lines:
                event = json.loads(line)
                spans = {
                    key: (offsets.get(key, 0), offsets.get(key, 0) + int(n))
                    for key, n in event["rows"].items()
                }
                if any(key not in file or file[key].shape[0] < end for key, (_, end) in spans.items()):
                    break  # a step the writer did not finish
                offsets.update({key: end for key, (_, end) in spans.items()})
                count += 1
                if (str(event["stream"]), int(event["seq"])) in skip:
                    continue
                events.append(
                    {
                        "doc": "event",
                        "run_id": run_id,
                        "stream": event["stream"],
                        "seq": int(event["seq"]),
                        "key": event["key"],
                        "time": event.get("time"),
                        "meta": event.get("meta") or {},
                        "data": {key: file[key][a:b] for key, (a, b) in spans.items()},
                        "attrs": {key: dict(file[key].attrs) for key in spans},
                    }
                )
            return {"start": start, "descriptors": descriptors, "events": events, "count": count}
    except Exception:  # a second copy read at best effort: a torn or foreign file holds nothing
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _reserve(path: Path) -> None:
    """Set aside ``RESERVE_BYTES`` of disk (best effort: a nearly full disk gets none)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _keep_copy(path: Path, copy: Path) -> Path:
    """A copy of ``path`` named ``copy`` (``copy-2``, ... if taken), a hard link where the file
    system allows; returns its path."""
    n = 1
    while copy.exists():
        n += 1
        copy = copy.with_name(f"{copy.name.split('-')[0]}-{n}")
    try:
        os.link(path, copy)
    except OSError:
        import shutil

        shutil.copyfile(path, copy)
    return copy


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rebuild_failed(directory: Path, exc: OSError) -> RunFileError:
    return RunFileError(
        f"cannot rebuild the run files in {directory} ({_reason(exc)}); the old files "
        "are unchanged: free space or fix the disk, then resume again"
    )


def _reason(exc: BaseException) -> str:
    errno = getattr(exc, "errno", None)
    if errno is None and "errno = 28" in str(exc):
        errno = 28
    if errno is not None:
        return os.strerror(errno)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
