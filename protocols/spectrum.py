"""Frequency-domain characterisation: the oscillator's line against bias current and field.

What a lab measures first on a new spin-torque oscillator. For every (bias, field) point of the
grid the device's power spectral density is measured in two stages, as one does by hand on an
analyser: a *survey* over the whole window (``freq_start_Hz .. freq_stop_Hz``, the colour maps
are drawn from it), then *zooms* centred on the peak, ``zoom_span_linewidths`` linewidths wide,
twice (the second centred on the first's fit); the last zoom is fitted with a Lorentzian on a
flat floor (:func:`fit_line`: a fit of the logarithm first, robust to the analyser's
multiplicative display noise, then a linear fit weighted by that model, which gives unbiased
values and their standard errors). The line gives the peak frequency, the linewidth (FWHM) and
the integrated power (the Lorentzian's area, so the tails outside the window count).

From the grid:

* the threshold current at each field: the onset of power, the integrated power fitted with the
  auto-oscillator's steady state ``s (z-1)/(z+Q) + floor`` (``z = I/I_th``; the same robust fit
  as the time-domain :mod:`.characterize`, so the two thresholds compare directly);
* the nonlinear frequency shift ``N`` (Hz per unit normalised power): the peak frequency against
  the normalised power ``p = (z-1)/(z+Q)`` of that fit above threshold, ``f = f0(B) + N p``, one
  ``N`` shared by all fields (each field has its own ``f0``);
* ``df/dI`` (above threshold, per field) and ``df/dH`` at the map's bias (across fields);
* the linewidth's trend: how it falls with current below and above threshold, and, where the
  device exposes its model (``sim:vortex``, an emulated bench), the ratio to the model's closed
  forms (:mod:`spinlab.sim_backends.spectrum`);
* a suggested operating region for a reservoir: above threshold (``z >= min_supercriticality``),
  where the frequency moves most linewidths per mA (``|df/dI| / linewidth``: strong
  nonlinearity that the noise does not wash out), with the reason stated.

Any device with ``spectrum(conditions, freqs_Hz) -> W/Hz`` (:class:`SpectrumDevice`) runs it:
``sim:vortex`` computes the line from its physics; a Bench with an analyser measures it. The
field is swept only on devices that take ``field_T`` as a condition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, field_validator, model_validator
from scipy.optimize import curve_fit, least_squares

from spinlab.config import Config, Positive
from spinlab.device import Device
from spinlab.engine import Plan, RunContext
from spinlab.engine.plan import command, make_config
from spinlab.errors import ConfigError
from spinlab.protocols.characterize import fit_threshold


@runtime_checkable
class SpectrumDevice(Protocol):
    """A device that gives its one-sided power spectral density (W/Hz into the analyser's 50 ohm,
    at the device) at DC operating ``conditions``, on a uniform grid ``freqs_Hz``."""

    def spectrum(self, conditions: Mapping[str, float] | None, freqs_Hz: Any) -> np.ndarray: ...


def grid(value: Any) -> tuple[float, ...] | None:
    """``"4e-3:9e-3:26"`` (start:stop:count), numbers, or a list of either -> the grid's values."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    items = [part for item in items for part in (item.split(",") if isinstance(item, str) else [item])]
    out: list[float] = []
    for item in items:
        if isinstance(item, str) and ":" in item:
            parts = item.split(":")
            try:
                start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            except (ValueError, IndexError):
                raise ValueError(f"a grid must look like START:STOP:COUNT, got {item!r}") from None
            if len(parts) != 3 or count < 1:
                raise ValueError(f"a grid must look like START:STOP:COUNT (COUNT >= 1), got {item!r}")
            out.extend(np.linspace(start, stop, count).tolist())
        else:
            try:
                out.append(float(item))
            except (TypeError, ValueError):
                raise ValueError(f"must be numbers or START:STOP:COUNT, got {item!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"must hold finite numbers, got {value!r}")
    return tuple(out)


class SpectrumConfig(Config):
    """The grid and the window. ``None`` biases: 26 points from 30 % to 95 % of the device's
    max_bias_A; ``None`` fields: the device's own (no field on a device that takes none)."""

    bias_A: tuple[float, ...] | None = Field(None, description="Bias currents: START:STOP:COUNT or a list")
    field_T: tuple[float, ...] | None = Field(None, description="Fields: START:STOP:COUNT or a list")
    freq_start_Hz: Positive = Field(250e6, description="Start of the survey window")
    freq_stop_Hz: Positive = Field(650e6, description="Stop of the survey window")
    survey_points: int = Field(2001, ge=11, le=100_001, description="Points of the survey trace")
    zoom_points: int = Field(801, ge=21, le=100_001, description="Points of each zoom trace")
    zoom_span_linewidths: float = Field(
        20.0, ge=4, le=1000, description="Width of a zoom in linewidths (the fit needs the tails)"
    )
    min_supercriticality: float = Field(
        1.1, gt=1, le=10, description="Least I/I_th of the suggested operating region"
    )
    map_bias_A: float | None = Field(
        None, description="Bias of the PSD-against-field map (none: the suggested operating bias)"
    )

    @field_validator("bias_A", "field_T", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> tuple[float, ...] | None:
        return grid(value)

    @model_validator(mode="after")
    def _consistent(self) -> SpectrumConfig:
        if self.freq_stop_Hz <= self.freq_start_Hz:
            raise ValueError("freq_stop_Hz must be above freq_start_Hz")
        if self.bias_A is not None and len(self.bias_A) < 6:
            raise ValueError("bias_A needs at least 6 currents (the threshold fit has four parameters)")
        return self


# --- the line fit --------------------------------------------------------------------------------
def lorentzian(freqs_Hz: Any, center_Hz: float, fwhm_Hz: float, power_W: float, floor: float) -> Any:
    """One-sided PSD (W/Hz) of a Lorentzian line of total power ``power_W`` on a flat floor."""
    half = fwhm_Hz / 2
    return power_W * half / (math.pi * ((np.asarray(freqs_Hz) - center_Hz) ** 2 + half**2)) + floor


def _lorentzian_jac(u: Any, center: float, fwhm: float, power: float, floor: float) -> np.ndarray:
    """d lorentzian / d(center, fwhm, power, floor), one row per frequency."""
    x, half = np.asarray(u) - center, fwhm / 2
    d = x * x + half * half
    return np.stack(
        [
            power * half * 2 * x / (math.pi * d * d),
            0.5 * power * (x * x - half * half) / (math.pi * d * d),
            half / (math.pi * d),
            np.ones_like(x),
        ],
        axis=-1,
    )


def fit_line(freqs_Hz: np.ndarray, psd: np.ndarray) -> dict[str, float]:
    """Lorentzian + floor fitted to one trace; values and standard errors (``*_err``)."""
    f = np.asarray(freqs_Hz, dtype=float)
    y = np.asarray(psd, dtype=float)
    if f.size < 8 or f.shape != y.shape or not np.all(np.isfinite(y)):
        raise ConfigError("a spectrum trace must hold >= 8 finite PSD values on its frequencies")
    peak = float(np.max(y))
    if not peak > 0:
        raise ConfigError("the spectrum is empty (no power anywhere in the window)")
    # normalised units: frequency in spans about the window's centre, PSD in peaks
    c0, span = float(f.mean()), float(np.ptp(f))
    u, v = (f - c0) / span, np.maximum(y / peak, 1e-300)
    floor0 = float(np.percentile(v, 5))
    k = int(np.argmax(v))
    above = np.flatnonzero(v > floor0 + 0.5 * (v[k] - floor0))
    width0 = max(float(u[above.max()] - u[above.min()]), float(u[1] - u[0]))
    p0 = [u[k], width0, (v[k] - floor0) * math.pi * width0 / 2, floor0]
    bounds = ([u[0] - 0.5, 1e-9, 0.0, 0.0], [u[-1] + 0.5, 10.0, np.inf, 1.0])
    try:
        first = least_squares(
            lambda q: np.log(np.maximum(lorentzian(u, *q), 1e-300)) - np.log(v),
            np.clip(p0, bounds[0], bounds[1]),
            jac=lambda q: _lorentzian_jac(u, *q) / np.maximum(lorentzian(u, *q), 1e-300)[:, None],
            bounds=bounds,
            x_scale="jac",
            max_nfev=2000,
        ).x
        model = lorentzian(u, *first)
        params, cov = curve_fit(
            lorentzian, u, v, p0=first, sigma=model, bounds=bounds, jac=_lorentzian_jac, max_nfev=2000
        )
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"Lorentzian fit failed ({exc}); widen the window or check the device") from None
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(4, np.nan)
    scale = (span, span, span * peak, peak)
    names = ("frequency_Hz", "linewidth_Hz", "power_W", "floor_W_per_Hz")
    out = {n: float(p * s) for n, p, s in zip(names, params, scale)}
    out["frequency_Hz"] += c0
    out.update({f"{n}_err": float(e * s) for n, e, s in zip(names, err, scale)})
    return out


def measure_line(
    device: Any, conditions: Mapping[str, float], config: SpectrumConfig
) -> dict[str, np.ndarray]:
    """Survey, then two zooms on the peak; returns the survey PSD and the last zoom's trace."""
    survey_f = np.linspace(config.freq_start_Hz, config.freq_stop_Hz, config.survey_points)
    survey = np.asarray(device.spectrum(dict(conditions), survey_f), dtype=float)
    if survey.shape != survey_f.shape:
        raise ConfigError(f"the device gave {survey.shape} PSD values for {survey_f.size} frequencies")
    k = int(np.argmax(survey))
    center, width = float(survey_f[k]), 4 * float(survey_f[1] - survey_f[0])
    zoom_f = zoom = survey_f
    for _ in range(2):
        span = min(config.zoom_span_linewidths * width, config.freq_stop_Hz - config.freq_start_Hz)
        span = min(span, 2 * center)  # the analyser starts at 0 Hz
        zoom_f = np.linspace(center - span / 2, center + span / 2, config.zoom_points)
        zoom = np.asarray(device.spectrum(dict(conditions), zoom_f), dtype=float)
        try:
            line = fit_line(zoom_f, zoom)
        except ConfigError:
            break
        if not zoom_f[0] <= line["frequency_Hz"] <= zoom_f[-1]:
            break
        center, width = line["frequency_Hz"], line["linewidth_Hz"]
    return {
        "points/survey_psd_W_per_Hz": survey[None],
        "points/zoom_freqs_Hz": zoom_f[None],
        "points/zoom_psd_W_per_Hz": zoom[None],
    }


# --- what the grid tells ------------------------------------------------------------------------
def model_of(device: Any) -> Any:
    """The simulated device behind ``device`` that exposes its closed forms (``line``), or None."""
    for candidate in (device, getattr(device, "model", None)):
        if (
            candidate is not None
            and callable(getattr(candidate, "line", None))
            and hasattr(candidate, "params")
        ):
            return candidate
    return None


def nonlinear_shift(
    bias_A: np.ndarray, freq_Hz: np.ndarray, fits: Sequence[Mapping[str, float]], min_z: float
) -> dict[str, float]:
    """``f = f0(B) + N p`` above ``min_z``, ``p`` the normalised power ``(z-1)/(z+Q)`` with the
    thermal rounding of :func:`rounded_power_model` (``z = I / I_th(B)``, each field's threshold
    and ``kT/E0`` from its power fit): one ``N`` and one ``Q`` for all fields, one ``f0`` per
    field.

    Why ``Q`` from the frequency and not from the power: both follow ``p = (z-1)/(z+Q)``, but
    the peak frequency is measured to a small fraction of a linewidth while the integrated power
    carries the analyser's display noise, so the power fit's ``Q`` (which ``N`` inherits, as
    the normalisation of ``p``) scatters by tens of per cent on a real trace and the
    frequency's curvature pins it to a few."""
    rows: list[tuple[int, float, float, float]] = []  # (field, z, kT/E0, f)
    for j, fit in enumerate(fits):
        z = bias_A / fit["threshold_A"]
        t = 10.0 ** fit.get("log10_thermal", -10.0)
        rows.extend((j, float(zi), t, float(fi)) for zi, fi in zip(z, freq_Hz[j]) if zi >= min_z)
    n_fields = len(fits)
    if len(rows) < n_fields + 3:
        return {"N_Hz": math.nan, "N_err_Hz": math.nan, "Q_frequency": math.nan, "Q_frequency_err": math.nan}
    field = np.array([r[0] for r in rows])
    z = np.array([r[1] for r in rows])
    thermal = np.array([r[2] for r in rows])
    f = np.array([r[3] for r in rows])
    scale = float(np.ptp(f)) or 1.0

    def model(_: Any, *q: float) -> np.ndarray:  # frequencies in units of their spread
        f0, n, big_q = np.asarray(q[:n_fields]), q[-2], q[-1]
        a, b = z - 1, z + big_q  # p with its thermal rounding (rounded_power_model's)
        return f0[field] + n * (a + np.sqrt(a * a + 4 * b * thermal)) / (2 * b)

    f0_guess = [
        float(np.min(f[field == j])) if np.any(field == j) else float(f.min()) for j in range(n_fields)
    ]
    p0 = [*(v / scale for v in f0_guess), 5.0, fits[0].get("Q", 2.0)]  # N ~ the shift over p ~ 0.2
    lower = [-np.inf] * n_fields + [-np.inf, 0.0]
    upper = [np.inf] * n_fields + [np.inf, 100.0]
    try:
        params, cov = curve_fit(
            model, z, f / scale, p0=np.clip(p0, lower, upper), bounds=(lower, upper), max_nfev=5000
        )
    except (RuntimeError, ValueError):
        return {"N_Hz": math.nan, "N_err_Hz": math.nan, "Q_frequency": math.nan, "Q_frequency_err": math.nan}
    err = (
        np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(len(params), np.nan)
    )
    return {
        "N_Hz": float(params[-2] * scale),
        "N_err_Hz": float(err[-2] * scale),
        "Q_frequency": float(params[-1]),
        "Q_frequency_err": float(err[-1]),
    }


def operating_region(
    bias_A: np.ndarray,
    fields: Sequence[float | None],
    freq_Hz: np.ndarray,
    width_Hz: np.ndarray,
    thresholds_A: Sequence[float],
    min_z: float,
) -> dict[str, Any]:
    """Where the frequency moves most linewidths per mA above threshold, and why."""
    best: tuple[float, int, int] | None = None
    scores = np.full(freq_Hz.shape, np.nan)
    for j, threshold in enumerate(thresholds_A):
        slope = np.gradient(freq_Hz[j], bias_A)
        ok = (bias_A >= min_z * threshold) & (width_Hz[j] > 0)
        scores[j, ok] = np.abs(slope[ok]) / width_Hz[j, ok]
        for i in np.flatnonzero(ok):
            if best is None or scores[j, i] > best[0]:
                best = (float(scores[j, i]), j, int(i))
    if best is None:
        return {"operating_reason": f"no grid point is {min_z:g} x above its threshold; raise the bias"}
    score, j, i = best
    good = scores[j] >= 0.5 * score
    lo = hi = i
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < bias_A.size - 1 and good[hi + 1]:
        hi += 1
    slope = float(np.gradient(freq_Hz[j], bias_A)[i])
    field = fields[j]
    at = "" if field is None else f" at {field:g} T"
    z = bias_A[i] / thresholds_A[j]
    reason = (
        f"{bias_A[lo] * 1e3:.3g}-{bias_A[hi] * 1e3:.3g} mA{at}: {z:.2f} x threshold, linewidth "
        f"{width_Hz[j, i] / 1e3:.3g} kHz, df/dI {slope * 1e-9:.3g} MHz/mA: the frequency moves "
        f"{score * 1e-3:.3g} linewidths per mA there (the grid's most, half of it or more across the range), "
        "so a drive modulates it strongly above the phase noise"
    )
    return {
        "operating_bias_A": float(bias_A[i]),
        "operating_field_T": field,
        "operating_range_A": [float(bias_A[lo]), float(bias_A[hi])],
        "operating_linewidths_per_A": score,
        "operating_reason": reason,
    }


def linewidth_trend(
    bias_A: np.ndarray, width_Hz: np.ndarray, thresholds_A: Sequence[float]
) -> dict[str, float]:
    """Mean d(log linewidth)/dI below (z < 0.95) and above (z > 1.05) threshold, all fields."""
    out = {}
    for side, pick in (("below", lambda z: z < 0.95), ("above", lambda z: z > 1.05)):
        slopes = []
        for j, threshold in enumerate(thresholds_A):
            use = pick(bias_A / threshold)
            if use.sum() >= 2:
                slopes.append(np.polyfit(bias_A[use], np.log(width_Hz[j, use]), 1)[0])
        out[f"linewidth_log_slope_{side}_per_A"] = float(np.mean(slopes)) if slopes else math.nan
    return out


def rounded_power_model(
    bias_A: Any, threshold_A: float, Q: float, scale_W: float, log10_thermal: float, floor_W: float
) -> Any:
    """Mean power of the auto-oscillator with its thermal rounding: ``scale p + floor``, ``p`` the
    stable root of ``(z-1) p - (z+Q) p^2 + t = 0`` (the mean-field power equation with the
    thermal force; ``t = 10**log10_thermal`` is kT/E0): ``(z-1)/(z+Q)`` above threshold,
    ``t/(1-z)`` below it, ``sqrt(t/(1+Q))`` at it."""
    z = np.asarray(bias_A, dtype=float) / threshold_A
    a, b, t = z - 1, np.maximum(z + Q, 1e-3), 10.0**log10_thermal
    disc = np.sqrt(a * a + 4 * b * t)
    p = np.where(a >= 0, (a + disc) / (2 * b), 2 * t / np.maximum(disc - a, 1e-300))
    return scale_W * p + floor_W


POWER_FIT = ("threshold_A", "Q", "scale_W", "log10_thermal", "floor_W")


def power_threshold(bias_A: np.ndarray, power_W: np.ndarray) -> dict[str, float]:
    """Threshold from the onset of power: :func:`~.characterize.fit_threshold` (the time-domain
    plan's fit) for a start, then :func:`rounded_power_model`, whose thermal rounding keeps the
    points near threshold from pulling ``I_th`` down and ``Q`` up (on ``sim:vortex`` the sharp
    model reads ``Q`` 50 % high, which ``N`` inherits). Fitted in units of the largest power
    (nanowatts would stop the optimiser at once)."""
    unit = float(np.nanmax(np.abs(power_W)))
    if not unit > 0:
        raise ConfigError("no power in any line: no auto-oscillation in the swept range; raise the bias")
    y = np.asarray(power_W, dtype=float) / unit
    start = fit_threshold(bias_A, y)
    p0 = [start["threshold_A"], max(start["Q"], 0.1), start["scale_V"], -4.0, max(start["offset_V"], 0.0)]
    hi = float(np.max(bias_A))
    bounds = ([1e-12, 0.0, 0.0, -10.0, -1.0], [2 * hi, 100.0, 1e3, -1.0, 1.0])
    try:
        params, cov = curve_fit(
            rounded_power_model,
            bias_A,
            y,
            p0=np.clip(p0, *bounds),
            bounds=bounds,
            method="trf",
            max_nfev=5000,
        )
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"power threshold fit failed ({exc}); check the sweep covers the threshold"
        ) from None
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(5, np.nan)
    names = ("threshold_A", "Q", "scale_W", "log10_thermal", "floor_W")
    units = (1.0, 1.0, unit, 1.0, unit)
    out = {n: float(v * u) for n, v, u in zip(names, params, units)}
    out.update({f"{n}_err": float(e * u) for n, e, u in zip(names, err, units)})
    out["sharp_threshold_A"] = start["threshold_A"]
    return out


