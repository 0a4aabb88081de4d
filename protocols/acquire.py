"""Training-data acquisition for the digital twin: random multi-level drives at swept conditions.

A plan: each step applies one batch (one recording at every condition combination) and the
engine records it as one event of the ``recordings`` stream (datasets ``drive_V``,
``response_V``, ``conditions``, ``validation``, ``repeats``, rows appended). Random multi-level
drives (a new uniform level every random hold time) excite the device at all time scales from
one sample up to a few relaxation times, which is what a twin must learn; the reservoir's
masked drives (a new level every sample) are inside that family. Each batch's drives come
from their own random stream, so an interrupted acquisition resumes exactly.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from spinlab import Device, Waveform
from spinlab.config import Config, NonNegativeInt, Positive, PositiveInt
from spinlab.engine import Plan, RunContext, seed_stream
from spinlab.engine.figures import condition_text, label, prefix, quantity, scaled
from spinlab.engine.plan import Shortcut, assign_setting, command, make_config
from spinlab.errors import ConfigError, SafetyLimitError

if TYPE_CHECKING:  # the twin (torch) loads only when batches are made: the field check stays light
    from matplotlib.figure import Figure

    from spinlab.twin.trajectory import Trajectory

log = logging.getLogger("spinlab.acquire")

#: Most recording batches one acquisition may take (each is at least one device call).
MAX_BATCHES = 1_000_000
#: Most drive samples one device call may hold (memory of the drive, the response and the AWG).
MAX_CALL_SAMPLES = 200_000_000


class AcquireConfig(Config):
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

    duration_s: Positive = Field(
        5e-3, description="Total device time to record (all recordings, all conditions)"
    )
    dt_s: Positive = Field(1e-7, description="Sample interval of drives and responses")
    record_s: Positive = Field(1e-4, description="Length of one recording")
    hold_s: tuple[Positive, Positive] = Field(
        (1e-7, 1e-6), description="Hold time range of each random level: MIN,MAX"
    )
    amplitude_V: Positive = Field(
        0.4, description="Drive levels are uniform in +-this, clipped to the device limit"
    )
    conditions: dict[str, tuple[float, ...]] = Field(
        {},
        description="Condition name -> values swept (every "
        "combination in turn, one recording "
        "each per batch)",
    )
    validation_every: NonNegativeInt = Field(
        0, description="Every Nth batch (0, N, 2N, ...) is held out; 0: none"
    )
    validation_repeats: PositiveInt = Field(
        1, description="Held-out drives are applied this often and averaged"
    )

    @field_validator("conditions", mode="before")
    @classmethod
    def _sequences(cls, value: Any) -> Any:
        if isinstance(value, Mapping):  # a single value sweeps one point
            return {str(k): tuple(np.atleast_1d(v).tolist()) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _feasible(self) -> AcquireConfig:
        if self.hold_s[0] > self.hold_s[1]:
            raise ValueError(f"hold_s must be (min, max) with min <= max, got {self.hold_s}")
        if self.record_s < 4 * self.dt_s:
            raise ValueError(
                f"record_s ({self.record_s:g} s) must hold at least 4 samples of dt_s ({self.dt_s:g} s)"
            )
        if self.validation_every == 1:
            raise ValueError("validation_every must be 0 (no held-out data) or >= 2")
        empty = [name for name, values in self.conditions.items() if not values]
        if empty:
            raise ValueError(f"condition sweep {empty[0]} needs at least one value")
        first = self.batch_device_time_s(0)  # held out (repeated) when validation_every > 0
        if first > self.duration_s * (1 + 1e-9):
            repeats = f" x validation_repeats = {self.validation_repeats}" if self.validation_every else ""
            raise ValueError(
                f"duration_s = {self.duration_s:g} s is shorter than one recording at every condition "
                f"({self.n_conditions} x record_s = {self.record_s:g} s{repeats} = {first:g} s, the first "
                "batch); raise duration_s, or lower record_s, the sweep or validation_repeats"
            )
        call = self.n_samples * self.n_conditions * self.validation_repeats
        if call > MAX_CALL_SAMPLES:
            raise ValueError(
                f"one batch would send {call:.3g} drive samples ({self.n_conditions} conditions x "
                f"{self.n_samples:.3g} samples x {self.validation_repeats} repeats), above "
                f"{MAX_CALL_SAMPLES:.0e}; shorten record_s or use a coarser dt_s"
            )
        batches = self.duration_s / self.batch_device_time_s(1)
        if batches > MAX_BATCHES:
            raise ValueError(
                f"duration_s = {self.duration_s:g} s is {batches:.3g} batches of "
                f"{self.record_s:g} s recordings, more than {MAX_BATCHES:,}; record for less time "
                "or with longer recordings"
            )
        return self

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
        """Recording batches (one recording at every condition each) that fit the duration:
        whole cycles of ``validation_every`` batches in closed form, then the rest one by one."""
        budget = self.duration_s * (1 + 1e-9)
        index, used = 0, 0.0
        if self.validation_every:
            cycle = sum(self.batch_device_time_s(i) for i in range(self.validation_every))
            cycles = int(budget // cycle)
            index, used = cycles * self.validation_every, cycles * cycle
        while used + self.batch_device_time_s(index) <= budget:
            used += self.batch_device_time_s(index)
            index += 1
        return index

    def condition_grid(self) -> list[dict[str, float]]:
        names = list(self.conditions)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.conditions.values())] or [{}]


def random_multilevel(
    rng: np.random.Generator, n: int, dt_s: float, hold_s: tuple[float, float], amplitude_V: float
) -> np.ndarray:
    """Piecewise-constant drive: uniform levels in +-amplitude held for random times (drawn
    for enough holds to cover ``n`` samples at once, then cut)."""
    lo = max(1, int(round(hold_s[0] / dt_s)))
    hi = max(lo, int(round(hold_s[1] / dt_s)))
    count = n // lo + 1
    holds = rng.integers(lo, hi + 1, size=count)
    levels = rng.uniform(-amplitude_V, amplitude_V, size=count)
    return np.repeat(levels, holds)[:n]


def effective_amplitude(device: Device, config: AcquireConfig) -> float:
    """The amplitude actually used: the configured one clipped to the device's limit."""
    limit = device.limits.max_drive_V
    if config.amplitude_V > limit:
        log.warning(
            "amplitude %.3g V clipped to the device's max_drive_V = %.3g V", config.amplitude_V, limit
        )
        return float(limit)
    return float(config.amplitude_V)


