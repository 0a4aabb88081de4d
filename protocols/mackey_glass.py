"""Mackey-Glass time-series prediction with the device as a time-multiplexed reservoir.

Plan (Chen et al., Nat. Commun. 13, 1016 (2022), Fig. 3): the Mackey-Glass series (a file, or
generated from the delay equation with tau = 17) -> a random normal input mask over ``n_nodes``
virtual nodes (:mod:`spinlab.speech.encoder`, as for spoken digits) -> one long drive, each node held
``theta_s`` -> ``Device.respond`` (the series cut into pieces driven side by side, each after a
warm-up of the points before it) -> one state per node and input point -> a ridge readout for
every prediction horizon 1..``max_horizon`` trained on the first part of the series -> NRMSE on
the held-out rest. The baseline runs the same readout on the masked input alone (no device).

The drive is device-neutral: the masked input, normalised to u in [-1, 1], goes through the
device's :class:`~spinlab.device.DriveQuantity` (``from_unit``), so the same plan drives an STO
in volts and a skyrmion twin in J/m3 of anisotropy.

Node duration (``theta_s``, default per device, :func:`default_theta_s`): a reservoir needs the
response to each input point to outlast it by a few points (memory) while neighbouring nodes
still differ. A twin can only be driven on the grid it was trained on; its nodes are
``samples_per_node`` grid samples (the paper's 10 ps on the skyrmion's 5 ps grid: 50 nodes are
0.5 ns per point, while the twin's response to a 10 ps kick takes 1.3 ns to fall to a tenth). An
auto-oscillator (sim:vortex, the emulated bench) relaxes once, over tau; nodes of tau / 2 let
each node's response rise above the thermal noise while consecutive nodes still couple
(Torrejon et al. 2017: theta below tau).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, model_validator

from spinlab.analysis.metrics import nrmse
from spinlab.analysis.ridge import ridge_weights
from spinlab.config import Config, NonNegativeInt, Positive, PositiveInt
from spinlab.device import Device
from spinlab.engine import Plan, RunContext
from spinlab.engine.figures import legend, quantity
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError, DatasetError
from spinlab.files import check_file
from spinlab.protocols.characterize import model_prediction
from spinlab.speech.encoder import Encoder, make_mask, node_states, pack
from spinlab.waveform import Waveform

#: Horizons shown in the summary (the paper's Fig. 3 compares these).
REPORTED_HORIZONS = (1, 5, 10)


class MackeyGlassConfig(Config):
    """Everything that defines a Mackey-Glass run (stored in the run file)."""

    data_path: str | None = Field(
        None,
        description="Mackey-Glass series, one value a line (none: generated "
        "from the delay equation, tau = 17, one sample per "
        "time unit)",
    )
    n_points: Annotated[int, Field(ge=100)] = Field(
        10_000, description="Input points used (the first of the file)"
    )
    n_nodes: PositiveInt = Field(50, description="Virtual nodes per point")
    theta_s: Positive | None = Field(
        None,
        description="Hold time of one node (none: from the device's time "
        "scale: 2 grid samples of a twin, half an "
        "oscillator's relaxation)",
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
    input_sigma: Positive = Field(
        4.0,
        description="Training standard deviations of the masked input mapped "
        "to u = +-1 (4 leaves it unclipped)",
    )
    bias_A: Positive | None = Field(
        None, description="DC bias current for devices that take one (none: the device's)"
    )
    discard: NonNegativeInt = Field(
        300, description="Input points at the start whose states are dropped (the reservoir's transient)"
    )
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="Share of the points after discard that trains the readout; the rest is held out"
    )
    max_horizon: PositiveInt = Field(80, description="Longest prediction horizon (points)")
    alphas: tuple[Positive, ...] = Field(
        tuple(10.0**k for k in range(-14, -1)),
        description="Ridge penalties (relative to the Gram "
        "matrix's mean eigenvalue); with several, "
        "each horizon picks its own by blocked "
        "CV on the training part",
    )
    cv_folds: Annotated[int, Field(ge=2)] = Field(5, description="Folds of the blocked cross-validation")
    piece_points: PositiveInt = Field(
        250,
        description="Points of each piece of the series driven side by "
        "side (a simulator integrates a batch in about the "
        "time of one)",
    )
    warmup_points: NonNegativeInt = Field(
        50,
        description="Points of the series before each piece whose "
        "response is dropped (many times the device's "
        "memory)",
    )
    pieces_per_step: PositiveInt = Field(64, description="Pieces per recorded step (one device call each)")

    @model_validator(mode="after")
    def _consistent(self) -> MackeyGlassConfig:
        if not self.alphas:
            raise ValueError("alphas must hold at least one ridge penalty")
        usable = self.n_points - self.discard
        n_train = int(usable * self.train_fraction)
        if n_train < 10 * self.n_nodes or usable - n_train <= self.max_horizon + 10:
            raise ValueError(
                f"{self.n_points} points leave too little after discard ({self.discard}) "
                f"for training ({n_train}, need >= {10 * self.n_nodes}) and testing at horizons "
                f"up to {self.max_horizon}; use more points or a smaller max_horizon"
            )
        return self


# --- the series ----------------------------------------------------------------------------
def mackey_glass(
    n: int,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    exponent: float = 10.0,
    x0: float = 1.2,
    substeps: int = 10,
    transient: int = 1000,
) -> np.ndarray:
    """``n`` samples, one per time unit, of ``dx/dt = beta x(t-tau) / (1 + x(t-tau)^exponent)
    - gamma x`` from a constant history ``x0``, after ``transient`` time units.

    RK4 with ``substeps`` steps per time unit; the delayed value at a half step is the mean of
    its two grid neighbours (``tau * substeps`` must be an integer)."""
    lag = tau * substeps
    if abs(lag - round(lag)) > 1e-9 or lag < 1:
        raise ConfigError(f"tau * substeps must be a positive integer, got {tau} * {substeps}")
    lag, h = int(round(lag)), 1.0 / substeps
    steps = (n + transient) * substeps
    x = np.empty(lag + steps + 1)
    x[: lag + 1] = x0

    def rate(now: float, delayed: float) -> float:
        return beta * delayed / (1.0 + delayed**exponent) - gamma * now

    for k in range(lag, lag + steps):
        d0, d1 = x[k - lag], x[k - lag + 1]
        dm = 0.5 * (d0 + d1)
        k1 = rate(x[k], d0)
        k2 = rate(x[k] + 0.5 * h * k1, dm)
        k3 = rate(x[k] + 0.5 * h * k2, dm)
        k4 = rate(x[k] + h * k3, d1)
        x[k + 1] = x[k] + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[lag + transient * substeps :: substeps][:n].copy()


def load_series(path: str | Path, n_points: int) -> np.ndarray:
    """The first ``n_points`` values of a one-value-a-line file, checked (one-line errors)."""
    path = check_file(
        path,
        "series",
        DatasetError,
        f"Mackey-Glass data {path} does not exist; give a file with one value a line "
        "(e.g. $SPINLAB_MUMAX3/mackey_glass.txt after `spinlab data fetch mumax3`), or none to "
        "generate the series",
    )
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise DatasetError(f"Mackey-Glass data {path} is not one number a line ({reason})") from None
    if values.shape[1] != 1:
        raise DatasetError(
            f"Mackey-Glass data {path} has {values.shape[1]} columns; it must hold one value a line"
        )
    values = values[:, 0]
    if values.size < n_points:
        raise DatasetError(
            f"Mackey-Glass data {path} has {values.size} values, the run needs {n_points}; "
            "lower --points or use a longer series"
        )
    values = values[:n_points]
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DatasetError(
            f"Mackey-Glass data {path}: value {bad[0] + 1} is {values[bad[0]]}; every value "
            "must be a finite number"
        )
    if np.ptp(values) == 0:
        raise DatasetError(f"Mackey-Glass data {path} is constant; nothing to predict")
    return values


# --- the device part -----------------------------------------------------------------------
def default_theta_s(device: Device, samples_per_node: int, bias_A: float | None) -> tuple[float, str]:
    """Node hold time from the device's own time scale, and why (see the module docstring)."""
    grid = getattr(device, "dt_s", None)
    if isinstance(grid, float) and grid > 0:
        return samples_per_node * grid, f"{samples_per_node} samples of the device's fixed {grid:.3g} s grid"
    bias = bias_A if bias_A is not None else device.default_conditions.get("bias_A")
    tau = model_prediction(device, float(bias)).get("predicted_relaxation_time_s") if bias else None
    if tau:
        return 0.5 * tau, f"half the relaxation time {tau:.3g} s at {bias:.3g} A"
    raise ConfigError(
        f"{device.address or type(device).__name__} does not say its time scale; give --theta-s "
        "(about half its relaxation time, e.g. from `spinlab characterize`)"
    )


