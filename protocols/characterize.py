"""Characterise an auto-oscillator: threshold current from a bias sweep, relaxation time from steps.

A plan (what to measure), independent of the Device behind it; each bias point and each batch
of step repeats is one recorded step:

(a) Bias sweep at zero drive. The mean detector output follows the auto-oscillator steady state
    ``y = s (z-1)/(z+Q) + y0`` above threshold (``z = I/I_th``) and ~``y0`` below it. We fit
    ``I_th, Q, s, y0`` with ``scipy.optimize.curve_fit``: an ordinary least-squares fit first,
    then a robust (soft-L1) refit whose scale is the MAD of the first fit's residuals, so a noisy
    point or the thermally rounded corner at threshold does not drag the estimate.
(b) Step response at a bias above threshold. Each repeat holds ``+a``, ``0``, ``-a``, ``0`` volts;
    the two relaxations *back to the operating bias* (from above and from below) are averaged
    over many repeats and fitted jointly with one time constant. Relaxing to the operating point
    (not to ``bias + a``) measures the relaxation time at the bias itself. The fit is an
    exponential with the leading nonlinear correction (:func:`relaxation_model`); with it the
    step can be large enough to rise far above the device's thermal noise without biasing tau
    (vortex model, 4096 repeats of 0.12 V: tau within 0.3 % +- 0.4 % of the closed form). The
    plain exponential fit is recorded too.

Uncertainties (:data:`UNCERTAINTY`, in the report, the JSON and the run file): ``*_err`` are
statistical, one standard error from the fit's covariance. The threshold adds a systematic part,
``threshold_sys_A`` (:func:`threshold_systematic`): the model's corner is sharp, a thermal
device's is rounded, so the fit is repeated without the points near threshold and the shift
kept. On sim:vortex (4 seeds) and bench:emulated (3 seeds) the statistical error alone put the
model's 5 mA 1.0-3.6 standard errors away; with the systematic part, 0.3-1.7.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, model_validator
from scipy.optimize import curve_fit

from spinlab.config import Config, Positive, PositiveInt
from spinlab.device import Device
from spinlab.engine import Plan, RunContext
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.acquire import require_conditions
from spinlab.waveform import Waveform


class CharacterizeConfig(Config):
    """What to measure. ``None`` biases are chosen from the device's limits / the fitted threshold."""

    bias_start_A: float = Field(0.0, description="First bias current of the zero-drive sweep")
    bias_stop_A: float | None = Field(
        None, description="Last bias current of the sweep (none: 95 % of the device's max_bias_A)"
    )
    bias_points: Annotated[int, Field(ge=6)] = Field(
        20, description="Points of the zero-drive bias sweep (a fit of four parameters needs 6)"
    )
    sweep_duration_s: Positive = Field(60e-6, description="Zero-drive record per bias point")
    sweep_dt_s: Positive = Field(100e-9, description="Sample interval of the bias sweep")
    step_bias_A: float | None = Field(
        None,
        description="Operating bias of the step response (none: the "
        "device's bias if above threshold, else 1.5 x "
        "threshold)",
    )
    step_amplitude_V: Positive = Field(0.12, description="Step height of the step drive")
    step_dt_s: Positive = Field(20e-9, description="Sample interval of the step drive")
    step_hold_s: Positive = Field(
        1.2e-6, description="Hold of each level of a step repeat (>= ~5 relaxation times)"
    )
    step_repeats: PositiveInt = Field(4096, description="Step repeats averaged")
    step_batches: PositiveInt = Field(
        16, description="Batches the repeats are sent in (one recorded step each)"
    )
    field_T: float | None = Field(
        None,
        description="Magnetic field of the whole run (T; none: the device's own). The device "
        "must take field_T (sim:vortex, sim:macrospin, a twin trained over fields, a bench with a magnet)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> CharacterizeConfig:
        if self.bias_stop_A is not None and self.bias_stop_A <= self.bias_start_A:
            raise ValueError("bias_stop_A must be above bias_start_A")
        if self.sweep_duration_s < 10 * self.sweep_dt_s:
            raise ValueError("sweep_duration_s must hold at least 10 samples of sweep_dt_s")
        if self.step_hold_s < 10 * self.step_dt_s:
            raise ValueError("step_hold_s must hold at least 10 samples of step_dt_s")
        if self.step_batches > self.step_repeats:
            raise ValueError(
                f"step_batches ({self.step_batches}) cannot exceed step_repeats ({self.step_repeats})"
            )
        return self


# --- fit models ------------------------------------------------------------------------------
def steady_state_model(
    bias_A: np.ndarray, threshold_A: float, Q: float, scale_V: float, offset_V: float
) -> np.ndarray:
    """Mean detector output of an auto-oscillator: ``scale (z-1)/(z+Q) + offset`` above threshold."""
    z = np.asarray(bias_A, dtype=float) / threshold_A
    return scale_V * np.maximum(z - 1.0, 0.0) / (z + Q) + offset_V


def fit_threshold(bias_A: np.ndarray, response_V: np.ndarray) -> dict[str, float]:
    """Fit :func:`steady_state_model`; returns the parameters and their standard errors."""
    bias_A = np.asarray(bias_A, dtype=float)
    y = np.asarray(response_V, dtype=float)
    span = float(np.ptp(y))
    if span <= 0:
        raise ConfigError(
            "bias sweep response is flat: no auto-oscillation threshold in the swept range; "
            "sweep to a higher bias_stop_A"
        )
    floor = float(np.min(y))
    # initial threshold: extrapolate the top half of the rise down to the floor
    upper = y > floor + 0.5 * span
    if upper.sum() >= 2:
        slope, icpt = np.polyfit(bias_A[upper], y[upper], 1)
        guess = (floor - icpt) / slope if slope > 0 else bias_A[np.argmax(upper)]
    else:
        guess = bias_A[np.argmax(upper)]
    lo, hi = float(np.min(bias_A)), float(np.max(bias_A))
    guess = float(np.clip(guess, lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo)))
    if guess <= 0:
        guess = 0.5 * hi
    z_max = hi / guess
    p0 = [guess, 1.0, span * (z_max + 1.0) / max(z_max - 1.0, 1e-3), floor]
    bounds = ([1e-12, 0.0, 0.0, floor - span], [2 * hi, 100.0, 1e3 * span, floor + span])
    try:
        first, _ = curve_fit(steady_state_model, bias_A, y, p0=p0, bounds=bounds, method="trf", max_nfev=5000)
        resid = y - steady_state_model(bias_A, *first)
        f_scale = max(1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 1e-6 * span)
        params, cov = curve_fit(
            steady_state_model,
            bias_A,
            y,
            p0=first,
            bounds=bounds,
            method="trf",
            loss="soft_l1",
            f_scale=f_scale,
            max_nfev=5000,
        )
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"threshold fit failed ({exc}); check the sweep range covers the threshold"
        ) from None
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(4, np.nan)
    names = ("threshold_A", "Q", "scale_V", "offset_V")
    out = {n: float(v) for n, v in zip(names, params)}
    out.update({f"{n}_err": float(e) for n, e in zip(names, err)})
    return out