def require_conditions(
    device: Device, conditions: Mapping[str, Any], what: str = "refused before anything was driven"
) -> None:
    """Refuse in one line, before anything is driven, a condition the device does not take (a
    field on a bench without a magnet) or a value beyond its limits. Every plan that runs at
    chosen conditions (``--field-T``) checks them here."""
    unknown = sorted(set(conditions) - set(device.condition_names))
    if unknown:
        why = "; it has no field control" if "field_T" in unknown else ""
        raise ConfigError(
            f"{device.address or type(device).__name__} has no condition(s) {unknown}; it accepts "
            f"{list(device.condition_names)}{why}"
        )
    try:
        device.limits.check_conditions({k: np.atleast_1d(v) for k, v in conditions.items()})
    except SafetyLimitError as exc:
        raise SafetyLimitError(f"{what}: {exc}") from None


def check_conditions(device: Device, config: AcquireConfig) -> None:
    """Refuse before the first drive if a swept condition is unknown or beyond the limits."""
    grid = config.condition_grid()
    swept = {name: np.array([g[name] for g in grid]) for name in config.conditions}
    require_conditions(device, swept, "condition sweep rejected before acquisition")


@dataclass
class RecordingBatch:
    """One recording at every condition combination; ``validation`` marks held-out data."""

    index: int
    trajectories: list[Trajectory]
    validation: bool
    repeats: int
    device_time_s: float


