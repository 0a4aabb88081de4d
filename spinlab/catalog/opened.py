"""A recorded run as Python objects: :func:`open_run` and :func:`search`.

Why xarray: a run's streams are rows of traces taken at conditions (a bias, a field) at times;
an ``xarray.Dataset`` keeps the rows, the sample axis, those coordinates and the units together,
so ``run.data["sweep"].responses.sel(...)``, a plot or ``to_netcdf`` need no knowledge of the
run-file layout (events appended along axis 0, ``engine/events`` lines saying which rows each
step wrote). Units come from a dataset's ``unit`` attribute or its name's suffix (``_V``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py  # type: ignore[import-untyped]
import numpy as np

from spinlab.catalog.rundirs import RUN_FILE, read_row
from spinlab.errors import ConfigError

#: name suffix -> unit, for datasets recorded without a ``unit`` attribute
_SUFFIX_UNITS = {
    "_V": "V",
    "_A": "A",
    "_s": "s",
    "_T": "T",
    "_Hz": "Hz",
    "_W": "W",
    "_ohm": "ohm",
    "_dB": "dB",
}


def unit_of(name: str, attrs: Mapping[str, Any] | None = None) -> str | None:
    unit = (attrs or {}).get("unit")
    if unit:
        return str(unit)
    for suffix, found in _SUFFIX_UNITS.items():
        if name.endswith(suffix):
            return found
    return None


class Values(Mapping[str, Any]):
    """Read-only results (or a config without an installed plan): ``values["accuracy"]`` or
    ``values.accuracy``; an HTML table in Jupyter."""

    def __init__(self, values: Mapping[str, Any], title: str = "results") -> None:
        self._values, self._title = dict(values), title

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(
                f"no {self._title} value {key!r}; there are: {', '.join(self._values)}"
            ) from None

    def __repr__(self) -> str:
        return f"{self._title}({', '.join(f'{k}={_short(v)}' for k, v in self._values.items())})"

    def _repr_html_(self) -> str:
        return _table(self._values.items(), self._title)


class Run:
    """One recorded run (read-only): ``id, plan, status, started, finished, seed, address,
    config`` (the plan's validated config when the plan is installed), ``results``, ``data``
    (stream name -> ``xarray.Dataset``), ``saved`` (the arrays the plan saved), ``figures``
    (PNG paths), ``stages`` (the runs this one composed), ``tags`` and ``notes`` (catalog)."""

    def __init__(self, path: str | Path, catalog_row: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path).absolute()
        row = read_row(self.path)
        if row is None:
            raise ConfigError(f"{path} is not a run directory (it has no {RUN_FILE})")
        self._row = row
        extra = catalog_row or {}
        self.tags: list[str] = list(extra.get("tags") or [])
        self.notes: list[dict[str, Any]] = list(extra.get("notes") or [])
        self.id: str = row["id"]
        self.plan: str | None = row.get("plan")
        self.status: str = row["status"]
        self.reason: str | None = row.get("reason")
        self.seed: int | None = row.get("seed")
        self.address: str | None = row.get("address")
        self.identity: dict[str, Any] = row.get("identity") or {}
        self.started = _time(row.get("started"))
        self.finished = _time(row.get("finished"))
        self.results = Values(row.get("results") or {}, "results")
        self.config_dict: dict[str, Any] = dict(row.get("config") or {})

    @cached_property
    def config(self) -> Any:
        """The plan's own config object (validated, typed) when the plan is installed; else
        the stored values."""
        for ep in metadata.entry_points(group="spinlab.plans"):
            if ep.name == self.plan:
                try:
                    return ep.load()(self.config_dict).config
                except Exception:  # a config an older spinlab wrote: the values as stored
                    break
        return Values(self.config_dict, "config")

    @cached_property
    def data(self) -> dict[str, Any]:
        """Every stream as an ``xarray.Dataset``: dimension ``row`` (one per recorded row), the
        coordinates ``time`` (when its step ran), ``seq``, ``key`` and the step's conditions
        (its ``meta``: ``bias_A``, ...), a sample axis with its time offsets for traces recorded
        with ``dt_s``, and ``units`` on every variable."""
        with h5py.File(self.path / RUN_FILE, "r") as file:
            return _streams(file)

    @cached_property
    def saved(self) -> Any:
        """The arrays the plan saved (``ctx.save``), as one ``xarray.Dataset``."""
        import xarray as xr

        with h5py.File(self.path / RUN_FILE, "r") as file:
            streamed = {k for keys in _stream_keys(file).values() for k in keys}
            variables: dict[str, Any] = {}

            def visit(name: str, obj: Any) -> None:
                kept = not name.startswith("engine/") and name not in streamed
                if isinstance(obj, h5py.Dataset) and kept and obj.dtype.kind in "biufc":
                    flat = name.replace("/", "_")  # netCDF names hold no "/"
                    variables[flat] = _variable(name, obj[()], {**obj.attrs, "hdf5_path": name}, flat)

            file.visititems(visit)
        return xr.Dataset(variables, attrs={"run_id": self.id})

    @property
    def figures(self) -> list[Path]:
        return sorted(self.path.glob("*.png"))

    @cached_property
    def stages(self) -> list[Run]:
        stages = self.path / "stages"
        found = [p for p in stages.iterdir() if (p / RUN_FILE).is_file()] if stages.is_dir() else []
        return [Run(p) for p in sorted(found, key=lambda p: (int(p.name.split("-")[0]), p.name))]

    def stage(self, name: str) -> Run:
        for stage in self.stages:
            if stage.path.name.split("-", 1)[-1] == name or stage.path.name == name:
                return stage
        raise KeyError(
            f"run {self.id} has no stage {name!r}; its stages: {[s.path.name for s in self.stages]}"
        )

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.plan} {self.status} {self.path}>"

    def _repr_html_(self) -> str:
        summary = {
            "id": self.id,
            "plan": self.plan,
            "status": self.status + (f" ({self.reason})" if self.reason else ""),
            "started": self.started,
            "finished": self.finished,
            "device": self.address,
            "seed": self.seed,
            "path": self.path,
            "streams": ", ".join(f"{k} ({v.sizes.get('row', 0)} rows)" for k, v in self.data.items()),
            "stages": ", ".join(s.path.name for s in self.stages),
            "figures": ", ".join(p.name for p in self.figures),
            "tags": ", ".join(self.tags),
        }
        return (
            _table(summary.items(), f"run {self.id}")
            + _table(self.config_dict.items(), "config")
            + self.results._repr_html_()
        )


def open_run(ref: str | Path, runs_dir: str | Path = "runs") -> Run:
    """The run ``ref`` names: a run directory, or an id or unique id prefix in the catalog of
    ``runs_dir`` (see :func:`spinlab.catalog.location.catalog_url`)."""
    path = Path(ref)
    if (path / RUN_FILE).is_file():
        return Run(path, _catalog_row_of(path, runs_dir))
    from spinlab.catalog.store import Catalog

    row = Catalog.for_runs(runs_dir, create=False).find(str(ref))
    if not row.get("path") or not (Path(row["path"]) / RUN_FILE).is_file():
        raise ConfigError(
            f"run {row['id']} is catalogued at {row.get('path')}, which holds no {RUN_FILE} any more"
        )
    return Run(row["path"], row)


def search(
    runs_dir: str | Path = "runs",
    *,
    plan: str | None = None,
    device: str | None = None,
    status: str | None = None,
    since: str | _dt.datetime | None = None,
    until: str | _dt.datetime | None = None,
    tags: Sequence[str] = (),
    where: str | Sequence[str] = (),
    stages: bool = True,
    limit: int | None = None,
) -> Any:
    """The catalogued runs matching every filter as a ``pandas.DataFrame`` (one row per run,
    newest first, indexed by id): the run's columns, its results by name and its config as
    ``config.<key>``. ``since``/``until`` take a datetime, an ISO date or an age (``3d``)."""
    import pandas as pd

    from spinlab.catalog.store import Catalog
    from spinlab.catalog.where import parse_time

    rows = Catalog.for_runs(runs_dir, create=False).search(
        plan=plan,
        device=device,
        status=status,
        since=parse_time(since, "since") if isinstance(since, str) else since,
        until=parse_time(until, "until") if isinstance(until, str) else until,
        tags=[tags] if isinstance(tags, str) else tags,
        where=[where] if isinstance(where, str) else where,
        parent=False if stages else None,
        limit=limit,
    )
    return pd.DataFrame([flat_row(row) for row in rows], columns=None if rows else list(_BASE)).set_index(
        "id"
    )


_BASE = (
    "id",
    "plan",
    "status",
    "started",
    "finished",
    "address",
    "station",
    "seed",
    "parent",
    "tags",
    "path",
)


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog row as one flat record: the base columns, results by name, ``config.<key>``."""
    flat = {key: row.get(key) for key in _BASE}
    flat["tags"] = ",".join(row.get("tags") or [])
    for key, value in _flatten(row.get("results") or {}):
        flat[key if key not in flat else f"results.{key}"] = value
    for key, value in _flatten(row.get("config") or {}):
        flat[f"config.{key}"] = value
    return flat


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            yield f"{prefix}{key}", value


# --- the run file as xarray --------------------------------------------------------------------
def _stream_keys(file: h5py.File) -> dict[str, list[str]]:
    streams = file["engine/streams"].attrs if "engine/streams" in file else {}
    return {str(name): list(json.loads(streams[name])) for name in streams}


def _streams(file: h5py.File) -> dict[str, Any]:
    import pandas as pd
    import xarray as xr

    events: dict[str, list[dict[str, Any]]] = {}
    if "engine/events" in file:
        for line in file["engine/events"][()]:
            event = json.loads(line)
            events.setdefault(event["stream"], []).append(event)
    out: dict[str, Any] = {}
    for stream, keys in _stream_keys(file).items():
        rows = [e for e in events.get(stream, [])]
        first = next(iter(rows[0]["rows"].values()), 1) if rows else 1
        counts = [int(next(iter(e["rows"].values()), first)) for e in rows]
        n = int(sum(counts))
        repeat = np.repeat(np.arange(len(rows)), counts) if rows else np.zeros(0, int)
        coords: dict[str, Any] = {
            "time": (
                "row",
                pd.to_datetime([rows[i]["time"] for i in repeat], unit="s", utc=True).tz_localize(None),
            ),
            "seq": ("row", np.asarray([rows[i]["seq"] for i in repeat], dtype=int)),
            "key": ("row", np.asarray([str(rows[i]["key"] or "") for i in repeat], dtype=object)),
        }
        for name in sorted({m for e in rows for m, v in (e.get("meta") or {}).items() if _scalar(v)}):
            values = [(rows[i].get("meta") or {}).get(name) for i in repeat]
            coords[name] = ("row", np.asarray([np.nan if v is None else v for v in values]))
            unit = unit_of(name)
            if unit:
                coords[name] = (*coords[name], {"units": unit})
        variables = {}
        for key in keys:
            if key not in file:
                continue
            short = key.removeprefix(stream + "/").replace("/", "_")
            coords.pop(short, None)  # recorded as data: the data wins over the step's meta
            aligned = file[key].shape[0] == n if file[key].ndim else False
            data = file[key][()]
            variables[short] = _variable(short, data, dict(file[key].attrs), short, rows=aligned)
            names = _names(file[key].attrs.get("names"))
            if aligned and data.ndim == 2 and len(names) == data.shape[1]:  # one column per condition
                for i, name in enumerate(names):
                    if name not in variables:
                        unit = unit_of(name)
                        coords[name] = ("row", data[:, i], {"units": unit} if unit else {})
        out[stream] = xr.Dataset(variables, coords=coords, attrs={"stream": stream})
    return out


def _variable(name: str, data: np.ndarray, attrs: Mapping[str, Any], dim: str, rows: bool = False) -> Any:
    import xarray as xr

    attrs = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in attrs.items()}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    dims = ["row"] if rows else []
    coords: dict[str, Any] = {}
    sample_axes = data.ndim - len(dims)
    for axis in range(sample_axes):
        label = f"{dim}_t" if axis == sample_axes - 1 and "dt_s" in attrs else f"{dim}_dim{axis}"
        dims.append(label)
        if label.endswith("_t"):
            size = data.shape[len(dims) - 1]
            t = float(attrs.get("t0_s", 0.0)) + float(attrs["dt_s"]) * np.arange(size)
            coords[label] = xr.Variable(label, t, {"units": "s"})
    unit = unit_of(name, attrs)
    shown = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str)) and k != "unit"}
    if unit:
        shown["units"] = unit
    return xr.DataArray(data, dims=dims, coords=coords, attrs=shown)


def _names(value: Any) -> list[str]:
    """Column names of a table dataset (``"bias_A,field_T"`` or a JSON list)."""
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return [n.strip() for n in value.split(",") if n.strip()]
    return [str(n) for n in parsed] if isinstance(parsed, list) else []


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or value is None


def _catalog_row_of(path: Path, runs_dir: str | Path) -> dict[str, Any] | None:
    """The catalog's row (tags, notes) of a run opened by its directory, when there is one."""
    try:
        from spinlab.catalog.store import Catalog

        row = read_row(path)
        return Catalog.for_runs(runs_dir, create=False).get(row["id"]) if row else None
    except Exception:
        return None


def _time(value: Any) -> _dt.datetime | None:
    if not value:
        return None
    try:
        return _dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _table(items: Any, title: str) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(_short(v) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in items
    )
    return f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>{rows}</table>"


__all__ = ["Run", "Values", "open_run", "search", "flat_row", "unit_of"]