def threshold_systematic(
    bias_A: np.ndarray, response_V: np.ndarray, fit: Mapping[str, float]
) -> float | None:
    """The threshold's systematic error from the model's misspecification at its corner.

    The steady state is sharp at threshold; a real (thermal) device rounds the corner, and
    where the fit puts the threshold then depends on how much of the corner it sees. Refitting
    without the points within +-15 % of the fitted threshold (the rounded corner) and taking
    the shift estimates that error; ``None`` when fewer than 6 points remain.
    """
    bias_A, y = np.asarray(bias_A, dtype=float), np.asarray(response_V, dtype=float)
    keep = np.abs(bias_A / fit["threshold_A"] - 1.0) > 0.15
    if keep.sum() < 6 or (bias_A[keep] > fit["threshold_A"]).sum() < 3:
        return None
    try:
        outside = fit_threshold(bias_A[keep], y[keep])
    except ConfigError:
        return None
    return abs(outside["threshold_A"] - fit["threshold_A"])


def relaxation_model(
    t_s: np.ndarray,
    level_V: float,
    above_V: float,
    below_V: float,
    tau_s: float,
    curvature_per_V: float = 0.0,
) -> np.ndarray:
    """Two relaxations to one level with one time constant, stacked (``t_s`` holds both halves).

    Each is the exact solution of ``dx/dt = -x/tau - (k/tau) x^2`` (``k`` = ``curvature_per_V``)
    from ``x(0) = x0``: ``x0 e / (1 + k x0 (1 - e))`` with ``e = exp(-t/tau)``. ``k = 0`` is a
    plain exponential; ``k`` captures the leading nonlinearity of any smooth relaxation, so a
    step large enough to beat the noise does not bias ``tau`` (a plain exponential fit on the
    vortex model reads 1.5 % long at 0.08 V and 3 % at 0.12 V; this one < 0.5 %).
    """
    k = t_s.size // 2
    out = []
    for x0, t in ((above_V, t_s[:k]), (below_V, t_s[k:])):
        e = np.exp(-t / tau_s)
        out.append(level_V + x0 * e / (1.0 + curvature_per_V * x0 * (1.0 - e)))
    return np.concatenate(out)