class BatchSource:
    """The acquisition's steps: what batch ``index`` applies, and its recorded data.

    ``step(index)`` is a device step for ``RunContext.measure`` (drives from the stream
    ``drives/<index>`` of ``seed``); ``batch(index, data)`` turns recorded data back into a
    :class:`RecordingBatch` for the twin's trainer."""

    def __init__(self, device: Device, config: AcquireConfig, seed: int) -> None:
        check_conditions(device, config)
        self.config = config
        self.seed = seed
        self.amplitude_V = effective_amplitude(device, config)
        self.grid = config.condition_grid()
        self.names = list(device.condition_names)
        self.swept = {name: np.array([g[name] for g in self.grid]) for name in config.conditions}
        self.full = device.resolve_conditions(self.swept, len(self.grid))

    def step(self, index: int) -> Callable[[Device], dict[str, np.ndarray]]:
        cfg, n, k = self.config, self.config.n_samples, len(self.grid)
        rng = seed_stream(self.seed, f"drives/{index}")
        drives = np.stack(
            [random_multilevel(rng, n, cfg.dt_s, cfg.hold_s, self.amplitude_V) for _ in self.grid]
        )
        validation = cfg.is_validation(index)
        repeats = cfg.validation_repeats if validation else 1

        def apply(device: Device) -> dict[str, np.ndarray]:
            wave = Waveform(np.tile(drives, (repeats, 1)), cfg.dt_s)
            response = device.respond(wave, {name: np.tile(v, repeats) for name, v in self.swept.items()})
            mean = response.samples.reshape(repeats, k, n).mean(axis=0)
            conds = np.array(
                [
                    [self.full[name][i] if name in self.full else math.nan for name in self.names]
                    for i in range(k)
                ]
            ).reshape(k, len(self.names))
            return {
                "drive_V": drives,
                "response_V": mean,
                "conditions": conds,
                "validation": np.full(k, validation),
                "repeats": np.full(k, repeats),
            }

        return apply

    def batch(self, index: int, data: Mapping[str, np.ndarray]) -> RecordingBatch:
        from spinlab.twin.trajectory import Trajectory

        cfg = self.config
        trajectories = [
            Trajectory(
                data["drive_V"][i],
                data["response_V"][i],
                cfg.dt_s,
                {name: float(data["conditions"][i][j]) for j, name in enumerate(self.names)},
                initial="rest",
            )
            for i in range(len(self.grid))
        ]
        return RecordingBatch(
            index,
            trajectories,
            bool(data["validation"][0]),
            int(data["repeats"][0]),
            cfg.batch_device_time_s(index),
        )

    @property
    def attrs(self) -> dict[str, dict[str, Any]]:
        """Dataset attributes of the ``recordings`` stream (set on its first event)."""
        dt = {"dt_s": self.config.dt_s, "unit": "V"}
        return {"drive_V": dt, "response_V": dt, "conditions": {"names": ",".join(self.names)}}


def device_batches(
    device: Device, config: AcquireConfig, seed: int = 0, *, max_batches: int | None = None
) -> Iterator[RecordingBatch]:
    """The same batches straight from ``device``, recorded nowhere (tests, benchmarks)."""
    source = BatchSource(device, config, seed)
    total = config.n_batches if max_batches is None else min(config.n_batches, max_batches)
    for index in range(total):
        yield source.batch(index, source.step(index)(device))


def recording_batches(
    ctx: RunContext, config: AcquireConfig, *, max_batches: int | None = None
) -> Iterator[RecordingBatch]:
    """Record one batch per step through ``ctx`` and yield each as a :class:`RecordingBatch`;
    lazy, so a consumer (the twin's online trainer) stops acquisition by not asking for more."""
    source = BatchSource(ctx.device, config, ctx.seed)
    total = config.n_batches if max_batches is None else min(config.n_batches, max_batches)
    for index in range(total):
        data = ctx.measure(
            "recordings", source.step(index), key=f"batch/{index}", meta={"batch": index}, attrs=source.attrs
        )
        yield source.batch(index, data)


def run(ctx: RunContext, config: AcquireConfig) -> dict[str, Any]:
    """The plan body: record ``config.duration_s`` of device time; returns the summary."""
    total = config.n_batches
    recordings, device_time_s = 0, 0.0
    for batch in recording_batches(ctx, config):
        recordings += len(batch.trajectories)
        device_time_s += batch.device_time_s
        ctx.progress(batch.index + 1, total, stage="acquire", device_time_s=device_time_s)
        first = batch.trajectories[0]
        ctx.publish(
            "acquire.batch",
            {"index": batch.index, "recordings": recordings, "device_time_s": device_time_s},
            {"drive_V": first.drive, "response_V": first.response},
        )
    summary = {
        "recordings": recordings,
        "device_time_s": device_time_s,
        "samples_per_recording": config.n_samples,
        "dt_s": config.dt_s,
        "amplitude_V": effective_amplitude(ctx.device, config),
        "conditions": config.condition_grid(),
        "seed": ctx.seed,
    }
    ctx.result(**summary)
    return summary


