"""Scoring a twin: against its device on fresh random drives, or free-running on a MuMax3 table.

A stochastic device (thermal noise, scope noise) never repeats itself, so a twin - which
predicts the deterministic response - cannot score better than the device's own shot-to-shot
scatter. With ``repeats > 1`` every drive is applied several times: the twin is scored against
the mean response (its actual job) and the single-shot noise floor is measured from the spread,
so the two numbers can be told apart.

On a MuMax3 table (``table`` set) the twin runs free from the table's first measured samples of
the scored span, driven by the table's own input columns (the ones it was trained on; a table
without them is a one-line error), and is scored by the NRMSE and by the error of the response's
dominant frequency (Chen et al., Fig. 4f/g).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field

from spinlab import Device, Waveform
from spinlab.analysis.metrics import nrmse
from spinlab.config import Config, Positive, PositiveInt
from spinlab.engine import Plan, RunContext
from spinlab.engine.figures import (
    condition_text,
    label,
    legend_outside,
    prefix,
    quantity,
    scaled,
    symbol_of,
    tag_conditions,
)
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.acquire import (
    AcquireConfig,
    check_conditions,
    condition_shortcuts,
    effective_amplitude,
    random_multilevel,
)
from spinlab.registry import open_device
from spinlab.twin.checkpoint import TwinMeta, load_twin
from spinlab.twin.evaluation import predict
from spinlab.twin.mumax import MumaxSplit, load_mumax_table, mumax_series, require_columns


class EvalConfig(Config):
    """Fresh drives: ``n_drives`` per condition value, same family as the training drives.
    ``checkpoint`` is the twin under test; its sample interval is the drives' ``dt_s``."""

    checkpoint: str = Field("", description="Twin checkpoint under test (twin.pt)")
    n_drives: PositiveInt = Field(10, description="Fresh random drives per condition")
    record_s: Positive = Field(1e-4, description="Length of one drive")
    dt_s: Positive = Field(
        1e-7, description="Sample interval of the drives (the command line takes the twin's)"
    )
    hold_s: tuple[Positive, Positive] = Field(
        (1e-7, 1e-6), description="Hold time range of each random level: MIN,MAX"
    )
    amplitude_V: Positive = Field(
        0.4, description="Drive levels are uniform in +-this, clipped to the device limit"
    )
    conditions: dict[str, tuple[float, ...]] | None = Field(
        None, description="Condition name -> values scored (none: the device's)"
    )
    repeats: PositiveInt = Field(1, description="Apply each drive N times; score against the mean")
    target_nrmse: Positive | None = Field(
        None, description="NRMSE the twin must reach against the device; the report says met or missed"
    )
    torch_device: str = Field(
        "auto", description="Where the twin computes: auto (a GPU when present), cpu, cuda or cuda:N"
    )
    table: str | None = Field(
        None,
        description="Or score the twin free-running on this MuMax3 table.txt "
        "(same columns as its training table)",
    )
    span: tuple[float, float] = Field(
        (0.0, 1.0),
        description="MuMax3: the part of the table scored, "
        "START,STOP as fractions of its length "
        "(0.8,1: the last 20 %)",
    )

    def acquire_config(self) -> AcquireConfig:
        n_cond = int(np.prod([len(v) for v in (self.conditions or {}).values()])) if self.conditions else 1
        return AcquireConfig(
            duration_s=self.record_s * n_cond,
            dt_s=self.dt_s,
            record_s=self.record_s,
            hold_s=self.hold_s,
            amplitude_V=self.amplitude_V,
            conditions=self.conditions or {},
        )


