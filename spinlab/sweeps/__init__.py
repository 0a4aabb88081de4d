"""Sweeps: one plan over a grid (or samples) of settings and seeds, each point a normal run,
scheduled by Dask distributed on this machine or on a cluster.

    from spinlab.sweeps import SweepSpec, run_sweep

    spec = SweepSpec("characterize", "sim:vortex", grid={"step_amplitude_V": [0.06, 0.12]}, seeds=3)
    result = run_sweep(spec, "sweeps/amplitude")           # LocalCluster, one worker per core
    result.files["h5"], result.count("completed")

* :mod:`.spec`    -- the points: grid / random / Latin-hypercube samples, seeds, config hashes
* :mod:`.worker`  -- what a Dask worker does for one point (a run through the run engine)
* :mod:`.runner`  -- :func:`run_sweep`: cluster, hardware resource, resume, faults, Ctrl-C
* :mod:`.summary` -- the sweep journal and its summary (``sweep.h5``, ``sweep.csv``)
* :mod:`.plots`   -- heatmap / lines-with-error-bars figures
* :mod:`.display` -- the progress display and the ``sweep.*`` monitor topics
"""

from spinlab.sweeps.runner import SweepResult, run_sweep
from spinlab.sweeps.spec import Point, SweepSpec, with_cache

__all__ = ["SweepSpec", "Point", "SweepResult", "run_sweep", "with_cache"]
