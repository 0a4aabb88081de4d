"""Speed-up of a sweep over the same points run one after the other, in one run: a 2 x 3
spoken-digit sweep on sim:vortex (bias x drive amplitude, 500 utterances by default).

* ``serial``: ``RunEngine.run`` of each point in this process, in turn, as a user would run
  them by hand (features computed once into a fresh cache, then read from it);
* ``sweep``: ``run_sweep`` on the local cluster it starts (one worker process per core), its
  start-up, shipping, journal and summary included (the sweep's plots left out: the serial
  runs have no such step).

Both use the same seeds. A point of this protocol is already partly parallel on its own (the
vortex kernel runs batch rows on every core, numpy's BLAS is threaded), so the serial runs'
CPU time / wall time (``serial_parallelism``) is reported: with ``cpus`` cores a sweep cannot
beat ``cpus / serial_parallelism``. On a shared machine the load average is printed with the
ratio; compare runs on a quiet one. The results of every point are compared with its serial
run: equal except the two wall-clock timings (``wall_s``, ``device_s``), and the predictions,
summed states and readout weights equal array for array.

Prints JSON lines: one per phase, then the summary (``speedup``, target 1.7 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd" / "recordings"
TIMINGS = ("wall_s", "device_s")
#: arrays that must be equal (the states under the name the readout design saves them by)
EXACT = ("predictions", "baseline_predictions", "states_pooled", "states_summed", "confusion")


def _same(a, b, name: str) -> bool:
    """Both run files lack ``name``, or both hold it with equal values."""
    if (name in a) != (name in b):
        return False
    return name not in a or np.array_equal(a[name][()], b[name][()])


def _cpu(processes) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # a worker that already ended
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FSDD)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--bias", default="5.5e-3,6.5e-3", help="bias_A values")
    parser.add_argument("--drive", default="0.6,0.8,1.0", help="drive_fraction values")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: every core)")
    args = parser.parse_args()

    from spinlab.engine import RunEngine, build_plan
    from spinlab.sweeps import SweepSpec, run_sweep, with_cache

    grid = {
        "bias_A": [float(v) for v in args.bias.split(",")],
        "drive_fraction": [float(v) for v in args.drive.split(",")],
    }
    settings = {"data_dir": str(args.data.resolve()), "limit": args.limit}
    me = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = with_cache(
            SweepSpec("spoken-digits", "sim:vortex", grid=grid, settings=settings), root / "sweep" / "cache"
        )
        points = spec.points()

        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        serial = []
        for p in points:
            config = {**p.config, "feature_cache_dir": str(root / "serial-cache")}
            serial.append(
                RunEngine(root / "serial").run(build_plan("spoken-digits", config), p.address, seed=p.seed)
            )
        serial_s, serial_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            json.dumps(
                {
                    "bench": "sweep_speedup_phase",
                    "phase": "serial",
                    "points": len(points),
                    "wall_s": round(serial_s, 2),
                    "cpu_s": round(serial_cpu, 2),
                    "load_1min_before": round(load, 2),
                    "load_1min_after": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )

        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), _cpu([me])
        seen: dict[int, psutil.Process] = {}

        def track_workers(name, doc):  # the workers' CPU, read before the cluster closes
            for child in me.children(recursive=True):
                seen.setdefault(child.pid, child)
            if name == "point" and doc.get("status") != "running":
                track_workers.cpu = _cpu(seen.values())

        track_workers.cpu = 0.0
        result = run_sweep(
            spec, root / "sweep", workers=args.workers, metrics=(), dashboard=False, observers=[track_workers]
        )
        sweep_s = time.perf_counter() - t0
        sweep_cpu = _cpu([me]) - c0 + track_workers.cpu
        print(
            json.dumps(
                {
                    "bench": "sweep_speedup_phase",
                    "phase": "sweep",
                    "points": len(points),
                    "wall_s": round(sweep_s, 2),
                    "cpu_s": round(sweep_cpu, 2),
                    "mode": result.mode,
                    "completed": result.count("completed"),
                    "load_1min_before": round(load, 2),
                    "load_1min_after": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )

        differences, weights_rel = [], 0.0
        for row, alone in zip(result.table, serial):
            got = {k: v for k, v in row["results"].items() if k not in TIMINGS}
            want = {k: v for k, v in alone.summary.items() if k not in TIMINGS}
            if got != want:
                differences.append(
                    {"point": row["index"], "keys": sorted(k for k in want if got.get(k) != want[k])}
                )
            if row["status"] == "completed":
                with h5py.File(Path(row["run"]) / "run.h5") as a, h5py.File(alone.run_file) as b:
                    differences += [{"point": row["index"], "array": n} for n in EXACT if not _same(a, b, n)]
                    w, v = a["readout_weights"][()], b["readout_weights"][()]
                    weights_rel = max(weights_rel, float(np.max(np.abs(w - v)) / np.max(np.abs(v))))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        parallelism = serial_cpu / serial_s
        print(
            json.dumps(
                {
                    "bench": "sweep_speedup",
                    "plan": "spoken-digits",
                    "device": "sim:vortex",
                    "limit": args.limit,
                    "grid": grid,
                    "points": len(points),
                    "serial_s": round(serial_s, 2),
                    "sweep_s": round(sweep_s, 2),
                    "speedup": round(serial_s / sweep_s, 3),
                    "target": 1.7,
                    "cpus": cpus,
                    "serial_parallelism": round(parallelism, 2),
                    "speedup_bound": round(cpus / parallelism, 2),
                    "serial_cpu_s": round(serial_cpu, 2),
                    "sweep_cpu_s": round(sweep_cpu, 2),
                    "identical": not differences,
                    "differences": differences,
                    "readout_weights_max_rel_diff": weights_rel,
                    "load_1min": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
