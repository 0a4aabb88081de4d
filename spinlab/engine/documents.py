"""The documents a run emits, in the spirit of Bluesky's event model: their names and fields.

Every subscriber is a callable ``subscriber(name, doc)``; ``doc`` is the TypedDict below that
goes with ``name`` (every one carries the ``run_id``). In the order a run emits them:

``opening``     once, first: :class:`OpeningDoc` (live)
``start``       once: :class:`StartDoc`        ``descriptor``  once per stream: :class:`DescriptorDoc`
``event``       one step: :class:`EventDoc`     ``dataset``     a named array: :class:`DatasetDoc`
``result``      :class:`ResultDoc`              ``progress``    :class:`ProgressDoc` (shown only)
``telemetry``   :class:`TelemetryDoc` (live)    ``preview``     :class:`PreviewDoc` (live)
``stop``        once: :class:`StopDoc`

``start``, ``descriptor``, ``event``, ``dataset``, ``result`` and ``stop`` are durable: the
run-file writer journals and stores them; the others are for live views only. ``opening`` comes
before the device is opened (seconds on a bench), so a live view shows which run is coming
instead of nothing until ``start``. The ZeroMQ publisher sends them under the same names.
"""

from __future__ import annotations

import datetime as _dt
import functools
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from typing_extensions import NotRequired

from spinlab.waveform import Waveform

DURABLE = ("start", "descriptor", "event", "dataset", "result", "stop")
LIVE = ("opening", "progress", "telemetry", "preview")
NAMES = DURABLE + LIVE
STATUSES = ("completed", "aborted", "interrupted", "failed")


class OpeningDoc(TypedDict):
    """Once, before the device is opened: the run as far as it is known without the device."""

    run_id: str
    plan: str
    config: dict[str, Any]
    seed: int
    address: str | None  # the device address being opened (None for a Device passed in)
    path: str
    resumed: int


class StartDoc(TypedDict):
    """Once, first: what runs, where, on what (a resumed run emits another one)."""

    run_id: str
    kind: str  # the plan's name (kept for older readers)
    plan: str
    config: dict[str, Any]  # the plan's settings, as JSON
    seed: int
    address: str | None  # the device address the run opened (None for a Device passed in)
    address_sha256: str | None  # of the file the address names (station file, checkpoint), if any
    identity: dict[str, Any]  # what the device reports (instrument ids, model)
    versions: dict[str, str]  # package versions
    path: str  # the run directory
    started: str  # ISO 8601, UTC
    resumed: int  # how many times this run was resumed
    nexus: dict[str, str]  # NeXus default-plot hints (``signal``, ...)
    figures: dict[str, Any]  # how the figures are written: ``format`` (png, pdf, svg) and ``dpi``


class DataKey(TypedDict):
    dtype: str  # numpy dtype string
    shape: list[int]  # of one row


class DescriptorDoc(TypedDict):
    """Once per stream, before its first event: what each event of the stream holds."""

    run_id: str
    stream: str
    data_keys: dict[str, DataKey]


class EventDoc(TypedDict):
    """One completed step: arrays by name, rows along axis 0."""

    run_id: str
    stream: str
    seq: int  # the step's number within its stream
    key: str  # the plan's name for the step (checked on resume)
    time: float  # unix seconds
    data: dict[str, np.ndarray]
    meta: dict[str, Any]
    attrs: dict[str, Any]  # dataset name -> attributes (``dt_s``, ...)
    replayed: NotRequired[bool]  # re-read from the journal by a resumed run (not stored again)


class DatasetDoc(TypedDict):
    """A named array the plan stores outside the event streams."""

    run_id: str
    name: str
    data: np.ndarray
    attrs: dict[str, Any]


class ResultDoc(TypedDict):
    """Summary values so far (merged into the run's results)."""

    run_id: str
    values: dict[str, Any]


class ProgressDoc(TypedDict):
    """Steps done of total; a plan may add its own fields (loss, ...), shown, not recorded."""

    run_id: str
    done: int
    total: int
    stage: str


class TelemetryDoc(TypedDict):
    """Live-only data for monitors (``twin.loss``, ``instrument.status``, control notices)."""

    run_id: str
    topic: str
    payload: dict[str, Any]
    arrays: dict[str, Any]


class PreviewDoc(TypedDict):
    """A waveform worth showing live (subscribers decimate it)."""

    run_id: str
    name: str
    waveform: Waveform


class StopDoc(TypedDict):
    """Once, last: how the run ended."""

    run_id: str
    status: str  # one of STATUSES
    reason: str
    error: str | None  # the exception's type name
    results: dict[str, Any]
    events: int  # steps recorded
    time: str  # ISO 8601, UTC
    monitor_dropped: int  # documents a ZeroMQ publisher had to drop


#: any document; ``name`` says which
Document = (
    OpeningDoc
    | StartDoc
    | DescriptorDoc
    | EventDoc
    | DatasetDoc
    | ResultDoc
    | ProgressDoc
    | TelemetryDoc
    | PreviewDoc
    | StopDoc
)

_VERSIONED = ("spinlab", "numpy", "scipy", "torch", "torchdiffeq", "pyvisa", "pymeasure", "pyzmq", "h5py")


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


def data_keys(data: Mapping[str, np.ndarray]) -> dict[str, DataKey]:
    """What one event of a stream holds: dtype and per-row shape of every array."""
    return {
        name: {"dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a)[1:])} for name, a in data.items()
    }


__all__ = [
    "DURABLE",
    "LIVE",
    "NAMES",
    "STATUSES",
    "OpeningDoc",
    "StartDoc",
    "DataKey",
    "DescriptorDoc",
    "EventDoc",
    "DatasetDoc",
    "ResultDoc",
    "ProgressDoc",
    "TelemetryDoc",
    "PreviewDoc",
    "StopDoc",
    "Document",
    "now",
    "package_versions",
    "to_jsonable",
    "data_keys",
]
