"""Training-data acquisition for the digital twin: random multi-level drives at swept conditions.

Plan only: it builds drives, asks the Device for responses and hands back recordings; the Run
records them (``drive_V``, ``response_V``, ``conditions`` datasets grown with ``Run.append``).
Random multi-level drives (a new uniform level every random hold time) excite the device at all
time scales from one sample up to a few relaxation times, which is what a twin must learn;
the reservoir's masked drives (a new level every sample) are inside that family.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from spinlab import Device, Waveform
from spinlab.errors import ConfigError, SafetyLimitError
from spinlab.twin.data import Trajectory

log = logging.getLogger("spinlab.acquire")


@dataclass(frozen=True)
class AcquireConfig:
    """What to record. Times in seconds, drive levels in volts.

    ``duration_s`` is the total device time (all recordings, all conditions); each recording is
    ``record_s`` long on a ``dt_s`` grid; levels are uniform in +-``amplitude_V`` (clipped to the
    device's ``max_drive_V``) and held for a uniform random time in ``hold_s``; ``conditions``
    maps a condition name to the values to sweep (the grid of all combinations is visited in
    turn, one recording each per batch). Every ``validation_every``-th batch is marked held-out
    and can be applied ``validation_repeats`` times and averaged: that scores a twin against the
    device's deterministic response rather than against one noisy shot (repeats count as device
    time).
    """

    duration_s: float = 5e-3
    dt_s: float = 1e-7
    record_s: float = 1e-4
    hold_s: tuple[float, float] = (1e-7, 1e-6)
    amplitude_V: float = 0.4
    conditions: Mapping[str, Sequence[float]] = field(default_factory=dict)
    validation_every: int = 0      # every Nth batch (0, N, 2N, ...) is held out; 0: none
    validation_repeats: int = 1    # held-out drives are applied this often and averaged
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("duration_s", "dt_s", "record_s", "amplitude_V"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"acquire {name} must be a positive number, got {value!r}")
        lo, hi = (float(v) for v in self.hold_s)
        if not (0 < lo <= hi):
            raise ConfigError(f"acquire hold_s must be (min, max) with 0 < min <= max, got {self.hold_s}")
        object.__setattr__(self, "hold_s", (lo, hi))
        if self.record_s < 4 * self.dt_s:
            raise ConfigError(f"record_s ({self.record_s:g} s) must hold at least 4 samples of dt_s ({self.dt_s:g} s)")
        if self.validation_every < 0 or self.validation_every == 1 or self.validation_repeats < 1:
            raise ConfigError(
                "validation_every must be 0 (no held-out data) or >= 2, validation_repeats >= 1; "
                f"got {self.validation_every}, {self.validation_repeats}"
            )
        conds = {}  # normalised first: n_conditions below needs sequences
        for name, values in dict(self.conditions).items():
            vals = tuple(float(v) for v in np.atleast_1d(values))
            if not vals or not all(math.isfinite(v) for v in vals):
                raise ConfigError(f"condition sweep {name} needs finite values, got {values!r}")
            conds[str(name)] = vals
        object.__setattr__(self, "conditions", conds)
        if self.record_s * self.n_conditions > self.duration_s * (1 + 1e-9):
            raise ConfigError(
                f"duration_s = {self.duration_s:g} s is shorter than one recording at every "
                f"condition ({self.n_conditions} x {self.record_s:g} s); record longer or sweep less"
            )

    @property
    def n_samples(self) -> int:
        return int(round(self.record_s / self.dt_s))

    @property
    def n_conditions(self) -> int:
        return int(np.prod([len(v) for v in self.conditions.values()])) if self.conditions else 1

    def is_validation(self, index: int) -> bool:
        return self.validation_every > 0 and index % self.validation_every == 0

    def batch_device_time_s(self, index: int) -> float:
        repeats = self.validation_repeats if self.is_validation(index) else 1
        return self.record_s * self.n_conditions * repeats

    @property
    def n_batches(self) -> int:
        """Recording batches (one recording at every condition each) that fit the duration."""
        used, index = 0.0, 0
        while used + self.batch_device_time_s(index) <= self.duration_s * (1 + 1e-9):
            used += self.batch_device_time_s(index)
            index += 1
        return index

    def condition_grid(self) -> list[dict[str, float]]:
        names = list(self.conditions)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.conditions.values())] or [{}]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conditions"] = {k: list(v) for k, v in self.conditions.items()}
        d["hold_s"] = list(self.hold_s)
        return d


def random_multilevel(rng: np.random.Generator, n: int, dt_s: float, hold_s: tuple[float, float],
                      amplitude_V: float) -> np.ndarray:
    """Piecewise-constant drive: uniform levels in +-amplitude held for random times."""
    lo = max(1, int(round(hold_s[0] / dt_s)))
    hi = max(lo, int(round(hold_s[1] / dt_s)))
    out = np.empty(n)
    i = 0
    while i < n:
        hold = int(rng.integers(lo, hi + 1))
        out[i:i + hold] = rng.uniform(-amplitude_V, amplitude_V)
        i += hold
    return out


def effective_amplitude(device: Device, config: AcquireConfig) -> float:
    """The amplitude actually used: the configured one clipped to the device's limit."""
    limit = device.limits.max_drive_V
    if config.amplitude_V > limit:
        log.warning("amplitude %.3g V clipped to the device's max_drive_V = %.3g V",
                    config.amplitude_V, limit)
        return float(limit)
    return float(config.amplitude_V)