def _conditions(bias: float, field: float | None) -> dict[str, float]:
    return {"bias_A": bias} if field is None else {"bias_A": bias, "field_T": field}


# --- the protocol --------------------------------------------------------------------------------
def run(ctx: RunContext, config: SpectrumConfig) -> dict[str, Any]:
    """The plan body: the grid of lines on ``ctx.device``, the fits, the summary."""
    device = ctx.device
    if not isinstance(device, SpectrumDevice):
        raise ConfigError(
            f"{getattr(device, 'address', type(device).__name__)} gives no spectrum (a simulator with "
            "spectrum(), or a bench whose station has an [analyser]); it cannot run spectrum"
        )
    assert isinstance(device, Device)
    limits = device.limits
    bias = np.asarray(config.bias_A or np.linspace(0.3, 0.95, 26) * limits.max_bias_A, dtype=float)
    takes_field = "field_T" in device.condition_names
    if config.field_T is not None and not takes_field:
        raise ConfigError(
            f"{getattr(device, 'address', 'the device')} takes no field_T (its conditions: "
            f"{list(device.condition_names)}); leave --field-T out"
        )
    fields: list[float | None]
    if config.field_T is not None:
        fields = list(config.field_T)
    else:
        fields = [float(device.default_conditions.get("field_T", 0.0))] if takes_field else [None]
    given = {"bias_A": np.abs(bias)}
    if takes_field:
        given["field_T"] = np.abs(np.array(fields, dtype=float))
    limits.check_conditions(given)

    total = len(fields) * bias.size
    shape = (len(fields), bias.size)
    survey = np.empty((*shape, config.survey_points))
    zoom_f = np.empty((*shape, config.zoom_points))
    zoom = np.empty_like(zoom_f)
    lines: dict[str, np.ndarray] = {}
    done = 0
    for j, field in enumerate(fields):
        for i, b in enumerate(bias):
            cond = _conditions(float(b), field)
            data = ctx.measure(
                "points",
                lambda dev, c=cond: measure_line(dev, c, config),
                key=f"field/{j}/bias/{i}",
                meta=cond,
            )
            survey[j, i] = data["points/survey_psd_W_per_Hz"][0]
            zoom_f[j, i] = data["points/zoom_freqs_Hz"][0]
            zoom[j, i] = data["points/zoom_psd_W_per_Hz"][0]
            line = fit_line(zoom_f[j, i], zoom[j, i])
            for key, value in line.items():
                lines.setdefault(key, np.full(shape, np.nan))[j, i] = value
            done += 1
            ctx.progress(
                done,
                total,
                stage="spectrum",
                bias_A=float(b),
                field_T=field,
                frequency_Hz=line["frequency_Hz"],
                linewidth_Hz=line["linewidth_Hz"],
                power_W=line["power_W"],
            )
            ctx.publish(
                "spectrum.trace",
                {"bias_A": float(b), "field_T": field},
                {"freqs_Hz": zoom_f[j, i], "psd_W_per_Hz": zoom[j, i]},
            )

    freq, width, power = lines["frequency_Hz"], lines["linewidth_Hz"], lines["power_W"]
    fits = [power_threshold(bias, power[j]) for j in range(len(fields))]
    thresholds = [fit["threshold_A"] for fit in fits]
    shift = nonlinear_shift(bias, freq, fits, config.min_supercriticality)
    region = operating_region(bias, fields, freq, width, thresholds, config.min_supercriticality)
    trend = linewidth_trend(bias, width, thresholds)
    df_dI = [
        float(np.mean(np.gradient(freq[j], bias)[bias >= config.min_supercriticality * thresholds[j]]))
        if np.any(bias >= config.min_supercriticality * thresholds[j])
        else math.nan
        for j in range(len(fields))
    ]
    map_bias = config.map_bias_A if config.map_bias_A is not None else region.get("operating_bias_A")
    map_i = int(np.argmin(np.abs(bias - (map_bias if map_bias is not None else bias[-1]))))
    df_dH = (
        float(np.polyfit(np.array(fields, dtype=float), freq[:, map_i], 1)[0]) if len(fields) >= 2 else None
    )

    ctx.save("grid/bias_A", bias, unit="A")
    if takes_field:
        ctx.save("grid/field_T", np.array(fields, dtype=float), unit="T")
    ctx.save("survey/freqs_Hz", np.linspace(config.freq_start_Hz, config.freq_stop_Hz, config.survey_points))
    ctx.save("survey/psd_W_per_Hz", survey, unit="W/Hz")
    for key, value in lines.items():
        ctx.save(f"lines/{key}", value)
    ctx.save(
        "lines/threshold_fit", np.array([[fit[k] for k in POWER_FIT] for fit in fits]), names=list(POWER_FIT)
    )

    summary: dict[str, Any] = {
        "fields_T": fields,
        "bias_points": int(bias.size),
        "threshold_A": thresholds,
        "threshold_err_A": [fit["threshold_A_err"] for fit in fits],
        "Q": [fit["Q"] for fit in fits],
        "df_dI_Hz_per_A": df_dI,
        "map_bias_A": float(bias[map_i]),
        "df_dH_Hz_per_T": df_dH,
        **shift,
        **trend,
        **region,
    }
    model = model_of(device)
    if model is not None:
        summary.update(predictions(model, bias, fields, width, thresholds))
    ctx.result(**summary)
    return summary