def pieces(n_points: int, piece_points: int, warmup_points: int) -> list[tuple[int, int, int]]:
    """``(start, warm-up start, stop)`` of each piece of the series."""
    return [
        (s, max(0, s - warmup_points), min(s + piece_points, n_points))
        for s in range(0, n_points, piece_points)
    ]


def drive_pieces(
    device: Device,
    encoder: Encoder,
    series: np.ndarray,
    spans: list[tuple[int, int, int]],
    fraction: float,
    conditions: Mapping[str, float],
    node_features: str,
) -> np.ndarray:
    """States ``(points, features)`` of the pieces ``spans``: each piece's normalised drive u
    (``encoder`` built with amplitude 1) mapped onto the device's drive range, all pieces in one
    batch; the warm-up points' states are dropped."""
    quantity = device.drive_quantity
    drives = [quantity.from_unit(encoder.drive(series[w:e, None]), fraction) for _, w, e in spans]
    batch, lengths = pack(drives)
    # padding goes after each drive; a pad value inside the range keeps the check meaningful
    batch[np.arange(batch.shape[1])[None, :] >= lengths[:, None]] = quantity.centre
    response = device.respond(Waveform(batch, encoder.dt_s, quantity.unit), dict(conditions))
    out = []
    for row, (s, w, e), n in zip(response.as_batch().samples, spans, lengths):
        states = node_states(row[:n], e - w, encoder.n_nodes, encoder.samples_per_node, node_features)
        out.append(states[s - w :])
    return np.concatenate(out).astype(np.float32)


