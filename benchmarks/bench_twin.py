"""Digital-twin benchmarks: speed of simulation and training; prints one JSON object per line.

``twin_simulation``  free-running simulation of ``--batch`` drives x ``--samples`` samples
    (default 1,000 x 10,000) at H = 32 and 64 (k = 2, one condition: the vortex twin's shape),
    with the compiled kernel and with the torch loop, on every torch device present: samples/s
    and the share of this machine's float32 matmul rate, measured in the same run with the same
    cores (best of ``--repeats``, interleaved, so a busy shared machine is compared with itself).
    FLOPs are the MLP's: 4 right-hand-side evaluations per RK4 step x 2 x sum(in x out) over the
    layers; activations, RK4 vector updates and the drive interpolation are not counted.
    Target: >= 50 % of the matmul rate at H = 64.
``twin_batch_scaling``  steps/s from batch 1 to 4,096 (H = 32), kernel and torch loop.
``twin_breakdown``  where the time goes, per integrator, on one thread: for the kernel in CPU
    seconds, by builds that drop one part of the work (activations, drive input, RK4 stage
    bookkeeping; what is left is the dense layers' GEMM work and the loop) and the Python work
    around it; for the torch loop by torch's profiler (GEMM, activations, RK4 bookkeeping,
    drive input, and the rest: Python and TorchScript overhead); for both the measured-noise
    generation of ``twin:...?noise=1``.
``twin_fsdd_drives``  the spoken-digit protocol's drive set (all 2,500 FSDD utterances, its
    encoder and its batches) through a digits twin with noise: seconds inside
    ``Device.respond`` against the device's own real time (drive samples x dt). Target <= 1
    on the CPU (GPU: <= 0.1). The twin is ``--digits-twin`` or the one trained below.
``twin_train``  time to target of the digits twin (README command, on ``bench:emulated``) and of
    the MuMax3 skyrmion twin: this checkout and ``--baseline`` (the ``spinlab`` of a checkout of
    main, with its own venv), run side by side: wall and CPU seconds. Target: <= 0.5 x before.

    python benchmarks/bench_twin.py --baseline ../main-checkout       # everything (~12 min)
    python benchmarks/bench_twin.py --skip-train --digits-twin digits-twin.pt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinlab import Waveform, open_device  # noqa: E402
from spinlab.twin import kernel  # noqa: E402
from spinlab.twin.model import TwinArchitecture, build_model  # noqa: E402

SHARED = ROOT / ".." / "shared" / "datasets"
TABLE = SHARED / "mumax3-skyrmion" / "one_skyrmion_voltage_train" / "table.txt"
FSDD = SHARED / "fsdd" / "recordings"
DIGITS_TRAIN = [
    "twin",
    "train",
    "--device",
    "bench:emulated",
    "--dt-s",
    "2e-7",
    "--bias-A",
    "5.5e-3,6e-3,6.5e-3",
    "--amplitude-V",
    "0.5",
    "--hold-s",
    "2e-7,2e-6",
    "--hidden",
    "32",
    "--target-nrmse",
    "0.1",
    "--max-duration",
    "2e-2",
]
MUMAX_TRAIN = ["twin", "train", "--mumax", str(TABLE)]


def emit(**values) -> None:
    print(json.dumps(values, sort_keys=True), flush=True)


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def matmul_rate(device: str, size: int = 2048, repeats: int = 5, clock=time.perf_counter) -> float:
    """Best-of-N float32 square matmul rate (FLOP/s) with the current thread setting."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t = clock()
        torch.mm(a, b)
        _sync(device)
        best = min(best, clock() - t)
    return 2.0 * size**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vortex_like(hidden: int, device: str = "cpu"):
    arch = TwinArchitecture(
        n_delays=2, delay_samples=1, hidden=hidden, condition_names=("bias_A",), interpolation="hold"
    )
    return build_model(arch, seed=0).to(device)