def evaluate(
    twin: Device, device: Device, config: EvalConfig, rng: np.random.Generator, measure: Any = None
) -> dict[str, Any]:
    """NRMSE of ``twin`` vs ``device`` per condition combination and pooled.

    ``measure(stream, step, key=...)`` runs each condition's device step (the run context's
    ``measure``, so each is recorded; by default the step just runs)."""
    acq = config.acquire_config()
    check_conditions(device, acq)
    untrained = sorted(set(acq.conditions) - set(twin.condition_names))
    if untrained:
        raise ConfigError(
            f"the twin was trained without condition(s) {untrained} (it takes "
            f"{list(twin.condition_names)}); train one over them (e.g. twin train --field-T ...)"
        )
    amplitude = min(effective_amplitude(device, acq), twin.limits.max_drive_V)
    measure = measure or (lambda stream, step, **_: step(device))
    n = acq.n_samples
    per_condition, pooled = [], {"twin": [], "mean": [], "shot": [], "var": []}
    examples = []
    for i, cond in enumerate(acq.condition_grid()):
        drives = np.stack(
            [random_multilevel(rng, n, acq.dt_s, acq.hold_s, amplitude) for _ in range(config.n_drives)]
        )
        wave = Waveform(drives, acq.dt_s)
        label = "_".join(f"{k}={v:g}" for k, v in cond.items()) or "default"
        tag = f"condition_{i}"  # a dataset name is an identifier; the values go in attributes
        data = measure(
            "eval",
            lambda dev, cond=cond, drives=drives: {
                f"eval/{tag}/shots_V": dev.respond(
                    Waveform(np.tile(drives, (config.repeats, 1)), acq.dt_s), cond
                ).samples
            },
            key=f"eval/{label}",
            meta=cond,
            attrs={f"eval/{tag}/shots_V": {"unit": "V", "dt_s": acq.dt_s, **cond}},
        )
        shots = data[f"eval/{tag}/shots_V"].reshape(config.repeats, config.n_drives, n)
        mean = shots.mean(axis=0)
        # the twin at the device's own operating point: swept values and the device's defaults
        at = device.resolve_conditions(cond, 1)
        predicted = twin.respond(wave, {n: float(at[n][0]) for n in twin.condition_names if n in at}).samples
        entry = {**cond, "nrmse": nrmse(predicted, mean), "nrmse_single_shot": nrmse(predicted, shots[0])}
        if config.repeats > 1:
            var = shots.var(axis=0, ddof=1)
            entry["noise_floor_single_shot"] = float(math.sqrt(var.mean()) / np.std(shots[0]))
            pooled["var"].append(var)
        per_condition.append(entry)
        pooled["twin"].append(predicted)
        pooled["mean"].append(mean)
        pooled["shot"].append(shots[0])
        examples.append(
            {
                "tag": tag,
                "label": label,
                "conditions": cond,
                "drive_V": drives,
                "device_mean_V": mean,
                "device_shot_V": shots[0],
                "twin_V": predicted,
            }
        )
    twin_all, mean_all, shot_all = (np.concatenate(pooled[k]) for k in ("twin", "mean", "shot"))
    summary: dict[str, Any] = {
        "nrmse": nrmse(twin_all, mean_all),
        "nrmse_single_shot": nrmse(twin_all, shot_all),
        "repeats": config.repeats,
        "n_drives": config.n_drives * len(per_condition),
        "per_condition": per_condition,
        "amplitude_V": amplitude,
    }
    if config.repeats > 1:
        var_all = np.concatenate(pooled["var"])
        summary["noise_floor_single_shot"] = float(math.sqrt(var_all.mean()) / np.std(shot_all))
        # scoring against a mean of r shots still contains 1/r of the shot noise; removing it
        # in quadrature estimates the twin's error against the noise-free response
        floor = float(math.sqrt(var_all.mean() / config.repeats) / np.std(mean_all))
        summary["noise_floor_mean"] = floor
        summary["nrmse_noise_corrected"] = float(math.sqrt(max(summary["nrmse"] ** 2 - floor**2, 0.0)))
    summary["examples"] = examples
    return summary