def measure_states(
    ctx: RunContext,
    encoder: Encoder,
    series: np.ndarray,
    config: MackeyGlassConfig,
    conditions: Mapping[str, float],
) -> np.ndarray:
    """Every input point's node states; each group of pieces is one recorded step (stream
    ``device``), so an interrupted run resumes without driving those pieces again."""
    spans = pieces(len(series), config.piece_points, config.warmup_points)
    groups = [spans[i : i + config.pieces_per_step] for i in range(0, len(spans), config.pieces_per_step)]
    parts = []
    for g, group in enumerate(groups):
        data = ctx.measure(
            "device",
            lambda dev, group=group: {
                "device/states": drive_pieces(
                    dev, encoder, series, group, config.drive_fraction, conditions, config.node_features
                )
            },
            key=f"pieces/{g}",
            meta={"first_point": group[0][0], "points": group[-1][2] - group[0][0]},
        )
        parts.append(data["device/states"])
        ctx.progress(g + 1, len(groups), stage="device", points=group[-1][2])
    return np.concatenate(parts)


# --- readout -------------------------------------------------------------------------------
def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return [np.hstack([(x - mean) / std, np.ones((len(x), 1))]) for x in (train, *others)]


def choose_alphas(
    states: np.ndarray, targets: np.ndarray, alphas: tuple[float, ...], folds: int
) -> np.ndarray:
    """Per target column, the penalty with the least squared error over ``folds`` contiguous
    blocks of the training part (blocks, not shuffled rows: neighbouring points of a smooth
    series are near copies)."""
    if len(alphas) == 1:
        return np.full(targets.shape[1], float(alphas[0]))
    errors = np.zeros((len(alphas), targets.shape[1]))
    for held in np.array_split(np.arange(len(states)), folds):
        keep = np.ones(len(states), bool)
        keep[held] = False
        fit, test = _standardise(states[keep], states[held])
        for i, w in enumerate(ridge_weights(fit, targets[keep], alphas)):
            errors[i] += np.sum((test @ w - targets[held]) ** 2, axis=0)
    return np.asarray(alphas, dtype=np.float64)[np.argmin(errors, axis=0)]


