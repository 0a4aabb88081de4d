"""Task-level optimisation: the operating point of a differentiable simulator, tuned for a task.

Spoken digits (Imai et al.'s second step). The reservoir's accuracy depends on three knobs of
the encoding and the device: the DC bias current, the drive amplitude (``drive_fraction`` of
``max_drive_V``) and the mask scale (``input_sigma``: masked features beyond that many training
standard deviations are clipped). :func:`optimise_spoken_digits` tunes them by gradient descent
on a differentiable surrogate of the protocol's readout error, computed on a subset of the
*training* utterances only:

    features -> mask -> drive(bias, amplitude, mask scale) -> vortex power (noise-free mean
    field, with forward sensitivities to the bias and to two drive directions) -> node states
    -> closed-form ridge fitted on one half of the subset -> softmax cross-entropy of the
    other half's utterance scores (and the other way round)

The device part runs in the numba kernel's forward mode (three tangents, no stored graph for
~70 k samples per utterance); the readout part is torch autograd (the ridge solve is small),
and the two meet in ``dL/dstates . dstates/dtheta``. The knobs are optimised with Adam in
bounded coordinates (sigmoids), so the bias stays between threshold and the device's limit and
the drive within its limit. Held-out accuracy is then measured by the spoken-digit protocol
itself, before (the configured operating point) and after, on its test split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from pydantic import Field, model_validator

from spinlab.config import Config, Positive, PositiveInt
from spinlab.device import Device
from spinlab.engine import Plan, RunContext, seed_stream
from spinlab.engine.figures import legend, symbol_of, typeset
from spinlab.engine.plan import Shortcut, command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.spoken_digits import N_CLASSES, SpokenDigitsConfig, select_data, stratified_subset
from spinlab.sim_backends.vortex import VortexDevice, power_and_jacobian
from spinlab.speech.encoder import Encoder, length_batches, make_mask, node_states, pack
from spinlab.speech.features import ChannelNormalizer, FeatureConfig, utterance_features

#: The knobs, in the order of the Adam parameter vector.
KNOBS = ("bias_A", "drive_fraction", "input_sigma")


class OptimiseConfig(Config):
    """What to tune and how; ``protocol`` is the spoken-digit run it starts from."""

    protocol: SpokenDigitsConfig = Field(description="The spoken-digit run it starts from")
    subset: Annotated[int, Field(ge=4 * N_CLASSES)] = Field(
        300,
        description="Training utterances in the differentiable surrogate (stratified over digits "
        "and speakers)",
    )
    iterations: PositiveInt = Field(20, description="Adam steps")
    learning_rate: Positive = Field(0.15, description="Adam step size in the bounded coordinates")
    mask_scale: bool = Field(
        True, description="Tune the mask scale (input_sigma) too, not only bias and drive amplitude"
    )
    ridge_alpha: Positive | None = Field(
        None,
        description="Ridge penalty of the surrogate, relative to the "
        "mean Gram eigenvalue (none: the protocol's "
        "grid, scored at the start)",
    )
    score_scale: Positive = Field(
        10.0, description="Scale of the surrogate's utterance scores in the softmax"
    )
    bias_margin: Positive = Field(
        1.02, description="Lowest bias of the search box, as a multiple of the threshold"
    )
    drive_fraction_range: tuple[Positive, Annotated[float, Field(gt=0, le=1)]] = Field(
        (0.05, 1.0), description="Search box of the drive fraction: LO,HI"
    )
    input_sigma_range: tuple[Positive, Positive] = Field(
        (0.25, 8.0), description="Search box of input_sigma: LO,HI"
    )
    chunk_samples: PositiveInt = Field(
        6_000_000, description="Drive samples per device call (bounds the memory of the tangents)"
    )

    @model_validator(mode="after")
    def _ranges(self) -> OptimiseConfig:
        for name in ("drive_fraction_range", "input_sigma_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo < hi, got {(lo, hi)}")
        return self


class Box:
    """Bounded knobs <-> unbounded coordinates (sigmoids; the mask scale on a log axis)."""

    def __init__(
        self, bias: tuple[float, float], drive: tuple[float, float], sigma: tuple[float, float]
    ) -> None:
        self.lo = torch.tensor([bias[0], drive[0], math.log(sigma[0])], dtype=torch.float64)
        self.hi = torch.tensor([bias[1], drive[1], math.log(sigma[1])], dtype=torch.float64)

    def knobs(self, u: torch.Tensor) -> torch.Tensor:
        k = self.lo + (self.hi - self.lo) * torch.sigmoid(u)
        return torch.cat([k[:2], k[2:].exp()])

    def coordinates(self, knobs: Sequence[float]) -> torch.Tensor:
        k = torch.tensor([knobs[0], knobs[1], math.log(knobs[2])], dtype=torch.float64)
        frac = ((k - self.lo) / (self.hi - self.lo)).clamp(1e-4, 1 - 1e-4)
        return torch.log(frac / (1 - frac))


def differentiable_vortex(device: Device) -> VortexDevice:
    """The device must be the vortex simulator (or a model file of it): its noise-free power
    is what the surrogate differentiates."""
    if not isinstance(device, VortexDevice):
        raise ConfigError(
            f"optimise needs a differentiable simulator of the reservoir's time scale: sim:vortex "
            f"or a fitted vortex model (sim:PATH.json), got {device.address or type(device).__name__}; "
            "the macrospin's GHz model cannot run 100 ns reservoir grids, and benches and twins "
            "are not differentiated here (run the tuned operating point on them afterwards)"
        )
    if device.output != "power":
        raise ConfigError("optimise uses the vortex's detector output (output=power)")
    return device


class Surrogate:
    """Training-subset states and their tangents -> ridge cross-validation loss and gradient."""

    def __init__(
        self,
        device: VortexDevice,
        features: Sequence[np.ndarray],
        labels: np.ndarray,
        folds: np.ndarray,
        encoder: Encoder,
        config: OptimiseConfig,
    ) -> None:
        self.device, self.labels, self.folds, self.config = device, labels, folds, config
        # node inputs in units of their training std: drive = amplitude * clip(x / input_sigma)
        self.inputs = [encoder.masked(f) / (encoder.scale / encoder.input_sigma) for f in features]
        self.encoder = encoder
        self.params = asdict(device.params)
        self.field_T = float(device.default_conditions.get("field_T", 0.0))
        self.ridge_alpha = config.ridge_alpha

    def states(
        self, knobs: Sequence[float], tangents: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """States (frames, N * spn) of every subset utterance and d states / d knobs (3, ...)."""
        bias, fraction, sigma = knobs
        amplitude = fraction * self.device.limits.max_drive_V
        enc = self.encoder
        spn, nodes = enc.samples_per_node, enc.n_nodes
        lengths = [len(x) * nodes * spn for x in self.inputs]
        states: list[np.ndarray | None] = [None] * len(self.inputs)
        slopes: list[np.ndarray | None] = [None] * len(self.inputs)
        for batch in length_batches(lengths, self.config.chunk_samples):
            scaled = [self.inputs[i].reshape(-1) / sigma for i in batch]
            inside = [np.abs(x) < 1.0 for x in scaled]
            drive, used = pack([np.repeat(amplitude * np.clip(x, -1, 1), spn) for x in scaled])
            wrt, directions = (
                (
                    ["bias_A"],
                    [
                        pack(
                            [
                                np.repeat(self.device.limits.max_drive_V * np.clip(x, -1, 1), spn)
                                for x in scaled
                            ]
                        )[0],
                        pack(
                            [
                                np.repeat(np.where(m, -amplitude * x / sigma, 0.0), spn)
                                for x, m in zip(scaled, inside)
                            ]
                        )[0],
                    ],
                )
                if tangents
                else ([], None)
            )
            volts, jac = power_and_jacobian(
                self.params, drive, bias, self.field_T, enc.dt_s, wrt, drive_tangents=directions
            )
            for row, i in enumerate(batch):
                frames = len(self.inputs[i])
                states[i] = node_states(volts[row, : used[row]], frames, nodes, spn, "samples")
                if tangents:
                    slopes[i] = np.stack(
                        [
                            node_states(jac[row, : used[row], j], frames, nodes, spn, "samples")
                            for j in range(3)
                        ]
                    ).astype(np.float32)
        return states, slopes  # type: ignore[return-value]

    def loss(
        self, states: Sequence[np.ndarray], alphas: Sequence[float] | None = None
    ) -> tuple[float, list[np.ndarray], float]:
        """Cross-entropy of each fold's utterances under a ridge fitted on the other fold, its
        gradient with respect to every state, and the surrogate's utterance accuracy. With
        ``alphas`` only scores them (no gradient) and keeps the best as ``ridge_alpha``."""
        x = [torch.tensor(s, dtype=torch.float32, requires_grad=alphas is None) for s in states]
        candidates = list(alphas) if alphas is not None else [self.ridge_alpha]
        totals, hits = torch.zeros(len(candidates), dtype=torch.float64), np.zeros(len(candidates), int)
        for held in (0, 1):
            fit = [i for i in range(len(x)) if self.folds[i] != held]
            test = [i for i in range(len(x)) if self.folds[i] == held]
            frames = torch.cat([x[i] for i in fit])
            mean, std = frames.mean(0), frames.std(0).clamp_min(1e-12)
            design = torch.cat([(frames - mean) / std, torch.ones(len(frames), 1)], 1)
            targets = torch.cat(
                [
                    torch.nn.functional.one_hot(
                        torch.full((len(x[i]),), int(self.labels[i])), N_CLASSES
                    ).float()
                    for i in fit
                ]
            )
            gram, cross = (design.T @ design).double(), (design.T @ targets).double()
            # the class decision is linear in the frame states, so score the utterance means
            means = torch.stack([((x[i] - mean) / std).mean(0) for i in test])
            means = torch.cat([means, torch.ones(len(test), 1)], 1).double()
            truth = torch.tensor(self.labels[test])
            eye = torch.eye(gram.shape[0], dtype=torch.float64)
            for k, alpha in enumerate(candidates):
                weights = torch.linalg.solve(gram + alpha * torch.trace(gram) / gram.shape[0] * eye, cross)
                scores = means @ weights
                totals[k] = (
                    totals[k] + torch.nn.functional.cross_entropy(self.config.score_scale * scores, truth) / 2
                )
                hits[k] += int((scores.argmax(1) == truth).sum())
        best = int(torch.argmin(totals.detach()))
        if alphas is not None:
            self.ridge_alpha = candidates[best]
            return float(totals[best]), [], hits[best] / len(x)
        totals[0].backward()
        return float(totals[0].detach()), [t.grad.numpy() for t in x], hits[0] / len(x)


def optimise_spoken_digits(
    device: Device,
    config: OptimiseConfig,
    seed: int = 0,
    progress: Callable[[int, float, dict], None] | None = None,
) -> dict[str, Any]:
    """Tune bias, drive fraction and (optionally) input_sigma on the training subset; returns
    the tuned SpokenDigitsConfig and the optimisation history. ``seed`` is the spoken-digit
    run's: the split and the mask are the ones that run draws."""
    device = differentiable_vortex(device)
    base = config.protocol
    train, test = select_data(base, seed_stream(seed, "split"))
    feature_config = FeatureConfig(kind=base.feature_kind)
    raw = utterance_features(train + test, feature_config, base.feature_cache_dir)  # the protocol's cache
    normalizer = ChannelNormalizer().fit(raw[: len(train)])
    features = [normalizer.transform(f) for f in raw[: len(train)]]
    encoder = Encoder(
        make_mask(base.n_nodes, features[0].shape[1], base.mask_kind, seed_stream(seed, "mask")),
        base.theta_s,
        base.samples_per_node,
        1.0,
        base.input_sigma,
    ).fit(features)
    picked = stratified_subset(train, min(config.subset, len(train)), seed_stream(seed, "optimise/subset"))
    index = {u.name: i for i, u in enumerate(train)}
    rows = [index[u.name] for u in picked]
    labels = np.array([u.digit for u in picked])
    folds = np.array([u.index % 2 for u in picked])
    surrogate = Surrogate(device, [features[i] for i in rows], labels, folds, encoder, config)

    params = device.params
    threshold = float(params.threshold_current_A(surrogate.field_T))
    box = Box(
        (config.bias_margin * threshold, device.limits.max_bias_A),
        config.drive_fraction_range,
        config.input_sigma_range,
    )
    start = [base.bias_A, base.drive_fraction, base.input_sigma]
    if not box.lo[0] < start[0] < box.hi[0]:
        raise ConfigError(
            f"the starting bias {start[0]:.4g} A is outside ({float(box.lo[0]):.4g}, "
            f"{float(box.hi[0]):.4g}) A: above threshold, within the device's limit"
        )
    if config.ridge_alpha is None:  # the surrogate's own choice of regularisation, made once
        surrogate.loss(surrogate.states(start, tangents=False)[0], alphas=base.alphas)
    u = box.coordinates(start).requires_grad_(True)
    adam = torch.optim.Adam([u], lr=config.learning_rate)
    history, best = [], None
    t0 = time.perf_counter()
    for step in range(config.iterations + 1):
        knobs = box.knobs(u)
        values = [float(v) for v in knobs.detach()]
        states, slopes = surrogate.states(values, tangents=step < config.iterations)
        loss, grads, accuracy = surrogate.loss(states)
        entry = {
            "step": step,
            "loss": loss,
            "subset_accuracy": accuracy,
            **dict(zip(KNOBS, values)),
            "wall_s": time.perf_counter() - t0,
        }
        history.append(entry)
        if best is None or loss < best["loss"]:
            best = entry
        if progress is not None:
            progress(step, loss, entry)
        if step == config.iterations:
            break
        d_knobs = torch.tensor(
            [sum(float(np.sum(g * s[j])) for g, s in zip(grads, slopes)) for j in range(3)],
            dtype=torch.float64,
        )
        if not config.mask_scale:
            d_knobs[2] = 0.0
        adam.zero_grad()
        knobs.backward(d_knobs)
        adam.step()
    tuned = base.replace(
        bias_A=best["bias_A"],
        drive_fraction=min(1.0, best["drive_fraction"]),
        input_sigma=best["input_sigma"] if config.mask_scale else base.input_sigma,
    )
    return {
        "history": history,
        "best": best,
        "tuned": tuned,
        "start": dict(zip(KNOBS, start)),
        "subset": len(picked),
        "threshold_A": threshold,
        "ridge_alpha": surrogate.ridge_alpha,
        "box": {
            "bias_A": [config.bias_margin * threshold, device.limits.max_bias_A],
            "drive_fraction": list(config.drive_fraction_range),
            "input_sigma": list(config.input_sigma_range),
        },
    }


