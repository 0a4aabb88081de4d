"""How good a reservoir is this device: task-independent measures, each beside its no-device baseline.

Plan: an i.i.d. input ``u`` uniform in [-1, 1] -> the masked time-multiplexed encoding of the
tasks (:mod:`spinlab.speech.encoder`, a random normal mask over ``n_nodes`` virtual nodes, each
held ``theta_s``, through the device's drive quantity) -> the device's node states, driven in
pieces after a warm-up exactly as Mackey-Glass is (:func:`spinlab.protocols.mackey_glass.measure_states`,
so an interrupted run resumes) -> from the one recording, the linear memory capacity, NARMA-10
and the information processing capacity by degree (:mod:`spinlab.analysis.reservoir_measures`).
Then, for the kernel and generalisation ranks, ``rank_streams`` short random streams (and the
same streams again, to measure the noise) and as many small perturbations of one stream.

The no-device baseline runs the same readouts on the masked input alone, as driven (one state
per node and input point), so what the device adds (memory,
nonlinearity) is a difference of two numbers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, field_validator

from spinlab.analysis import reservoir_measures as rm
from spinlab.config import Config, NonNegativeInt, Positive, PositiveInt
from spinlab.engine import Plan, RunContext
from spinlab.engine.plan import command, make_config
from spinlab.protocols.mackey_glass import default_theta_s, drive_pieces, measure_states
from spinlab.speech.encoder import Encoder, make_mask

#: Delays the IPC spans at degrees 1, 2 and 3 (``--ipc-delays 40,16,8``): the number of terms
#: grows as delays^degree / degree!, so higher degrees look less far back.
DEFAULT_IPC_DELAYS = (40, 16, 8)


class ReservoirMeasuresConfig(Config):
    """Everything that defines a reservoir-measures run (stored in the run file)."""

    n_points: Annotated[int, Field(ge=400)] = Field(3000, description="Input points of the main recording")
    n_nodes: PositiveInt = Field(30, description="Virtual nodes per input point")
    theta_s: Positive | None = Field(
        None, description="Hold time of one node (none: half the device's relaxation time, as Mackey-Glass)"
    )
    samples_per_node: PositiveInt = Field(
        2, description="Drive samples per node (drive interval = theta_s / samples_per_node)"
    )
    node_features: Literal["mean", "samples"] = Field(
        "samples", description="samples (each response sample of a hold is a state) or mean (one per node)"
    )
    drive_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Share of the device's drive range used (1: u = +-1 reaches its ends)"
    )
    bias_A: Positive | None = Field(None, description="DC bias current (none: the device's)")
    field_T: float | None = Field(
        None, description="Magnetic field, for devices that take one (none: the device's)"
    )
    washout: NonNegativeInt = Field(100, description="Input points at the start whose states are dropped")
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="Share of the points after the washout that trains the readouts; the rest scores"
    )
    max_delay: PositiveInt = Field(40, description="Longest delay of the memory-capacity curve (points)")
    ipc_delays: tuple[NonNegativeInt, ...] = Field(
        DEFAULT_IPC_DELAYS,
        description="Delays the information processing capacity spans at degree 1, 2, 3 (0 skips a degree)",
    )
    rank_streams: PositiveInt = Field(
        60, description="Random streams of the kernel rank (and perturbed copies of the generalisation rank)"
    )
    rank_points: PositiveInt = Field(20, description="Input points of each rank stream")
    rank_perturbation: Positive = Field(
        0.05, description="Standard deviation of the noise added to one stream for the generalisation rank"
    )
    piece_points: PositiveInt = Field(250, description="Points of each piece driven side by side")
    warmup_points: NonNegativeInt = Field(
        50, description="Points before each piece whose response is dropped"
    )
    pieces_per_step: PositiveInt = Field(16, description="Pieces per recorded step (one device call each)")

    @field_validator("ipc_delays")
    @classmethod
    def _degrees(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(value) <= 3 or not any(value):
            raise ValueError(
                f"ipc_delays gives the delays of degrees 1 to 3 (at most 3 numbers), got {value}"
            )
        return value

    @property
    def ipc_spans(self) -> dict[int, int]:
        """Degree -> delays it spans, the degrees not skipped."""
        return {d: n for d, n in enumerate(self.ipc_delays, start=1) if n}


def _conditions(config: ReservoirMeasuresConfig) -> dict[str, float]:
    out = {} if config.bias_A is None else {"bias_A": config.bias_A}
    if config.field_T is not None:
        out["field_T"] = config.field_T
    return out


def measures(states: np.ndarray, u: np.ndarray, config: ReservoirMeasuresConfig, seed: int) -> dict[str, Any]:
    """Memory capacity, NARMA-10 and IPC of one set of states for the input ``u``."""
    split = rm.split_rows(len(u), config.washout, config.train_fraction)
    threshold = rm.chance_threshold(states, split, seed=seed)
    mc = rm.memory_capacity(states, u, split, config.max_delay, threshold)
    ipc = rm.information_processing_capacity(states, u, split, config.ipc_spans, threshold)
    return {
        "memory_capacity": mc.total,
        "memory_curve": mc.values.tolist(),
        "narma10_nrmse": rm.narma10_nrmse(states, u, split),
        "ipc": {str(d): v for d, v in ipc.items()},
        "ipc_total": float(sum(ipc.values())),
        "features": rm.effective_features(states, split),
        "chance_threshold": threshold,
    }


def node_inputs(encoder: Encoder, u: np.ndarray) -> np.ndarray:
    """The no-device baseline's states: each node's input as driven, ``(points, nodes)`` in
    units of the drive range."""
    assert encoder.scale is not None
    return encoder.masked(u[:, None]) / encoder.scale


def rank_states(
    ctx: RunContext, encoder: Encoder, config: ReservoirMeasuresConfig, conditions: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Final states of the rank streams: ``kernel`` (distinct streams), ``kernel_repeat`` (the
    same streams again: their difference is the noise), ``generalisation`` (one stream plus small
    noise) and ``generalisation_repeat``. One recorded step each."""
    rng = ctx.rng("rank-streams")
    m, n = config.rank_streams, config.rank_points
    distinct = rng.uniform(-1.0, 1.0, (m, n))
    perturbed = np.clip(rng.uniform(-1.0, 1.0, n) + rng.normal(0.0, config.rank_perturbation, (m, n)), -1, 1)
    out = {}
    for name, streams in (
        ("kernel", distinct),
        ("kernel_repeat", distinct),
        ("generalisation", perturbed),
        ("generalisation_repeat", perturbed),
    ):
        series = streams.reshape(-1)
        spans = [(i * n, i * n, (i + 1) * n) for i in range(m)]
        data = ctx.measure(
            "device",
            lambda dev, series=series, spans=spans: {
                "rank/states": drive_pieces(
                    dev, encoder, series, spans, config.drive_fraction, conditions, config.node_features
                )
            },
            key=f"rank/{name}",
        )
        out[name] = np.asarray(data["rank/states"], dtype=np.float64).reshape(m, n, -1)[:, -1, :]
    return out