def train_split(n_points: int, config: MackeyGlassConfig) -> int:
    """Index of the first held-out point (training points are ``discard..split``)."""
    return config.discard + int((n_points - config.discard) * config.train_fraction)


def horizon_curve(
    states: np.ndarray, series: np.ndarray, config: MackeyGlassConfig
) -> tuple[np.ndarray, np.ndarray]:
    """NRMSE on the held-out part and the penalty used, for horizons 1..max_horizon.

    The readout for horizon h maps the state at point n onto ``series[n + h]``; it is trained
    on the states at ``discard..split`` and scored on those after ``split``, so no test target
    is ever a training target. Every horizon shares the training states, so all are fitted at
    once (one column each)."""
    start, split = config.discard, train_split(len(series), config)
    horizons = range(1, config.max_horizon + 1)
    targets = np.stack([series[start + h : split + h] for h in horizons], axis=1)
    chosen = choose_alphas(states[start:split], targets, config.alphas, config.cv_folds)
    fit, test = _standardise(states[start:split], states[split:])
    penalties = tuple(float(a) for a in np.unique(chosen))
    weights = dict(zip(penalties, ridge_weights(fit, targets, penalties)))
    curve = np.array(
        [
            nrmse(
                test[: len(series) - split - h] @ weights[float(chosen[h - 1])][:, h - 1], series[split + h :]
            )
            for h in horizons
        ]
    )
    return curve, chosen


# --- the protocol --------------------------------------------------------------------------
def run(ctx: RunContext, config: MackeyGlassConfig) -> dict[str, Any]:
    """The plan body: the whole protocol on ``ctx.device``; returns the summary."""
    t_start = time.perf_counter()
    device = ctx.device
    if config.data_path is not None:
        series, source = load_series(config.data_path, config.n_points), str(config.data_path)
    else:
        series, source = mackey_glass(config.n_points), "generated (tau = 17)"
    if config.theta_s is not None:
        theta_s, theta_reason = config.theta_s, "given"
    else:
        theta_s, theta_reason = default_theta_s(device, config.samples_per_node, config.bias_A)
    conditions = {} if config.bias_A is None else {"bias_A": config.bias_A}

    # amplitude 1: the encoder yields the normalised input u in [-1, 1]; the device's drive
    # quantity maps it onto its own range and unit
    encoder = Encoder(
        make_mask(config.n_nodes, 1, "normal", ctx.rng("mask")),
        theta_s,
        config.samples_per_node,
        1.0,
        config.input_sigma,
    )
    split = train_split(len(series), config)
    encoder.fit([series[:split, None]])  # the training part only

    t_device = time.perf_counter()
    states = measure_states(ctx, encoder, series, config, conditions)
    device_s = time.perf_counter() - t_device
    curve, penalties = horizon_curve(states.astype(np.float64), series, config)
    masked = encoder.masked(series[:, None])
    baseline, baseline_penalties = horizon_curve(masked, series, config)

    quantity = device.drive_quantity
    drive_range = [float(v) for v in quantity.from_unit(np.array([-1.0, 1.0]), config.drive_fraction)]
    clipped = float(np.mean(np.abs(masked) >= encoder.scale))
    horizons = np.arange(1, config.max_horizon + 1)
    summary: dict[str, Any] = {
        **{f"nrmse_h{h}": float(curve[h - 1]) for h in REPORTED_HORIZONS if h <= config.max_horizon},
        **{
            f"baseline_nrmse_h{h}": float(baseline[h - 1])
            for h in REPORTED_HORIZONS
            if h <= config.max_horizon
        },
        "curve": {"horizon": horizons.tolist(), "nrmse": curve.tolist(), "alpha": penalties.tolist()},
        "baseline": {
            "what": "the same ridge readout on the masked input alone (no device)",
            "nrmse": baseline.tolist(),
            "alpha": baseline_penalties.tolist(),
        },
        "device": device.address or type(device).__name__,
        "data": source,
        "n_points": len(series),
        "n_nodes": config.n_nodes,
        "n_train": split - config.discard,
        "n_test": len(series) - split,
        "theta_s": theta_s,
        "theta_reason": theta_reason,
        "dt_s": encoder.dt_s,
        "drive_quantity": quantity.quantity,
        "drive_unit": quantity.unit,
        "drive_range": drive_range,
        "clipped_fraction": clipped,
        "conditions": conditions,
        "drive_samples": int(len(series) * encoder.samples_per_frame()),
        "device_samples": int(
            sum(e - w for _, w, e in pieces(len(series), config.piece_points, config.warmup_points))
            * encoder.samples_per_frame()
        ),
        "device_s": device_s,
        "wall_s": time.perf_counter() - t_start,
    }
    ctx.save("series", series, source=source)
    ctx.save("mask", encoder.mask, kind="normal", seed=ctx.seed, stream="mask")
    ctx.save("horizon", horizons)
    ctx.save("nrmse", curve, alpha=penalties)
    ctx.save("baseline_nrmse", baseline, what=summary["baseline"]["what"], alpha=baseline_penalties)
    ctx.result(**summary)
    return summary