def fit_relaxation(from_above_V: np.ndarray, from_below_V: np.ndarray, dt_s: float) -> dict[str, float]:
    """Joint fit of the relaxations from above and from below to the same level: a plain
    exponential first, then :func:`relaxation_model` with its curvature (reported as the
    relaxation time; the exponential one is kept as ``relaxation_time_exp_s``).

    Times are fitted in samples and voltages in units of the larger initial deviation, so
    every parameter is of order one for the optimiser.
    """
    a = np.asarray(from_above_V, dtype=float)
    b = np.asarray(from_below_V, dtype=float)
    if a.size != b.size or a.size < 10:
        raise ConfigError("relaxation fit needs two equal records of at least 10 samples")
    level = 0.5 * (a[-1] + b[-1])
    scale = max(abs(a[0] - level), abs(b[0] - level))
    if not scale > 0:
        raise ConfigError("the step response is flat; increase step_amplitude_V")
    t = np.arange(a.size, dtype=float)
    tt = np.concatenate([t, t])
    y = (np.concatenate([a, b]) - level) / scale
    p0 = [0.0, (a[0] - level) / scale, (b[0] - level) / scale, a.size / 5]
    lower, upper = [-np.inf, -np.inf, -np.inf, 0.1], [np.inf, np.inf, np.inf, 10.0 * a.size]
    try:
        # four parameters (len(p0)): curvature stays 0, a plain exponential
        plain, _ = curve_fit(
            relaxation_model, tt, y, p0=p0, bounds=(lower, upper), method="trf", max_nfev=5000
        )
        # |k x0| < 0.9 keeps the denominator positive for both relaxations (x0 ~ +-1 here)
        full, cov = curve_fit(
            relaxation_model,
            tt,
            y,
            p0=[*plain, 0.0],
            bounds=(lower + [-0.9], upper + [0.9]),
            method="trf",
            max_nfev=5000,
        )
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"relaxation fit failed ({exc}); increase step_amplitude_V or step_repeats"
        ) from None
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(5, np.nan)
    return {
        "level_V": level + scale * float(full[0]),
        "amplitude_above_V": scale * float(full[1]),
        "amplitude_below_V": scale * float(full[2]),
        "relaxation_time_s": dt_s * float(full[3]),
        "relaxation_time_err_s": dt_s * float(err[3]),
        "curvature_per_V": float(full[4]) / scale,
        "relaxation_time_exp_s": dt_s * float(plain[3]),
    }


def model_prediction(device: Device, bias_A: float, field_T: float | None = None) -> dict[str, float]:
    """Closed forms of the auto-oscillator when the device (or the model behind a bench)
    exposes its parameters: threshold and ``tau = 1/(2 Gamma_G (z-1))`` at ``bias_A`` (and at
    ``field_T`` when the model's threshold depends on the field)."""
    params = getattr(device, "params", None)
    if params is None:
        params = getattr(getattr(device, "model", None), "params", None)
    if params is None or not all(hasattr(params, k) for k in ("threshold_A", "gamma_G_per_s")):
        return {}
    threshold = float(params.threshold_A)
    if field_T is not None and hasattr(params, "threshold_current_A"):
        threshold = float(params.threshold_current_A(field_T))
    z = bias_A / threshold
    out = {"predicted_threshold_A": threshold}
    if z > 1:
        out["predicted_relaxation_time_s"] = 1.0 / (2.0 * params.gamma_G_per_s * (z - 1.0))
    return out


