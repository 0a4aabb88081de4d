"""`spinlab runs`: find, show, compare, tag, note, export and reindex the runs in the catalog.

A RUN is a run id, a unique prefix of one, or a run directory. The catalog is the runs folder's
(``--runs-dir``; see :mod:`spinlab.catalog.location` for ``SPINLAB_CATALOG`` and ``catalog.toml``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from spinlab.cli.common import JsonOption, emit_json, user_errors

RunsDir = typer.Option(Path("runs"), "--runs-dir", help="The runs folder whose catalog is used.")
RunArg = typer.Argument(..., help="A run id, a unique prefix of one, or a run directory.")

app = typer.Typer(
    help="Find, show, compare, tag, export and reindex the runs in the catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _catalog(runs_dir: Path, create: bool = False) -> Any:
    """The catalog of ``runs_dir``; only the commands that write to it may create it."""
    from spinlab.catalog.store import Catalog

    return Catalog.for_runs(runs_dir, create=create)


def _row(runs_dir: Path, ref: str) -> dict[str, Any]:
    """The catalog row of RUN; a run directory not (yet) in the catalog is read from disk."""
    from spinlab.catalog.rundirs import RUN_FILE, read_row

    catalog = _catalog(runs_dir)
    if (Path(ref) / RUN_FILE).is_file():
        row = read_row(Path(ref))
        assert row is not None
        return catalog.get(row["id"]) or {**row, "tags": [], "notes": []}
    return catalog.find(ref)


@app.command("list")
def list_runs(
    runs_dir: Path = RunsDir,
    plan: str | None = typer.Option(None, "--plan", help="Only runs of this plan."),
    device: str | None = typer.Option(None, "--device", help="Only runs whose device address contains this."),
    status: str | None = typer.Option(
        None, "--status", help="completed, running, interrupted, aborted or failed."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Started at or after: 2026-12-01, 2026-12-01T14:30, 3d, 12h."
    ),
    until: str | None = typer.Option(None, "--until", help="Started at or before (same forms as --since)."),
    tag: list[str] = typer.Option([], "--tag", help="Only runs with this tag (repeat for several)."),
    where: list[str] = typer.Option(
        [],
        "--where",
        help="A condition on a result or config value: 'accuracy>0.95', 'bias_A=6e-3' (repeatable).",
    ),
    stages: bool = typer.Option(False, "--stages", help="Also list stages (runs inside a composing run)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many runs (newest first)."),
    json_output: bool = JsonOption,
) -> None:
    """List the catalogued runs matching every filter, newest first."""
    from spinlab.catalog.where import Condition, parse_time

    with user_errors():
        conditions = [Condition.parse(w) for w in where]
        rows = _catalog(runs_dir).search(
            plan=plan,
            device=device,
            status=status,
            since=parse_time(since, "--since") if since else None,
            until=parse_time(until, "--until") if until else None,
            tags=tag,
            where=conditions,
            parent=False if stages else None,
            limit=limit,
        )
    if json_output:
        emit_json({"runs": [_public(r) for r in rows], "count": len(rows)})
        return
    if not rows:
        typer.echo("no runs match", err=True)
        return
    shown = [c.key for c in conditions]
    for key in (k for row in rows for k in (row.get("results") or {})):
        if key not in shown and len(shown) < 4:  # the conditions' values, then a few results
            shown.append(key)
    table = [["id", "plan", "status", "started", "device", *shown]]
    for row in rows:
        values = {**(row.get("config") or {}), **(row.get("results") or {})}
        table.append(
            [
                row["id"],
                row.get("plan") or "",
                row.get("status") or "",
                _when(row.get("started")),
                row.get("address") or "",
                *(_fmt(values.get(k, "")) for k in shown),
            ]
        )
    typer.echo(_columns(table))


@app.command("show")
def show(run: str = RunArg, runs_dir: Path = RunsDir, json_output: bool = JsonOption) -> None:
    """Everything the catalog and the run file say about one run."""
    from spinlab.catalog.opened import Run

    with user_errors():
        row = _row(runs_dir, run)
        opened = Run(row["path"], row) if row.get("path") and Path(row["path"]).is_dir() else None
        streams = {}
        if opened is not None:
            for name, ds in opened.data.items():
                streams[name] = {
                    "rows": int(ds.sizes.get("row", 0)),
                    "variables": {v: ds[v].attrs.get("units", "") for v in ds.data_vars},
                    "conditions": [
                        c for c in ds.coords if c not in ("time", "seq", "key") and ds[c].dims == ("row",)
                    ],
                }
        stages = [s.id for s in opened.stages] if opened is not None else []
        figures = [str(p) for p in opened.figures] if opened is not None else []
    if json_output:
        emit_json({**_public(row), "streams": streams, "stages": stages, "figures": figures})
        return
    lines = [
        f"run       {row['id']}",
        f"plan      {row.get('plan')}",
        f"status    {row.get('status')}" + (f" ({row['reason']})" if row.get("reason") else ""),
        f"started   {_when(row.get('started'))}   finished {_when(row.get('finished'))}",
        f"device    {row.get('address') or '-'}   station {row.get('station') or '-'}",
        f"seed      {row.get('seed')}",
    ]
    for role, idn in (row.get("instruments") or {}).items():
        lines.append(f"  {role:8s}{idn}")
    lines += [
        f"by        {row.get('user') or '?'}@{row.get('host') or '?'}   spinlab {row.get('version') or '?'}",
        f"path      {row.get('path')}",
    ]
    if row.get("parent"):
        lines.append(f"stage of  {row['parent']}")
    if row.get("tags"):
        lines.append(f"tags      {', '.join(row['tags'])}")
    for note in row.get("notes") or []:
        lines.append(f"note      {_when(note['time'])} {note.get('user') or ''}: {note['text']}")
    lines.append("config")
    lines += [f"  {k} = {_fmt(v)}" for k, v in _flat(row.get("config") or {})]
    lines.append("results")
    lines += [f"  {k} = {_fmt(v)}" for k, v in _flat(row.get("results") or {})]
    for name, info in streams.items():
        variables = ", ".join(f"{v} [{u}]" if u else v for v, u in info["variables"].items())
        lines.append(f"stream {name}: {info['rows']} rows; {variables}")
    lines += [f"stage     {s}" for s in stages] + [f"figure    {f}" for f in figures]
    typer.echo("\n".join(lines))


@app.command("compare")
def compare(
    runs: list[str] = typer.Argument(..., help="Two or more runs (ids, prefixes or directories)."),
    runs_dir: Path = RunsDir,
    json_output: bool = JsonOption,
) -> None:
    """The config keys that differ and the results, side by side."""
    with user_errors():
        if len(runs) < 2:
            raise typer.BadParameter("give at least two runs to compare")
        rows = [_row(runs_dir, ref) for ref in runs]
    configs = [dict(_flat(r.get("config") or {})) for r in rows]
    results = [dict(_flat(r.get("results") or {})) for r in rows]
    keys = sorted({k for c in configs for k in c})
    differing = {
        k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1
    }
    header = {
        "plan": [r.get("plan") for r in rows],
        "device": [r.get("address") for r in rows],
        "seed": [r.get("seed") for r in rows],
        "status": [r.get("status") for r in rows],
    }
    header = {k: v for k, v in header.items() if len({json.dumps(x, default=str) for x in v}) > 1}
    result_keys = list(dict.fromkeys(k for r in results for k in r))
    side = {k: [r.get(k) for r in results] for k in result_keys}
    if json_output:
        emit_json({"runs": [r["id"] for r in rows], "differs": {**header, **differing}, "results": side})
        return
    table = [["", *(r["id"] for r in rows)]]
    table += [[k, *map(_fmt, v)] for k, v in header.items()]
    table += [[k, *map(_fmt, v)] for k, v in differing.items()]
    same = len(keys) - len(differing)
    out = [f"config: {len(differing)} key(s) differ, {same} the same"]
    out.append(_columns(table) if len(table) > 1 else "  (the configs are the same)")
    out.append("results")
    out.append(_columns([["", *(r["id"] for r in rows)], *([k, *map(_fmt, v)] for k, v in side.items())]))
    typer.echo("\n".join(out))


@app.command("tag")
def tag(
    run: str = RunArg,
    tags: list[str] = typer.Argument(..., help="Tags to add."),
    remove: bool = typer.Option(False, "--remove", help="Remove these tags instead."),
    runs_dir: Path = RunsDir,
) -> None:
    """Add tags to a run (or remove them)."""
    with user_errors():
        row = _indexed(runs_dir, run)
        _catalog(runs_dir, create=True).tag(row["id"], *tags, remove=remove)
    typer.echo(f"{row['id']}: {'removed' if remove else 'tagged'} {', '.join(tags)}")


@app.command("note")
def note(
    run: str = RunArg, text: str = typer.Argument(..., help="The note."), runs_dir: Path = RunsDir
) -> None:
    """Add a note to a run."""
    import getpass

    with user_errors():
        row = _indexed(runs_dir, run)
        _catalog(runs_dir, create=True).note(row["id"], text, user=getpass.getuser())
    typer.echo(f"{row['id']}: note added")


@app.command("export")
def export(
    run: str = RunArg,
    format: str = typer.Option(
        ...,
        "--format",
        help="csv (a folder of one CSV per stream), netcdf (one file) or bluesky "
        "(event-model documents, one JSON line [name, doc] each).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write (default: named after the run)."
    ),
    runs_dir: Path = RunsDir,
    json_output: bool = JsonOption,
) -> None:
    """Write a run's streams, saved arrays, config and results as CSV files, one netCDF file, or
    its Bluesky event-model documents (JSON lines; large traces referenced in run.h5)."""
    from spinlab.catalog.opened import Run
    from spinlab.errors import ConfigError

    with user_errors():
        if format not in ("csv", "netcdf", "bluesky"):
            raise ConfigError(f"--format {format!r} is not one of csv, netcdf, bluesky")
        row = _row(runs_dir, run)
        opened = Run(row["path"], row)
        if format == "bluesky":
            from spinlab.bluesky import write_jsonl

            written = [write_jsonl(opened.path, out or Path(f"{opened.id}.bluesky.jsonl"))]
        else:
            written = _write_csv(opened, out) if format == "csv" else _write_netcdf(opened, out)
    if json_output:
        emit_json({"run": opened.id, "format": format, "written": [str(p) for p in written]})
        return
    typer.echo("\n".join(str(p) for p in written))


@app.command("serve")
def serve(
    runs_dir: Path = RunsDir,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8050, "--port", min=1, max=65535, help="TCP port."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="SPINLAB_TILED_API_KEY",
        help="The key clients must give (letters and digits; default: a new random one, printed).",
    ),
) -> None:
    """Serve the catalogued runs read-only over HTTP as a Tiled tree (/RUN-ID/sweep/responses, ...),
    for tiled.client.from_uri(URL, api_key=KEY)."""
    from spinlab.catalog.served import app as tiled_app
    from spinlab.catalog.served import new_api_key
    from spinlab.catalog.served import serve as run_server

    with user_errors():
        key = api_key or new_api_key()
        asgi = tiled_app(runs_dir, key)  # a bad key or a missing catalog: one line, before binding
    shown = key if api_key is None else "<the key given>"
    typer.echo(f"serving {runs_dir} at http://{host}:{port}/api/v1 (Tiled; api key {shown}); Ctrl-C stops")
    run_server(asgi, host=host, port=port)


@app.command("reindex")
def reindex(
    runs_dir: Path = RunsDir,
    prune: bool = typer.Option(False, "--prune", help="Also forget catalogued runs whose directory is gone."),
    json_output: bool = JsonOption,
) -> None:
    """Rebuild the catalog from the run directories (the source of truth)."""
    from spinlab.catalog.rundirs import reindex as rebuild
    from spinlab.errors import ConfigError

    with user_errors():
        if not runs_dir.is_dir():
            raise ConfigError(f"{runs_dir} is not a folder of runs")
        done = rebuild(_catalog(runs_dir, create=True), runs_dir, prune=prune)
    if json_output:
        emit_json(
            {
                "added": done.added,
                "updated": done.updated,
                "removed": done.removed,
                "unreadable": done.unreadable,
            }
        )
        return
    for path in done.unreadable:
        typer.secho(
            f"warning: {path}/run.h5 cannot be read; catalogued as interrupted", err=True, fg="yellow"
        )
    typer.echo(f"{len(done.added)} added, {len(done.updated)} updated, {len(done.removed)} removed")


# --- helpers ---------------------------------------------------------------------------------
def _indexed(runs_dir: Path, ref: str) -> dict[str, Any]:
    """RUN's row, recorded in the catalog first if it is a directory the catalog lacks."""
    catalog = _catalog(runs_dir, create=True)
    row = _row(runs_dir, ref)
    if catalog.get(row["id"]) is None:
        catalog.record(row)
    return row


