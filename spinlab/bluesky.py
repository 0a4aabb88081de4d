"""A run's documents as Bluesky event-model documents, live or from its run file.

Why: a Bluesky lab already subscribes databroker, Tiled or its own callbacks to event-model
documents; spinlab's own documents (:mod:`spinlab.engine.documents`) carry the same facts, so one
translator lets such a lab take a spinlab run as it runs (:class:`BlueskyForwarder`, a run
subscriber) or afterwards (:func:`documents`, ``spinlab runs export RUN --format bluesky``).

The mapping: ``start`` -> RunStart (its ``uid`` derived from the run id, so a live and an exported
run agree); each stream -> an EventDescriptor, sent before its first events; a spinlab event of
``n`` rows -> an EventPage of ``n`` events (small values and the step's conditions inline);
traces larger than ``inline_max`` values per row stay in ``run.h5``: a StreamResource per trace
and a StreamDatum per step naming its rows (``indices``); ``stop`` -> RunStop (the results
travel in it as ``results``). Documents validate against event-model's schemas.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from spinlab.catalog.opened import unit_of
from spinlab.engine.documents import to_jsonable

RUN_FILE = "run.h5"
#: a trace with more values than this per row is referenced in run.h5, not copied into events
INLINE_MAX = 64
HDF5_MIMETYPE = "application/x-hdf5"
_EXIT = {"completed": "success", "aborted": "abort"}  # failed, interrupted -> "fail"

Callback = Callable[[str, dict[str, Any]], Any]


def run_uid(run_id: str) -> str:
    """The RunStart uid of a spinlab run: the same for the live documents and an export."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"spinlab:run:{run_id}"))