def run(ctx: RunContext, config: EvalConfig) -> dict[str, Any]:
    """The plan body: score the twin at ``config.checkpoint`` against ``ctx.device``."""
    with open_device(
        f"twin:{config.checkpoint}", defaults={"seed": ctx.seed}, torch_device=config.torch_device
    ) as twin:
        if not np.isclose(twin.dt_s, config.dt_s, rtol=1e-9):
            raise ConfigError(
                f"the twin was trained on a {twin.dt_s:g} s grid but the drives use "
                f"{config.dt_s:g} s; leave dt_s at the twin's value"
            )
        summary = evaluate(twin, ctx.device, config, ctx.rng("drives"), ctx.measure)
        trained = twin.meta.provenance.get("acquire", {}).get("conditions", {})
    for entry in summary["per_condition"]:  # a condition value the twin never recorded at
        entry["trained_at"] = all(
            any(math.isclose(entry[k], v, rel_tol=1e-9) for v in trained[k]) for k in trained if k in entry
        )
    examples = summary.pop("examples")
    for ex in examples:
        tag = ex["tag"]
        cond, dt_s = ex["conditions"], config.dt_s
        ctx.save(f"eval/{tag}/drive_V", Waveform(ex["drive_V"], dt_s), **cond)
        ctx.save(f"eval/{tag}/device_mean_V", ex["device_mean_V"], dt_s=dt_s, repeats=config.repeats, **cond)
        ctx.save(f"eval/{tag}/device_shot_V", ex["device_shot_V"], dt_s=dt_s, **cond)
        ctx.save(f"eval/{tag}/twin_V", ex["twin_V"], dt_s=dt_s, **cond)
    ctx.save("eval/tags", np.array([ex["tag"] for ex in examples], dtype="S"))
    ctx.save("eval/labels", np.array([ex["label"] for ex in examples], dtype="S"))
    summary["dt_s"] = config.dt_s
    summary["target_nrmse"] = config.target_nrmse
    ctx.result(**summary)
    return summary


def plot_examples(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """One panel per condition: drive, device (shot and mean) and twin responses."""
    tags = [t.decode() for t in datasets["eval/tags"]]
    # run files before condition_<i> groups named them by their conditions (bias_A=0.006)
    labels = [t.decode() for t in datasets["eval/labels"]] if "eval/labels" in datasets else tags
    dt_s = float(results["dt_s"])
    fig = Figure(figsize=(9, 2.6 * len(tags)))
    axes = fig.subplots(len(tags), 1, squeeze=False)
    for ax, tag, name in zip(axes[:, 0], tags, labels):
        drive = datasets[f"eval/{tag}/drive_V"][0]
        shot, mean = datasets[f"eval/{tag}/device_shot_V"][0], datasets[f"eval/{tag}/device_mean_V"][0]
        twin = datasets[f"eval/{tag}/twin_V"][0]
        t, t_unit = scaled(np.arange(drive.size) * dt_s, "s")
        factor, v_unit = prefix(np.concatenate([shot, mean, twin]), "V")
        ax.plot(t, shot * factor, color="0.75", lw=0.8, label="device (one shot)")
        ax.plot(t, mean * factor, color="k", lw=1.2, label="device (mean)")
        ax.plot(t, twin * factor, color="tab:red", lw=1.0, ls="--", label="twin")
        ax.set_ylabel(label("V_out", v_unit))
        ax.set_xlabel(label("t", t_unit))
        ax.set_title(condition_text(tag_conditions(name)) or "the device's own conditions", fontsize=9)
        ax2 = ax.twinx()
        d_factor, d_unit = prefix(drive, "V")
        ax2.step(t, drive * d_factor, where="pre", color="tab:blue", lw=0.6, alpha=0.5, label="drive")
        ax2.set_ylabel(label("V_drive", d_unit), color="tab:blue")
        ax.set_xlim(t[0], t[-1])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0)
    )
    fig.suptitle(
        f"Twin against device: NRMSE {results['nrmse']:.4f} (against the mean of {results['repeats']} "
        f"shot{'s' if results['repeats'] > 1 else ''})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def twin_split(model: Any, meta: TwinMeta, table_dt_s: float) -> MumaxSplit:
    """How a table becomes the twin's input: its training columns, scaling and transient, on
    the twin's own sample grid (decimated when the table's step divides it, else resampled)."""
    specs = meta.input_specs(model.arch.drive_names, model.arch.condition_names)
    trained = dict(meta.provenance.get("source", {}).get("split", {}))
    columns = [s.get("column") or trained.get("input_column") for s in specs]
    output = meta.output.get("column") or trained.get("output_column")
    if not all(columns) or not output:
        raise ConfigError(
            "this twin was not trained on a MuMax3 table (its inputs name no table "
            "columns); score it against a device with --device"
        )
    ratio = meta.dt_s / table_dt_s
    every = int(round(ratio))
    on_grid = every >= 1 and abs(ratio - every) < 1e-3 * ratio
    roles = [s["role"] for s in specs]
    return MumaxSplit(
        drives=tuple(c for c, r in zip(columns, roles) if r == "drive"),
        conditions=tuple(c for c, r in zip(columns, roles) if r == "condition"),
        output_column=output,
        every=every if on_grid else 1,
        resample_dt_s=None if on_grid else meta.dt_s,
        discard=int(trained.get("discard", 0)),
        output_scale=float(meta.output.get("scale", trained.get("output_scale", 1.0))),
    )


def dominant_frequency(signal: np.ndarray, dt_s: float) -> float:
    """Frequency of the largest peak of the (Hann-windowed, mean-removed) spectrum."""
    x = np.asarray(signal, np.float64)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, dt_s)[1 + int(np.argmax(spectrum[1:]))])


