"""Speed of sim:vortex: one long drive (emulated bench) and the spoken-digit-sized workload.

Prints JSON lines ``{"metric": ..., "value": ..., "unit": ...}``. The first call compiles (or
loads the numba cache) and is timed separately as ``vortex_first_call_s``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from spinlab import Waveform
from spinlab.sim_backends.vortex import VortexDevice


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 4), "unit": unit, **extra}), flush=True)


def main() -> None:
    rng = np.random.default_rng(0)
    dev = VortexDevice(seed=0)
    t = time.perf_counter()
    dev.respond(Waveform(np.zeros(10), 100e-9))
    emit("vortex_first_call_s", time.perf_counter() - t, "s")

    single = Waveform(rng.uniform(-0.4, 0.4, 1_000_000), 100e-9)
    for noise in (1.0, 0.0):
        dev = VortexDevice(seed=0, noise=noise)
        best = min(_timed(dev, single) for _ in range(3))
        emit("vortex_1M_single_drive_s", best, "s", noise=noise, dt_s=100e-9)

    # spoken-digit workload: 2,500 drives x 23,000 samples (57.5 M samples), in chunks of 250
    dev = VortexDevice(seed=0)
    chunk = Waveform(rng.uniform(-0.4, 0.4, (250, 23_000)), 100e-9)
    t = time.perf_counter()
    for _ in range(10):
        dev.respond(chunk)
    elapsed = time.perf_counter() - t
    emit(
        "vortex_2500x23000_batch_s",
        elapsed,
        "s",
        samples=2500 * 23_000,
        samples_per_s=round(2500 * 23_000 / elapsed),
        cpus=os.cpu_count(),
    )


def _timed(dev: VortexDevice, drive: Waveform) -> float:
    t = time.perf_counter()
    dev.respond(drive)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