#: at most this many conditions get a column of the example figure
EXAMPLE_CONDITIONS = 4


def plot_examples(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The first recording at each condition (the first batch holds one per condition): the
    drive above, the device's response below."""
    from matplotlib.figure import Figure

    grid = list(results.get("conditions") or [{}])[:EXAMPLE_CONDITIONS]
    drive, response = datasets["drive_V"][: len(grid)], datasets["response_V"][: len(grid)]
    t, t_unit = scaled(np.arange(drive.shape[1]) * float(results["dt_s"]), "s")
    d_factor, d_unit = prefix(drive, "V")
    r_factor, r_unit = prefix(response, "V")
    fig = Figure(figsize=(3.2 * len(grid) + 1.0, 4.4))
    axes = fig.subplots(2, len(grid), sharex=True, sharey="row", squeeze=False)
    for k, conditions in enumerate(grid):
        top, bottom = axes[0, k], axes[1, k]
        top.step(t, drive[k] * d_factor, where="post", color="tab:blue", lw=0.8)
        bottom.plot(t, response[k] * r_factor, color="k", lw=0.8)
        top.set_title(condition_text(conditions) or "the device's own conditions", fontsize=9)
        bottom.set_xlabel(label("t", t_unit))
        bottom.set_xlim(t[0], t[-1])
    axes[0, 0].set_ylabel(label("V_drive", d_unit))
    axes[1, 0].set_ylabel(label("V_out", r_unit))
    fig.suptitle(
        f"Training data: {results['recordings']} recordings, "
        f"{quantity(results['device_time_s'], 's')} of device time",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def numbers(text: str, name: str) -> tuple[float, ...]:
    """'6e-3,9e-3' -> (0.006, 0.009): a condition sweep as typed."""
    try:
        return tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None


def condition_shortcuts(group: str = "conditions") -> tuple[Shortcut, ...]:
    """``--bias-A V1,V2``, ``--field-T V1,V2`` and ``--condition NAME=V1,V2``: condition sweeps
    (the ``conditions`` setting at ``group``) as the command line spells them."""

    def sweep(name: str, flag: str) -> Any:
        return lambda settings, text: assign_setting(settings, f"{group}.{name}", numbers(text, flag))

    def others(settings: dict[str, Any], items: list[str]) -> None:
        for item in items:
            name, sep, values = item.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--condition must look like NAME=V1,V2, got {item!r}")
            assign_setting(settings, f"{group}.{name.strip()}", numbers(values, f"--condition {name}"))

    return (
        Shortcut(("--bias-A",), "Bias currents to sweep, comma separated (A).", sweep("bias_A", "--bias-A")),
        Shortcut(("--field-T",), "Fields to sweep, comma separated (T).", sweep("field_T", "--field-T")),
        Shortcut(("--condition",), "Any other condition sweep: NAME=V1,V2 (repeatable).", others, list),
    )


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run acquire`` prints."""
    return (
        f"recorded {summary['recordings']} drives, {summary['device_time_s'] * 1e3:.3g} ms "
        f"of device time -> {summary['run_dir']}"
    )


@command(
    config=AcquireConfig,
    report=report,
    shortcuts=condition_shortcuts(),
    aliases={"--duration": "duration_s"},
    help="Record random multi-level drives and the device's responses (twin training data).",
)
def plan(config: AcquireConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The acquisition as a plan (``spinlab acquire``'s defaults unless overridden)."""
    cfg = make_config(AcquireConfig, config, overrides)
    return Plan(
        "acquire",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={"examples.png": plot_examples},
        nexus={"signal": "response_V", "axes": [".", "."]},
    )


__all__ = [
    "AcquireConfig",
    "RecordingBatch",
    "BatchSource",
    "random_multilevel",
    "recording_batches",
    "device_batches",
    "run",
    "plan",
    "check_conditions",
    "require_conditions",
    "effective_amplitude",
    "condition_shortcuts",
    "numbers",
    "report",
]
