"""fit-physics against the truth, the grid baseline, the twin and `spinlab characterize`.

``macrospin``: a run of ``sim:macrospin`` with hidden parameters and its thermal field on
(300 K): ring-downs from a 0.6 rad tilt at sub-threshold currents and three fields. The
gradient fit (random starts in the default box) is scored against the hidden values; the
grid search over the same box and objective gives the wall-time ratio (grid time / time the
descent took to reach the grid's best loss); the fitted model and a twin trained on the same
recordings are scored on fresh drives (NRMSE against the mean of repeated device shots).
``--trials N`` (20) repeats the recovery for N random hidden parameter sets across the default
box (drawn so that the drive stays below the critical current, the regime the experiment is
designed for): the share within 5 % and the coverage of the reported 95 % intervals
(``--trials-only`` runs just these).

``vortex``: a run recorded on ``bench:emulated`` (real drivers, emulated instruments, vortex
model with noise); the fitted threshold current and relaxation time against ``spinlab
characterize`` on the same bench, and the fitted model against a twin on fresh drives.

Prints JSON lines ``{"metric": ..., "value": ..., "unit": ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from spinlab import open_device
from spinlab.engine import RunEngine
from spinlab.protocols import acquire as acquire_plan
from spinlab.protocols import characterize
from spinlab.protocols.acquire import AcquireConfig
from spinlab.protocols.fit_physics import FitConfig, fit_physics, read_run, split_rows
from spinlab.protocols.twin_eval import EvalConfig, evaluate

MACROSPIN_TRUTH = {"alpha": 0.025, "Hd_A_per_m": 5.2e5, "tmr": 1.2, "R_P_ohm": 60.0}
MACROSPIN_SETUP = "temperature_K=300&initial_tilt_rad=0.6&bias_A=1.8e-3"
MACROSPIN_DRIVES = dict(dt_s=2e-11, record_s=3e-9, hold_s=(2e-10, 1e-9), amplitude_V=0.3)


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(float(value), 6), "unit": unit, **extra}), flush=True)


def acquire(root: Path, address: str, config: AcquireConfig, seed: int) -> Path:
    return RunEngine(root).run(acquire_plan.plan(config), address, seed=seed).path


def fresh_drives() -> np.random.Generator:
    """The same fresh drives for every model scored (seed 1000, as `spinlab twin eval`)."""
    return np.random.default_rng(1000)


def time_to_reach(trace: list, loss: float) -> float:
    """Wall time at which a trace's best loss first got to ``loss`` (inf if never)."""
    return next((t for t, best in trace if best <= loss * (1 + 1e-12)), math.inf)


def twin_nrmse(recordings, device_address: str, eval_config: EvalConfig, wall_s: float) -> dict:
    """Train a twin offline on the same recordings (the fit's split) and score it like the fit."""
    from spinlab.sim_backends.twin_device import TwinDevice
    from spinlab.twin.checkpoint import TwinMeta
    from spinlab.twin.model import TwinArchitecture, build_model
    from spinlab.twin.train import TrainConfig, train_offline
    from spinlab.twin.trajectory import Trajectory, condition_ranges, fit_normalisation

    names = tuple(n for n, v in recordings.conditions.items() if np.ptp(v) > 0)
    trajectories = [
        Trajectory(
            d, r, recordings.dt_s, {n: float(recordings.conditions[n][i]) for n in names}, initial="rest"
        )
        for i, (d, r) in enumerate(zip(recordings.drive_V, recordings.response_V))
    ]
    train, held = split_rows(recordings)[:2]
    arch = TwinArchitecture(condition_names=names, hidden=64, interpolation="hold")
    model = build_model(arch, fit_normalisation([trajectories[i] for i in train], names))
    result = train_offline(
        model,
        [trajectories[i] for i in train],
        [trajectories[i] for i in held],
        TrainConfig(max_wall_s=wall_s, target_nrmse=1e-3, settle_samples=0),
    )
    meta = TwinMeta(
        dt_s=recordings.dt_s,
        settle_samples=0,
        condition_ranges=condition_ranges([trajectories[i] for i in train], names),
    )
    with open_device(device_address) as dev:
        summary = evaluate(TwinDevice(model, meta, limits=dev.limits), dev, eval_config, fresh_drives())
    return {
        "nrmse": summary["nrmse"],
        "noise_corrected": summary.get("nrmse_noise_corrected"),
        "validation_nrmse": result.best_nrmse,
        "steps": result.steps,
    }