def plot_curve(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """log10 NRMSE against horizon, device and no-device baseline."""
    h = np.asarray(datasets["horizon"])
    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.subplots()
    ax.plot(h, np.log10(datasets["nrmse"]), label=f"reservoir: {results['device']}")
    ax.plot(h, np.log10(datasets["baseline_nrmse"]), "--", label="no device: masked input, same readout")
    ax.set_xlabel("prediction horizon (steps)")
    ax.set_ylabel("log10 NRMSE (held out)")
    ax.set_title(
        f"Mackey-Glass, {results['n_nodes']} nodes of {quantity(results['theta_s'], 's')}", fontsize=9
    )
    legend(ax)
    fig.tight_layout()
    return fig


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run mackey-glass`` prints."""
    shown = [h for h in REPORTED_HORIZONS if f"nrmse_h{h}" in summary]
    return "\n".join(
        [
            f"Mackey-Glass on {summary['device']}: {summary['n_nodes']} nodes of {summary['theta_s']:.3g} s "
            f"({summary['theta_reason']}), drive {summary['drive_quantity']} "
            f"{summary['drive_range'][0]:.4g}..{summary['drive_range'][1]:.4g} {summary['drive_unit']}",
            "held-out NRMSE  " + "  ".join(f"H={h}: {summary[f'nrmse_h{h}']:.3g}" for h in shown),
            "no device       "
            + "  ".join(f"H={h}: {summary[f'baseline_nrmse_h{h}']:.3g}" for h in shown)
            + "  (same readout on the masked input alone)",
            f"{summary['n_train']} train / {summary['n_test']} test points, {summary['wall_s']:.1f} s; "
            f"run: {summary['run_dir']} (nrmse.png)",
        ]
    )


@command(
    config=MackeyGlassConfig,
    report=report,
    help="Mackey-Glass time-series prediction with the device as a time-multiplexed reservoir.",
    aliases={"--data": "data_path", "--points": "n_points", "--nodes": "n_nodes", "--alpha": "alphas"},
)
def plan(config: MackeyGlassConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Mackey-Glass prediction as a plan (``spinlab run mackey-glass``'s defaults unless overridden)."""
    cfg = make_config(MackeyGlassConfig, config, overrides)
    return Plan(
        "mackey-glass",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={"nrmse.png": plot_curve},
        nexus={"signal": "nrmse", "axes": ["horizon"]},
    )


__all__ = [
    "MackeyGlassConfig",
    "plan",
    "run",
    "mackey_glass",
    "load_series",
    "default_theta_s",
    "horizon_curve",
    "drive_pieces",
]
