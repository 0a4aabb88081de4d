"""A trained Spin-Neural ODE as a Device (``twin:PATH``), so every protocol runs on it.

The Device speaks the twin's own units: a twin of a voltage-driven device takes volts (within
``max_drive_V``); a MuMax3 twin takes its drive input (e.g. the anisotropy ``Ku1`` in J/m3)
within the range it saw in training widened by ``drive_margin`` (default 5 % of the half-span
on each side: a protocol may touch the trained extremes, never go far beyond them), answers in
its output's unit (``mz``, dimensionless: the model's ``(mz - offset) * scale`` undone), and
its condition inputs (e.g. ``dmi_J_m2``) are the Device's conditions. A twin with several
drive inputs is not a Device (a Device has one drive): mark the slow ones as conditions.

The twin only knows the sample interval it was trained on and the operating conditions it saw.
A drive on another grid is either refused with a clear error or, with ``resample=1``, held onto
the twin's grid and the response interpolated back. Conditions outside the trained range still
run (the twin is smooth in them) but warn, because that is extrapolation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinlab import Device, SafetyLimits
from spinlab.device import DriveQuantity
from spinlab.errors import ConfigError, TwinDivergedError
from spinlab.sim_backends._options import (
    coerce_options,
    device_options_spec,
    flag,
    take_limits_and_conditions,
)
from spinlab.twin.checkpoint import TwinMeta, load_twin
from spinlab.twin.model import SpinNODE, resolve_torch_device

#: default widening of a non-voltage drive's trained range, as a share of its half-span
DRIVE_MARGIN = 0.05


class TwinExtrapolationWarning(UserWarning):
    """A condition is outside the range the twin was trained on."""


class TwinDevice(Device):
    """Device backed by a :class:`~spinlab.twin.model.SpinNODE` checkpoint.

    ``noise`` adds the measured output noise stored with the twin (seeded by ``seed``), so
    reservoir experiments see a realistic signal-to-noise ratio; ``batch_size`` bounds how many
    drives are integrated at once (memory); ``torch_device`` is where the twin computes
    (``auto``: the GPU when present); ``threads`` is how many CPU cores share a large batch
    (default: torch's thread setting when opened).
    """

    def __init__(
        self,
        model: SpinNODE,
        meta: TwinMeta,
        *,
        path: str = "",
        noise: bool = False,
        seed: int = 0,
        resample: bool = False,
        batch_size: int = 1024,
        threads: int | None = None,
        torch_device: str | torch.device = "auto",
        limits: SafetyLimits | None = None,
        drive_margin: float = DRIVE_MARGIN,
        default_conditions: Mapping[str, float] | None = None,
    ) -> None:
        names = model.arch.condition_names
        if len(model.arch.drive_names) != 1:
            raise ConfigError(
                f"twin {path} has {len(model.arch.drive_names)} drive inputs "
                f"{list(model.arch.drive_names)}; a Device has one drive: retrain with the slow "
                "inputs marked COLUMN:condition in --input (or score it on tables with "
                "`spinlab twin eval --mumax`)"
            )
        if not (math.isfinite(drive_margin) and drive_margin >= 0):
            raise ConfigError(f"twin option drive_margin must be a number >= 0, got {drive_margin}")
        defaults = {
            n: float(np.mean(meta.condition_ranges[n]))
            if n in meta.condition_ranges
            else float(model.c_mean[i])
            for i, n in enumerate(names)
        }
        defaults.update(default_conditions or {})
        super().__init__(limits, defaults)
        self.condition_names = tuple(names)
        self.response_unit = meta.output_unit
        self.inputs = meta.input_specs(model.arch.drive_names, names)
        self.drive_margin = float(drive_margin)
        self._scale = float(meta.output.get("scale", 1.0))
        self._offset = float(meta.output.get("offset", 0.0))
        self.torch_device = resolve_torch_device(torch_device)
        self.model = model.eval().to(self.torch_device)
        self.meta = meta
        self.path = path
        self.noise = bool(noise)
        self.seed = int(seed)
        self.resample = bool(resample)
        if batch_size < 1:
            raise ConfigError(f"twin option batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        threads = torch.get_num_threads() if threads is None else threads
        if threads < 1:
            raise ConfigError(f"twin option threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self._noise = torch.Generator().manual_seed(self.seed)  # float32 normals: 5x numpy's f64
        self.address = f"twin:{path}"

    @property
    def dt_s(self) -> float:
        return self.meta.dt_s

    @property
    def drive_quantity(self) -> DriveQuantity:
        """Volts within ``max_drive_V`` for a voltage twin; otherwise the drive input's trained
        range widened by ``drive_margin`` (checkpoints without a range: mean +- 3 std)."""
        spec = self.inputs[0]
        if spec["unit"] == "V":
            return super().drive_quantity
        if spec.get("range"):
            lo, hi = spec["range"]
        else:
            mean, std = float(self.model.u_mean[0]), float(self.model.u_std[0])
            lo, hi = mean - 3 * std, mean + 3 * std
        pad = self.drive_margin * 0.5 * (hi - lo)
        return DriveQuantity(spec.get("quantity") or spec["name"], spec["unit"], lo - pad, hi + pad)

    def identity(self) -> dict[str, Any]:
        prov = self.meta.provenance
        return {
            **super().identity(),
            "checkpoint": self.path,
            "dt_s": self.meta.dt_s,
            "architecture": self.model.arch.to_dict(),
            "condition_ranges": self.meta.condition_ranges,
            "noise": self.noise,
            "inputs": self.inputs,
            "output": self.meta.output,
            "seed": self.seed,
            "torch_device": str(self.torch_device),
            "trained_on": prov.get("source"),
            "best_nrmse": prov.get("best_nrmse"),
        }

    def _check_conditions(self, conditions: dict[str, np.ndarray]) -> None:
        for name, values in conditions.items():
            lo, hi = self.meta.condition_ranges.get(name, (-math.inf, math.inf))
            span = hi - lo
            tol = 1e-9 * max(abs(lo), abs(hi), 1e-30)
            outside = (values < lo - tol) | (values > hi + tol)
            if np.any(outside):
                bad = values[outside]
                warnings.warn(
                    f"twin {self.path}: {name} = {bad.min():.4g}..{bad.max():.4g} is outside the "
                    f"trained range [{lo:.4g}, {hi:.4g}] (span {span:.3g}); the response is an "
                    "extrapolation - retrain with data at these conditions to trust it",
                    TwinExtrapolationWarning,
                    stacklevel=4,
                )

    def _to_twin_grid(self, drive: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Hold the drive onto the twin's grid; also return the twin grid's sample times."""
        n_twin = max(int(round(drive.shape[1] * dt_s / self.dt_s)), 1)
        t_twin = (np.arange(n_twin) + 1) * self.dt_s  # end of each twin sample's hold
        idx = np.clip(np.ceil(t_twin / dt_s - 1 - 1e-9).astype(int), 0, drive.shape[1] - 1)
        return drive[:, idx], t_twin

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        if not math.isclose(dt_s, self.dt_s, rel_tol=1e-6):
            if not self.resample:
                raise ConfigError(
                    f"drive sample interval {dt_s:.6g} s does not match the twin's {self.dt_s:.6g} s "
                    f"({self.path}); resample the drive to {self.dt_s:.6g} s, or open the twin "
                    "with 'twin:PATH?resample=1' to hold it onto the twin's grid"
                )
            twin_drive, t_twin = self._to_twin_grid(drive, dt_s)
            twin_out = self._simulate(twin_drive, conditions)
            t_out = (np.arange(drive.shape[1]) + 1) * dt_s
            out = np.stack([np.interp(t_out, t_twin, row) for row in twin_out]).astype(np.float32)
        else:
            out = self._simulate(drive, conditions)
        if self.noise and self.meta.noise_std > 0:
            self._add_noise(out)
        return out

    def _add_noise(self, out: np.ndarray, rows: int = 16) -> None:
        """Add the measured noise in place, a few rows at a time: no second array of the
        response's size (on this machine touching fresh memory costs as much as the noise)."""
        flat = torch.from_numpy(out.reshape(out.shape[0], -1))
        buf = torch.empty(min(rows, flat.shape[0]), flat.shape[1])
        for start in range(0, flat.shape[0], rows):
            block = flat[start : start + rows]
            noise = buf[: block.shape[0]]
            torch.randn(noise.shape, generator=self._noise, out=noise)
            block.add_(noise, alpha=self.meta.noise_std)

    def _simulate(self, drive: np.ndarray, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """The response, float32 (the twin's precision; half the memory of float64)."""
        self._check_conditions(conditions)
        cond = self.model.condition_tensor(conditions, drive.shape[0])
        parts = []
        for start in range(0, drive.shape[0], self.batch_size):
            stop = min(start + self.batch_size, drive.shape[0])
            y = self.model.simulate(
                drive[start:stop],
                cond[start:stop],
                settle_samples=self.meta.settle_samples,
                rest_drive=self.meta.rest_drive_V,
                workers=self.threads,
            )
            parts.append(y.cpu().numpy())
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self._scale != 1.0 or self._offset != 0.0:  # the model's scaled output -> the physical one
            out /= np.float32(self._scale)
            out += np.float32(self._offset)
        if not np.all(np.isfinite(out)):
            raise TwinDivergedError(
                f"twin {self.path} diverged (non-finite response); the drive or conditions are "
                "probably far outside what it was trained on"
            )
        return out


def open_twin(path: str | Path, **options: Any) -> TwinDevice:
    """``open_device("twin:PATH?noise=1&seed=3&resample=1")``: load a checkpoint as a Device.

    Options (strings from the address are converted): ``noise`` (add the measured noise),
    ``seed``, ``resample``, ``batch_size``, ``threads``, ``torch_device`` (auto, cpu, cuda,
    cuda:N), ``max_drive_V``, ``max_bias_A``, ``max_field_T``, ``drive_margin`` (a non-voltage
    drive's accepted range beyond the trained one, share of its half-span) and a default value
    for any condition the twin knows (e.g. ``bias_A``, ``dmi_J_m2``)."""
    model, meta = load_twin(path)
    names = model.arch.condition_names
    spec: dict[str, Any] = {
        "noise": flag,
        "resample": flag,
        "seed": int,
        "batch_size": int,
        "threads": int,
        "torch_device": lambda _, v: resolve_torch_device(v),
        "drive_margin": float,
        **device_options_spec(names),
    }
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise ConfigError(f"unknown twin option(s) {unknown}; known: {', '.join(spec)}")
    kwargs = coerce_options(options, spec, where=f"twin:{path}")
    limits, defaults = take_limits_and_conditions(kwargs, SafetyLimits(), names)
    return TwinDevice(model, meta, path=str(path), limits=limits, default_conditions=defaults, **kwargs)


__all__ = ["TwinDevice", "TwinExtrapolationWarning", "open_twin"]