def random_drives(batch: int, samples: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    drive = (0.8 * torch.rand(batch, samples, generator=gen) - 0.4).to(device)
    return drive, torch.full((batch, 1), 7.5e-3, device=device)


# --- simulation -------------------------------------------------------------------------------
def bench_simulation(batch: int, samples: int, threads: int, repeats: int, torch_loop: bool) -> None:
    torch.set_num_threads(threads)
    for device in devices():
        kernels = ["compiled", "torch"] if device == "cpu" else ["torch"]
        if device == "cpu" and not torch_loop:
            kernels = ["compiled"]
        for hidden in (32, 64):
            model = vortex_like(hidden, device)
            drive, cond = random_drives(batch, samples, device)
            for name in kernels:
                if name == "compiled" and kernel.library() is None:
                    emit(metric="twin_simulation", hidden=hidden, kernel=name, skipped="no C++ compiler")
                    continue
                model.simulate(drive[:, :300], cond, kernel=name)  # warm-up (TorchScript, caches)
                peak, wall = 0.0, float("inf")
                for _ in range(repeats if name == "compiled" else 1):
                    peak = max(peak, matmul_rate(device))
                    _sync(device)
                    t = time.perf_counter()
                    y = model.simulate(drive, cond, workers=threads, kernel=name)
                    _sync(device)
                    wall = min(wall, time.perf_counter() - t)
                peak = max(peak, matmul_rate(device))
                assert y.shape == (batch, samples) and bool(torch.isfinite(y).all())
                line = _rates(model, batch, samples, wall, peak)
                if device == "cpu":  # one core, CPU seconds: what other load cannot distort
                    torch.set_num_threads(1)
                    peak1 = matmul_rate(device, clock=time.thread_time)
                    cpu = _cpu(
                        lambda: model.simulate(drive, cond, workers=1, kernel=name),
                        repeats if name == "compiled" else 1,
                    )
                    peak1 = max(peak1, matmul_rate(device, clock=time.thread_time))
                    torch.set_num_threads(threads)
                    one = _rates(model, batch, samples, cpu, peak1)
                    line["one_core_cpu_time"] = {
                        "cpu_s": one["wall_s"],
                        "matmul_gflops": one["matmul_gflops"],
                        "fraction_of_matmul": one["fraction_of_matmul"],
                    }
                emit(
                    metric="twin_simulation",
                    device=device,
                    kernel=name,
                    hidden=hidden,
                    batch=batch,
                    samples=samples,
                    threads=threads,
                    **line,
                    target_fraction=0.5 if hidden == 64 else None,
                    dtype="float32",
                    torch=torch.__version__,
                    cpu=platform.processor() or platform.machine(),
                    cpus=os.cpu_count(),
                    load_average=[round(v, 1) for v in os.getloadavg()],
                )


def _rates(model, batch: int, samples: int, seconds: float, peak: float) -> dict:
    steps_per_s = batch * (samples - 1) / seconds
    flops = model.arch.flops_per_rk4_step() * steps_per_s
    return {
        "wall_s": round(seconds, 3),
        "samples_per_s": round(batch * samples / seconds),
        "mlp_flops_per_rk4_step": model.arch.flops_per_rk4_step(),
        "achieved_gflops": round(flops / 1e9, 2),
        "matmul_gflops": round(peak / 1e9, 2),
        "fraction_of_matmul": round(flops / peak, 3),
    }


def bench_batch_scaling(threads: int, torch_loop: bool) -> None:
    torch.set_num_threads(threads)
    model = vortex_like(32)
    for batch in (1, 16, 64, 256, 1024, 4096):
        samples = max(200, min(20000, 4_000_000 // batch))
        drive, cond = random_drives(batch, samples)
        line = {
            "metric": "twin_batch_scaling",
            "hidden": 32,
            "batch": batch,
            "samples": samples,
            "threads": threads,
        }
        for name in ("compiled", "torch") if torch_loop else ("compiled",):
            model.simulate(drive[:, :50], cond, kernel=name)
            t = time.perf_counter()
            model.simulate(drive, cond, workers=threads, kernel=name)
            line[f"{name}_steps_per_s"] = round(batch * samples / (time.perf_counter() - t))
        emit(**line)


# --- where the time goes ----------------------------------------------------------------------
def _cpu(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def bench_breakdown(batch: int, samples: int) -> None:
    """One thread, CPU seconds (robust to other load on the machine)."""
    torch.set_num_threads(1)
    noise_gen = torch.Generator().manual_seed(0)
    for hidden in (32, 64):
        model = vortex_like(hidden)
        drive, cond = random_drives(batch, samples)
        drive = drive.double()  # what a Device hands the twin
        c = model.norm_conditions(cond)
        x0 = torch.zeros(batch, 2)
        params = list(model.parameters())
        norms = {"u_norm": (model.u_mean, model.u_std), "y_norm": (model.y_mean, model.y_std)}
        out = torch.zeros(batch, samples)
        noise_s = _cpu(lambda: out.add_(torch.randn(out.shape, generator=noise_gen), alpha=5e-4))
        if kernel.library() is not None:

            def run(skip: int) -> float:
                lib = kernel.library(skip)
                return _cpu(
                    lambda: kernel.simulate(
                        drive,
                        x0,
                        c,
                        params,
                        hold=True,
                        delay_samples=1,
                        settle=50,
                        rest=drive[:, 0],
                        lib=lib,
                        **norms,
                    )
                )

            total = run(0)
            simulate_s = _cpu(lambda: model.simulate(drive, cond, settle_samples=50, workers=1))
            parts = {
                "activations": total - run(1),
                "drive_input": total - run(2),
                "rk4_stage_bookkeeping": total - run(4),
                "gemm_and_loop": run(7),
            }
            emit(
                metric="twin_breakdown",
                kernel="compiled",
                hidden=hidden,
                batch=batch,
                samples=samples,
                integrator_cpu_s=round(total, 3),
                parts_cpu_s={k: round(v, 3) for k, v in parts.items()},
                python_around_integrator_cpu_s=round(simulate_s - total, 3),
                noise_cpu_s=round(noise_s, 3),
                note="parts: time saved by a build without that part (gemm_and_loop: a build "
                "without all three); they need not add up exactly",
            )
        u = model.norm_drive(drive.float())
        emit(
            metric="twin_breakdown",
            kernel="torch",
            hidden=hidden,
            batch=batch,
            samples=samples,
            **_torch_loop_profile(model, x0, model.delay_features(u), c),
            noise_cpu_s=round(noise_s, 3),
        )


def _torch_loop_profile(model, x0, feats, c) -> dict:
    """Self CPU time of the torch loop's ops by kind; the rest of the wall time is overhead."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(3):  # TorchScript optimises after a few calls
            model.rollout(x0, feats[:, :50], c, kernel="torch")
        t = time.perf_counter()  # the profiler's op times are wall times too
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.rollout(x0, feats, c, kernel="torch")
        total = time.perf_counter() - t
    kinds = {
        "gemm": ("aten::addmm", "aten::mm", "aten::bmm"),
        "activations": ("aten::tanh",),
        "rk4_stage_bookkeeping": (
            "aten::add",
            "aten::mul",
            "aten::sub",
            "aten::div",
            "aten::stack",
            "aten::cat",
            "aten::unbind",
            "aten::copy_",
        ),
    }
    parts = dict.fromkeys([*kinds, "drive_input"], 0.0)
    for event in prof.events():
        ancestor, drive = event, False
        while ancestor is not None and not drive:
            drive = ancestor.name == "twin.drive_input"
            ancestor = ancestor.cpu_parent
        kind = (
            "drive_input" if drive else next((k for k, names in kinds.items() if event.name in names), None)
        )
        if kind is not None:
            parts[kind] += event.self_cpu_time_total / 1e6
    overhead = total - sum(parts.values())
    return {
        "integrator_wall_s": round(total, 3),
        "parts_wall_s": {k: round(v, 3) for k, v in parts.items()},
        "python_and_torchscript_overhead_wall_s": round(overhead, 3),
        "note": "one thread, profiled (the profiler itself adds overhead); parts are op self times",
    }


# --- the FSDD drive set -----------------------------------------------------------------------
def fsdd_batches(data_dir: Path, cache: Path, max_drive_V: float):
    """The spoken-digit protocol's drives, batch by batch, exactly as it sends them."""
    from spinlab.protocols.spoken_digits import SpokenDigitsConfig, select_data
    from spinlab.speech.encoder import Encoder, length_batches, make_mask, pack
    from spinlab.speech.features import ChannelNormalizer, FeatureConfig, utterance_features

    config = SpokenDigitsConfig(data_dir=str(data_dir), feature_cache_dir=str(cache))
    train, test = select_data(config, np.random.default_rng(0))
    raw = utterance_features(train + test, FeatureConfig(kind=config.feature_kind), cache)
    normalizer = ChannelNormalizer().fit(raw[: len(train)])
    features = [normalizer.transform(f) for f in raw]
    encoder = Encoder(
        make_mask(config.n_nodes, features[0].shape[1], config.mask_kind, 0),
        config.theta_s,
        config.samples_per_node,
        config.drive_fraction * max_drive_V,
        config.input_sigma,
    )
    encoder.fit(features[: len(train)])
    lengths = [len(f) * encoder.samples_per_frame() for f in features]
    for idx in length_batches(lengths, config.max_batch_samples):
        batch, _ = pack([encoder.drive(features[i]) for i in idx])
        yield Waveform(batch, encoder.dt_s, "V"), {"bias_A": config.bias_A}, len(features)


def bench_fsdd(twin_path: Path, data_dir: Path, threads: int) -> None:
    if not data_dir.is_dir():
        emit(metric="twin_fsdd_drives", skipped=f"FSDD not found at {data_dir}")
        return
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices():
            with open_device(f"twin:{twin_path}?noise=1&torch_device={device}") as twin:
                wall = cpu = 0.0
                samples = 0
                for drive, conditions, n_utterances in fsdd_batches(
                    data_dir, Path(tmp), twin.limits.max_drive_V
                ):
                    t, c = time.perf_counter(), time.process_time()
                    twin.respond(drive, conditions)
                    wall += time.perf_counter() - t
                    cpu += time.process_time() - c
                    samples += drive.samples.size
                real = samples * drive.dt_s
                emit(
                    metric="twin_fsdd_drives",
                    device=device,
                    checkpoint=str(twin_path),
                    utterances=n_utterances,
                    drive_samples=samples,
                    dt_s=drive.dt_s,
                    device_real_time_s=round(real, 2),
                    respond_wall_s=round(wall, 2),
                    respond_cpu_s=round(cpu, 2),
                    wall_over_real_time=round(wall / real, 3),
                    target=1.0 if device == "cpu" else 0.1,
                    threads=threads,
                    load_average=[round(v, 1) for v in os.getloadavg()],
                )


# --- training time to target ------------------------------------------------------------------
def _train(spinlab: list[str], args: list[str], out: Path, runs: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        [*spinlab, *args, "--out", str(out), "--runs-dir", str(runs), "--json"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "steps": summary["steps"],
        "best_nrmse": round(summary["best_nrmse"], 4),
        "reached_target": summary["reached_target"],
        **({"test_nrmse": round(summary["test_nrmse"], 4)} if "test_nrmse" in summary else {}),
    }


def bench_training(baseline: Path | None, out_dir: Path) -> Path | None:
    """Before/after pairs run one after the other; returns the digits twin trained 'after'."""
    ours = [str(Path(sys.executable).with_name("spinlab"))]
    theirs = None
    if baseline is not None:
        exe = baseline if baseline.is_file() else baseline / ".venv" / "bin" / "spinlab"
        theirs = [str(exe)] if exe.is_file() else None
        if theirs is None:
            emit(metric="twin_train", skipped=f"no baseline spinlab at {exe}")
    digits = None
    for name, args in (("digits", DIGITS_TRAIN), ("mumax3_skyrmion", MUMAX_TRAIN)):
        if name == "mumax3_skyrmion" and not TABLE.is_file():
            emit(metric="twin_train", model=name, skipped=f"table not found at {TABLE}")
            continue
        line = {"metric": "twin_train", "model": name, "target_ratio": 0.5}
        if theirs is not None:
            line["before"] = _train(theirs, args, out_dir / f"{name}-before.pt", out_dir / "runs")
        line["after"] = _train(ours, args, out_dir / f"{name}.pt", out_dir / "runs")
        if torch.cuda.is_available():
            line["after_cuda"] = _train(
                ours, [*args, "--torch-device", "cuda"], out_dir / f"{name}-cuda.pt", out_dir / "runs"
            )
        if "wall_s" in line.get("before", {}) and "wall_s" in line["after"]:
            line["ratio_wall"] = round(line["after"]["wall_s"] / line["before"]["wall_s"], 3)
            line["ratio_cpu"] = round(line["after"]["cpu_s"] / line["before"]["cpu_s"], 3)
        line["load_average"] = [round(v, 1) for v in os.getloadavg()]
        emit(**line)
        if name == "digits" and "wall_s" in line["after"]:
            digits = out_dir / f"{name}.pt"
    return digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="cores for simulation (the matmul rate is measured with the same)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of N (simulation)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of main with its own .venv (or its spinlab executable): training 'before'",
    )
    parser.add_argument(
        "--digits-twin",
        type=Path,
        default=None,
        help="digits twin for the FSDD drive set (default: the one trained here)",
    )
    parser.add_argument("--data", type=Path, default=FSDD, help="FSDD recordings folder")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where trained twins go (default: temporary)"
    )
    parser.add_argument("--skip-torch-loop", action="store_true", help="kernel only (faster)")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-fsdd", action="store_true")
    args = parser.parse_args()
    if not args.skip_sim:
        bench_simulation(args.batch, args.samples, args.threads, args.repeats, not args.skip_torch_loop)
        bench_batch_scaling(args.threads, not args.skip_torch_loop)
        bench_breakdown(args.batch, args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        digits = None if args.skip_train else bench_training(args.baseline, out_dir)
        twin = args.digits_twin or digits
        if not args.skip_fsdd:
            if twin is None:
                emit(metric="twin_fsdd_drives", skipped="no digits twin: pass --digits-twin or train one")
            else:
                bench_fsdd(twin, args.data, args.threads)


if __name__ == "__main__":
    main()