def run(ctx: RunContext, config: ReservoirMeasuresConfig) -> dict[str, Any]:
    """The plan body: record, then score the device and the no-device baseline."""
    t_start = time.perf_counter()
    device = ctx.device
    if config.theta_s is not None:
        theta_s, theta_reason = config.theta_s, "given"
    else:
        theta_s, theta_reason = default_theta_s(device, config.samples_per_node, config.bias_A)
    conditions = _conditions(config)
    u = ctx.rng("input").uniform(-1.0, 1.0, config.n_points)
    encoder = Encoder(
        make_mask(config.n_nodes, 1, "normal", ctx.rng("mask")), theta_s, config.samples_per_node, 1.0
    )
    # |u| <= 1, so the largest mask entry reaches the drive range's end and nothing is clipped
    # (clipping would be a nonlinearity of the drive, counted as the device's)
    encoder.scale = float(np.max(np.abs(encoder.mask)))

    t_device = time.perf_counter()
    ctx.progress(0, 1, stage="device")
    states = measure_states(ctx, encoder, u, config, conditions).astype(np.float64)  # type: ignore[arg-type]
    ranks = rank_states(ctx, encoder, config, conditions)
    device_s = time.perf_counter() - t_device

    ctx.progress(0, 2, stage="readouts")
    device_measures = measures(states, u, config, ctx.seed)
    ctx.progress(1, 2, stage="readouts")
    baseline = measures(node_inputs(encoder, u), u, config, ctx.seed)
    ctx.progress(2, 2, stage="readouts")
    kernel_rank = rm.rank_above_noise(ranks["kernel"], ranks["kernel_repeat"])
    generalisation_rank = rm.rank_above_noise(ranks["generalisation"], ranks["generalisation_repeat"])

    summary: dict[str, Any] = {
        **{k: v for k, v in device_measures.items() if k != "memory_curve"},
        "kernel_rank": kernel_rank,
        "generalisation_rank": generalisation_rank,
        "rank_streams": config.rank_streams,
        "baseline": {
            "what": "the same readouts on the masked input alone (no device)",
            **{k: v for k, v in baseline.items() if k != "memory_curve"},
        },
        "device": device.address or type(device).__name__,
        "conditions": conditions,
        "n_points": config.n_points,
        "n_nodes": config.n_nodes,
        "theta_s": theta_s,
        "theta_reason": theta_reason,
        "device_s": device_s,
        "wall_s": time.perf_counter() - t_start,
    }
    ctx.save("input", u, unit="1", what="i.i.d. uniform input in [-1, 1], one value per input point")
    ctx.save("mask", encoder.mask, unit="1", kind="normal", stream="mask")
    ctx.save("memory_curve", np.asarray(device_measures["memory_curve"]), unit="1", what="capacity per delay")
    ctx.save("baseline_memory_curve", np.asarray(baseline["memory_curve"]), unit="1")
    ctx.result(**summary)
    return summary


