"""Scoring a twin against its device on fresh random drives.

A stochastic device (thermal noise, scope noise) never repeats itself, so a twin - which
predicts the deterministic response - cannot score better than the device's own shot-to-shot
scatter. With ``repeats > 1`` every drive is applied several times: the twin is scored against
the mean response (its actual job) and the single-shot noise floor is measured from the spread,
so the two numbers can be told apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinlab import Device, Waveform
from spinlab.errors import ConfigError
from spinlab.twin.data import nrmse
from spinlab.protocols.acquire import AcquireConfig, check_conditions, effective_amplitude, random_multilevel


@dataclass(frozen=True)
class EvalConfig:
    """Fresh drives: ``n_drives`` per condition value, same family as the training drives."""

    n_drives: int = 10
    record_s: float = 1e-4
    dt_s: float = 1e-7
    hold_s: tuple[float, float] = (1e-7, 1e-6)
    amplitude_V: float = 0.4
    conditions: dict[str, tuple[float, ...]] | None = None
    repeats: int = 1
    seed: int = 1000

    def __post_init__(self) -> None:
        if self.n_drives < 1 or self.repeats < 1:
            raise ConfigError(f"n_drives and repeats (--drives, --repeats) must be >= 1, got "
                              f"{self.n_drives}, {self.repeats}")

    def acquire_config(self) -> AcquireConfig:
        n_cond = int(np.prod([len(v) for v in (self.conditions or {}).values()])) if self.conditions else 1
        return AcquireConfig(duration_s=self.record_s * n_cond, dt_s=self.dt_s, record_s=self.record_s,
                             hold_s=self.hold_s, amplitude_V=self.amplitude_V,
                             conditions=self.conditions or {}, seed=self.seed)


def evaluate(twin: Device, device: Device, config: EvalConfig, run: Any = None) -> dict[str, Any]:
    """NRMSE of ``twin`` vs ``device`` per condition combination and pooled.

    Returns the summary (and records drives, device mean/first-shot and twin responses in
    ``run`` when given)."""
    acq = config.acquire_config()
    check_conditions(device, acq)
    amplitude = min(effective_amplitude(device, acq), twin.limits.max_drive_V)
    rng = np.random.default_rng(config.seed)
    n = acq.n_samples
    per_condition, pooled = [], {"twin": [], "mean": [], "shot": [], "var": []}
    examples = []
    for cond in acq.condition_grid():
        drives = np.stack([random_multilevel(rng, n, acq.dt_s, acq.hold_s, amplitude)
                           for _ in range(config.n_drives)])
        wave = Waveform(drives, acq.dt_s)
        shots = device.respond(Waveform(np.tile(drives, (config.repeats, 1)), acq.dt_s), cond)
        shots = shots.samples.reshape(config.repeats, config.n_drives, n)
        mean = shots.mean(axis=0)
        predicted = twin.respond(wave, cond).samples
        entry = {**cond, "nrmse": nrmse(predicted, mean),
                 "nrmse_single_shot": nrmse(predicted, shots[0])}
        if config.repeats > 1:
            var = shots.var(axis=0, ddof=1)
            entry["noise_floor_single_shot"] = float(math.sqrt(var.mean()) / np.std(shots[0]))
            pooled["var"].append(var)
        per_condition.append(entry)
        pooled["twin"].append(predicted)
        pooled["mean"].append(mean)
        pooled["shot"].append(shots[0])
        examples.append((cond, drives[0], shots[0][0], mean[0], predicted[0]))
        if run is not None:
            tag = "_".join(f"{k}={v:g}" for k, v in cond.items()) or "default"
            run.save(f"eval/{tag}/drive_V", wave)
            run.save(f"eval/{tag}/device_mean_V", mean, dt_s=acq.dt_s, repeats=config.repeats)
            run.save(f"eval/{tag}/device_shot_V", shots[0], dt_s=acq.dt_s)
            run.save(f"eval/{tag}/twin_V", predicted, dt_s=acq.dt_s)
            run.checkpoint()
    twin_all, mean_all, shot_all = (np.concatenate(pooled[k]) for k in ("twin", "mean", "shot"))
    summary: dict[str, Any] = {
        "nrmse": nrmse(twin_all, mean_all),
        "nrmse_single_shot": nrmse(twin_all, shot_all),
        "repeats": config.repeats,
        "n_drives": config.n_drives * len(per_condition),
        "per_condition": per_condition,
        "amplitude_V": amplitude,
        "seed": config.seed,
    }
    if config.repeats > 1:
        var_all = np.concatenate(pooled["var"])
        summary["noise_floor_single_shot"] = float(math.sqrt(var_all.mean()) / np.std(shot_all))
        # scoring against a mean of r shots still contains 1/r of the shot noise; removing it
        # in quadrature estimates the twin's error against the noise-free response
        floor = float(math.sqrt(var_all.mean() / config.repeats) / np.std(mean_all))
        summary["noise_floor_mean"] = floor
        summary["nrmse_noise_corrected"] = float(math.sqrt(max(summary["nrmse"] ** 2 - floor ** 2, 0.0)))
    summary["examples"] = examples
    return summary


def plot_examples(examples: list, dt_s: float, path: str, title: str = "") -> str:
    """One panel per condition: drive, device (shot and mean) and twin responses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 1, figsize=(9, 2.6 * len(examples)), squeeze=False)
    for ax, (cond, drive, shot, mean, twin) in zip(axes[:, 0], examples):
        t_us = np.arange(drive.size) * dt_s * 1e6
        ax.plot(t_us, shot * 1e3, color="0.75", lw=0.8, label="device (one shot)")
        ax.plot(t_us, mean * 1e3, color="k", lw=1.2, label="device (mean)")
        ax.plot(t_us, twin * 1e3, color="tab:red", lw=1.0, ls="--", label="twin")
        ax.set_ylabel("response (mV)")
        ax.set_title(", ".join(f"{k} = {v:g}" for k, v in cond.items()) or title, fontsize=9)
        ax2 = ax.twinx()
        ax2.step(t_us, drive, where="pre", color="tab:blue", lw=0.6, alpha=0.5)
        ax2.set_ylabel("drive (V)", color="tab:blue")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (us)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["EvalConfig", "evaluate", "plot_examples"]
