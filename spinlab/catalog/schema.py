"""The catalog's tables and their versioned migrations.

Why a plain version table instead of Alembic: the schema is small and owned by spinlab alone;
an ordered list of migration functions, each run once inside one locked transaction, upgrades
any catalog (SQLite or PostgreSQL) the first time a newer spinlab opens it, with nothing to
configure. ``catalog_schema.version`` says how many have run.

Tables: ``runs`` (one row per run, stage or sweep point), ``run_values`` (every scalar of a
run's config and results as ``key, num, text``, indexed, so a condition such as
``accuracy>0.95`` is an index lookup), ``tags`` and ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("parent", sa.String(200), index=True),
    sa.Column("plan", sa.String(100), index=True),
    sa.Column("address", sa.Text),
    sa.Column("station", sa.String(200)),
    sa.Column("instruments", sa.JSON),
    sa.Column("identity", sa.JSON),
    sa.Column("config", sa.JSON),
    sa.Column("seed", sa.BigInteger),
    sa.Column("status", sa.String(20), index=True),
    sa.Column("reason", sa.Text),
    sa.Column("started", sa.DateTime, index=True),
    sa.Column("finished", sa.DateTime),
    sa.Column("user", sa.String(100)),
    sa.Column("host", sa.String(200)),
    sa.Column("version", sa.String(50)),
    sa.Column("events", sa.Integer),
    sa.Column("results", sa.JSON),
    sa.Column("path", sa.Text),
)

run_values = sa.Table(
    "run_values",
    metadata,
    sa.Column("run_id", sa.String(200), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("source", sa.String(10), primary_key=True),  # "config" or "result"
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("num", sa.Float),
    sa.Column("text", sa.Text),
    sa.Index("ix_run_values_key_num", "key", "num"),
    sa.Index("ix_run_values_key_text", "key", "text"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("run_id", sa.String(200), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(100), primary_key=True, index=True),
)

notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(200), sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True),
    sa.Column("time", sa.DateTime),
    sa.Column("user", sa.String(100)),
    sa.Column("text", sa.Text),
)

version_table = sa.Table("catalog_schema", sa.MetaData(), sa.Column("version", sa.Integer, nullable=False))


def _v1(conn: sa.Connection) -> None:
    """The first schema: runs, their values, tags and notes."""
    metadata.create_all(conn, tables=[runs, run_values, tags, notes])


#: ordered migrations; append, never edit one that has shipped
MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1]
VERSION = len(MIGRATIONS)


def migrate(conn: sa.Connection) -> int:
    """Bring the catalog on ``conn`` (inside a transaction holding the catalog's write lock) to
    :data:`VERSION`; returns the version it found. A catalog newer than this spinlab is refused."""
    version_table.create(conn, checkfirst=True)
    found = conn.execute(sa.select(version_table.c.version)).scalar()
    if found is None:
        conn.execute(version_table.insert().values(version=0))
        found = 0
    if found > VERSION:
        raise RuntimeError(
            f"the catalog has schema version {found}, newer than this spinlab's {VERSION}; upgrade spinlab"
        )
    for step in MIGRATIONS[found:]:
        step(conn)
    if found < VERSION:
        conn.execute(version_table.update().values(version=VERSION))
    return int(found)


__all__ = ["metadata", "runs", "run_values", "tags", "notes", "migrate", "MIGRATIONS", "VERSION"]