def plot_memory(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """Memory capacity against delay, device and no-device baseline."""
    curve, base = np.asarray(datasets["memory_curve"]), np.asarray(datasets["baseline_memory_curve"])
    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    ax = fig.subplots()
    delays = np.arange(curve.size)
    ax.plot(delays, curve, "o-", ms=3, label=f"device: MC = {results['memory_capacity']:.2f}")
    ax.plot(delays, base, "s--", ms=3, label=f"no device: MC = {results['baseline']['memory_capacity']:.2f}")
    ax.set_xlabel("delay k (input points)")
    ax.set_ylabel(r"capacity $r^2(u_{n-k}, \hat u_{n-k})$")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"Linear memory capacity, {results['n_nodes']} nodes", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_ipc(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """Information processing capacity by degree, device beside baseline, against the bound."""
    degrees = sorted(results["ipc"], key=int)
    x = np.arange(len(degrees))
    fig = Figure(figsize=(5.0, 3.6), dpi=120)
    ax = fig.subplots()
    ax.bar(x - 0.2, [results["ipc"][d] for d in degrees], 0.4, label="device")
    ax.bar(x + 0.2, [results["baseline"]["ipc"][d] for d in degrees], 0.4, label="no device")
    ax.axhline(results["features"], color="k", lw=0.8, ls=":", label=f"bound: {results['features']} states")
    ax.set_xticks(x, [f"degree {d}" for d in degrees])
    ax.set_ylabel("capacity (sum over terms)")
    ax.set_title(f"Information processing capacity, total {results['ipc_total']:.1f}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run reservoir-measures`` prints."""
    base = summary["baseline"]
    ipc = "  ".join(f"d{d}: {v:.2f}" for d, v in sorted(summary["ipc"].items()))
    base_ipc = "  ".join(f"d{d}: {v:.2f}" for d, v in sorted(base["ipc"].items()))
    where = summary["conditions"] or "its default conditions"
    return "\n".join(
        [
            f"Reservoir measures of {summary['device']} at {where}: {summary['n_nodes']} nodes of "
            f"{summary['theta_s']:.3g} s ({summary['theta_reason']})",
            f"{'':22}{'device':>10}{'no device':>12}",
            f"{'memory capacity':22}{summary['memory_capacity']:10.2f}{base['memory_capacity']:12.2f}",
            f"{'NARMA-10 NRMSE':22}{summary['narma10_nrmse']:10.3f}{base['narma10_nrmse']:12.3f}",
            f"{'IPC total':22}{summary['ipc_total']:10.2f}{base['ipc_total']:12.2f}"
            f"   (bound: {summary['features']} independent states)",
            f"IPC by degree: device {ipc}; no device {base_ipc}",
            f"kernel rank {summary['kernel_rank']} and generalisation rank {summary['generalisation_rank']} "
            f"of {summary['rank_streams']} streams (ranks count singular values above the measured noise)",
            f"capacities below {summary['chance_threshold']:.3g} (what a random target reaches) count as 0; "
            f"{summary['wall_s']:.1f} s, device {summary['device_s']:.1f} s; run: {summary['run_dir']}",
        ]
    )


@command(
    config=ReservoirMeasuresConfig,
    report=report,
    help="Memory capacity, NARMA-10, information processing capacity and kernel/generalisation "
    "rank of the device as a time-multiplexed reservoir, each beside its no-device baseline.",
    aliases={"--points": "n_points", "--nodes": "n_nodes"},
)
def plan(config: ReservoirMeasuresConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Reservoir measures as a plan (``spinlab run reservoir-measures``'s defaults unless overridden)."""
    cfg = make_config(ReservoirMeasuresConfig, config, overrides)
    return Plan(
        "reservoir-measures",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={"memory_capacity.png": plot_memory, "ipc.png": plot_ipc},
        nexus={"signal": "memory_curve", "axes": ["delay"]},
    )


__all__ = ["ReservoirMeasuresConfig", "measures", "plan", "run"]
