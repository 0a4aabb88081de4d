"""Fit a physical model's parameters to a recorded run (Imai et al.): gradient-based or by grid.

Plan. :func:`read_run` loads the drive/response pairs that ``spinlab acquire`` recorded. A
model adapter (:class:`MacrospinFit`, :class:`VortexFit`) predicts the recordings for a batch
of parameter sets at once, together with the Jacobian of the response with respect to the
log-parameters: the simulators' numba kernels carry forward sensitivities, so a Jacobian costs
about one extra forward pass per parameter and stores no trajectory. The objective is the mean
squared error normalised by the recorded response's variance (NRMSE^2).

``grad``. The fitted parameters live in a box (``bounds``) and are fitted in transformed
coordinates ``log theta = log lo + (log hi - log lo) sigmoid(u)``, so every step stays inside.
``screen`` random candidates are scored with one forward pass; the best ``starts`` run
Levenberg-Marquardt (damped Gauss-Newton: gradient ``J^T r``, curvature ``J^T J``), all starts
in one batch, first on the beginning of every recording and then on more of it
(``horizons``): an oscillator's phase error grows with time, so the objective on a whole
record is rugged in the frequency-setting parameters (1 % off in Hd dephases a GHz ring-down
within a few ns), while on its first tenth it is smooth enough to descend from far away.

``grid``. Every point of a log-spaced grid over the same box, same objective: the baseline.

Noise. The model is the noise-free one (the vortex's mean-field power; the macrospin at
T = 0), fitted to noisy recordings. In the macrospin's sub-threshold ring-down regime that is
the mean response to first order (measured: errors of 0.1-1.5 % at 300 K). Averaging seeded
thermal paths instead was tried and dropped: above threshold the noisy precession is so
sensitive to the parameters that path derivatives are dominated by the few chaotic paths (a
1e-3 finite difference disagreed with the path derivative by 50x).

Uncertainty. The sandwich covariance ``H^-1 (sum_rec g g^T) H^-1`` in log-parameters, with
``H = J^T J`` and ``g`` the gradient of one recording's residuals: unlike ``s^2 H^-1`` it stays
honest when the noise is correlated within a recording (thermal noise is). Needs more
recordings than parameters; otherwise ``s^2 H^-1`` is reported and ``uncertainty_method`` says so.
That is the statistical part only. Fitting the noise-free model to noisy recordings also biases
the estimate (by up to 4-5 % in damping at 300 K, against a 1-2 % statistical error), so where
the run was recorded on the model's own simulator (``noise_check``) the fit is repeated on
:data:`NOISE_REALISATIONS` noisy copies the fitted model makes of the run, and the RMS shift is
added in quadrature (:func:`noise_bias`): ``relative_uncertainty`` is the total, beside
``relative_statistical`` and ``relative_noise_bias``.

The optimisation itself (box coordinates, Levenberg-Marquardt, the grid, the uncertainty) is a
library, :mod:`spinlab.analysis.fitting`; this module is the plan: the run it reads, the model
adapters, the config, and the result it records.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import h5py
import numpy as np
from matplotlib.figure import Figure
from pydantic import Field, field_validator, model_validator

from spinlab.analysis.fitting import (
    BoxObjective,
    Trace,
    descend,
    grid_search,
    levenberg_marquardt,
    uncertainty,
)
from spinlab.analysis.metrics import nrmse
from spinlab.config import Config, NonNegative, Positive, PositiveInt
from spinlab.engine import Plan, RunContext
from spinlab.engine.figures import label as axis_text
from spinlab.engine.figures import legend_outside, prefix, quantity, scaled, symbol_of, typeset
from spinlab.engine.plan import Shortcut, assign_setting, command
from spinlab.errors import ConfigError
from spinlab.registry import open_device
from spinlab.sim_backends.macrospin import MacrospinParams, response_and_jacobian
from spinlab.sim_backends.model_file import save_model
from spinlab.sim_backends.vortex import VortexParams, power_and_jacobian
from spinlab.waveform import Waveform

METHODS = ("grad", "grid")


# --- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recordings:
    """Drive/response pairs of one run on a common grid, with what the run says about them."""

    drive_V: np.ndarray  # (R, n)
    response_V: np.ndarray  # (R, n)
    dt_s: float
    conditions: dict[str, np.ndarray]  # name -> (R,)
    validation: np.ndarray  # (R,) bool: held out by the run
    device: dict[str, Any]  # the recording device's identity
    source: str  # the run directory

    @property
    def n_recordings(self) -> int:
        return int(self.drive_V.shape[0])


def read_run(run_dir: str | Path) -> Recordings:
    """The recordings of a run directory (or its ``run.h5``) written by ``spinlab acquire``.

    The one place that knows the run-file layout: datasets ``drive_V`` (with ``dt_s``),
    ``response_V``, ``conditions`` (attribute ``names``) and ``validation``; the device
    identity as a JSON attribute of the file.
    """
    path = Path(run_dir)
    path = path / "run.h5" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no run.h5; give a run directory written by `spinlab acquire`")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("drive_V", "response_V") if k not in f]
            if missing:
                raise ConfigError(
                    f"{path} has no {missing} datasets; record drive/response pairs "
                    "with `spinlab acquire` first"
                )
            drive, response = f["drive_V"][...], f["response_V"][...]
            dt_s = float(f["drive_V"].attrs.get("dt_s", math.nan))
            names = (
                [n for n in str(f["conditions"].attrs.get("names", "")).split(",") if n]
                if "conditions" in f
                else []
            )
            table = f["conditions"][...] if names else np.zeros((drive.shape[0], 0))
            validation = (
                f["validation"][...].astype(bool) if "validation" in f else np.zeros(drive.shape[0], bool)
            )
            device = json.loads(f.attrs.get("device", "{}"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} as a run file ({exc})") from None
    if drive.ndim != 2 or drive.shape != response.shape or drive.shape[0] == 0:
        raise ConfigError(
            f"{path}: drive_V {drive.shape} and response_V {response.shape} must be "
            "equal, non-empty (recordings, samples) arrays"
        )
    if not (math.isfinite(dt_s) and dt_s > 0):
        raise ConfigError(f"{path}: drive_V has no valid dt_s attribute")
    conditions = {n: np.asarray(table[:, i], dtype=np.float64) for i, n in enumerate(names)}
    return Recordings(
        np.asarray(drive, np.float64),
        np.asarray(response, np.float64),
        dt_s,
        conditions,
        validation,
        device,
        str(path.parent),
    )


# --- model adapters ---------------------------------------------------------------------------
class PhysicsFit(ABC):
    """What the fitter needs from a model: fittable names, bounds, a base parameter set and a
    batched prediction with Jacobian. Subclasses fill in one simulator."""

    name = ""
    #: default search box (lo, hi) of each fittable parameter, SI units
    bounds: dict[str, tuple[float, float]] = {}
    #: the simulator's device type, whose identity (when the run was recorded on it) supplies
    #: the setup: drive gain, step size, defaults, the non-fitted parameters
    device_type = ""

    def __init__(self, recordings: Recordings, fixed: Mapping[str, float]) -> None:
        identity = recordings.device
        self.same_model = identity.get("type") == self.device_type
        self.setup = identity if self.same_model else {}
        self.base = dict(self.default_values())
        self.base.update({k: float(v) for k, v in self.setup.get("params", {}).items() if k in self.base})
        unknown = sorted(set(fixed) - set(self.base))
        if unknown:
            raise ConfigError(f"--set: {self.name} has no parameter(s) {unknown}; valid: {sorted(self.base)}")
        self.base.update({k: float(v) for k, v in fixed.items()})
        self.limits = dict(identity.get("limits", {}))
        self.default_conditions = dict(self.setup.get("default_conditions", {}))
        self.recordings = recordings

    @abstractmethod
    def default_values(self) -> dict[str, float]:
        """Every parameter of the simulator with its default value."""

    def check_names(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.bounds]
        if unknown:
            raise ConfigError(f"{self.name} cannot fit {unknown}; fittable parameters: {sorted(self.bounds)}")

    def condition(self, name: str, default: float) -> np.ndarray:
        """Per-recording values of a condition: recorded, else the device's default."""
        rec = self.recordings
        value = self.default_conditions.get(name, default)
        return rec.conditions.get(name, np.full(rec.n_recordings, float(value)))

    @abstractmethod
    def predict(
        self, values: Mapping[str, np.ndarray], rows: np.ndarray, wrt: Sequence[str], length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Responses (S, R, length) and d response / d log(param) (S, R, length, len(wrt)) of
        the first ``length`` samples of ``rows``, for S parameter sets (``values``: name -> (S,))."""

    def device_options(self, values: Mapping[str, float]) -> dict[str, Any]:
        """Options that open the fitted model as a device (``sim:PATH``)."""
        return {**values, **{k: float(v) for k, v in self.default_conditions.items()}, **self.limits}

    def derived(self, values: Mapping[str, float]) -> dict[str, Any]:
        return {}

    def measurement(self) -> dict[str, Any]:
        """How the fit read the recordings beyond what the model file's device reproduces."""
        return {}


def _per_set(values: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """name -> (S,) values repeated for each of ``rows`` recordings: (S * rows,)."""
    return {name: np.repeat(np.asarray(v, np.float64), rows) for name, v in values.items()}


class MacrospinFit(PhysicsFit):
    """``sim:macrospin``: the LLGS macrospin at T = 0."""

    name = "macrospin"
    device_type = "MacrospinDevice"
    bounds = {
        "alpha": (2e-3, 0.2),
        "Hk_A_per_m": (2e3, 2e5),
        "Hd_A_per_m": (5e4, 2e6),
        "eta": (0.05, 1.0),
        "Ms_A_per_m": (2e5, 2e6),
        "volume_m3": (1e-24, 1e-21),
        "R_P_ohm": (5.0, 5e3),
        "tmr": (0.05, 3.0),
    }
    #: only eta / (Ms V) reaches the dynamics (the torque per ampere)
    DEGENERATE = ("eta", "Ms_A_per_m", "volume_m3")

    def __init__(
        self,
        recordings: Recordings,
        fixed: Mapping[str, float],
        *,
        temperature_K: float | None = None,
        **_: Any,
    ) -> None:
        super().__init__(recordings, fixed)
        self.drive_gain_A_per_V = float(self.setup.get("drive_gain_A_per_V", 5e-3))
        self.max_step_s = float(self.setup.get("max_step_s", 2e-12))
        self.initial_tilt_rad = float(self.setup.get("initial_tilt_rad", 0.05))
        # the temperature the fitted model runs at as a device (the fit itself is noise-free)
        self.temperature_K = float(
            self.setup.get("temperature_K", 0.0) if temperature_K is None else temperature_K
        )
        self.current = self.condition("bias_A", 3e-3)[:, None] + self.drive_gain_A_per_V * recordings.drive_V
        self.field_T = self.condition("field_T", 0.05)

    def default_values(self) -> dict[str, float]:
        return dict(MacrospinParams.DEFAULTS)

    def check_names(self, names: Sequence[str]) -> None:
        super().check_names(names)
        both = [n for n in names if n in self.DEGENERATE]
        if len(both) > 1:
            raise ConfigError(
                f"{both} cannot be fitted together: the drive/response pairs only fix "
                "eta / (Ms_A_per_m volume_m3); fit one of them and --set the others"
            )

    def predict(self, values, rows, wrt, length):
        sets, r = len(next(iter(values.values()))), len(rows)
        volts, jac = response_and_jacobian(
            _per_set(values, r),
            np.tile(self.current[rows, :length], (sets, 1)),
            np.tile(self.field_T[rows], sets),
            self.recordings.dt_s,
            wrt,
            max_step_s=self.max_step_s,
            initial_tilt_rad=self.initial_tilt_rad,
        )
        return volts.reshape(sets, r, length), jac.reshape(sets, r, length, len(wrt))

    def device_options(self, values):
        return {
            **super().device_options(values),
            "drive_gain_A_per_V": self.drive_gain_A_per_V,
            "max_step_s": self.max_step_s,
            "initial_tilt_rad": self.initial_tilt_rad,
            "temperature_K": self.temperature_K,
        }

    def derived(self, values):
        params = MacrospinParams(**values)
        return {
            "per_field": [
                {
                    "field_T": float(field_T),
                    "critical_current_A": float(params.critical_current_A(float(field_T)).detach()),
                    "fmr_frequency_Hz": float(params.fmr_frequency_Hz(float(field_T)).detach()),
                }
                for field_T in np.unique(self.field_T)
            ]
        }


class VortexFit(PhysicsFit):
    """``sim:vortex``: the auto-oscillator's mean-field power (its noise=0 path)."""

    name = "vortex"
    device_type = "VortexDevice"
    bounds = {
        "threshold_A": (5e-4, 5e-2),
        "Q": (0.05, 20.0),
        "gamma_G_per_s": (1e5, 1e9),
        "drive_gain_A_per_V": (1e-4, 5e-2),
        "detector_V_per_p": (1e-3, 10.0),
        "thermal_power": (1e-6, 5e-2),
    }

    def __init__(
        self,
        recordings: Recordings,
        fixed: Mapping[str, float],
        *,
        rest_drive_V: float | str | None = "auto",
        points_per_sample: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__(recordings, fixed)
        # sim:vortex starts settled at its rest level (None: the first sample) and reports
        # points_per_sample instants per hold; a bench idles at 0 V between records and averages
        # its scope points over each hold
        auto_rest = self.setup.get("rest_drive_V") if self.same_model else 0.0
        self.rest_drive_V = auto_rest if rest_drive_V == "auto" else rest_drive_V
        self.points_per_sample = (
            (
                int(self.setup.get("points_per_sample", 1))
                if self.same_model
                else scope_points_per_sample(recordings.device, recordings.dt_s)
            )
            if points_per_sample is None
            else int(points_per_sample)
        )
        self.noise = float(self.setup.get("noise", 1.0))
        self.bias_A = self.condition("bias_A", 7.5e-3)
        self.field_T = self.condition("field_T", 0.0)

    def default_values(self) -> dict[str, float]:
        return asdict(VortexParams())

    def predict(self, values, rows, wrt, length):
        sets, r = len(next(iter(values.values()))), len(rows)
        volts, jac = power_and_jacobian(
            _per_set(values, r),
            np.tile(self.recordings.drive_V[rows, :length], (sets, 1)),
            np.tile(self.bias_A[rows], sets),
            np.tile(self.field_T[rows], sets),
            self.recordings.dt_s,
            wrt,
            rest_drive_V=self.rest_drive_V,
            points_per_sample=self.points_per_sample,
        )
        return volts.reshape(sets, r, length), jac.reshape(sets, r, length, len(wrt))

    def device_options(self, values):
        rest = {} if self.rest_drive_V is None else {"rest_drive_V": self.rest_drive_V}
        return {
            **super().device_options(values),
            "noise": self.noise,
            "points_per_sample": self.points_per_sample,
            **rest,
        }

    def measurement(self):
        return {"rest_drive_V": self.rest_drive_V, "points_per_sample": self.points_per_sample}

    def derived(self, values):
        params = VortexParams(**values)
        return {
            "per_bias": [
                {
                    "bias_A": float(bias),
                    "supercriticality": float(params.supercriticality(bias)),
                    "relaxation_time_s": float(params.relaxation_time_s(bias)),
                }
                for bias in np.unique(self.bias_A)
            ]
        }


MODELS: dict[str, type[PhysicsFit]] = {"macrospin": MacrospinFit, "vortex": VortexFit}


def scope_points_per_sample(identity: Mapping[str, Any], dt_s: float) -> int:
    """Scope points a bench averages into each drive sample (1 for anything but a Bench): the
    slowest offered rate with at least ``oversample`` points, as the Bench chooses it."""
    scope = identity.get("station", {}).get("scope") if identity.get("type") == "Bench" else None
    if not scope:
        return 1
    from spinlab.instruments.keysight_scope import SAMPLE_RATES_Hz

    want = float(scope.get("oversample", 1)) / dt_s
    offered = sorted(r for r in SAMPLE_RATES_Hz if r <= float(scope.get("max_sample_rate_Hz", math.inf)))
    rate = next((r for r in offered if r >= want * (1 - 1e-9)), offered[-1] if offered else 1 / dt_s)
    return max(1, int(round(rate * dt_s)))


# --- configuration ----------------------------------------------------------------------------
class FitConfig(Config):
    """What to fit and how (stored in the fit's run file)."""

    model: str = Field(description="Physical model: macrospin or vortex")
    params: tuple[str, ...] = Field(description="Parameter names to fit, comma separated")
    method: str = Field("grad", description="grad (gradient-based, multi-start) or grid (baseline)")
    screen: PositiveInt = Field(64, description="grad: random candidates scored before the descent")
    starts: PositiveInt = Field(8, description="grad: descents started from the best screened candidates")
    horizons: tuple[Annotated[float, Field(gt=0, le=1)], ...] = Field(
        (0.1, 0.3, 1.0), description="grad: fractions of every recording fitted in turn (the last must be 1)"
    )
    max_iterations: PositiveInt = Field(40, description="grad: iterations per horizon")
    tolerance: Positive = Field(
        1e-9, description="grad: relative loss change below which a start has converged"
    )
    grid_points: PositiveInt = Field(6, description="grid: points per parameter")
    bounds: dict[str, tuple[Positive, Positive]] = Field(
        {}, description="Search box overrides: name -> (lo, hi)"
    )
    fixed: dict[str, float] = Field({}, description="Values of parameters that are not fitted: name -> value")
    temperature_K: NonNegative | None = Field(
        None,
        description="macrospin: temperature of the fitted model "
        "as a device (none: the recording "
        "simulator's)",
    )
    rest_drive_V: float | Literal["auto"] | None = Field(
        "auto",
        description="vortex: drive level the device idles at before a record (a number, first "
        "or auto: from the run's device)",
    )
    points_per_sample: PositiveInt | None = Field(
        None, description="vortex: instants averaged into each response sample (none: from the run's device)"
    )
    source_run: str = Field(
        "", description="Run directory (written by `spinlab acquire`) whose recordings are fitted"
    )
    out: str | None = Field(
        None, description="Model file to write (none: model.json in the fit's run directory)"
    )
    seed: int = Field(0, description="Seeds the random candidates (the run's --seed when run as a plan)")
    noise_check: bool = Field(
        True,
        description="Refit on the fitted model's own noisy recordings and add the shift to the "
        "uncertainty (runs recorded on the model's simulator)",
    )

    @field_validator("params", mode="after")
    @classmethod
    def _names(cls, params: tuple[str, ...]) -> tuple[str, ...]:
        params = tuple(dict.fromkeys(p.strip() for p in params if p.strip()))
        if not params:
            raise ValueError("--params needs at least one parameter name")
        return params

    @model_validator(mode="after")
    def _consistent(self) -> FitConfig:
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {list(METHODS)}, got {self.method!r}")
        if self.starts > self.screen:
            raise ValueError(f"starts ({self.starts}) cannot exceed the screened candidates ({self.screen})")
        if not self.horizons or self.horizons[-1] != 1.0 or list(self.horizons) != sorted(self.horizons):
            raise ValueError(f"horizons must increase within (0, 1] and end at 1, got {list(self.horizons)}")
        for name, (lo, hi) in self.bounds.items():
            if not lo < hi:
                raise ValueError(f"bounds of {name} must satisfy 0 < lo < hi, got {lo}:{hi}")
        return self


def build_model(recordings: Recordings, config: FitConfig) -> PhysicsFit:
    model = MODELS[config.model](
        recordings,
        config.fixed,
        temperature_K=config.temperature_K,
        rest_drive_V=config.rest_drive_V,
        points_per_sample=config.points_per_sample,
    )
    model.check_names(config.params)
    return model


# --- the objective ----------------------------------------------------------------------------
def objective(model: PhysicsFit, config: FitConfig, rows: np.ndarray, horizon: float = 1.0) -> BoxObjective:
    """NRMSE^2 of the predicted first ``horizon`` of every recording in ``rows``, over the box of
    ``config.params`` (the model's bounds unless ``config.bounds`` overrides them)."""
    rec = model.recordings
    length = max(2, int(round(horizon * rec.drive_V.shape[1])))
    scale = float(np.std(rec.response_V[rows]))
    if not scale > 0:
        raise ConfigError("the recorded responses are constant; nothing to fit")
    box = {**{n: model.bounds[n] for n in config.params}, **dict(config.bounds)}
    return BoxObjective(
        lambda values, wrt: model.predict(values, rows, wrt, length),
        config.params,
        box,
        model.base,
        rec.response_V[rows, :length],
        scale,
    )


# --- the protocol -----------------------------------------------------------------------------
def split_rows(recordings: Recordings) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and validation recordings: the run's own held-out ones, else every 5th."""
    rows = np.arange(recordings.n_recordings)
    if recordings.validation.any() and not recordings.validation.all():
        return rows[~recordings.validation], rows[recordings.validation], "the run's held-out recordings"
    if recordings.n_recordings >= 5:
        held = rows % 5 == 4
        return rows[~held], rows[held], "every 5th recording"
    return rows, rows[:0], "none (fewer than 5 recordings)"


#: Noisy copies of the run the noise bias is measured on (each one simulation and one refit).
NOISE_REALISATIONS = 3


def noise_bias(
    model: PhysicsFit, config: FitConfig, rows: np.ndarray, u_best: np.ndarray
) -> np.ndarray | None:
    """RMS shift of each log-parameter when the fit is repeated on :data:`NOISE_REALISATIONS`
    noisy copies of the run made by the fitted model (same drives and conditions, its simulator
    with the run's noise, other seeds): what fitting a noise-free model to noisy data does to
    the estimate (its bias and its scatter), which the statistical interval does not see. Only
    where the run was recorded on the model's own simulator (``None`` otherwise: that noise is
    not the model's)."""
    rec = model.recordings
    if not model.same_model:
        return None
    whole = objective(model, config, rows)
    values = {k: float(v[0]) for k, v in whole.values(u_best[None]).items()}
    names = list(rec.conditions)
    table = np.stack([rec.conditions[n] for n in names], axis=1) if names else np.zeros((rec.n_recordings, 0))
    shifts = []
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(Path(tmp) / "model.json", model.name, model.device_options(values), {})
        for k in range(NOISE_REALISATIONS):
            synthetic = np.array(rec.response_V)
            with open_device(f"sim:{path}", seed=config.seed + 1 + k) as device:
                for combo in np.unique(table, axis=0):
                    same = np.flatnonzero(np.all(table == combo, axis=1))
                    drive = Waveform(rec.drive_V[same], rec.dt_s)
                    synthetic[same] = device.respond(drive, dict(zip(names, map(float, combo)))).samples
            refit = objective(build_model(replace(rec, response_V=synthetic), config), config, rows)
            u, _, _ = levenberg_marquardt(refit, u_best[None], config.max_iterations, config.tolerance)
            shifts.append(np.log([refit.values(u)[n][0] / values[n] for n in whole.names]))
    return np.sqrt(np.mean(np.square(shifts), axis=0))


def fit_physics(
    recordings: Recordings, config: FitConfig, progress: Callable[[str, int, float], None] | None = None
) -> dict[str, Any]:
    """Fit ``config.params`` to ``recordings``; returns the result (values, uncertainties, ...)."""
    model = build_model(recordings, config)
    train, held_out, split = split_rows(recordings)
    trace = Trace()
    if config.method == "grad":
        found = descend(lambda horizon: objective(model, config, train, horizon), config, trace, progress)
    else:
        found = grid_search(objective(model, config, train), config, trace, progress)
    wall_s = time.perf_counter() - trace.start
    whole = objective(model, config, train)
    best = int(np.argmin(found["loss"]))
    u_best = found["u"][best]
    values = {k: float(v[0]) for k, v in whole.values(u_best[None]).items()}
    stat_std, method = uncertainty(whole, u_best)
    shift = noise_bias(model, config, train, u_best) if config.noise_check else None
    log_std = stat_std if shift is None else np.hypot(stat_std, shift)
    loss = float(found["loss"][best])
    params = {
        name: {
            "value": values[name],
            "uncertainty": float(values[name] * log_std[j]),
            "relative_uncertainty": float(log_std[j]),
            "relative_statistical": float(stat_std[j]),
            "relative_noise_bias": None if shift is None else float(shift[j]),
            "loss": loss,
            "bounds": [float(math.exp(whole.lo[j])), float(math.exp(whole.hi[j]))],
        }
        for j, name in enumerate(whole.names)
    }
    starts = [
        {"loss": float(l), **{n: float(v[0]) for n, v in whole.values(u[None]).items() if n in whole.names}}
        for u, l in sorted(zip(found["u"], found["loss"]), key=lambda t: t[1])
    ]
    result = {
        "model": config.model,
        "method": config.method,
        "params": params,
        "loss": loss,
        "nrmse": math.sqrt(loss),
        "values": values,
        "starts": starts,
        "stages": found["stages"],
        "screened_best_loss": found.get("screened_best_loss"),
        "uncertainty_method": method
        + (
            f"; noise bias: RMS shift of refits on {NOISE_REALISATIONS} noisy copies made by the "
            "fitted model, in quadrature"
            if shift is not None
            else ""
        ),
        "wall_s": wall_s,
        "trace": trace.points,
        "n_train": len(train),
        "n_validation": len(held_out),
        "validation_split": split,
        "derived": model.derived(values),
        "measurement": model.measurement(),
        "device_options": model.device_options(values),
    }
    arrays = {k: np.array([v]) for k, v in values.items()}
    n = recordings.drive_V.shape[1]
    for label, rows in (("train", train), ("validation", held_out)):
        if rows.size:
            predicted = model.predict(arrays, rows, [], n)[0][0]
            result[f"{label}_nrmse"] = nrmse(predicted, recordings.response_V[rows])
            if label == "validation":
                result["validation_prediction"] = predicted
    return result


def run(ctx: RunContext, config: FitConfig) -> dict[str, Any]:
    """The plan body: fit, record, and write the model file (default ``<run>/model.json``)."""
    recordings = read_run(config.source_run)
    result = fit_physics(
        recordings,
        config.replace(seed=ctx.seed),
        lambda stage, step, loss: ctx.progress(step, 0, stage=stage, best_loss=loss),
    )
    path = Path(config.out) if config.out else ctx.path / "model.json"
    provenance = {
        "source_run": recordings.source,
        "source_device": recordings.device.get("address"),
        "fit_run": str(ctx.path),
        "method": config.method,
        "loss": result["loss"],
        "params": result["params"],
        "measurement": result["measurement"],
    }
    save_model(path, config.model, result.pop("device_options"), provenance)
    prediction = result.pop("validation_prediction", None)
    if prediction is not None:
        _, held_out, _ = split_rows(recordings)
        ctx.save("validation/response_V", recordings.response_V[held_out], dt_s=recordings.dt_s)
        ctx.save("validation/prediction_V", prediction, dt_s=recordings.dt_s)
    ctx.save("fit/trace", np.array(result.pop("trace")).reshape(-1, 2), columns=["wall_s", "best_loss"])
    summary = {**result, "model_file": str(path), "address": f"sim:{path}", "source_run": recordings.source}
    ctx.result(**summary)
    return summary


#: at most this many held-out recordings are drawn
PLOTTED_RECORDINGS = 3


def plot_fit(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The fitted model against held-out recordings, each with its residual below."""
    data = np.atleast_2d(np.asarray(datasets["validation/response_V"]))[:PLOTTED_RECORDINGS]
    model = np.atleast_2d(np.asarray(datasets["validation/prediction_V"]))[:PLOTTED_RECORDINGS]
    dt_s = float(getattr(datasets, "attrs", lambda _: {})("validation/response_V").get("dt_s", 1.0))
    t, t_unit = scaled(np.arange(data.shape[1]) * dt_s, "s")
    factor, unit = prefix(data, "V")
    fig = Figure(figsize=(3.4 * len(data) + 1.2, 4.6))
    axes = fig.subplots(2, len(data), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for k in range(len(data)):
        top, bottom = axes[0, k], axes[1, k]
        top.plot(t, data[k] * factor, color="k", lw=0.8, label="recorded")
        top.plot(t, model[k] * factor, color="tab:red", lw=0.9, ls="--", label=f"{results['model']} model")
        bottom.plot(t, (data[k] - model[k]) * factor, color="0.3", lw=0.7)
        bottom.axhline(0.0, color="tab:red", lw=0.6)
        top.set_title(f"held-out recording {k + 1}", fontsize=9)
        bottom.set_xlabel(axis_text("t", t_unit))
        bottom.set_xlim(t[0], t[-1])
    axes[0, 0].set_ylabel(axis_text("V_out", unit))
    axes[1, 0].set_ylabel(axis_text("residual", unit))
    legend_outside(axes[0, -1])
    fitted = ", ".join(
        f"{typeset(symbol_of(name)[0])} = {quantity(entry['value'], symbol_of(name)[1])}"
        for name, entry in results["params"].items()
    )
    score = results.get("validation_nrmse", results["nrmse"])
    fig.suptitle(f"Fit of the {results['model']} model: {fitted}; held-out NRMSE {score:.4f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_trace(datasets: Mapping[str, Any], results: Mapping[str, Any]) -> Figure:
    """The best loss found against wall time: how the search converged."""
    trace = np.asarray(datasets["fit/trace"], dtype=float).reshape(-1, 2)
    t, t_unit = scaled(trace[:, 0], "s")
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    ax.semilogy(t, trace[:, 1], ".-", ms=3, lw=0.8)
    ax.set_xlabel(axis_text("wall time", t_unit))
    ax.set_ylabel("best loss (NRMSE²)")
    ax.set_title(f"{results['method']} search: loss {results['loss']:.3g}", fontsize=9)
    fig.tight_layout()
    return fig


def _box(settings: dict[str, Any], items: list[str]) -> None:
    for item in items:
        name, sep, box = item.partition("=")
        lo, colon, hi = box.partition(":")
        try:
            if not sep or not colon or not name.strip():
                raise ValueError(item)
            assign_setting(settings, f"bounds.{name.strip()}", (float(lo), float(hi)))
        except ValueError:
            raise ConfigError(f"--bounds must look like NAME=LO:HI, got {item!r}") from None


def command_line_defaults(
    settings: dict[str, Any], *, device: str | None, runs_dir: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """A name that is no setting of the fit is a fixed model parameter (``--set Q=2`` is
    ``--set fixed.Q=2``); ``first`` is the rest drive None; a wrong run directory is refused
    before a run directory is made."""
    for name in [k for k in settings if k not in FitConfig.model_fields]:
        assign_setting(settings, f"fixed.{name}", settings.pop(name))
    if isinstance(settings.get("model"), str):
        settings["model"] = settings["model"].strip().lower()
    if str(settings.get("rest_drive_V")).lower() == "first":
        settings["rest_drive_V"] = None
    if settings.get("source_run"):
        read_run(settings["source_run"])
    return settings


def report(summary: Mapping[str, Any]) -> str:
    """What ``spinlab run fit-physics`` prints."""
    lines = [
        f"{name:<22} {entry['value']:.6g} +- {entry['uncertainty']:.2g}"
        for name, entry in summary["params"].items()
    ]
    lines.append(
        f"loss {summary['loss']:.4g} (NRMSE {summary['nrmse']:.4f})"
        + (f", held-out NRMSE {summary['validation_nrmse']:.4f}" if "validation_nrmse" in summary else "")
        + f", {summary['wall_s']:.1f} s"
    )
    lines.append(f"model: {summary['address']}")
    return "\n".join(lines)


@command(
    config=FitConfig,
    report=report,
    prepare=command_line_defaults,
    argument="source_run",
    device="none",
    aliases={"-o": "out"},
    shortcuts=(Shortcut(("--bounds",), "Search box NAME=LO:HI (repeatable).", _box, list),),
    help="Fit a physical model's parameters to a recorded run (gradient-based or grid search).",
)
def plan(config: FitConfig | Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
    """The fit as a plan (``spinlab fit-physics``'s defaults unless overridden); it reads the
    run in ``source_run`` and needs no device."""
    if isinstance(config, Mapping) or config is None:
        cfg = FitConfig(**{**dict(config or {}), **overrides})
    else:
        cfg = config.replace(**overrides)
    if not cfg.source_run:
        raise ConfigError("fit-physics needs the run directory of the recordings to fit (source_run)")
    return Plan(
        "fit-physics",
        cfg,
        lambda ctx: run(ctx, cfg),
        needs_device=False,
        plots={"fit.png": plot_fit, "fit_trace.png": plot_trace},
        nexus={"signal": "validation/prediction_V"},
    )


__all__ = [
    "METHODS",
    "MODELS",
    "FitConfig",
    "Recordings",
    "read_run",
    "fit_physics",
    "run",
    "plan",
    "MacrospinFit",
    "VortexFit",
    "objective",
    "split_rows",
]
