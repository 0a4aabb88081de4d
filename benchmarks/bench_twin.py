"""Digital-twin benchmarks; prints one JSON object per line.

(a) ``twin_simulation``: free-running twin simulation of a batch of 1,000 drives x 10,000
    samples (H = 64, k = 2, one condition: the vortex twin's shape), in simulated samples/s,
    with the achieved fraction of this machine's float32 matmul rate measured in the same run.
    FLOPs are counted honestly as the MLP's: 4 right-hand-side evaluations per RK4 step x
    2 x sum(in x out) over the layers (the sigmoid/tanh and the RK4 vector updates are not
    counted, and the drive/condition part of the first layer is counted although the fast
    path precomputes it). Target: >= 25 % of the matmul rate.
(b) ``twin_train_mumax``: wall time to train the MuMax3 skyrmion twin with the paper protocol
    until the validation target, plus its free-running test NRMSE. Target: < 5 minutes.

    python benchmarks/bench_twin.py [--configs 2x0,1x1] [--batch 1000] [--samples 10000]
                                    [--skip-train]

Simulation lines: ``2x0`` = torch.set_num_threads(2) with the default (automatic) work split,
which ``SpinNODE.simulate`` turns into two batch shards in parallel threads with one torch
thread each; ``2x1`` = torch's own intra-op threads on one shard (for comparison only: on a
busy machine it can be 50x slower); ``1x1`` = one core. The matmul rate is measured in the same run with as many torch threads as cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab.twin.data import (MumaxSplit, fit_normalisation, load_mumax_table,  # noqa: E402
                               mumax_trajectories, trajectory_nrmse)
from spinlab.twin.model import TwinArchitecture, build_model  # noqa: E402
from spinlab.twin.train import TrainConfig, train_offline  # noqa: E402

TABLE = ROOT / ".." / "shared" / "datasets" / "mumax3-skyrmion" / "one_skyrmion_voltage_train" / "table.txt"


def emit(**values) -> None:
    print(json.dumps(values, sort_keys=True), flush=True)


def matmul_rate_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-N float32 square matmul rate (FLOP/s) with the current thread setting."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size ** 3 / best


def bench_simulation(batch: int, samples: int, hidden: int, threads: int, workers: int) -> None:
    """``threads`` torch threads; ``workers`` batch shards (0: simulate's automatic choice,
    one shard per torch thread)."""
    torch.set_num_threads(threads)
    cores = threads if workers in (0, 1) else threads * workers
    workers_arg = None if workers == 0 else workers
    arch = TwinArchitecture(n_delays=2, delay_samples=1, hidden=hidden,
                            condition_names=("bias_A",), interpolation="hold")
    model = build_model(arch, seed=0)
    gen = torch.Generator().manual_seed(0)
    drive = 0.8 * torch.rand(batch, samples, generator=gen) - 0.4
    cond = torch.full((batch, 1), 7.5e-3)
    model.simulate(drive[:, :300], cond, workers=workers_arg)  # warm-up: TorchScript profiling
    # the machine's matmul rate with the same cores: torch threads = cores used
    torch.set_num_threads(cores)
    peak_before = matmul_rate_flops()
    torch.set_num_threads(threads)
    t = time.perf_counter()
    y = model.simulate(drive, cond, workers=workers_arg)
    wall = time.perf_counter() - t
    torch.set_num_threads(cores)
    peak_after = matmul_rate_flops()
    torch.set_num_threads(threads)
    peak = max(peak_before, peak_after)
    assert y.shape == (batch, samples) and bool(torch.isfinite(y).all())
    steps_per_s = batch * (samples - 1) / wall
    flops = arch.flops_per_rk4_step() * steps_per_s
    emit(metric="twin_simulation", batch=batch, samples=samples, hidden=hidden, threads=threads,
         workers="auto" if workers == 0 else workers, cores_used=cores,
         wall_s=round(wall, 3), samples_per_s=round(batch * samples / wall),
         mlp_flops_per_rk4_step=arch.flops_per_rk4_step(), achieved_gflops=round(flops / 1e9, 2),
         matmul_gflops=round(peak / 1e9, 2), fraction_of_matmul=round(flops / peak, 3),
         target_fraction=0.25, dtype="float32", torch=torch.__version__,
         cpu=platform.processor() or platform.machine(), cpus=os.cpu_count())


def bench_training(threads: int, max_steps: int) -> None:
    if not TABLE.is_file():
        emit(metric="twin_train_mumax", skipped=f"dataset not found at {TABLE}")
        return
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    table = load_mumax_table(TABLE)
    train, val, test = mumax_trajectories(table, MumaxSplit(n_test=10000))
    model = build_model(TwinArchitecture(hidden=64), fit_normalisation([train], ()), seed=0)
    config = TrainConfig(max_steps=max_steps, validate_every=250, target_nrmse=0.02, seed=0)
    result = train_offline(model, [train], [val], config)
    wall = time.perf_counter() - t0
    test_nrmse = trajectory_nrmse(model, [test])
    emit(metric="twin_train_mumax", wall_s=round(wall, 1), target_s=300, threads=threads,
         reached_target=result.reached_target, steps=result.steps,
         best_val_nrmse=round(result.best_nrmse, 4), test_nrmse=round(test_nrmse, 4),
         test_points=test.n - model.arch.history_samples, test_target=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="2x0,1x1",
                        help="simulation configs THREADSxWORKERS (torch threads x parallel batch "
                             "shards), comma separated: one JSON line each")
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads for training (1 is fastest at H=64)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=12000)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    for config in args.configs.split(","):
        threads, workers = (int(v) for v in config.lower().split("x"))
        bench_simulation(args.batch, args.samples, args.hidden, threads, workers)
    if not args.skip_train:
        bench_training(args.train_threads, args.max_steps)


if __name__ == "__main__":
    main()