def default_step_bias(device: Device, threshold_A: float) -> float:
    """The device's own operating bias (its default ``bias_A``) when that is clearly above the
    fitted threshold, else 1.5 x the threshold (within the limits).

    Why not always 1.5 x threshold: tau ~ 1/(z - 1) amplifies a threshold-fit error threefold
    there, so two backends of the same device would report relaxation times at different biases.
    """
    ceiling = 0.95 * device.limits.max_bias_A
    operating = device.default_conditions.get("bias_A")
    if operating is not None and 1.2 * threshold_A <= float(operating) <= device.limits.max_bias_A:
        return float(operating)
    return 1.5 * threshold_A if 1.5 * threshold_A <= ceiling else 0.5 * (threshold_A + ceiling)


# --- the protocol ----------------------------------------------------------------------------
def run(ctx: RunContext, config: CharacterizeConfig) -> dict[str, Any]:
    """The plan body: bias sweep + step response on ``ctx.device``; returns the summary."""
    device = ctx.device
    limits = device.limits
    stop = config.bias_stop_A if config.bias_stop_A is not None else 0.95 * limits.max_bias_A
    if max(abs(config.bias_start_A), abs(stop)) > limits.max_bias_A:
        raise ConfigError(
            f"bias sweep up to {stop:.4g} A exceeds the device's max_bias_A "
            f"{limits.max_bias_A:.4g} A; lower bias_stop_A (or bias_start_A)"
        )
    if config.step_amplitude_V > limits.max_drive_V:
        raise ConfigError(
            f"step_amplitude_V {config.step_amplitude_V} V exceeds the device's "
            f"max_drive_V {limits.max_drive_V} V; lower step_amplitude_V"
        )
    field = {} if config.field_T is None else {"field_T": config.field_T}
    require_conditions(device, field)
    field_T = config.field_T if config.field_T is not None else device.default_conditions.get("field_T")
    bias = np.linspace(config.bias_start_A, stop, config.bias_points)

    # (a) bias sweep: one step per bias point
    n = int(round(config.sweep_duration_s / config.sweep_dt_s))
    zeros = Waveform(np.zeros(n), config.sweep_dt_s)
    sweep_attrs = {
        "sweep/responses": {"dt_s": config.sweep_dt_s, "unit": "V", "t0_s": 0.0},
        "sweep/bias_A": {"unit": "A"},
    }
    responses = np.empty((bias.size, n))
    for i, bias_A in enumerate(bias):
        data = ctx.measure(
            "sweep",
            lambda dev, b=float(bias_A): {
                "sweep/bias_A": np.array([b]),
                "sweep/responses": dev.respond(zeros, {**field, "bias_A": b}).samples[None],
            },
            key=f"bias/{i}",
            meta={**field, "bias_A": float(bias_A)},
            attrs=sweep_attrs,
        )
        responses[i] = data["sweep/responses"][0]
        ctx.progress(
            i + 1,
            config.bias_points,
            stage="bias sweep",
            bias_A=float(bias_A),
            response_V=float(responses[i].mean()),
        )
        ctx.preview("sweep response", Waveform(responses[i], config.sweep_dt_s))
    mean_V = responses.mean(axis=1)
    sweep_fit = fit_threshold(bias, mean_V)
    threshold_sys = threshold_systematic(bias, mean_V, sweep_fit)
    ctx.save("sweep/response_mean_V", mean_V, unit="V")
    ctx.save("sweep/response_std_V", responses.std(axis=1), unit="V")
    ctx.save(
        "sweep/fit",
        np.array([sweep_fit[k] for k in ("threshold_A", "Q", "scale_V", "offset_V")]),
        names=["threshold_A", "Q", "scale_V", "offset_V"],
        threshold_sys_A=threshold_sys,
        **sweep_fit,
    )
    threshold = sweep_fit["threshold_A"]

    # (b) step response at the operating bias: one step per batch of repeats, summed
    step_bias = config.step_bias_A if config.step_bias_A is not None else default_step_bias(device, threshold)
    if not threshold < step_bias <= limits.max_bias_A:
        raise ConfigError(
            f"step bias {step_bias:.4g} A must be above the fitted threshold "
            f"{threshold:.4g} A and within max_bias_A {limits.max_bias_A:.4g} A"
        )
    h = int(round(config.step_hold_s / config.step_dt_s))
    a = config.step_amplitude_V
    one = np.concatenate([np.full(h, a), np.zeros(h), np.full(h, -a), np.zeros(h)])
    sums = np.zeros(one.size)
    done = 0
    batches = np.diff(np.linspace(0, config.step_repeats, config.step_batches + 1).round().astype(int))
    for k, count in enumerate(batches):
        drive = Waveform(np.tile(one, (int(count), 1)), config.step_dt_s)
        data = ctx.measure(
            "steps",
            lambda dev, w=drive: {
                "steps/batch_sum_V": dev.respond(w, {**field, "bias_A": step_bias}).samples.sum(axis=0)[None],
                "steps/batch_repeats": np.array([w.batch_size]),
            },
            key=f"batch/{k}",
            meta={**field, "bias_A": step_bias, "repeats": int(count)},
            attrs={"steps/batch_sum_V": {"dt_s": config.step_dt_s, "unit": "V"}},
        )
        sums += data["steps/batch_sum_V"][0]
        done += int(data["steps/batch_repeats"][0])
        ctx.progress(k + 1, config.step_batches, stage="step response", repeats=done)
        ctx.preview("mean step response", Waveform(sums / done, config.step_dt_s))
    mean_step = sums / done
    relax = fit_relaxation(mean_step[h : 2 * h], mean_step[3 * h :], config.step_dt_s)
    ctx.save("steps/drive", Waveform(one, config.step_dt_s))
    ctx.save("steps/mean_response", Waveform(mean_step, config.step_dt_s), repeats=done, bias_A=step_bias)
    ctx.save(
        "steps/fit",
        np.array([relax["relaxation_time_s"], relax["relaxation_time_err_s"]]),
        names=["relaxation_time_s", "relaxation_time_err_s"],
        **relax,
    )

    summary: dict[str, Any] = {
        "threshold_A": threshold,
        "threshold_err_A": sweep_fit["threshold_A_err"],
        "threshold_sys_A": threshold_sys,
        "threshold_total_err_A": None
        if threshold_sys is None
        else float(np.hypot(sweep_fit["threshold_A_err"], threshold_sys)),
        "uncertainty": UNCERTAINTY,
        "Q": sweep_fit["Q"],
        "Q_err": sweep_fit["Q_err"],
        "relaxation_time_s": relax["relaxation_time_s"],
        "relaxation_time_err_s": relax["relaxation_time_err_s"],
        "relaxation_time_exp_s": relax["relaxation_time_exp_s"],
        "relaxation_bias_A": float(step_bias),
        "step_amplitude_V": a,
        "step_repeats": done,
        "predicted_threshold_A": None,
        "predicted_relaxation_time_s": None,
        "step_dt_s": config.step_dt_s,
        "step_hold_samples": h,
        "curvature_per_V": relax["curvature_per_V"],
        "level_V": relax["level_V"],
        "amplitude_above_V": relax["amplitude_above_V"],
        "amplitude_below_V": relax["amplitude_below_V"],
        "scale_V": sweep_fit["scale_V"],
        "offset_V": sweep_fit["offset_V"],
        "field_T": None if field_T is None else float(field_T),
        "field_control": "field_T" in device.condition_names,
    }
    summary.update(model_prediction(device, float(step_bias), field_T))
    ctx.result(**summary)
    return summary


