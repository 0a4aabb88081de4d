"""What per-step durability costs: acquisition throughput through the run engine against the
way runs were written before it (HDF5 appends, one flush at the end), in one run.

The same ``acquire`` batches (drives from the same seed) go through three writers:

* ``before``: the pre-engine path: respond, append to ``run.h5``, flush once at the end (a
  killed run lost everything);
* ``engine``: the run engine as every command uses it: each batch journalled and handed to the
  OS, then appended to ``run.h5`` and flushed, before the next batch starts (a killed process
  loses no completed batch); the journal is synced to disk at most 1 s apart;
* ``engine_fsync_each``: the same with an ``fsync`` after every batch (a power cut loses none).

Scenarios are interleaved and repeated; medians are reported. Prints JSON lines: wall time per
scenario, batches per second and the ratio to ``before`` (target: ``engine`` within 10 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import h5py


def before(root: Path, device, config, seed: int) -> float:
    """The pre-engine writer: append rows, flush at the end."""
    from spinlab.protocols.acquire import BatchSource

    source = BatchSource(device, config, seed)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    with h5py.File(root / "run.h5", "w") as f:
        for index in range(config.n_batches):
            for name, rows in source.step(index)(device).items():
                if name not in f:
                    f.create_dataset(name, data=rows, maxshape=(None, *rows.shape[1:]), chunks=True)
                else:
                    ds = f[name]
                    ds.resize(ds.shape[0] + rows.shape[0], axis=0)
                    ds[-rows.shape[0] :] = rows
        f.flush()
    return time.perf_counter() - t0


def engine(root: Path, device, config, seed: int, sync_interval_s: float) -> float:
    from spinlab.engine import RunEngine
    from spinlab.protocols import acquire

    t0 = time.perf_counter()
    RunEngine(root, sync_interval_s=sync_interval_s).run(acquire.plan(config), device, seed=seed)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", action="append", help="device addresses (default: sim:vortex and bench:emulated)"
    )
    parser.add_argument("--duration", type=float, default=2e-2, help="device time per acquisition (s)")
    parser.add_argument("--record-s", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from spinlab import open_device
    from spinlab.protocols.acquire import AcquireConfig

    config = AcquireConfig(
        duration_s=args.duration, record_s=args.record_s, conditions={"bias_A": (6.5e-3, 7.5e-3, 8.5e-3)}
    )
    for address in args.device or ["sim:vortex", "bench:emulated"]:
        times: dict[str, list[float]] = {"before": [], "engine": [], "engine_fsync_each": []}
        with open_device(address, defaults={"seed": 0}) as device, tempfile.TemporaryDirectory() as tmp:
            before(Path(tmp) / "warm", device, config, 0)  # numba compile, instrument warm-up
            for rep in range(args.repeats):
                base = Path(tmp) / str(rep)
                times["before"].append(before(base / "before", device, config, rep))
                times["engine"].append(engine(base / "engine", device, config, rep, 1.0))
                times["engine_fsync_each"].append(engine(base / "fsync", device, config, rep, 0.0))
        ref = statistics.median(times["before"])
        for name, values in times.items():
            wall = statistics.median(values)
            print(
                json.dumps(
                    {
                        "metric": "durability_cost",
                        "device": address,
                        "scenario": name,
                        "batches": config.n_batches,
                        "recordings": config.n_batches * 3,
                        "wall_s_median": round(wall, 4),
                        "wall_s_all": [round(v, 4) for v in values],
                        "batches_per_s": round(config.n_batches / wall, 1),
                        "ratio_vs_before": round(wall / ref, 4),
                        "repeats": args.repeats,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
