"""A run: one protocol execution with its directory, its HDF5 file and its event stream.

Protocols (the *plan*) get a Run and record into it; they never open files or sockets themselves.
The run file holds everything needed to reproduce and audit the run: config, seeds, device
identity, package versions, data, results and a final status (completed / aborted / failed).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import secrets
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from spinlab.errors import RunAborted, WaveformError
from spinlab.waveform import Waveform

log = logging.getLogger("spinlab.run")

_VERSIONED = ("spinlab", "numpy", "scipy", "torch", "torchdiffeq", "pyvisa", "pymeasure", "pyzmq", "h5py")


def package_versions() -> dict[str, str]:
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
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class NullEvents:
    """Event sink used when no monitor address is given: publishing costs nothing."""

    dropped = 0

    def publish(self, topic: str, header: Mapping[str, Any] | None = None,
                arrays: Mapping[str, np.ndarray] | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Run:
    """Context manager around one protocol execution.

    ``with Run("characterize", config, device=dev) as run: ...`` creates
    ``<root>/<timestamp>-<kind>-<id>/run.h5``. On a normal exit the status is ``completed``; on
    :class:`RunAborted` or Ctrl-C ``aborted``; on any other exception ``failed`` (the exception
    is re-raised). Data written before the end is flushed in every case.
    """

    def __init__(self, kind: str, config: Mapping[str, Any], *, root: str | Path = "runs",
                 device: Any = None, monitor: str | None = None, control: str | None = None,
                 control_keys: str | Path | None = None) -> None:
        self.kind = kind
        self.config = to_jsonable(dict(config))
        self.run_id = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{kind}-{secrets.token_hex(3)}"
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=False)
        self.file = h5py.File(self.path / "run.h5", "w")
        self.file.attrs["kind"] = kind
        self.file.attrs["run_id"] = self.run_id
        self.file.attrs["config"] = json.dumps(self.config)
        self.file.attrs["versions"] = json.dumps(package_versions())
        self.file.attrs["started"] = _now()
        self.file.attrs["status"] = "running"
        self.seeds: dict[str, int] = {}
        self.results: dict[str, Any] = {}
        self.status = "running"
        self.last_progress: dict[str, Any] = {}
        self.events = self._open_events(monitor)
        self._log_handler = self._attach_log_handler()
        try:
            self.control = self._open_control(control, control_keys)
        except Exception:  # e.g. missing keys: do not leave a half-open run behind
            self._detach_log_handler()
            self.events.close()
            self.file.attrs["status"] = "failed"
            self.file.close()
            raise
        if device is not None:
            self.set_device(device)
        self.publish("run.start", {"kind": kind, "config": self.config, "path": str(self.path)})

    # --- monitoring hooks (spinlab.monitoring provides the real implementations) ------------
    def _open_events(self, monitor: str | None):
        if not monitor:
            return NullEvents()
        from spinlab.monitoring import Publisher

        return Publisher(monitor, run_id=self.run_id)

    def _open_control(self, control: str | None, keys: str | Path | None):
        if not control:
            return None
        from spinlab.monitoring import ControlServer

        return ControlServer(control, keys_dir=keys, run=self)

    def _attach_log_handler(self):
        """While the run is active, records of the ``spinlab`` logger go out as ``log`` events."""
        if isinstance(self.events, NullEvents):
            return None
        from spinlab.monitoring import PublishingHandler

        handler = PublishingHandler(self.publish)
        logging.getLogger("spinlab").addHandler(handler)
        return handler

    def _detach_log_handler(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("spinlab").removeHandler(self._log_handler)
            self._log_handler = None

    def publish(self, topic: str, header: Mapping[str, Any] | None = None,
                arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Send an event to watchers; never blocks, never raises into the protocol."""
        if isinstance(self.events, NullEvents):
            return  # no monitor: skip the JSON conversion on the acquisition path
        try:
            self.events.publish(topic, to_jsonable(dict(header or {})), arrays)
        except Exception:  # monitoring must never break acquisition
            log.exception("publishing %s failed", topic)

    def progress(self, done: int, total: int, **fields: Any) -> None:
        self.last_progress = {"done": int(done), "total": int(total), **to_jsonable(fields)}
        self.publish("progress", self.last_progress)

    def preview(self, name: str, waveform: Waveform, max_points: int = 1000,
                method: str = "minmax") -> None:
        """Publish a decimated copy of ``waveform`` (topic ``waveform``) for live views."""
        if isinstance(self.events, NullEvents):
            return
        try:
            from spinlab.monitoring import preview

            small = preview(waveform, max_points, method)
            self.publish("waveform", {"name": name, "dt_s": small.dt_s, "unit": small.unit,
                                      "t0_s": small.t0_s, "decimation": small.meta["decimation"],
                                      "factor": small.meta["factor"],
                                      "n_original": int(np.shape(getattr(waveform, "samples", waveform))[-1])},
                         {"samples": small.samples})
        except Exception:  # monitoring must never break acquisition
            log.exception("waveform preview %s failed", name)

    def instrument_status(self, name: str, **fields: Any) -> None:
        """Publish one instrument's state (topic ``instrument.status``; latest kept per name)."""
        self.publish("instrument.status", {"name": name, **fields})

    def checkpoint(self) -> None:
        """Call between steps: serves remote control (pause blocks here, abort raises)."""
        if self.control is not None:
            self.control.service()

    # --- recording -------------------------------------------------------------------------
    def set_device(self, device: Any) -> None:
        identity = device.identity() if hasattr(device, "identity") else {"address": str(device)}
        self.file.attrs["device"] = json.dumps(to_jsonable(identity))

    def record_seed(self, name: str, seed: int) -> int:
        """Remember the seed of a random choice (mask, split, noise); returns it."""
        self.seeds[name] = int(seed)
        self.file.attrs["seeds"] = json.dumps(self.seeds)
        return int(seed)

    def save(self, name: str, data: np.ndarray | Waveform, **attrs: Any) -> None:
        """Write (or overwrite) a dataset; a Waveform keeps dt_s, unit and t0_s as attributes."""
        if isinstance(data, Waveform):
            attrs = {"dt_s": data.dt_s, "unit": data.unit, "t0_s": data.t0_s, **attrs}
            data = data.samples
        arr = _finite(data, "write", name)
        if name in self.file:
            del self.file[name]
        ds = self.file.create_dataset(name, data=arr, compression="gzip" if arr.size > 4096 else None)
        for key, value in attrs.items():
            ds.attrs[key] = json.dumps(to_jsonable(value)) if isinstance(value, (dict, list)) else value

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append rows along axis 0 of a growable dataset (created on first use)."""
        rows = _finite(rows, "append", name)
        if name not in self.file:
            self.file.create_dataset(name, data=rows, maxshape=(None, *rows.shape[1:]),
                                     chunks=True)
            return
        ds = self.file[name]
        start = ds.shape[0]
        ds.resize(start + rows.shape[0], axis=0)
        ds[start:] = rows

    def result(self, **values: Any) -> None:
        """Add summary results (stored as JSON in the run file and published)."""
        self.results.update(to_jsonable(values))
        self.file.attrs["results"] = json.dumps(self.results)
        self.publish("result", self.results)

    def figure_path(self, name: str) -> Path:
        return self.path / name

    def flush(self) -> None:
        self.file.flush()

    # --- lifecycle -------------------------------------------------------------------------
    def finish(self, status: str) -> None:
        if self.status != "running":
            return
        self.status = status
        self.file.attrs["status"] = status
        self.file.attrs["finished"] = _now()
        self.file.flush()
        self.file.attrs["monitor_dropped"] = int(self.events.dropped)
        self.publish("run.stop", {"status": status, "results": self.results,
                                  "dropped": int(self.events.dropped)})
        self._detach_log_handler()
        self.file.close()
        if self.control is not None:
            self.control.close()
        self.events.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("completed")
            return False
        self.publish("error", {"type": exc_type.__name__, "message": str(exc)})
        self.finish("aborted" if issubclass(exc_type, (RunAborted, KeyboardInterrupt)) else "failed")
        return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _finite(data: Any, verb: str, name: str) -> np.ndarray:
    """``data`` as an array; float data with NaN/inf is refused before it reaches the file."""
    arr = np.asarray(data)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise WaveformError(f"refusing to {verb} non-finite values to dataset {name!r}; "
                         "check the measurement or replace them before saving")
    return arr