def predictions(
    model: Any,
    bias: np.ndarray,
    fields: Sequence[float | None],
    width: np.ndarray,
    thresholds: Sequence[float],
) -> dict[str, Any]:
    """The model's closed forms beside the measured values: threshold per field, ``N``, and the
    measured/closed-form linewidth ratio below and above threshold."""
    params = model.params
    out: dict[str, Any] = {
        "predicted_threshold_A": [float(params.threshold_current_A(0.0 if f is None else f)) for f in fields],
        "predicted_N_Hz": float(params.N_Hz),
    }
    ratios: dict[str, list[float]] = {"below": [], "above": []}
    for j, f in enumerate(fields):
        predicted = model.line(_conditions(bias, f)).linewidth_Hz  # type: ignore[arg-type]
        z = bias / out["predicted_threshold_A"][j]
        for side, use in (("below", z < 0.95), ("above", z > 1.05)):
            ratios[side].extend((width[j, use] / np.asarray(predicted)[use]).tolist())
    for side, values in ratios.items():
        out[f"linewidth_ratio_{side}"] = float(np.median(values)) if values else math.nan
    return out


# --- figures (from what the run stored) -----------------------------------------------------------
def _dbm_per_hz(psd: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(psd, 1e-30) / 1e-3)


def _window(datasets: Mapping[str, Any]) -> tuple[np.ndarray, slice]:
    """The survey frequencies and the part of them the lines occupy (with a margin)."""
    freqs = np.asarray(datasets["survey/freqs_Hz"])
    f = np.asarray(datasets["lines/frequency_Hz"])
    w = np.asarray(datasets["lines/linewidth_Hz"])
    lo, hi = np.nanmin(f), np.nanmax(f)
    margin = max(0.2 * (hi - lo), 5 * float(np.nanmedian(w)), 20 * float(freqs[1] - freqs[0]))
    keep = np.flatnonzero((freqs >= lo - margin) & (freqs <= hi + margin))
    if keep.size < 2:
        return freqs, slice(None)
    return freqs, slice(int(keep[0]), int(keep[-1]) + 1)


