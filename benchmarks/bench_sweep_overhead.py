"""What the Dask path costs per point: the same ~1 s characterisations on sim:vortex, once as a
plain in-process loop of ``RunEngine.run`` and once through ``run_sweep`` on a one-worker
local cluster (submission, the worker building the plan, the stop-event polls, the start
notice, the result coming back, the journal record, the summary rewrites). The cluster is
started beforehand and its start-up is reported on its own; both sides run a warm-up point
first (imports, numba cache) and use one BLAS thread (what Dask gives its workers).

Rounds alternate which path goes first; each round's ratio is paired (both paths under the same
load) and the medians of the paired ratios are reported. Wall time is what a user waits for, but
on a shared machine it swings by tens of percent from one round to the next, so CPU time is
reported too: the loop's process against the worker process (the points' critical path) and
this process (scheduler, client, journal and summary; on another core when there is one).
Prints JSON lines: seconds per point on each path (wall and CPU), the overheads per point in
percent (target: under 5 %), the cluster's start-up, and the pickled size of one task.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as on a Dask worker
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

#: One characterisation of about 1 s on sim:vortex here.
POINT = {"bias_points": 60, "sweep_duration_s": 400e-6, "step_repeats": 32768, "step_batches": 16}


def loop(points, root: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the points run one after the other in this process."""
    from spinlab.engine import RunEngine, build_plan

    t0, c0 = time.perf_counter(), time.process_time()
    for p in points:
        RunEngine(root).run(build_plan("characterize", p.config), p.address, seed=p.seed)
    return time.perf_counter() - t0, time.process_time() - c0


def sweep(spec, out: Path, cluster, worker) -> tuple[float, float, float]:
    """(wall, worker CPU, this process's CPU) seconds of the sweep."""
    from spinlab.sweeps import run_sweep

    t0, c0, w0 = time.perf_counter(), time.process_time(), _cpu(worker)
    result = run_sweep(spec, out, scheduler=cluster, metrics=())
    elapsed, here, there = time.perf_counter() - t0, time.process_time() - c0, _cpu(worker) - w0
    assert result.count("completed") == len(result.table), [r["error"] for r in result.table]
    return elapsed, there, here


def _cpu(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10, help="points per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import psutil
    from distributed import Client

    from spinlab.sweeps import SweepSpec
    from spinlab.sweeps.runner import local_cluster

    def spec(round_: int) -> SweepSpec:  # fresh seeds each round: nothing is skipped
        return SweepSpec(
            "characterize", "sim:vortex", settings=POINT, seeds=args.points, seed=1000 * (round_ + 1)
        )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        cluster = local_cluster(1, dashboard=False)  # the cluster run_sweep starts, with one worker
        startup_s = time.perf_counter() - t0
        try:
            with Client(cluster) as client:
                worker = psutil.Process(next(iter(client.run(os.getpid).values())))
            warm = SweepSpec("characterize", "sim:vortex", settings=POINT, seeds=1, seed=10**6)
            loop(warm.points(), root / "warm-loop")
            sweep(warm, root / "warm-sweep", cluster, worker)
            rows = []
            for r in range(args.rounds):
                n = len(spec(r).points())
                if r % 2:
                    sw, wc, cc = sweep(spec(r), root / f"sweep-{r}", cluster, worker)
                lw, lc = loop(spec(r).points(), root / f"loop-{r}")
                if not r % 2:
                    sw, wc, cc = sweep(spec(r), root / f"sweep-{r}", cluster, worker)
                rows.append(
                    {
                        "loop_s": lw / n,
                        "sweep_s": sw / n,
                        "loop_cpu_s": lc / n,
                        "worker_cpu_s": wc / n,
                        "client_cpu_s": cc / n,
                        "overhead_pct": 100 * (sw / lw - 1),
                        "worker_cpu_overhead_pct": 100 * (wc / lc - 1),
                        "total_cpu_overhead_pct": 100 * ((wc + cc) / lc - 1),
                    }
                )
                print(
                    json.dumps(
                        {
                            "bench": "sweep_overhead_round",
                            "round": r,
                            **{k: round(v, 4) for k, v in rows[-1].items()},
                            "load_1min": round(os.getloadavg()[0], 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            cluster.close()
        task = {
            "key": "0" * 12,
            "plan": "characterize",
            "config": warm.points()[0].config,
            "address": "sim:vortex",
            "seed": 0,
            "runs": str(root),
            "resume": None,
            "topic": "t" * 21,
            "stop_event": "e" * 32,
        }
        med = {k: round(statistics.median(row[k] for row in rows), 4) for k in rows[0]}
        print(
            json.dumps(
                {
                    "bench": "sweep_overhead",
                    "points_per_round": args.points,
                    "rounds": args.rounds,
                    **{f"{k}_per_point" if k.endswith("_s") else k: v for k, v in med.items()},
                    "target_pct": 5,
                    "cluster_startup_s": round(startup_s, 2),
                    "task_bytes": len(pickle.dumps(task)),
                    "load_1min": round(os.getloadavg()[0], 2),
                    "cpus": os.cpu_count(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