def bench_macrospin(root: Path, grid_points: int, twin_wall_s: float) -> None:
    address = (
        "sim:macrospin?" + "&".join(f"{k}={v}" for k, v in MACROSPIN_TRUTH.items()) + "&" + MACROSPIN_SETUP
    )
    run_dir = acquire(
        root,
        address,
        AcquireConfig(duration_s=96 * 3e-9, conditions={"field_T": (0.04, 0.05, 0.06)}, **MACROSPIN_DRIVES),
        seed=1,
    )
    recordings = read_run(run_dir)
    names = tuple(MACROSPIN_TRUTH)
    fit = fit_physics(recordings, FitConfig(model="macrospin", params=names, seed=0))
    for name, truth in MACROSPIN_TRUTH.items():
        entry = fit["params"][name]
        emit(
            "macrospin_recovery_error",
            100 * (entry["value"] / truth - 1),
            "%",
            param=name,
            uncertainty_pct=round(100 * entry["relative_uncertainty"], 3),
            temperature_K=300,
        )
    emit("macrospin_fit_wall_s", fit["wall_s"], "s", loss=fit["loss"], starts=8, screen=64)
    grid = fit_physics(
        recordings, FitConfig(model="macrospin", params=names, method="grid", grid_points=grid_points)
    )
    reached = time_to_reach(fit["trace"], grid["loss"])
    emit("macrospin_grid_wall_s", grid["wall_s"], "s", points=grid_points ** len(names), loss=grid["loss"])
    emit("macrospin_fit_time_to_grid_best_s", reached, "s")
    emit(
        "macrospin_grid_over_fit_time",
        grid["wall_s"] / reached,
        "x",
        fit_final_loss=fit["loss"],
        grid_best_loss=grid["loss"],
    )
    fitted_address = _model_file(root, "macrospin", fit)
    fresh = EvalConfig(
        n_drives=12,
        record_s=MACROSPIN_DRIVES["record_s"],
        dt_s=MACROSPIN_DRIVES["dt_s"],
        hold_s=MACROSPIN_DRIVES["hold_s"],
        amplitude_V=0.3,
        conditions={"field_T": (0.04, 0.05, 0.06)},
        repeats=8,
    )
    with open_device(fitted_address + "?temperature_K=0") as model, open_device(address) as dev:
        scored = evaluate(model, dev, fresh, fresh_drives())
        emit(
            "macrospin_fresh_nrmse",
            scored["nrmse"],
            "",
            model="fitted macrospin as sim:PATH",
            noise_corrected=scored["nrmse_noise_corrected"],
        )
    twin = twin_nrmse(recordings, address, fresh, twin_wall_s)
    emit(
        "macrospin_fresh_nrmse",
        twin["nrmse"],
        "",
        model="twin (same recordings)",
        steps=twin["steps"],
        wall_s=twin_wall_s,
        noise_corrected=twin["noise_corrected"],
    )


def bench_macrospin_trials(root: Path, trials: int) -> None:
    """Recovery over ``trials`` random hidden parameter sets across the box: per trial the
    errors; at the end the share of parameters within 5 % and how often the reported 95 %
    interval (1.96 x the relative uncertainty, in log-parameter) holds the truth, for the
    statistical part alone and for the reported one (with the noise bias)."""
    from spinlab.sim_backends.macrospin import MacrospinParams

    rng = np.random.default_rng(7)
    done = 0
    within, covered_stat, covered = [], [], []
    while done < trials:
        truth = {
            "alpha": rng.uniform(0.012, 0.035),
            "Hd_A_per_m": rng.uniform(3e5, 8e5),
            "tmr": rng.uniform(0.6, 1.8),
            "R_P_ohm": rng.uniform(30, 120),
        }
        critical = float(MacrospinParams(**truth).critical_current_A(0.04).detach())
        if 3.3e-3 > 0.9 * critical:  # the drive's largest current must stay sub-threshold
            continue
        address = "sim:macrospin?" + "&".join(f"{k}={v}" for k, v in truth.items()) + "&" + MACROSPIN_SETUP
        run_dir = acquire(
            root,
            address,
            AcquireConfig(
                duration_s=96 * 3e-9, conditions={"field_T": (0.04, 0.05, 0.06)}, **MACROSPIN_DRIVES
            ),
            seed=done,
        )
        fit = fit_physics(read_run(run_dir), FitConfig(model="macrospin", params=tuple(truth), seed=done))
        errors = {k: 100 * (fit["params"][k]["value"] / v - 1) for k, v in truth.items()}
        for name, value in truth.items():
            entry = fit["params"][name]
            log_error = abs(math.log(entry["value"] / value))
            within.append(abs(errors[name]) <= 5.0)
            covered_stat.append(log_error <= 1.96 * entry["relative_statistical"])
            covered.append(log_error <= 1.96 * entry["relative_uncertainty"])
        emit(
            "macrospin_trial_max_error",
            max(abs(e) for e in errors.values()),
            "%",
            trial=done,
            truth={k: float(f"{v:.4g}") for k, v in truth.items()},
            errors_pct={k: round(e, 2) for k, e in errors.items()},
            uncertainty_pct={k: round(100 * fit["params"][k]["relative_uncertainty"], 2) for k in truth},
            statistical_pct={k: round(100 * fit["params"][k]["relative_statistical"], 2) for k in truth},
            wall_s=round(fit["wall_s"], 2),
        )
        done += 1
    n = len(within)
    emit("macrospin_trials_within_5pct", 100 * sum(within) / n, "%", parameters=n, trials=trials)
    emit("macrospin_trials_coverage_95", 100 * sum(covered) / n, "%", parameters=n, interval="reported")
    emit(
        "macrospin_trials_coverage_95",
        100 * sum(covered_stat) / n,
        "%",
        parameters=n,
        interval="statistical only (before the noise bias)",
    )


