"""The documents a run emits, in the spirit of Bluesky's event model.

Every subscriber is a callable ``subscriber(name, doc)``. The names, in the order a run emits
them:

``start``       once: ``run_id, kind, plan, config, seed, device (address), identity (what the
                device reports), versions, path, time, resumed`` (number of resumptions)
``descriptor``  once per stream, before its first event: ``stream, data_keys`` (name ->
                ``{"dtype", "shape"}``, shape of one row)
``event``       one completed step: ``stream, seq, key, time, data`` (name -> array, rows along
                axis 0), ``meta``; ``replayed`` when a resumed run re-reads it from the journal
``dataset``     a named array the plan stores outside the event streams: ``name, data, attrs``
``result``      summary values so far: ``values``
``progress``    ``done, total, stage`` and fields (not recorded, shown)
``telemetry``   live-only data for monitors: ``topic, payload, arrays`` (twin loss, ...)
``preview``     a waveform worth showing live: ``name, waveform`` (subscribers decimate)
``stop``        once: ``status`` (completed | aborted | interrupted | failed), ``reason``,
                ``error`` (exception type), ``results``, ``events`` (count), ``time``

``start``, ``descriptor``, ``event``, ``dataset``, ``result`` and ``stop`` are durable: the
run-file writer journals and stores them; the others are for live views only.
"""
from __future__ import annotations

import datetime as _dt
import functools
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DURABLE = ("start", "descriptor", "event", "dataset", "result", "stop")
LIVE = ("progress", "telemetry", "preview")
NAMES = DURABLE + LIVE
STATUSES = ("completed", "aborted", "interrupted", "failed")

_VERSIONED = ("spinlab", "numpy", "scipy", "torch", "torchdiffeq", "pyvisa", "pymeasure", "pyzmq",
              "h5py")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str]:
    """Versions stored in every start document (read once per process: metadata lookups scan
    site-packages)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def to_jsonable(value: Any) -> Any:
    """Config/result values -> plain JSON types (numpy scalars and arrays, Paths, tuples)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):  # pydantic models
        return to_jsonable(value.model_dump())
    return value


def data_keys(data: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """What one event of a stream holds: dtype and per-row shape of every array."""
    return {name: {"dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a)[1:])}
            for name, a in data.items()}


__all__ = ["DURABLE", "LIVE", "NAMES", "STATUSES", "now", "package_versions", "to_jsonable",
           "data_keys"]