class BlueskyForwarder:
    """Run subscriber: translates spinlab's documents and hands each event-model document to
    ``callback(name, doc)`` (a databroker/Tiled writer, a ``DocumentRouter``, a list's append).

        RunEngine("runs").run(plan, "sim:vortex", subscribers=[BlueskyForwarder(print)])

    ``validate=True`` checks each document against event-model's schemas before handing it on:
    about 1.5 ms a step (jsonschema), paid inside the run's step, so off by default live (the
    tests validate a run's documents; :func:`documents` validates what it exports).
    """

    def __init__(self, callback: Callback, *, inline_max: int = INLINE_MAX, validate: bool = False) -> None:
        self.callback, self.inline_max, self.validate = callback, inline_max, validate
        self._start: dict[str, Any] | None = None
        self._keys: dict[str, dict[str, Any]] = {}  # stream -> spinlab data_keys
        self._descriptors: dict[str, dict[str, Any]] = {}  # stream -> EventDescriptor
        self._conditions: dict[str, list[str]] = {}  # stream -> meta keys sent as data
        self._resources: dict[str, tuple[dict[str, Any], int]] = {}  # hdf5 key -> (resource, datums)
        self._rows: dict[str, int] = {}  # hdf5 key -> rows so far in run.h5
        self._seq: dict[str, int] = {}  # stream -> Bluesky events so far
        self._results: dict[str, Any] = {}
        self._file = ""

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(doc)

    # --- spinlab documents ---------------------------------------------------------------------
    def _on_start(self, doc: Mapping[str, Any]) -> None:
        if self._start is not None:  # a resumed run starts again: one RunStart per run
            return
        self._file = str(Path(doc["path"]).absolute() / RUN_FILE)
        metadata = {
            "plan_name": doc["plan"],
            "spinlab_run_id": doc["run_id"],
            "plan_args": doc.get("config") or {},
            "seed": doc.get("seed"),
            "address": doc.get("address"),
            "identity": doc.get("identity") or {},
            "versions": doc.get("versions") or {},
            "path": str(doc["path"]),
        }
        self._start = {"uid": run_uid(doc["run_id"]), "time": _unix(doc.get("started")), **metadata}
        self._emit("start", self._start)

    def _on_descriptor(self, doc: Mapping[str, Any]) -> None:
        self._keys[str(doc["stream"])] = dict(doc.get("data_keys") or {})

    def _on_event(self, doc: Mapping[str, Any]) -> None:
        assert self._start is not None, "an event before the run's start"
        stream = str(doc["stream"])
        data = {k: np.asarray(v) for k, v in doc["data"].items()}
        data = {k: (v[None] if v.ndim == 0 else v) for k, v in data.items()}
        n = int(next(iter(data.values())).shape[0]) if data else 1
        t = float(doc.get("time") or 0.0)
        meta = {k: v for k, v in (doc.get("meta") or {}).items() if _number(v)}
        if stream not in self._descriptors:
            self._describe(stream, data, doc.get("attrs") or {}, meta, t)
        descriptor = self._descriptors[stream]
        first = self._seq.get(stream, 0) + 1
        self._seq[stream] = first + n - 1
        for key in data:
            start = self._rows.get(key, 0)
            self._rows[key] = start + n
            if _short(stream, key) in descriptor["data_keys"] and key in self._resources:
                resource, count = self._resources[key]
                self._resources[key] = (resource, count + 1)
                datum = {
                    "uid": f"{resource['uid']}/{count}",
                    "stream_resource": resource["uid"],
                    "descriptor": descriptor["uid"],
                    "indices": {"start": start, "stop": start + n},
                    "seq_nums": {"start": first, "stop": first + n},
                }
                self._emit("stream_datum", datum)
        inline: dict[str, Any] = {
            _short(stream, k): v
            for k, v in data.items()
            if k not in self._resources and _short(stream, k) in descriptor["data_keys"] and len(v) == n
        }
        for name in self._conditions[stream]:
            inline[name] = [meta.get(name)] * n  # None where a step lacks it (JSON null)
        if not inline:
            return
        page = {
            "descriptor": descriptor["uid"],
            "uid": [str(uuid.uuid4()) for _ in range(n)],
            "seq_num": list(range(first, first + n)),
            "time": [t] * n,
            "data": {k: to_jsonable(v) for k, v in inline.items()},
            "timestamps": {k: [t] * n for k in inline},
            "filled": {},
        }
        self._emit("event_page", page)

    def _on_result(self, doc: Mapping[str, Any]) -> None:
        self._results.update(to_jsonable(doc.get("values") or {}))

    def _on_stop(self, doc: Mapping[str, Any]) -> None:
        if self._start is None:
            return
        status = str(doc.get("status"))
        stop = {
            "uid": str(uuid.uuid4()),
            "run_start": self._start["uid"],
            "time": _unix(doc.get("time")),
            "exit_status": _EXIT.get(status, "fail"),
            "reason": str(doc.get("reason") or ""),
            "num_events": dict(self._seq),
            "spinlab_status": status,
            "results": {**self._results, **to_jsonable(doc.get("results") or {})},
        }
        self._emit("stop", stop)

    # --- helpers -------------------------------------------------------------------------------
    def _describe(
        self,
        stream: str,
        data: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any],
        meta: Mapping[str, Any],
        t: float,
    ) -> None:
        assert self._start is not None
        keys: dict[str, Any] = {}
        shapes = {k: list(v.shape[1:]) for k, v in data.items()}
        for key, info in self._keys.get(stream, {}).items():
            shapes.setdefault(key, list(info.get("shape") or []))
        for key, shape in shapes.items():
            dtype = np.dtype(data[key].dtype if key in data else self._keys[stream][key]["dtype"])
            entry: dict[str, Any] = {
                "dtype": "array" if shape else _json_type(dtype),
                "dtype_numpy": dtype.str,
                "shape": shape,
                "source": f"spinlab:{self._file}#{key}",
                "units": unit_of(key.rsplit("/", 1)[-1], attrs.get(key)),
            }
            if int(np.prod(shape)) > self.inline_max:
                entry["external"] = "STREAM:"
            keys[_short(stream, key)] = entry
        conditions = [m for m in meta if m not in keys]
        for name in conditions:
            keys[name] = {"dtype": "number", "shape": [], "source": "spinlab:meta", "units": unit_of(name)}
        self._conditions[stream] = conditions
        descriptor = {
            "uid": str(uuid.uuid4()),
            "run_start": self._start["uid"],
            "name": stream,
            "time": t,
            "data_keys": keys,
            "configuration": {},
            "hints": {stream: {"fields": [k for k in keys if keys[k]["source"] != "spinlab:meta"]}},
            "object_keys": {stream: list(keys)},
        }
        self._descriptors[stream] = descriptor
        self._emit("descriptor", descriptor)
        for key, shape in shapes.items():
            if keys[_short(stream, key)].get("external"):
                resource = {
                    "uid": str(uuid.uuid4()),
                    "run_start": self._start["uid"],
                    "data_key": _short(stream, key),
                    "mimetype": HDF5_MIMETYPE,
                    "uri": Path(self._file).as_uri(),
                    "parameters": {"dataset": "/" + key, "chunk_shape": [1, *shape]},
                }
                self._resources[key] = (resource, 0)
                self._emit("stream_resource", resource)

    def _emit(self, name: str, doc: dict[str, Any]) -> None:
        if self.validate:
            from event_model import DocumentNames, schema_validators

            schema_validators[DocumentNames[name]].validate(doc)
        self.callback(name, doc)


