"""Speed of sim:macrospin: RK4 steps x batch per second, forward and with gradients.

Before/after in one run: ``reference`` is the pure-torch autograd integrator the model used to
run on (one torch thread), ``kernel`` the numba kernel with forward sensitivities behind
``trajectory``/``simulate`` now (one thread and all cores). "With gradients" is a loss on the
junction voltage backpropagated to all eight physical parameters, as in a fit. Each figure is
the best of three timings; ``speedup`` lines divide kernel by reference at the same batch.

Prints JSON lines ``{"metric": ..., "value": ..., "unit": ...}``.
"""

from __future__ import annotations

import json
import os
import time

import torch

from spinlab.sim_backends.macrospin import MacrospinParams, simulate


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 1), "unit": unit, **extra}), flush=True)


def rate(batch: int, steps: int, gradients: bool, repeats: int = 3, **options) -> float:
    """Best RK4 steps x batch per second of ``simulate`` (one step per 2 ps sample)."""
    params = MacrospinParams()
    current = torch.full((batch, steps), 3e-3)
    best = float("inf")
    for _ in range(repeats):
        params.zero_grad()
        t = time.perf_counter()
        if gradients:
            simulate(params, current, 0.05, 2e-12, **options).square().mean().backward()
        else:
            with torch.no_grad():
                simulate(params, current, 0.05, 2e-12, **options)
        best = min(best, time.perf_counter() - t)
    return batch * steps / best


def main() -> None:
    torch.set_num_threads(1)
    rate(2, 10, True)  # load the numba cache and TorchScript before timing
    rate(2, 10, True, reference=True)
    cores = os.cpu_count() or 1
    for batch in (1, 64):
        for gradients in (False, True):
            before = rate(batch, 300 if gradients else 1000, gradients, reference=True)
            emit(
                "macrospin_steps_x_batch_per_s",
                before,
                "steps/s",
                batch=batch,
                gradients=gradients,
                path="reference",
                threads=1,
            )
            after = {}
            for threads in sorted({1, cores}):
                after[threads] = rate(batch, 20_000 if batch == 1 else 4_000, gradients, threads=threads)
                emit(
                    "macrospin_steps_x_batch_per_s",
                    after[threads],
                    "steps/s",
                    batch=batch,
                    gradients=gradients,
                    path="kernel",
                    threads=threads,
                )
            emit("macrospin_speedup", max(after.values()) / before, "x", batch=batch, gradients=gradients)
    noisy = rate(64, 4_000, True, temperature_K=300.0)
    emit(
        "macrospin_steps_x_batch_per_s",
        noisy,
        "steps/s",
        batch=64,
        gradients=True,
        path="kernel",
        threads=cores,
        temperature_K=300.0,
    )


if __name__ == "__main__":
    main()