def score_on_table(
    model: Any, meta: TwinMeta, table: Any, span: tuple[float, float] = (0.0, 1.0), *, where: str = "the twin"
) -> dict[str, Any]:
    """Free-running prediction of ``span`` of ``table``: NRMSE, dominant frequencies, series."""
    specs = meta.input_specs(model.arch.drive_names, model.arch.condition_names)
    require_columns(
        table, [c for c in (*(s.get("column") for s in specs), meta.output.get("column")) if c], where
    )
    split = twin_split(model, meta, float(np.mean(np.diff(table.time_s))))
    series, _ = mumax_series(table, split, output_offset=meta.output.get("offset"))
    lo, hi = span
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"span must be two fractions 0 <= START < STOP <= 1, got {span}")
    total = series.n + split.discard  # fractions of the whole table; the transient is never scored
    part = series.span(max(int(round(lo * total)) - split.discard, 0), int(round(hi * total)) - split.discard)
    hist = model.arch.history_samples
    if part.n < hist + 16:
        raise ConfigError(f"the scored span has only {part.n} samples on the twin's grid; widen --span")
    pred = predict(model, [part])[0]
    truth, twin = part.response[hist:], pred[hist:]
    f_true, f_twin = dominant_frequency(truth, part.dt_s), dominant_frequency(twin, part.dt_s)
    values = [
        *part.drives,
        *(np.broadcast_to(part.conditions[n], part.n) for n in model.arch.condition_names),
    ]
    inputs = [
        {
            "name": s["name"],
            "unit": s["unit"],
            "role": s["role"],
            "trained_range": s.get("range"),
            "scored_range": [float(np.min(v)), float(np.max(v))],
        }
        for s, v in zip(specs, values)
    ]
    scale, offset = float(meta.output.get("scale", 1.0)), float(meta.output.get("offset", 0.0))
    norm = model.normalisation()
    return {
        "nrmse": nrmse(twin, truth),
        "warnings": trust_warnings(inputs, truth, norm.y_mean, norm.y_std, scale, offset, meta.output_unit),
        "points": int(truth.size),
        "dt_s": part.dt_s,
        "dominant_frequency_Hz": f_true,
        "twin_dominant_frequency_Hz": f_twin,
        "frequency_error": abs(f_twin - f_true) / f_true if f_true > 0 else float("nan"),
        "inputs": inputs,
        "span": [lo, hi],
        "truth": truth / scale + offset,
        "prediction": twin / scale + offset,
        "output_unit": meta.output_unit,
        "output": str(meta.output.get("name") or "output"),
    }


#: Inputs may pass their trained range by this fraction of its width before a warning.
RANGE_SLACK = 0.05
#: The reference output may sit this many training standard deviations off the trained mean.
OUTPUT_SIGMAS = 3.0
#: Below this fraction of the trained output's spread the reference counts as flat.
FLAT_FRACTION = 0.1