def _fields(results: Mapping[str, Any]) -> np.ndarray:
    """The swept fields (NaN: the device's own, on a device that takes no field)."""
    return np.array([np.nan if f is None else f for f in results["fields_T"]], dtype=float)


def _field_label(field: float) -> str:
    return "device's field" if not np.isfinite(field) else f"{field:g} T"


def plot_psd_vs_current(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    bias, fields = np.asarray(datasets["grid/bias_A"]), _fields(results)
    psd = np.asarray(datasets["survey/psd_W_per_Hz"])
    freqs, window = _window(datasets)
    fig = Figure(figsize=(3.2 * len(fields) + 1, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(fields), sharey=True, squeeze=False)[0])
    mesh = None
    for j, ax in enumerate(axes):
        mesh = ax.pcolormesh(
            bias * 1e3, freqs[window] / 1e9, _dbm_per_hz(psd[j][:, window]).T, shading="nearest"
        )
        ax.axvline(results["threshold_A"][j] * 1e3, color="w", lw=0.8, ls="--")
        ax.set_title(_field_label(fields[j]))
        ax.set_xlabel("bias current (mA)")
    axes[0].set_ylabel("frequency (GHz)")
    fig.colorbar(mesh, ax=list(axes), label="PSD (dBm/Hz)")
    return fig


def plot_psd_vs_field(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    bias, fields = np.asarray(datasets["grid/bias_A"]), _fields(results)
    psd = np.asarray(datasets["survey/psd_W_per_Hz"])
    freqs, window = _window(datasets)
    i = int(np.argmin(np.abs(bias - results["map_bias_A"])))
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    if fields.size >= 2 and np.all(np.isfinite(fields)):
        mesh = ax.pcolormesh(fields, freqs[window] / 1e9, _dbm_per_hz(psd[:, i, window]).T, shading="nearest")
        fig.colorbar(mesh, ax=ax, label="PSD (dBm/Hz)")
        ax.set_xlabel("field (T)")
        ax.set_ylabel("frequency (GHz)")
    else:  # one field: the spectrum itself
        ax.plot(freqs[window] / 1e9, _dbm_per_hz(psd[0, i, window]))
        ax.set_xlabel("frequency (GHz)")
        ax.set_ylabel("PSD (dBm/Hz)")
    ax.set_title(f"at {bias[i] * 1e3:.3g} mA")
    fig.tight_layout()
    return fig


def plot_frequency_linewidth(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    bias, fields = np.asarray(datasets["grid/bias_A"]), _fields(results)
    freq, width = np.asarray(datasets["lines/frequency_Hz"]), np.asarray(datasets["lines/linewidth_Hz"])
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for j, field in enumerate(fields):
        label = _field_label(field)
        top.plot(bias * 1e3, freq[j] / 1e9, "o-", ms=3, label=label)
        bottom.semilogy(bias * 1e3, width[j] / 1e6, "o-", ms=3, label=label)
        for ax in (top, bottom):
            ax.axvline(results["threshold_A"][j] * 1e3, color=f"C{j}", lw=0.6, ls="--")
    top.set_ylabel("frequency (GHz)")
    bottom.set_ylabel("linewidth FWHM (MHz)")
    bottom.set_xlabel("bias current (mA)")
    top.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_power(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    bias, fields = np.asarray(datasets["grid/bias_A"]), _fields(results)
    power, fits = np.asarray(datasets["lines/power_W"]), np.asarray(datasets["lines/threshold_fit"])
    fine = np.linspace(bias.min(), bias.max(), 400)
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    for j, field in enumerate(fields):
        ax.plot(bias * 1e3, power[j] * 1e9, "o", ms=3, color=f"C{j}", label=_field_label(field))
        ax.plot(fine * 1e3, rounded_power_model(fine, *fits[j]) * 1e9, "-", lw=1, color=f"C{j}")
    ax.set_xlabel("bias current (mA)")
    ax.set_ylabel("integrated power (nW)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab spectrum`` prints."""
    lines = []
    predicted = summary.get("predicted_threshold_A")
    for j, field in enumerate(summary["fields_T"]):
        where = "device's field" if field is None else f"{field:g} T"
        text = (
            f"threshold at {where:<14} {summary['threshold_A'][j] * 1e3:.4f} mA "
            f"(+- {summary['threshold_err_A'][j] * 1e3:.4f})"
        )
        if predicted:
            text += f", model {predicted[j] * 1e3:.4f} mA"
        lines.append(text)
    n_text = f"nonlinear shift N     {summary['N_Hz'] / 1e6:.2f} MHz (+- {summary['N_err_Hz'] / 1e6:.2f})"
    if summary.get("predicted_N_Hz") is not None:
        n_text += f", model {summary['predicted_N_Hz'] / 1e6:.2f} MHz"
    lines.append(n_text)
    if summary.get("df_dH_Hz_per_T") is not None:
        lines.append(
            f"df/dH                 {summary['df_dH_Hz_per_T'] / 1e6:.1f} MHz/T "
            f"at {summary['map_bias_A'] * 1e3:.3g} mA"
        )
    lines.append(f"operating region      {summary['operating_reason']}")
    lines.append(f"run directory         {summary['run_dir']}")
    return "\n".join(lines)


@command(
    config=SpectrumConfig,
    report=report,
    help="Spectrum against bias and field: frequency, linewidth, power, threshold, N, operating region.",
)
def plan(config: SpectrumConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """Frequency-domain characterisation as a plan (``spinlab spectrum``)."""
    cfg = make_config(SpectrumConfig, config, overrides)
    return Plan(
        "spectrum",
        cfg,
        lambda ctx: run(ctx, cfg),
        plots={
            "psd_vs_current.png": plot_psd_vs_current,
            "psd_vs_field.png": plot_psd_vs_field,
            "frequency_linewidth.png": plot_frequency_linewidth,
            "power.png": plot_power,
        },
        nexus={"signal": "lines/frequency_Hz", "axes": [".", "grid/bias_A"]},
    )


__all__ = [
    "SpectrumConfig",
    "SpectrumDevice",
    "fit_line",
    "grid",
    "linewidth_trend",
    "lorentzian",
    "measure_line",
    "model_of",
    "nonlinear_shift",
    "operating_region",
    "plan",
    "power_threshold",
    "rounded_power_model",
    "predictions",
    "report",
    "run",
]
