"""Speed of sim:macrospin (torch RK4, one thread): RK4 steps per second, with and without autograd.

Prints JSON lines ``{"metric": ..., "value": ..., "unit": ...}``.
"""
from __future__ import annotations

import json
import time

import torch

from spinlab.sim_backends.macrospin import MacrospinParams, simulate


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 1), "unit": unit, **extra}), flush=True)


def main() -> None:
    torch.set_num_threads(1)
    params = MacrospinParams()
    simulate(params, torch.full((1, 10), 3e-3), 0.05, 5e-12)  # warm up TorchScript
    for batch in (1, 64):
        current = torch.full((batch, 1000), 3e-3)
        with torch.no_grad():
            t = time.perf_counter()
            simulate(params, current, 0.05, 2e-12)  # one RK4 step per sample
            elapsed = time.perf_counter() - t
        emit("macrospin_rk4_steps_per_s", 1000 / elapsed, "steps/s", batch=batch, autograd=False)
        t = time.perf_counter()
        simulate(params, current[:, :300], 0.05, 2e-12).square().mean().backward()
        elapsed = time.perf_counter() - t
        emit("macrospin_rk4_steps_per_s", 300 / elapsed, "steps/s", batch=batch, autograd=True)


if __name__ == "__main__":
    main()