def trust_warnings(
    inputs: list[dict[str, Any]],
    truth: np.ndarray,
    y_mean: float,
    y_std: float,
    scale: float = 1.0,
    offset: float = 0.0,
    unit: str = "",
) -> list[str]:
    """Why an NRMSE on this span may not score the twin: inputs or the reference output
    outside what it was trained on (the twin extrapolates), or a flat reference (the NRMSE
    divides by its tiny spread, so any offset looks huge). ``truth``, ``y_mean``, ``y_std``
    are in the model's units, ``(y - offset) * scale``."""
    warnings = []
    for spec in inputs:
        trained, (lo, hi) = spec.get("trained_range"), spec["scored_range"]
        if trained is None:
            continue
        slack = RANGE_SLACK * (trained[1] - trained[0])
        if lo < trained[0] - slack or hi > trained[1] + slack:
            warnings.append(
                f"input {spec['name']} spans {lo:.4g} .. {hi:.4g} {spec['unit']}, outside the trained "
                f"{trained[0]:.4g} .. {trained[1]:.4g}: the twin extrapolates, so the NRMSE scores "
                "an extrapolation, not the fit"
            )

    def shown(value: float, shift: float = offset) -> str:  # model units -> physical, with unit
        return f"{value / scale + shift:.4g}{'' if unit in ('', '1') else ' ' + unit}"

    mean, spread = float(np.mean(truth)), float(np.std(truth))
    sigmas = abs(mean - y_mean) / y_std
    if sigmas > OUTPUT_SIGMAS:
        lo, hi = sorted((y_mean - 2 * y_std, y_mean + 2 * y_std), key=lambda v: v / scale)
        warnings.append(
            f"the reference output averages {shown(mean)}, {sigmas:.1f} standard deviations "
            f"from the trained outputs (mostly {shown(lo)} .. {shown(hi)}): the system is in "
            "a state the twin never saw, so the NRMSE says nothing about the fit"
        )
    if spread < FLAT_FRACTION * y_std:
        warnings.append(
            f"the reference output barely varies (std {shown(math.copysign(spread, scale), 0.0)}, "
            f"{spread / y_std:.1%} of the trained outputs'): the NRMSE divides by that spread, so "
            "a small offset reads as a large error"
        )
    return warnings


def run_table(ctx: RunContext, config: EvalConfig) -> dict[str, Any]:
    """The plan body on a MuMax3 table (no device)."""
    model, meta = load_twin(config.checkpoint)
    table = load_mumax_table(config.table)
    scored = score_on_table(model, meta, table, tuple(config.span), where=f"twin {config.checkpoint}")
    unit = meta.output_unit or "1"  # MuMax3 magnetisation: dimensionless
    ctx.save("eval/table/truth", scored.pop("truth"), dt_s=scored["dt_s"], unit=unit)
    ctx.save("eval/table/twin", scored.pop("prediction"), dt_s=scored["dt_s"], unit=unit)
    summary = {**scored, "table": str(config.table), "checkpoint": config.checkpoint}
    ctx.result(**summary)
    return summary