def run(ctx: RunContext, config: OptimiseConfig) -> dict[str, Any]:
    """The plan body: tune on ``ctx.device``; the tuned protocol config is in the summary."""
    result = optimise_spoken_digits(
        ctx.device,
        config,
        ctx.seed,
        lambda step, loss, entry: ctx.progress(step + 1, config.iterations + 1, stage="optimise", loss=loss),
    )
    history = result.pop("history")
    ctx.save(
        "history",
        np.array([[h[k] for k in ("step", "loss", "subset_accuracy", *KNOBS)] for h in history]),
        columns=["step", "loss", "subset_accuracy", *KNOBS],
    )
    tuned = result.pop("tuned")
    summary = {**result, "tuned": {k: getattr(tuned, k) for k in KNOBS}, "protocol": tuned.to_dict()}
    ctx.result(**summary)
    return summary


def plot_history(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The surrogate's loss and the subset accuracy at every step, and where each knob went."""
    history = np.asarray(datasets["history"], dtype=float).reshape(-1, 3 + len(KNOBS))
    step = history[:, 0]
    fig = Figure(figsize=(8.5, 3.4))
    left, right = fig.subplots(1, 2)
    left.plot(step, history[:, 1], "o-", ms=3, lw=0.9, color="0.3", label="loss")
    left.set_xlabel("step")
    left.set_ylabel("surrogate loss")
    acc = left.twinx()
    acc.plot(step, 100 * history[:, 2], "s--", ms=3, lw=0.9, color="tab:blue", label="subset accuracy")
    acc.set_ylabel("subset accuracy (%)", color="tab:blue")
    for j, knob in enumerate(KNOBS):
        values = history[:, 3 + j]
        span = np.ptp(values) or 1.0
        right.plot(step, (values - values.min()) / span, lw=1.0, label=typeset(symbol_of(knob)[0]))
    right.set_xlabel("step")
    right.set_ylabel("knob, scaled to its range")
    legend(right)
    fig.suptitle("Operating-point optimisation on the device's surrogate", fontsize=10)
    fig.tight_layout()
    return fig


def command_line_defaults(
    settings: dict[str, Any], *, device: str | None, runs_dir: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The spoken-digit run it starts from gets the command line's defaults (FSDD found on this
    machine, features cached under the runs directory)."""
    from spinlab.protocols.spoken_digits import command_line_defaults as digits_defaults

    protocol = settings.setdefault("protocol", {})
    if isinstance(protocol, dict):
        digits_defaults(protocol, device=device, runs_dir=runs_dir, options=options)
    return settings


def before_and_after(
    summary: dict[str, Any],
    *,
    config: OptimiseConfig,
    options: Mapping[str, Any],
    run: Callable[[Plan], Any],
    **_: Any,
) -> dict[str, Any]:
    """With ``--evaluate`` (the default) the spoken-digit protocol itself runs before and after
    tuning and its held-out accuracy is reported."""
    from spinlab.protocols.spoken_digits import plan as digits_plan

    tuned = make_config(SpokenDigitsConfig, summary.pop("protocol"))
    if options["evaluate"]:
        for label, cfg in (("before", config.protocol), ("after", tuned)):
            done = run(digits_plan(cfg))
            summary[label] = {
                "accuracy": done.summary["accuracy"],
                "n_test": done.summary["n_test"],
                "bias_A": cfg.bias_A,
                "drive_fraction": cfg.drive_fraction,
                "input_sigma": cfg.input_sigma,
                "run_dir": str(done.path),
            }
        summary["improvement"] = summary["after"]["accuracy"] - summary["before"]["accuracy"]
    return summary


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run optimise-spoken-digits`` prints."""
    lines = [
        "operating point   "
        + "   ".join(f"{k} {summary['start'][k]:.4g} -> {summary['tuned'][k]:.4g}" for k in KNOBS),
        f"surrogate loss    {summary['best']['loss']:.4f} "
        f"(subset of {summary['subset']} training utterances)",
    ]
    if "after" in summary:
        lines.append(
            f"held-out accuracy {100 * summary['before']['accuracy']:.1f} % -> "
            f"{100 * summary['after']['accuracy']:.1f} % "
            f"({summary['after']['n_test']} test utterances)"
        )
    lines.append(f"run: {summary['run_dir']}")
    return "\n".join(lines)


@command(
    config=OptimiseConfig,
    report=report,
    prepare=command_line_defaults,
    finish=before_and_after,
    aliases={
        "--data": "protocol.data_dir",
        "--bias-A": "protocol.bias_A",
        "--drive-fraction": "protocol.drive_fraction",
        "--input-sigma": "protocol.input_sigma",
        "--nodes": "protocol.n_nodes",
        "--limit": "protocol.limit",
    },
    shortcuts=(
        Shortcut(
            ("--evaluate/--no-evaluate",),
            "Run the protocol before and after and report held-out accuracy.",
            kind=bool,
            name="evaluate",
            default=True,
        ),
    ),
    help="Tune bias, drive amplitude and mask scale of a differentiable simulator for spoken digits.",
)
def plan(config: OptimiseConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Task-level optimisation as a plan (``spinlab optimise spoken-digits``'s defaults unless
    overridden); ``protocol`` holds the spoken-digit config it starts from."""
    if isinstance(config, OptimiseConfig):
        cfg = config.replace(**overrides)
    else:
        values = {**dict(config or {}), **overrides}
        protocol = values.pop("protocol", None)
        if not isinstance(protocol, SpokenDigitsConfig):
            protocol = make_config(SpokenDigitsConfig, protocol)
        cfg = OptimiseConfig(protocol=protocol, **values)
    return Plan(
        "optimise-spoken-digits", cfg, lambda ctx: run(ctx, cfg), plots={"optimisation.png": plot_history}
    )


__all__ = [
    "KNOBS",
    "OptimiseConfig",
    "Surrogate",
    "optimise_spoken_digits",
    "differentiable_vortex",
    "run",
    "plan",
]