# --- plots (from what the run stored) ----------------------------------------------------
def plot_sweep(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    bias, mean_V = datasets["sweep/bias_A"], datasets["sweep/response_mean_V"]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    fine = np.linspace(bias.min(), bias.max(), 400)
    ax.plot(bias * 1e3, mean_V * 1e3, "o", label="measured")
    ax.plot(
        fine * 1e3,
        steady_state_model(
            fine, results["threshold_A"], results["Q"], results["scale_V"], results["offset_V"]
        )
        * 1e3,
        label=f"fit: I_th = {results['threshold_A'] * 1e3:.3f} mA",
    )
    ax.set_title(field_text(results), fontsize=9)
    ax.set_xlabel("bias current (mA)")
    ax.set_ylabel("mean response (mV)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_step_response(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    mean_step, h, dt = (
        datasets["steps/mean_response"],
        int(results["step_hold_samples"]),
        results["step_dt_s"],
    )
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    t = np.arange(h) * dt
    model = relaxation_model(
        np.concatenate([t, t]),
        results["level_V"],
        results["amplitude_above_V"],
        results["amplitude_below_V"],
        results["relaxation_time_s"],
        results["curvature_per_V"],
    )
    for seg, fit_seg, label in (
        (mean_step[h : 2 * h], model[:h], "from above"),
        (mean_step[3 * h :], model[h:], "from below"),
    ):
        ax.plot(t * 1e9, seg * 1e3, ".", ms=3, label=label)
        ax.plot(t * 1e9, fit_seg * 1e3, "k-", lw=1)
    ax.set_title(f"tau = {results['relaxation_time_s'] * 1e9:.1f} ns")
    ax.set_xlabel("time after step (ns)")
    ax.set_ylabel("mean response (mV)")
    ax.legend()
    fig.tight_layout()
    return fig


def field_text(summary: Mapping[str, Any]) -> str:
    """The field a run was at, as its report says it: ``0.3 T``, not set, or no field control."""
    if summary.get("field_T") is not None:
        return f"field {summary['field_T']:g} T"
    return "field not set (the device's own)" if summary.get("field_control") else "no field control"


#: What each +- covers (also in the JSON summary and the run file's results).
UNCERTAINTY = {
    "threshold_err_A": "statistical, 1 standard error (68 %): the bias sweep's noise, from the "
    "robust fit's covariance",
    "threshold_sys_A": "systematic: shift of the threshold when the fit leaves out the points within "
    "+-15 % of it (the steady-state model is sharp there, a thermal device rounds the corner)",
    "threshold_total_err_A": "both in quadrature",
    "relaxation_time_err_s": "statistical, 1 standard error (68 %) from the fit's covariance; the "
    "nonlinear correction of the model removes the step-height bias (see relaxation_time_exp_s)",
}


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run characterize`` prints."""
    sys_A = summary.get("threshold_sys_A")
    threshold = (
        f"threshold current   {summary['threshold_A'] * 1e3:.4f} mA "
        f"+- {summary['threshold_err_A'] * 1e3:.4f} (stat., 1 s.e.)"
    )
    if sys_A is not None:
        threshold += (
            f" +- {sys_A * 1e3:.4f} (sys., fit without the rounded corner)"
            f" = +- {summary['threshold_total_err_A'] * 1e3:.4f}"
        )
    lines = [
        field_text(summary),
        threshold,
        f"relaxation time     {summary['relaxation_time_s'] * 1e9:.2f} ns "
        f"+- {summary['relaxation_time_err_s'] * 1e9:.2f} (stat., 1 s.e.) "
        f"at {summary['relaxation_bias_A'] * 1e3:.3f} mA",
    ]
    if summary.get("predicted_threshold_A"):
        lines.append(f"model threshold     {summary['predicted_threshold_A'] * 1e3:.4f} mA")
    if summary.get("predicted_relaxation_time_s"):
        lines.append(f"model prediction    {summary['predicted_relaxation_time_s'] * 1e9:.2f} ns")
    lines.append(f"run directory       {summary['run_dir']}")
    return "\n".join(lines)


@command(
    config=CharacterizeConfig,
    report=report,
    help="Bias sweep (threshold current) and step response (relaxation time) of a device.",
)
def plan(config: CharacterizeConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Characterisation as a plan (``spinlab characterize``'s defaults unless overridden)."""
    cfg = make_config(CharacterizeConfig, config, overrides)
    return Plan(
        "characterize",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={"sweep.png": plot_sweep, "step_response.png": plot_step_response},
        nexus={"signal": "sweep/response_mean_V", "axes": ["sweep/bias_A"]},
    )


__all__ = [
    "CharacterizeConfig",
    "plan",
    "run",
    "fit_threshold",
    "fit_relaxation",
    "steady_state_model",
    "relaxation_model",
    "model_prediction",
    "default_step_bias",
    "field_text",
]
