"""The run engine: plans say what to do, the engine runs them, documents record what happened.

    from spinlab.engine import RunEngine
    from spinlab.protocols import characterize

    result = RunEngine("runs").run(characterize.plan(bias_points=20), device="sim:vortex", seed=3)
    result.summary["threshold_A"], result.path

* :mod:`.plan`      -- :class:`Plan` and the plan registry (``spinlab.plans`` entry points)
* :mod:`.engine`    -- :class:`RunEngine` (run, resume), the :class:`RunContext` plans use, the
                      :class:`Control` protocol of a control channel
* :mod:`.documents` -- the documents subscribers receive, as TypedDicts (``StartDoc``, ...)
* :mod:`.arrays`    -- the array codec of the journal and the monitoring wire
* :mod:`.runfile`   -- the run-file writer (journal + ``run.h5``, durable per step)
* :mod:`.signals`   -- SIGINT / SIGTERM / SIGHUP handling
* :mod:`.progress`, :mod:`.plots` -- the progress display and the plot writer
"""

from spinlab.engine.engine import Control, RunContext, RunEngine, RunResult, RunState, seed_stream
from spinlab.engine.plan import Plan, build_plan, config_dict, plan_factory, plan_names
from spinlab.engine.plots import PlotWriter
from spinlab.engine.progress import ProgressDisplay
from spinlab.engine.runfile import RunFileWriter

__all__ = [
    "RunEngine",
    "RunContext",
    "RunResult",
    "RunState",
    "Control",
    "seed_stream",
    "Plan",
    "build_plan",
    "config_dict",
    "plan_factory",
    "plan_names",
    "PlotWriter",
    "ProgressDisplay",
    "RunFileWriter",
]