def bench_vortex(root: Path, twin_wall_s: float) -> None:
    reference = RunEngine(root).run(characterize.plan(), "bench:emulated").summary
    run_dir = acquire(
        root,
        "bench:emulated",
        AcquireConfig(duration_s=3e-3, conditions={"bias_A": (6.5e-3, 7.5e-3, 8.5e-3)}),
        seed=2,
    )
    recordings = read_run(run_dir)
    names = ("threshold_A", "gamma_G_per_s", "Q", "detector_V_per_p", "drive_gain_A_per_V")
    fit = fit_physics(recordings, FitConfig(model="vortex", params=names))
    from spinlab.sim_backends.vortex import VortexParams

    params = VortexParams(**fit["values"])
    tau = float(params.relaxation_time_s(reference["relaxation_bias_A"]))
    emit(
        "vortex_bench_threshold_vs_characterize",
        100 * (params.threshold_A / reference["threshold_A"] - 1),
        "%",
        fitted_A=params.threshold_A,
        characterize_A=reference["threshold_A"],
    )
    emit(
        "vortex_bench_relaxation_vs_characterize",
        100 * (tau / reference["relaxation_time_s"] - 1),
        "%",
        fitted_s=tau,
        characterize_s=reference["relaxation_time_s"],
        bias_A=reference["relaxation_bias_A"],
    )
    emit("vortex_bench_fit_wall_s", fit["wall_s"], "s", loss=fit["loss"])
    fresh = EvalConfig(n_drives=6, conditions={"bias_A": (6.5e-3, 7.5e-3, 8.5e-3)}, repeats=4)
    with (
        open_device(_model_file(root, "vortex", fit) + "?noise=0") as model,
        open_device("bench:emulated") as dev,
    ):
        scored = evaluate(
            model, dev, fresh, fresh_drives()
        )  # the file reads like the bench: 0 V rest, 5 points
        emit(
            "vortex_bench_fresh_nrmse",
            scored["nrmse"],
            "",
            model="fitted vortex as sim:PATH",
            noise_corrected=scored["nrmse_noise_corrected"],
            measurement=fit["measurement"],
        )
    twin = twin_nrmse(recordings, "bench:emulated", fresh, twin_wall_s)
    emit(
        "vortex_bench_fresh_nrmse",
        twin["nrmse"],
        "",
        model="twin (same recordings)",
        steps=twin["steps"],
        wall_s=twin_wall_s,
        noise_corrected=twin["noise_corrected"],
    )


def _model_file(root: Path, model: str, fit: dict) -> str:
    from spinlab.sim_backends.model_file import save_model

    path = save_model(
        root / f"{model}-{time.time_ns()}.json", model, fit["device_options"], {"benchmark": True}
    )
    return f"sim:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("macrospin", "vortex"))
    parser.add_argument("--grid-points", type=int, default=7, help="grid points per parameter (macrospin)")
    parser.add_argument("--twin-wall-s", type=float, default=120.0, help="training budget of each twin")
    parser.add_argument("--trials", type=int, default=20, help="random hidden parameter sets (macrospin)")
    parser.add_argument("--trials-only", action="store_true", help="only the random parameter sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "macrospin"):
            if not args.trials_only:
                bench_macrospin(Path(tmp), args.grid_points, args.twin_wall_s)
            bench_macrospin_trials(Path(tmp), args.trials)
        if args.only in (None, "vortex"):
            bench_vortex(Path(tmp), args.twin_wall_s)


if __name__ == "__main__":
    main()