def documents(run_dir: str | Path, *, inline_max: int = INLINE_MAX) -> Iterator[tuple[str, dict[str, Any]]]:
    """The event-model documents of a recorded run, ``(name, doc)`` in order, from its run file
    (the traces referenced in it, as the live forwarder does)."""
    out: list[tuple[str, dict[str, Any]]] = []
    forwarder = BlueskyForwarder(
        lambda name, doc: out.append((name, doc)), inline_max=inline_max, validate=True
    )
    for name, doc in _spinlab_documents(Path(run_dir)):
        forwarder(name, doc)
        yield from out
        out.clear()


def _spinlab_documents(run_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """spinlab's durable documents again, read back from ``run.h5`` (the journal of a completed
    run is gone; the file holds every step)."""
    with h5py.File(run_dir / RUN_FILE, "r") as file:
        attrs = file.attrs
        run_id = _text(attrs.get("run_id")) or run_dir.name
        yield (
            "start",
            {
                "run_id": run_id,
                "plan": _text(attrs.get("plan")) or _text(attrs.get("kind")),
                "config": json.loads(_text(attrs.get("config")) or "{}"),
                "seed": int(attrs.get("seed", 0)),
                "address": _text(attrs.get("address")),
                "identity": json.loads(_text(attrs.get("device")) or "{}"),
                "versions": json.loads(_text(attrs.get("versions")) or "{}"),
                "path": str(run_dir.absolute()),
                "started": _text(attrs.get("started")),
            },
        )
        streams = file["engine/streams"].attrs if "engine/streams" in file else {}
        for stream in streams:
            yield "descriptor", {"run_id": run_id, "stream": stream, "data_keys": json.loads(streams[stream])}
        rows: dict[str, int] = {}
        for line in file["engine/events"][()] if "engine/events" in file else []:
            event = json.loads(line)
            data = {}
            for key, n in event["rows"].items():
                start = rows.get(key, 0)
                rows[key] = start + int(n)
                data[key] = file[key][start : start + int(n)]
            event_attrs = {k: dict(file[k].attrs) for k in data}
            yield "event", {**event, "run_id": run_id, "data": data, "attrs": event_attrs}
        status = _text(attrs.get("status")) or "interrupted"
        if status == "running":  # a run that died without its stop document
            status = "interrupted"
        yield (
            "stop",
            {
                "run_id": run_id,
                "status": status,
                "reason": _text(attrs.get("reason")) or "",
                "results": json.loads(_text(attrs.get("results")) or "{}"),
                "time": _text(attrs.get("finished")),
            },
        )


def write_jsonl(run_dir: str | Path, out: Path) -> Path:
    """``spinlab runs export --format bluesky``: one JSON line ``[name, doc]`` per document."""
    with open(out, "w") as stream:
        for name, doc in documents(run_dir):
            stream.write(json.dumps([name, doc], allow_nan=True) + "\n")
    return out


def _short(stream: str, key: str) -> str:
    """A run-file key as a Bluesky data key (``sweep/responses`` -> ``responses``), as in
    :func:`spinlab.open_run`'s Datasets."""
    return key.removeprefix(stream + "/").replace("/", "_")


def _json_type(dtype: np.dtype) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "number"}.get(dtype.kind, "string")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unix(iso: Any) -> float:
    if not iso:
        return 0.0
    try:
        return _dt.datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


__all__ = ["BlueskyForwarder", "documents", "write_jsonl", "run_uid", "INLINE_MAX"]