def plot_table(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """Prediction against truth over the scored span, and a zoom on its first nanoseconds."""
    truth, twin = datasets["eval/table/truth"], datasets["eval/table/twin"]
    t, t_unit = scaled(np.arange(truth.size) * float(results["dt_s"]), "s")
    symbol, unit = symbol_of(str(results.get("output") or "output"))
    unit = unit or str(results.get("output_unit", ""))
    factor, unit = prefix(truth, unit)
    fig = Figure(figsize=(9, 5))
    axes = fig.subplots(2, 1)
    zoom = min(truth.size, 400)
    for ax, stop in zip(axes, (truth.size, zoom)):
        ax.plot(t[:stop], truth[:stop] * factor, color="k", lw=0.8, label="MuMax3")
        ax.plot(t[:stop], twin[:stop] * factor, color="tab:red", lw=0.8, ls="--", label="twin")
        ax.set_ylabel(label(symbol, unit))
        ax.set_xlabel(label("t", t_unit))
        ax.set_xlim(t[0], t[stop - 1])
    axes[0].set_title("the whole scored span", fontsize=9)
    axes[1].set_title(f"its first {quantity(zoom * float(results['dt_s']), 's')}", fontsize=9)
    legend_outside(axes[0])
    fig.suptitle(
        f"Twin against MuMax3, free-running: NRMSE {results['nrmse']:.4f}, dominant frequency "
        f"{quantity(results['twin_dominant_frequency_Hz'], 'Hz', 4)} (twin) vs "
        f"{quantity(results['dominant_frequency_Hz'], 'Hz', 4)}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def command_line_defaults(
    settings: dict[str, Any], *, device: str | None, runs_dir: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """One reference (a device or a table); against a device the drives are on the twin's own
    sample interval unless ``dt_s`` is given."""
    if (device is None) == (not settings.get("table")):
        raise ConfigError("give exactly one reference: --device ADDRESS or --mumax TABLE")
    if device is not None and "dt_s" not in settings and settings.get("checkpoint"):
        from spinlab.sim_backends.twin_device import open_twin

        twin = open_twin(settings["checkpoint"])
        settings["dt_s"] = twin.dt_s
        twin.close()
    return settings


def with_plot(summary: dict[str, Any], *, config: EvalConfig, **_: Any) -> dict[str, Any]:
    """The command line's summary names the plot file and the twin."""
    stem = "twin_vs_table" if "table" in summary else "twin_vs_device"
    drawn = [f for f in summary.get("figures", []) if Path(f).stem == stem]  # in the run's format
    plot = drawn[0] if drawn else str(Path(summary["run_dir"]) / f"{stem}.png")
    return {**summary, "plot": plot, "checkpoint": config.checkpoint}


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run twin-eval`` prints."""
    if "table" in summary:
        return (
            f"NRMSE twin vs {summary['table']} (free-running, {summary['points']} points): "
            f"{summary['nrmse']:.4f}; dominant frequency "
            f"{summary['twin_dominant_frequency_Hz'] / 1e9:.4g} GHz vs "
            f"{summary['dominant_frequency_Hz'] / 1e9:.4g} GHz (error {summary['frequency_error']:.2%})\n"
            + "".join(f"warning: {w}\n" for w in summary.get("warnings", []))
            + f"plot: {summary['plot']}"
        )
    repeats = summary["repeats"]
    lines = [
        f"NRMSE twin vs device: {summary['nrmse']:.4f} "
        f"(single shot {summary['nrmse_single_shot']:.4f}, repeats {repeats})"
    ]
    if "noise_floor_single_shot" in summary:
        lines.append(
            f"device's own single-shot noise floor: {summary['noise_floor_single_shot']:.4f}; "
            f"floor of the {repeats}-shot mean: {summary['noise_floor_mean']:.4f}; "
            f"twin error with that removed: {summary['nrmse_noise_corrected']:.4f}"
        )
    target = summary.get("target_nrmse")
    if target is not None:
        met = "met" if summary["nrmse"] <= target else "missed"
        lines.append(f"target NRMSE <= {target:g}: {met} ({summary['nrmse']:.4f})")
    lines += [
        "  "
        + ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "trained_at")
        + ("" if entry.get("trained_at", True) else " (not trained at)")
        for entry in summary["per_condition"]
    ]
    lines.append(f"plot: {summary['plot']}")
    return "\n".join(lines)


@command(
    config=EvalConfig,
    report=report,
    prepare=command_line_defaults,
    finish=with_plot,
    argument="checkpoint",
    device="optional",
    seed=1000,
    shortcuts=condition_shortcuts(),
    aliases={"--mumax": "table", "--drives": "n_drives"},
    help="Score a twin against a device on fresh random drives, or on a MuMax3 table, and plot both.",
)
def plan(config: EvalConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Twin evaluation as a plan (``spinlab twin eval``'s defaults unless overridden): against
    ``ctx.device``, or on ``table`` when one is given."""
    cfg = make_config(EvalConfig, config, overrides)
    if not cfg.checkpoint:
        raise ConfigError("twin evaluation needs the twin's checkpoint path")
    if cfg.table:
        return Plan(
            "twin-eval",
            cfg,
            lambda ctx: run_table(ctx, cfg),
            needs_device=False,
            plots={"twin_vs_table.png": plot_table},
        )
    return Plan("twin-eval", cfg, lambda ctx: run(ctx, cfg), plots={"twin_vs_device.png": plot_examples})


__all__ = [
    "EvalConfig",
    "evaluate",
    "run",
    "plan",
    "plot_examples",
    "score_on_table",
    "run_table",
    "plot_table",
    "dominant_frequency",
    "twin_split",
    "trust_warnings",
]
