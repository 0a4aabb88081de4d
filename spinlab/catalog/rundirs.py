"""Catalog rows from run directories, the source of truth.

A row comes from the start and stop documents while the run is live (:class:`Recorder`, the
engine's subscriber) and from ``run.h5``'s root attributes afterwards (:func:`read_row`,
:func:`reindex`). A run file still saying ``running`` whose directory lock is free belongs to a
process that died without recording its end (SIGKILL, power cut): it is ``interrupted``.
"""

from __future__ import annotations

import atexit
import fcntl
import getpass
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]

log = logging.getLogger("spinlab.catalog")

RUN_FILE = "run.h5"
LOCK_FILE = ".spinlab.lock"


def run_identity(identity: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any] | None]:
    """``(station name, instrument identities)`` of a device identity (a bench's station and
    ``*IDN?`` answers; a simulator's model type)."""
    identity = identity or {}
    station = identity.get("station")
    name = None
    if isinstance(station, Mapping):
        inner = station.get("station")
        name = inner.get("name") if isinstance(inner, Mapping) else None
        name = name or station.get("path")
    name = name or identity.get("type")
    instruments = identity.get("instruments")
    return (str(name) if name else None), (dict(instruments) if isinstance(instruments, Mapping) else None)


def parent_of(path: Path) -> str | None:
    """The id of the run a stage belongs to: its directory is ``<run>/stages/<n>-<name>`` and its
    id ``<run id>.<n>-<name>``; a run's id is its directory's name."""
    if path.parent.name != "stages":
        return None
    owner = path.parent.parent
    above = parent_of(owner)
    return f"{above}.{owner.name}" if above else owner.name


def start_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A row from a start document, with who and where it runs."""
    station, instruments = run_identity(doc.get("identity"))
    path = Path(str(doc.get("path", ""))).absolute()
    return {
        "id": doc["run_id"],
        "parent": parent_of(path),
        "plan": doc.get("plan"),
        "address": doc.get("address"),
        "station": station,
        "instruments": instruments,
        "identity": doc.get("identity"),
        "config": doc.get("config") or {},
        "seed": doc.get("seed"),
        "status": "running",
        "started": doc.get("started"),
        "user": _user(),
        "host": socket.gethostname(),
        "version": (doc.get("versions") or {}).get("spinlab"),
        "path": str(path),
    }


def stop_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["run_id"],
        "status": doc.get("status"),
        "reason": doc.get("reason") or "",
        "finished": doc.get("time"),
        "events": doc.get("events"),
        "results": doc.get("results") or {},
    }


def read_row(directory: str | Path) -> dict[str, Any] | None:
    """The row of the run in ``directory`` as its ``run.h5`` says (None: no run file). A file
    too damaged to open still gives a row: the directory's name, ``interrupted``."""
    path = Path(directory).absolute()
    file_path = path / RUN_FILE
    if not file_path.is_file():
        return None
    try:
        with h5py.File(file_path, "r") as file:
            attrs = {k: _text(v) for k, v in file.attrs.items()}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); catalogued as interrupted", file_path, exc)
        parent = parent_of(path)
        return {
            "id": f"{parent}.{path.name}" if parent else path.name,
            "parent": parent,
            "status": "interrupted",
            "reason": "run file unreadable",
            "path": str(path),
        }
    identity = _json(attrs.get("device"), {})
    station, instruments = run_identity(identity)
    status = str(attrs.get("status") or "interrupted")
    reason = attrs.get("reason")
    if status == "running" and not locked(path):
        status, reason = "interrupted", "the process ended without recording the run's end"
    return {
        "id": str(attrs.get("run_id") or path.name),
        "parent": parent_of(path),
        "plan": attrs.get("plan"),
        "address": attrs.get("address"),
        "station": station,
        "instruments": instruments,
        "identity": identity,
        "config": _json(attrs.get("config"), {}),
        "seed": int(attrs["seed"]) if "seed" in attrs else None,
        "status": status,
        "reason": reason,
        "started": attrs.get("started"),
        "finished": attrs.get("finished") or None,
        "version": _json(attrs.get("versions"), {}).get("spinlab"),
        "events": int(attrs["events"]) if "events" in attrs else None,
        "results": _json(attrs.get("results"), {}),
        "path": str(path),
    }


