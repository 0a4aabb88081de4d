"""A lab's recorded runs from Python (the catalog's notebook face)::

    import spinlab
    spinlab.runs.search(plan="spoken-digits", where="accuracy>0.95")   # a pandas DataFrame
    run = spinlab.open_run("20261207-0930")     # an id, a unique prefix or a run directory
    run.config, run.results, run.data["sweep"].responses, run.stages, run.figures

See :mod:`spinlab.catalog` for where the catalog is and how runs get into it.
"""

from spinlab.catalog.opened import Run, Values, open_run, search

__all__ = ["Run", "Values", "open_run", "search"]