def check_conditions(device: Device, config: AcquireConfig) -> None:
    """Refuse before the first drive if a swept condition is unknown or beyond the limits."""
    grid = config.condition_grid()
    merged = {name: np.array([g[name] for g in grid]) for name in config.conditions}
    unknown = sorted(set(merged) - set(device.condition_names))
    if unknown:
        raise ConfigError(
            f"{device.address or type(device).__name__} has no condition(s) {unknown}; it accepts "
            f"{list(device.condition_names)}"
        )
    try:
        device.limits.check_conditions(merged)
    except SafetyLimitError as exc:
        raise SafetyLimitError(f"condition sweep rejected before acquisition: {exc}") from None


@dataclass
class RecordingBatch:
    """One recording at every condition combination; ``validation`` marks held-out data."""

    index: int
    trajectories: list[Trajectory]
    validation: bool
    repeats: int
    device_time_s: float


def recording_batches(device: Device, config: AcquireConfig, *,
                      max_batches: int | None = None) -> Iterator[RecordingBatch]:
    """Yield one :class:`RecordingBatch` at a time.

    All drives of a batch are sent in one ``respond`` call (batched backends are fast); the
    generator is lazy, so a consumer can stop acquisition by simply not asking for more."""
    check_conditions(device, config)
    amplitude = effective_amplitude(device, config)
    rng = np.random.default_rng(config.seed)
    grid = config.condition_grid()
    n = config.n_samples
    total = config.n_batches if max_batches is None else min(config.n_batches, max_batches)
    conds = {name: np.array([g[name] for g in grid]) for name in config.conditions}
    full = device.resolve_conditions(conds, len(grid))
    for index in range(total):
        drives = np.stack([random_multilevel(rng, n, config.dt_s, config.hold_s, amplitude)
                           for _ in grid])
        validation = config.is_validation(index)
        repeats = config.validation_repeats if validation else 1
        wave = Waveform(np.tile(drives, (repeats, 1)), config.dt_s)
        response = device.respond(wave, {k: np.tile(v, repeats) for k, v in conds.items()})
        mean = response.samples.reshape(repeats, len(grid), n).mean(axis=0)
        yield RecordingBatch(index, [Trajectory(drives[i], mean[i], config.dt_s,
                                                {k: float(v[i]) for k, v in full.items()},
                                                initial="rest") for i in range(len(grid))],
                             validation, repeats, config.batch_device_time_s(index))


class RunRecorder:
    """Appends recording batches to a Run: ``drive_V``, ``response_V`` (rows of samples) and
    ``conditions`` (one row of condition values per recording), plus a split flag."""

    def __init__(self, run: Any, condition_names: Sequence[str], dt_s: float) -> None:
        self.run = run
        self.names = list(condition_names)
        self.dt_s = dt_s
        self.n_recordings = 0
        self.device_time_s = 0.0

    def __call__(self, record: RecordingBatch) -> None:
        batch = record.trajectories
        drives = np.stack([t.drive for t in batch])
        responses = np.stack([t.response for t in batch])
        conds = np.array([[t.conditions.get(n, math.nan) for n in self.names] for t in batch],
                         dtype=np.float64).reshape(len(batch), len(self.names))
        first = self.n_recordings == 0
        self.run.append("drive_V", drives)
        self.run.append("response_V", responses)
        if self.names:
            self.run.append("conditions", conds)
        self.run.append("validation", np.full(len(batch), bool(record.validation)))
        self.run.append("repeats", np.full(len(batch), int(record.repeats)))
        if first:
            self.run.file["drive_V"].attrs["dt_s"] = self.dt_s
            self.run.file["drive_V"].attrs["unit"] = "V"
            self.run.file["response_V"].attrs["dt_s"] = self.dt_s
            if self.names:
                self.run.file["conditions"].attrs["names"] = ",".join(self.names)
        self.n_recordings += len(batch)
        self.device_time_s += record.device_time_s
        self.run.publish("acquire.batch", {"index": record.index, "recordings": self.n_recordings,
                                           "device_time_s": self.device_time_s},
                         {"drive_V": drives[0], "response_V": responses[0]})


def run_acquire(device: Device, config: AcquireConfig, run: Any) -> dict[str, Any]:
    """Record ``config.duration_s`` of device time into ``run``; returns the summary."""
    run.record_seed("acquire", config.seed)
    recorder = RunRecorder(run, device.condition_names, config.dt_s)
    total = config.n_batches
    for record in recording_batches(device, config):
        recorder(record)
        run.progress(record.index + 1, total, device_time_s=recorder.device_time_s)
        run.checkpoint()
    summary = {"recordings": recorder.n_recordings, "device_time_s": recorder.device_time_s,
               "samples_per_recording": config.n_samples, "dt_s": config.dt_s,
               "amplitude_V": effective_amplitude(device, config),
               "conditions": config.condition_grid(), "seed": config.seed,
               "run": str(run.path)}
    run.result(**{k: v for k, v in summary.items() if k != "run"})
    return summary


__all__ = ["AcquireConfig", "RecordingBatch", "random_multilevel", "recording_batches", "RunRecorder",
           "run_acquire", "check_conditions", "effective_amplitude"]
