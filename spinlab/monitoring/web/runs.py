"""The lab notebook beside the live monitor: the catalog's runs as JSON for the page ``/runs``.

Why here: ``spinlab monitor ADDRESS --web PORT --runs-dir runs`` is the page a lab already has
open; the same server lists the catalog (the filters of ``spinlab runs list``), opens a run's
summary and figures and compares runs. Read-only: nothing here writes to the catalog or a run
directory; a run is looked up by its exact id only (never by a path a request names), and a
figure only among the PNGs its run directory lists.

    GET /api/runs?plan=&status=&device=&since=&until=&tag=&where=&limit=   the matching runs
    GET /api/runs/ID                      its summary: catalog row, streams, stages, figures
    GET /api/runs/ID/figures/NAME.png     one of its figures
    GET /api/compare?run=ID&run=ID...     the differing config keys, the results side by side
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spinlab.errors import ConfigError

#: the most runs one listing returns (the newest)
MAX_LIST = 500


class UnknownRun(ConfigError):
    """No catalogued run has this id (404, not 400)."""


class CatalogViews:
    """The JSON behind the page, over the catalog of ``runs_dir`` (opened on first use)."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._catalog: Any = None

    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            from spinlab.catalog.store import Catalog

            self._catalog = Catalog.for_runs(self.runs_dir, create=False)
        return self._catalog

    def runs(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """The runs matching the filters (each a list of the query's values), newest first."""
        from spinlab.catalog.opened import flat_row
        from spinlab.catalog.where import Condition, parse_time

        one = {k: (v[-1] if v else "") for k, v in query.items()}
        unknown = set(query) - {
            "plan",
            "status",
            "device",
            "since",
            "until",
            "tag",
            "where",
            "limit",
            "stages",
        }
        if unknown:
            raise ConfigError(f"unknown filter {sorted(unknown)[0]!r}")
        try:
            limit = min(int(one.get("limit") or 200), MAX_LIST)
        except ValueError:
            raise ConfigError(f"limit {one['limit']!r} is not a whole number") from None
        rows = self.catalog.search(
            plan=one.get("plan") or None,
            device=one.get("device") or None,
            status=one.get("status") or None,
            since=parse_time(one["since"], "since") if one.get("since") else None,
            until=parse_time(one["until"], "until") if one.get("until") else None,
            tags=[t for t in query.get("tag", []) if t],
            where=[Condition.parse(w) for w in query.get("where", []) if w],
            parent=False if one.get("stages") == "1" else None,
            limit=limit,
        )
        results = list(dict.fromkeys(k for r in rows for k in (r.get("results") or {})))
        shown = [k for k in results if all(_plain(r.get("results", {}).get(k)) for r in rows)][:6]
        return {
            "runs": [_jsonable({**_public(r), "flat": flat_row(r)}) for r in rows],
            "results_shown": shown,
            "count": len(rows),
            "limit": limit,
        }

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's summary: its row, and from its run file the streams, stages and figures."""
        from spinlab.catalog.opened import Run

        row = self._row(run_id)
        summary: dict[str, Any] = {"run": _public(row), "streams": {}, "stages": [], "figures": []}
        path = Path(row.get("path") or "")
        if (path / "run.h5").is_file():
            opened = Run(path, row)
            for name, ds in opened.data.items():
                summary["streams"][name] = {
                    "rows": int(ds.sizes.get("row", 0)),
                    "variables": {v: ds[v].attrs.get("units", "") for v in ds.data_vars},
                }
            summary["stages"] = [{"id": s.id, "plan": s.plan, "status": s.status} for s in opened.stages]
            summary["figures"] = [p.name for p in opened.figures]
        else:
            summary["missing"] = f"{path}/run.h5 is not there any more"
        return _jsonable(summary)

    def figure(self, run_id: str, name: str) -> Path:
        """The path of figure ``name`` of the run (only a PNG its directory holds)."""
        row = self._row(run_id)
        path = Path(row.get("path") or "")
        figures = {p.name: p for p in path.glob("*.png")} if path.is_dir() else {}
        if name not in figures:
            raise UnknownRun(f"run {run_id} has no figure {name!r}")
        return figures[name]

    def compare(self, ids: Sequence[str]) -> dict[str, Any]:
        """The config keys that differ (and plan, device, seed, status when they do), then every
        result side by side, as ``spinlab runs compare``."""
        if len(ids) < 2:
            raise ConfigError("give at least two runs to compare (run=ID&run=ID)")
        rows = [self._row(i) for i in ids]
        configs = [dict(_flat(r.get("config") or {})) for r in rows]
        keys = sorted({k for c in configs for k in c})
        differs = {
            k: [c.get(k) for c in configs]
            for k in keys
            if len({json.dumps(c.get(k), default=str) for c in configs}) > 1
        }
        for key, column in (("plan", "plan"), ("device", "address"), ("seed", "seed"), ("status", "status")):
            values = [r.get(column) for r in rows]
            if len({json.dumps(v, default=str) for v in values}) > 1:
                differs = {key: values, **differs}
        results = [dict(_flat(r.get("results") or {})) for r in rows]
        names = list(dict.fromkeys(k for r in results for k in r))
        return _jsonable(
            {
                "runs": [r["id"] for r in rows],
                "differs": differs,
                "same": len(keys) - sum(1 for k in differs if k in keys),
                "results": {k: [r.get(k) for r in results] for k in names},
            }
        )

    def _row(self, run_id: str) -> dict[str, Any]:
        row = self.catalog.get(run_id)
        if row is None:
            raise UnknownRun(f"no run {run_id[:80]!r} in the catalog")
        return dict(row)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "identity"}


def _flat(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _jsonable(value: Any) -> Any:
    """Datetimes as ISO text (UTC, as stored), NaN and infinities as None: strict JSON."""
    return json.loads(json.dumps(value, default=_default), parse_constant=lambda _: None)


def _default(value: Any) -> Any:
    import datetime as _dt

    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=value.tzinfo or _dt.timezone.utc).isoformat()
    return str(value)


__all__ = ["CatalogViews", "UnknownRun", "MAX_LIST"]
