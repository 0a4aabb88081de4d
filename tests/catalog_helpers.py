"""The catalogs the catalog tests run against: a SQLite file, and a fresh database on the
PostgreSQL server named by ``SPINLAB_TEST_POSTGRES`` (``.ci/run`` starts one) when it is set."""

from __future__ import annotations

import os
import secrets

import pytest

POSTGRES_ENV = "SPINLAB_TEST_POSTGRES"
BACKENDS = ["sqlite", "postgresql"]


def catalog_for(backend: str, tmp_path):
    """Yields a fresh catalog URL of ``backend`` (skips PostgreSQL with a reason when no server)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'lab-catalog.sqlite'}"
        return
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")
    import sqlalchemy as sa

    name = f"spinlab_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from spinlab.catalog.store import _engine

        _engine(url).dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
