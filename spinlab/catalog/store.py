"""The catalog: one database row per run, written as a run starts and when it stops.

Where it is: :func:`~spinlab.catalog.location.catalog_url`.

Two processes may write at once: SQLite in WAL mode with every transaction taken for writing
at its start (``BEGIN IMMEDIATE``) and a 30 s busy wait, PostgreSQL as it is; the schema is
migrated under a lock (PostgreSQL's advisory lock). The run directories stay the source of
truth: :mod:`spinlab.catalog.rundirs` rebuilds rows from them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from spinlab.catalog import schema
from spinlab.catalog.location import CONFIG_FILE, ENV, SQLITE_FILE, catalog_url
from spinlab.catalog.where import Condition, to_utc
from spinlab.errors import ConfigError

_ADVISORY_KEY = 0x5350494E  # "SPIN": the PostgreSQL lock the schema migration holds
#: the columns a run row has (besides its values, tags and notes)
COLUMNS = tuple(c.name for c in schema.runs.columns)


@functools.cache
def _engine(url: str) -> sa.Engine:
    """One engine (connection pool) per URL and process."""
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # no pool: a connection per transaction, so no file stays open (and no -wal/-shm
        # files stay beside the catalog) between a run's start and its stop
        engine = sa.create_engine(url, connect_args={"timeout": 30.0}, poolclass=sa.pool.NullPool)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi: Any, record: Any) -> None:
            dbapi.isolation_level = None  # we say BEGIN ourselves (below)
            cursor = dbapi.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # a writer waits here, never mid-transaction

        return engine
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


class Catalog:
    """The runs of one catalog database: record, find, search, tag and note them."""

    _migrated: set[str] = set()
    _migrating = threading.Lock()

    def __init__(self, url: str, *, settle: bool = True) -> None:
        """``settle``: first wait for this process's writes in flight (so it reads its own runs)."""
        if settle and threading.current_thread().name != "spinlab-catalog":
            from spinlab.catalog.rundirs import settle as wait_for_writes

            wait_for_writes()
        self.url = url
        self.engine = _engine(url)
        if url not in Catalog._migrated:
            with Catalog._migrating, self._write() as conn:
                schema.migrate(conn)
            Catalog._migrated.add(url)

    @classmethod
    def for_runs(cls, runs_dir: str | Path, *, create: bool = True) -> Catalog:
        """The catalog of the runs in ``runs_dir``; ``create=False`` refuses to make a new
        SQLite file (a read should not leave an empty catalog behind)."""
        url = catalog_url(runs_dir)
        if url is None:
            raise ConfigError(f"the catalog is switched off ({ENV}={os.environ.get(ENV)})")
        path = sa.make_url(url).database if url.startswith("sqlite") else None
        if not create and path and path != ":memory:" and not Path(path).is_file():
            raise ConfigError(
                f"no catalog at {path}: no run has been recorded there yet "
                f"(`spinlab runs reindex --runs-dir {runs_dir}` builds one from its run directories)"
            )
        return cls(url)

    def __repr__(self) -> str:
        return f"Catalog({sa.make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
            yield conn

    # --- writing -----------------------------------------------------------------------------
    def record(self, row: Mapping[str, Any]) -> None:
        """Insert or update a run (``row``: some of :data:`COLUMNS`, ``id`` required); columns
        given as None keep what the catalog has. Its config and results become its values."""
        self.record_many([row])

    def record_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`record` for many runs in one transaction and a few statements (a reindex)."""
        cells = [{k: _cell(k, v) for k, v in row.items() if k in COLUMNS} for row in rows]
        cells = list({str(row["id"]): row for row in cells}.values())  # one row per id: the last
        if not cells:
            return
        v = schema.run_values.c
        with self.engine.begin() as conn:
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in cells:
                by_columns.setdefault(tuple(sorted(row)), []).append(row)
            for group in by_columns.values():
                _upsert(conn, schema.runs, group, "id")
            for source, field in (("config", "config"), ("result", "results")):
                ids = [str(row["id"]) for row in cells if row.get(field) is not None]
                for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                    conn.execute(schema.run_values.delete().where(v.run_id.in_(chunk), v.source == source))
                values = [
                    {"run_id": str(row["id"]), "source": source, "key": key, "num": num, "text": text}
                    for row in cells
                    if row.get(field) is not None
                    for key, num, text in _scalars(row[field])
                ]
                if values:
                    conn.execute(schema.run_values.insert(), values)

    def tag(self, run_id: str, *tags: str, remove: bool = False) -> None:
        with self.engine.begin() as conn:
            for tag in tags:
                conn.execute(
                    schema.tags.delete().where(schema.tags.c.run_id == run_id, schema.tags.c.tag == tag)
                )
                if not remove:
                    conn.execute(schema.tags.insert().values(run_id=run_id, tag=tag))

    def note(self, run_id: str, text: str, user: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                schema.notes.insert().values(
                    run_id=run_id, text=text, user=user, time=to_utc(_dt.datetime.now(_dt.timezone.utc))
                )
            )

    def forget(self, run_ids: Iterable[str]) -> None:
        """Remove runs from the catalog (their directories are untouched)."""
        ids = list(run_ids)
        with self.engine.begin() as conn:
            for table in (schema.run_values, schema.tags, schema.notes):
                conn.execute(table.delete().where(table.c.run_id.in_(ids)))
            conn.execute(schema.runs.delete().where(schema.runs.c.id.in_(ids)))

    # --- reading -----------------------------------------------------------------------------
    def search(
        self,
        *,
        plan: str | None = None,
        device: str | None = None,
        status: str | None = None,
        since: _dt.datetime | None = None,
        until: _dt.datetime | None = None,
        tags: Sequence[str] = (),
        where: Sequence[str | Condition] = (),
        parent: str | None | bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs matching every filter, newest first, as dicts (the columns, ``tags`` and
        ``notes``). ``device`` matches a part of the address; ``parent``: False for every run,
        None for top-level runs only, an id for that run's stages."""
        r = schema.runs.c
        query = sa.select(schema.runs)
        if plan:
            query = query.where(r.plan == plan)
        if device:
            query = query.where(r.address.contains(device, autoescape=True))
        if status:
            query = query.where(r.status == status)
        if since is not None:
            query = query.where(r.started >= to_utc(since))
        if until is not None:
            query = query.where(r.started <= to_utc(until))
        if parent is None:
            query = query.where(r.parent.is_(None))
        elif parent is not False:
            query = query.where(r.parent == parent)
        for tag in tags:
            query = query.where(sa.exists().where(schema.tags.c.run_id == r.id, schema.tags.c.tag == tag))
        for cond in where:
            query = query.where(_condition(Condition.parse(cond) if isinstance(cond, str) else cond))
        query = query.order_by(r.started.desc(), r.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
            return self._with_tags_and_notes(conn, rows)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            rows = [
                dict(row._mapping)
                for row in conn.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id))
            ]
            return self._with_tags_and_notes(conn, rows)[0] if rows else None

    def find(self, ref: str | Path) -> dict[str, Any]:
        """A run by id, unique id prefix or directory; one clear line when there is none or several."""
        text = str(ref)
        r = schema.runs.c
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(r.id).where(r.id == text)).scalars().all()
            path = Path(text)
            if not found and path.exists():
                found = conn.execute(sa.select(r.id).where(r.path == str(path.resolve()))).scalars().all()
            if not found:
                found = (
                    conn.execute(sa.select(r.id).where(r.id.startswith(text, autoescape=True)).limit(6))
                    .scalars()
                    .all()
                )
        if not found:
            raise ConfigError(
                f"no run {text!r} in the catalog {self.url} (spinlab runs reindex adds runs on disk)"
            )
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise ConfigError(f"{text!r} names several runs ({shown}); give more of the id")
        row = self.get(found[0])
        assert row is not None
        return row

    def ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(schema.runs.c.id)).scalars())

    def _with_tags_and_notes(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [row["id"] for row in rows]
        tags: dict[str, list[str]] = {i: [] for i in ids}
        notes: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            t = schema.tags.c
            for run_id, tag in conn.execute(
                sa.select(t.run_id, t.tag).where(t.run_id.in_(chunk)).order_by(t.tag)
            ):
                tags[run_id].append(tag)
            n = schema.notes.c
            query = sa.select(n.run_id, n.time, n.user, n.text).where(n.run_id.in_(chunk)).order_by(n.id)
            for run_id, time, user, text in conn.execute(query):
                notes[run_id].append({"time": time, "user": user, "text": text})
        for row in rows:
            row["tags"], row["notes"] = tags[row["id"]], notes[row["id"]]
        return rows


def _condition(cond: Condition) -> sa.ColumnElement[bool]:
    v = schema.run_values.c
    match = sa.exists().where(v.run_id == schema.runs.c.id, v.key == cond.key)
    if isinstance(cond.value, str):
        test = v.text == cond.value
        return match.where(test) if cond.op == "=" else match.where(v.text != cond.value)
    x, tol = cond.value, 1e-9 * abs(cond.value) + 1e-300
    tests = {
        "=": v.num.between(x - tol, x + tol),
        "!=": sa.not_(v.num.between(x - tol, x + tol)),
        ">": v.num > x,
        ">=": v.num >= x,
        "<": v.num < x,
        "<=": v.num <= x,
    }
    return match.where(tests[cond.op])


def _scalars(values: Any, prefix: str = "") -> Iterator[tuple[str, float | None, str | None]]:
    """``(key, number, text)`` of every scalar in nested dicts (``a.b`` keys); lists are skipped."""
    if not isinstance(values, Mapping):
        return
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalars(value, name + ".")
        elif isinstance(value, bool):
            yield name, float(value), str(value).lower()
        elif isinstance(value, (int, float)):
            number = float(value)
            yield name, number if math.isfinite(number) else None, str(value)
        elif isinstance(value, str):
            yield name, None, value


def _cell(key: str, value: Any) -> Any:
    if key in ("started", "finished"):
        return to_utc(value)
    if key in ("config", "results", "identity", "instruments") and value is not None:
        return _json_safe(value)
    return value


def _json_safe(value: Any) -> Any:
    """JSON the database accepts: NaN and infinity become None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key: str) -> None:
    """Insert ``rows`` (all with the same columns), or update the rows with the same ``key``:
    a column given as None keeps the value the catalog has."""
    insert: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - another database: row by row
        for row in rows:
            where = table.c[key] == row[key]
            if conn.execute(sa.select(sa.literal(1)).where(where)).first():
                changes = {k: v for k, v in row.items() if v is not None and k != key}
                if changes:
                    conn.execute(table.update().where(where).values(changes))
            else:
                conn.execute(table.insert().values(row))
        return
    for chunk in (rows[i : i + 200] for i in range(0, len(rows), 200)):
        statement = insert(table).values(chunk)
        changes = {k: sa.func.coalesce(statement.excluded[k], table.c[k]) for k in chunk[0] if k != key}
        conn.execute(
            statement.on_conflict_do_update(index_elements=[key], set_=changes)
            if changes
            else statement.on_conflict_do_nothing(index_elements=[key])
        )


__all__ = ["Catalog", "catalog_url", "COLUMNS", "ENV", "SQLITE_FILE", "CONFIG_FILE"]
