"""Operating-point search against a dense grid on the same bench; prints one JSON object per line.

Issue 26's check: the memory capacity of the emulated bench (``reservoir-measures``, small
settings) over bias (and field, when the bench has a magnet), measured

``grid``    on a dense grid (every point a run): the best value and where;
``search``  by ``spinlab optimise`` within ``--budget`` bench evaluations: the best found, its
    value relative to the grid's best (target >= 0.95), and the evaluations it took to get
    within 5 % of the grid's best;
``screened`` the same with ``--screen ADDRESS`` (a twin or the simulator behind the bench) first:
    the bench evaluations it took (target: at most half of ``search``'s).

    python benchmarks/bench_search.py                          # bias only, ~20 min on 2 busy cores
    python benchmarks/bench_search.py --over bias_A,field_T    # once bench:emulated has a magnet
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab.engine import RunEngine  # noqa: E402
from spinlab.protocols import reservoir_measures, search  # noqa: E402
from spinlab.registry import open_device  # noqa: E402

#: a small memory-capacity run: 10 nodes of 20 ns (a frame about one relaxation time)
SETTINGS = {
    "n_points": 1000,
    "n_nodes": 10,
    "theta_s": 2e-8,
    "rank_streams": 8,
    "max_delay": 12,
    "ipc_delays": (12, 0, 0),
}
BOUNDS = {"bias_A": (4e-3, 9.5e-3), "field_T": (0.0, 0.5)}


def emit(**values) -> None:
    print(json.dumps(values, sort_keys=True, default=float), flush=True)


def within(history: list[dict], objective: str, target: float) -> int | None:
    """Bench evaluations until one reaches ``target`` (None: never)."""
    device = [h for h in history if h["task"] == "device"]
    return next((i + 1 for i, h in enumerate(device) if h[objective] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="bench:emulated")
    parser.add_argument("--over", default="bias_A")
    parser.add_argument("--grid", type=int, default=12, help="grid points per searched setting")
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--screen", default="sim:vortex", help="stand-in address (twin:PATH, sim:...)")
    parser.add_argument("--screen-budget", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    over = tuple(args.over.split(","))
    bounds = {name: BOUNDS[name] for name in over}
    emit(kind="machine", python=platform.python_version(), cpu=platform.processor() or platform.machine())

    with tempfile.TemporaryDirectory() as tmp:
        runs = RunEngine(Path(tmp) / "runs")
        device = open_device(args.device, defaults={"seed": args.seed})
        try:
            t0 = time.perf_counter()
            axes = [np.linspace(*bounds[name], args.grid) for name in over]
            values = []
            for point in itertools.product(*axes):
                settings = {**SETTINGS, **dict(zip(over, (float(v) for v in point)))}
                result = runs.run(reservoir_measures.plan(settings), device, seed=args.seed)
                values.append((result.summary["memory_capacity"], dict(zip(over, point))))
            best_value, best_at = max(values, key=lambda v: v[0])
            emit(
                kind="grid", points=len(values), best=best_value, at=best_at, wall_s=time.perf_counter() - t0
            )
            target = 0.95 * best_value

            found = {}
            for label, screen in (("search", None), ("screened", args.screen)):
                t0 = time.perf_counter()
                config = {
                    "plan": "reservoir-measures",
                    "over": over,
                    "bounds": bounds,
                    "objective": "memory_capacity",
                    "budget": args.budget,
                    "settings": SETTINGS,
                    "screen": screen,
                    "screen_budget": args.screen_budget,
                }
                summary = runs.run(search.plan(config), device, seed=args.seed).summary
                found[label] = within(summary["history"], "memory_capacity", target)
                emit(
                    kind=label,
                    best=summary["best_value"],
                    at={n: summary["best"][n] for n in over},
                    relative_to_grid=summary["best_value"] / best_value,
                    bench_evaluations=summary["device_evaluations"],
                    screen_evaluations=summary["screen_evaluations"],
                    evaluations_to_within_5_percent=found[label],
                    target_met=summary["best_value"] >= target,
                    wall_s=time.perf_counter() - t0,
                )
            if found["search"] and found["screened"]:
                emit(kind="screen_saving", ratio=found["screened"] / found["search"], target_at_most=0.5)
        finally:
            device.close()


if __name__ == "__main__":
    main()