def _write_csv(run: Any, out: Path | None) -> list[Path]:
    folder = out or Path(f"{run.id}-csv")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ds in {**run.data, "saved": run.saved}.items():
        if not ds.data_vars:
            continue
        for dims in {v.dims for v in ds.data_vars.values()}:  # one table per shape
            part = ds[[k for k, v in ds.data_vars.items() if v.dims == dims]]
            path = folder / (
                f"{name}.csv"
                if len({v.dims for v in ds.data_vars.values()}) == 1
                else f"{name}-{'-'.join(dims) or 'scalar'}.csv"
            )
            part.to_dataframe().to_csv(path)
            written.append(path)
    for what in ("config", "results"):
        path = folder / f"{what}.json"
        values = run.config_dict if what == "config" else dict(run.results)
        path.write_text(json.dumps(values, indent=2, default=str) + "\n")
        written.append(path)
    return written


def _write_netcdf(run: Any, out: Path | None) -> list[Path]:
    path = out or Path(f"{run.id}.nc")
    path.unlink(missing_ok=True)
    attrs = {
        "run_id": run.id,
        "plan": run.plan or "",
        "status": run.status,
        "config": json.dumps(run.config_dict, default=str),
        "results": json.dumps(dict(run.results), default=str),
    }
    groups = {**run.data, "saved": run.saved}
    for i, (name, ds) in enumerate(groups.items()):
        ds = ds.copy()
        for coord in ds.coords:
            if ds[coord].dtype == object:
                ds[coord] = ds[coord].astype(str)
        ds.attrs.update(attrs)
        ds.to_netcdf(path, mode="w" if i == 0 else "a", group=name, engine="h5netcdf")
    return [path]


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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "-"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _when(value: Any) -> str:
    """A stored (naive UTC) time in local time, to the second."""
    import datetime as _dt

    if not isinstance(value, _dt.datetime):
        return "-" if not value else str(value)
    return value.replace(tzinfo=_dt.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _columns(table: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


def register(root: typer.Typer) -> None:
    """Add the `runs` group to the app."""
    root.add_typer(app, name="runs")