def locked(directory: Path) -> bool:
    """True while a process holds the run directory's lock (the run is live)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False


def run_dirs(root: str | Path) -> Iterable[Path]:
    """Every run directory under ``root`` (stages and sweep points included), sorted."""
    return sorted(p.parent for p in Path(root).rglob(RUN_FILE))


@dataclass
class Reindexed:
    """What :func:`reindex` did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def reindex(catalog: Any, root: str | Path, *, prune: bool = False) -> Reindexed:
    """Record every run directory under ``root`` in ``catalog`` (a :class:`~spinlab.catalog.Catalog`);
    with ``prune``, forget catalogued runs under ``root`` whose directory is gone."""
    done = Reindexed()
    known = catalog.ids()
    seen: set[str] = set()
    rows = []
    for directory in run_dirs(root):
        row = read_row(directory)
        if row is None:
            continue
        if row.get("reason") == "run file unreadable":
            done.unreadable.append(str(directory))
        rows.append(row)
        seen.add(row["id"])
        (done.updated if row["id"] in known else done.added).append(row["id"])
    for chunk in range(0, len(rows), 200):
        catalog.record_many(rows[chunk : chunk + 200])
    if prune:
        base = str(Path(root).absolute())
        gone = [
            row["id"]
            for row in catalog.search()
            if row["id"] not in seen
            and str(row.get("path") or "").startswith(base)
            and not Path(row["path"]).is_dir()
        ]
        catalog.forget(gone)
        done.removed = gone
    return done


#: how many catalog writes of this process are queued or in progress (see :func:`settle`)
_in_flight = 0
_changed = threading.Condition()


def settle(timeout_s: float = 30.0) -> bool:
    """Wait (at most ``timeout_s``) until this process's queued catalog writes are done, so a
    catalog read sees the runs this process recorded, and a process does not end before its
    runs' ends are written (called at exit). False when some are still pending."""
    with _changed:
        done = _changed.wait_for(lambda: _in_flight == 0, timeout_s)
    if not done:
        log.warning(
            "catalog writes still pending after %.0f s; `spinlab runs reindex` adds those runs", timeout_s
        )
    return done


def _count(delta: int) -> None:
    global _in_flight
    with _changed:
        _in_flight += delta
        _changed.notify_all()


atexit.register(settle, 10.0)


class Recorder:
    """The engine's subscriber that records a run in the catalog as it starts and when it stops.

    Why a thread: the first write of a process imports SQLAlchemy and may create the catalog,
    and a lab server answers in its own time; the run waits for none of it. Each run's writes
    are done in order by one thread (the start, then the stop); :func:`settle` waits for them
    before a catalog read and at exit. A failed write is logged once per run and never reaches
    the run: ``spinlab runs reindex`` adds the run later."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failed = False
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "start":
            self._put(start_row(doc))
            self._thread = threading.Thread(target=self._drain, name="spinlab-catalog", daemon=True)
            self._thread.start()
        elif name == "stop":
            self._put(stop_row(doc))
            self._queue.put(None)
            if self._thread is None:  # a stop without a start (never from the engine)
                self._drain()

    def _put(self, row: dict[str, Any]) -> None:
        _count(+1)
        self._queue.put(row)

    def _drain(self) -> None:
        while (row := self._queue.get()) is not None:
            try:
                self._write(row)
            finally:
                _count(-1)

    def _write(self, row: dict[str, Any]) -> None:
        try:
            from spinlab.catalog.store import Catalog

            Catalog(self.url).record(row)
        except Exception as exc:
            if not self.failed:
                log.warning(
                    "could not record run %s in the catalog %s (%s); the run goes on, "
                    "`spinlab runs reindex` adds it later",
                    row["id"],
                    self.url.split("@")[-1],
                    (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0],
                )
            self.failed = True


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _json(value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


__all__ = [
    "settle",
    "Recorder",
    "read_row",
    "reindex",
    "run_dirs",
    "locked",
    "start_row",
    "stop_row",
    "Reindexed",
]
