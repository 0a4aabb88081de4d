"""Every run in a catalog: find, open and compare a lab's runs.

    import spinlab
    run = spinlab.open_run("20261207-0930")          # an id, a unique prefix or a directory
    run.config, run.results, run.data["sweep"]       # typed config, results, xarray Datasets
    spinlab.runs.search(plan="spoken-digits", where=["accuracy>0.95"])   # a pandas DataFrame

* :mod:`.store`   -- :class:`Catalog` (SQLite in the runs folder, or one URL for a lab's
                     PostgreSQL), :func:`catalog_url`
* :mod:`.schema`  -- the tables and their versioned migrations
* :mod:`.rundirs` -- rows from run directories (the source of truth), the engine's
                     :class:`Recorder`, :func:`reindex`
* :mod:`.where`   -- conditions such as ``accuracy>0.95`` and times such as ``3d``
* :mod:`.opened`  -- :func:`open_run` and :func:`search` (xarray, pandas)

Imported lazily: the engine records runs without loading SQLAlchemy until a run starts.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Catalog": "spinlab.catalog.store",
    "catalog_url": "spinlab.catalog.location",
    "Recorder": "spinlab.catalog.rundirs",
    "reindex": "spinlab.catalog.rundirs",
    "open_run": "spinlab.catalog.opened",
    "search": "spinlab.catalog.opened",
    "Run": "spinlab.catalog.opened",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spinlab.catalog' has no attribute {name!r}")


__all__ = list(_EXPORTS)
