"""Vortex spin-torque nano-oscillator: the universal nonlinear auto-oscillator model.

Model (Slavin & Tiberkevich, IEEE Trans. Magn. 45, 1875 (2009)) for the complex amplitude ``c``
of the gyrotropic vortex mode, normalised so that ``p = |c|^2`` is the oscillation power::

    dc/dt = -i omega(p) c - Gamma_G (1 + Q p) c + Gamma_G z (1 - p) c + f(t)
    omega(p) = omega0 + N p,   z = I / I_th,   I = bias_A + drive_gain_A_per_V * drive_V
    <f(t) f*(t')> = 2 D delta(t - t'),   D = Gamma_G * thermal_power

so the power obeys ``dp/dt = -2 Gamma_G [(1 + Q p) - z (1 - p)] p + 2 D + noise`` (Ito).
Closed forms (checked by the tests): steady power ``p0 = (z-1)/(z+Q)`` above threshold, thermal
power ``thermal_power/(1-z)`` below it, small-signal relaxation time ``1/(2 Gamma_G |z-1|)``
(200 ns at the typical 7.5 mA). The field shifts the threshold linearly,
``I_th(B) = threshold_A * (1 + threshold_slope_per_T * B)`` (a perpendicular field changes the
vortex core polarisation energy and hence the damping the torque must overcome; the slope is a
fit parameter, 0.5/T by default, i.e. +5 % at 100 mT). The field also shifts the gyrotropic
frequency: a perpendicular field cants the disc's magnetisation out of plane, which stiffens the
vortex core's gyration, and for a thin disc the frequency rises linearly up to saturation,
``f0(B) = f0_Hz * (1 + B / saturation_field_T)`` (core polarity parallel to the field; de Loubens
et al., Phys. Rev. Lett. 102, 177602 (2009), after Guslienko, PRB 2008 / Ivanov & Zaspel).
``saturation_field_T`` is ``mu0 H_s`` (~ ``mu0 Ms`` of the disc, 1 T by default: 390 MHz at
0.3 T, 450 MHz at 0.5 T for f0_Hz = 300 MHz). The nonlinear shift ``N`` is kept field-free.

Numerics. The drive is zero-order held over each sample (as an AWG holds it), so over one sample
the mean-field power equation ``dp/dt = a p - b p^2 + c`` has constant coefficients: a Riccati
equation we integrate *exactly* (no step-size error, any ``dt``), together with the exact phase
integral ``int omega dt``. The random part of the thermal force is added to the complex amplitude
with Strang splitting (half exact step, Gaussian kick, half exact step) on a few substeps per
sample; kicking ``c`` rather than ``p`` keeps ``p >= 0`` and gives the Ito drift ``2 D`` for free.
The ``noise`` option s in [0, 1] scales the random force (intensity s^2 D); the remaining
(1 - s^2) 2D enters as its mean, so the mean drift is the same for every s and ``noise=0`` is
deterministic yet keeps the physical sub-threshold power and still starts oscillating when the
current crosses threshold.

Why numba. This model runs inside the emulated bench (one 1e6-sample drive per acquisition) and
the spoken-digit protocol (~57 M samples in 2,500 drives of different lengths). Torch at batch 1
is overhead-bound (~16 k steps/s: a 1e6-sample drive would take a minute); the numba kernel over
float64 arrays does a 1e6-sample, 100 ns-grid drive in ~0.1 s with noise (0.02 s without) and
2,500 x 23,000 samples in ~7 s on 2 busy cores, rows split over GIL-free threads
(``benchmarks/bench_sim_vortex.py``). Every drive draws its own seed from the device's numpy
Generator, so row ``i`` of a batch does not depend on how the batch is split over threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, fields
from typing import Any

import numba
import numpy as np

from spinlab import Device, SafetyLimits
from spinlab.errors import ConfigError, SafetyLimitError
from spinlab.sim_backends._numba_common import rng_init, rng_normal_pair, rng_uniform, run_rows
from spinlab.sim_backends._options import (
    choice,
    coerce_options,
    device_options_spec,
    instance_of,
    take_limits_and_conditions,
)
from spinlab.sim_backends.spectrum import Line, auto_oscillator_line, lorentzian_psd

#: Default operating point of the vortex STO (7.5 mA, z = 1.5, p0 = 1/7, tau = 200 ns).
DEFAULT_BIAS_A = 7.5e-3
#: Safety limits of the simulated device (as on the real sample holder).
VORTEX_LIMITS = SafetyLimits(max_drive_V=0.5, max_bias_A=10e-3, max_field_T=1.0)


@dataclass(frozen=True)
class VortexParams:
    """Physical parameters of the auto-oscillator (SI units, normalised power ``p``)."""

    #: Threshold current at zero field (A).
    threshold_A: float = 5e-3
    #: Nonlinear damping coefficient (dimensionless).
    Q: float = 2.0
    #: Linear (Gilbert) damping rate Gamma_G (1/s).
    gamma_G_per_s: float = 5e6
    #: AWG volts -> device current (A/V); +-0.4 V gives +-2 mA.
    drive_gain_A_per_V: float = 5e-3
    #: Rectifying detector sensitivity: output volts per unit power.
    detector_V_per_p: float = 0.1
    #: Power at zero current from thermal fluctuations, kT / E0 (sets the Langevin intensity).
    thermal_power: float = 1e-4
    #: Relative threshold shift per tesla: I_th(B) = threshold_A * (1 + slope * B).
    threshold_slope_per_T: float = 0.5
    #: Linear gyrotropic frequency (Hz).
    f0_Hz: float = 300e6
    #: Nonlinear frequency shift N / 2 pi (Hz per unit power).
    N_Hz: float = 100e6
    #: RF output amplitude at p = 1 (V), used by ``output="rf"``.
    rf_V_per_sqrt_p: float = 0.01
    #: Perpendicular saturation field mu0 H_s (T): f0(B) = f0_Hz * (1 + B / saturation_field_T).
    saturation_field_T: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"VortexParams.{f.name} must be a finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        positive = (
            "threshold_A",
            "gamma_G_per_s",
            "drive_gain_A_per_V",
            "detector_V_per_p",
            "thermal_power",
            "rf_V_per_sqrt_p",
            "saturation_field_T",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"VortexParams.{name} must be > 0, got {getattr(self, name)!r}")
        if self.Q < 0:
            raise ConfigError(f"VortexParams.Q (nonlinear damping) must be >= 0, got {self.Q!r}")
        if self.thermal_power >= 0.1:
            raise ConfigError(
                f"VortexParams.thermal_power must be small (< 0.1; kT/E0 of a vortex is ~1e-4), "
                f"got {self.thermal_power!r}"
            )
        if abs(self.threshold_slope_per_T) >= 1:
            raise ConfigError(
                "VortexParams.threshold_slope_per_T must satisfy |slope| < 1 /T so the threshold "
                f"stays positive up to 1 T, got {self.threshold_slope_per_T!r}"
            )
        if self.f0_Hz < 0 or self.f0_Hz + min(self.N_Hz, 0.0) < 0:
            raise ConfigError("VortexParams.f0_Hz must be >= 0 and f0_Hz + N_Hz >= 0")

    # --- closed forms (vectorised over numpy arrays) ------------------------------------------
    def threshold_current_A(self, field_T: Any = 0.0) -> Any:
        """Threshold current at ``field_T``: ``threshold_A * (1 + threshold_slope_per_T * B)``."""
        return self.threshold_A * (1.0 + self.threshold_slope_per_T * np.asarray(field_T, dtype=float))

    def linear_frequency_Hz(self, field_T: Any = 0.0) -> Any:
        """Gyrotropic frequency at ``field_T``: ``f0_Hz * (1 + B / saturation_field_T)``."""
        return self.f0_Hz * (1.0 + np.asarray(field_T, dtype=float) / self.saturation_field_T)

    def supercriticality(self, current_A: Any, field_T: Any = 0.0) -> Any:
        """``z = I / I_th(B)``; the oscillator auto-oscillates for ``z > 1``."""
        return np.asarray(current_A, dtype=float) / self.threshold_current_A(field_T)

    def _coefficients(self, current_A: Any, field_T: Any) -> tuple[Any, Any, float]:
        z = self.supercriticality(current_A, field_T)
        g = self.gamma_G_per_s
        a = 2 * g * (z - 1)
        b = np.maximum(2 * g * (self.Q + z), 2 * g * _BETA_FLOOR)
        return a, b, 2 * g * self.thermal_power

    def steady_power(self, bias_A: Any, field_T: Any = 0.0) -> Any:
        """Mean-field steady power at constant current (the stable root of
        ``a p - b p^2 + 2D = 0``). Equals ``(z-1)/(z+Q)`` above threshold and
        ``thermal_power/(1-z)`` below it, up to O(thermal_power) corrections."""
        a, b, c = self._coefficients(bias_A, field_T)
        return _stable_root(a, b, c)

    def relaxation_time_s(self, bias_A: Any, field_T: Any = 0.0) -> Any:
        """Small-signal power relaxation time ``1/sqrt(a^2 + 4 b 2D)``, which is
        ``1/(2 Gamma_G |z-1|)`` away from threshold and stays finite at it."""
        a, b, c = self._coefficients(bias_A, field_T)
        return 1.0 / np.sqrt(a * a + 4 * b * c)


#: Lower bound of Q + z in the quadratic coefficient. The model's spin torque z (1 - p) is
#: written for positive currents; for strong reverse currents (z < -Q) the p^2 term is irrelevant
#: at the thermal powers there, and the floor keeps the exact solution well defined.
_BETA_FLOOR = 1e-3


def _stable_root(a: Any, b: Any, c: float) -> Any:
    disc = np.sqrt(a * a + 4 * b * c)
    big = np.where(a >= 0, (a + disc) / (2 * b), 0.0)
    neg = np.where(a < 0, (a - disc) / (2 * b), -1.0)
    return np.where(a >= 0, big, -c / (b * neg))


# ------------------------------------------------------------------------------------------
# numba kernel
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _roots(a: float, b: float, c: float) -> tuple[float, float, float]:
    """Stable root r1 >= 0, other root r2 <= 0 and rate k = b (r1 - r2) of a p - b p^2 + c."""
    disc = math.sqrt(a * a + 4.0 * b * c)
    if a >= 0.0:
        r1 = (a + disc) / (2.0 * b)
        r2 = -c / (b * r1) if r1 > 0.0 else 0.0
    else:
        r2 = (a - disc) / (2.0 * b)
        r1 = -c / (b * r2)
    return r1, r2, disc


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _gain(b: float, k: float, t: float) -> float:
    """g = b (1 - exp(-k t)) / k, continuous at k -> 0 (where it is b t)."""
    x = k * t
    if x < 1e-12:
        return b * t
    return -b * math.expm1(-x) / k


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _advance(p: float, g: float, r1: float, r2: float) -> float:
    """Exact Riccati step: p(t) = (p0 + g r2 (p0 - r1)) / (1 + g (p0 - r1))."""
    den = 1.0 + g * (p - r1)
    if den <= 0.0:  # only when p0 = r2 = 0 exactly: a fixed point
        return p
    out = (p + g * r2 * (p - r1)) / den
    return out if out > 0.0 else 0.0


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _phase_advance(p: float, g: float, r1: float, b: float, t: float, omega0: float, nshift: float) -> float:
    """int_0^t omega(p(s)) ds with int p ds = r1 t + log1p(g (p0 - r1)) / b (exact)."""
    arg = g * (p - r1)
    integral = r1 * t + (math.log1p(arg) / b if arg > -1.0 else 0.0)
    return omega0 * t + nshift * integral


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _simulate_one(
    drive, dt, bias, i_th, seed, gain, gamma, q, d_th, noise, m_sub, rf, omega0, nshift, scale, out
):
    """One drive: ``out[k]`` = scaled power (or RF voltage) at the end of drive sample k."""
    n = drive.shape[0]
    beta_floor = 2.0 * gamma * _BETA_FLOOR
    c_det = 2.0 * d_th * (1.0 - noise * noise)  # mean part of the thermal force
    sigma_full = noise * math.sqrt(d_th * dt / m_sub)  # per-quadrature kick std per substep
    h = dt / m_sub
    state = np.empty(4, dtype=np.uint64)
    rng_init(seed, state)
    two_pi = 2.0 * math.pi

    # settled start: steady state at the first sample's current
    z = (bias + gain * drive[0]) / i_th
    a = 2.0 * gamma * (z - 1.0)
    b = max(2.0 * gamma * (q + z), beta_floor)
    r1, r2, k = _roots(a, b, c_det)
    p = r1
    phase = two_pi * rng_uniform(state) if (rf and noise > 0.0) else 0.0
    n_warm = 0
    if noise > 0.0:
        # let the fluctuations settle too: 5 relaxation times (capped) at the first current
        tau = 1.0 / math.sqrt(a * a + 4.0 * b * 2.0 * d_th)
        n_warm = int(math.ceil(min(5.0 * tau, 50e-6) / dt))

    for kk in range(-n_warm, n):
        v = drive[kk] if kk >= 0 else drive[0]
        z = (bias + gain * v) / i_th
        a = 2.0 * gamma * (z - 1.0)
        b = max(2.0 * gamma * (q + z), beta_floor)
        r1, r2, k = _roots(a, b, c_det)
        if noise <= 0.0:
            g = _gain(b, k, dt)
            if rf:
                phase = (phase + _phase_advance(p, g, r1, b, dt, omega0, nshift)) % two_pi
            p = _advance(p, g, r1, r2)
        else:
            g_half = _gain(b, k, 0.5 * h)
            g_full = _gain(b, k, h)
            if rf:
                phase = (phase + _phase_advance(p, g_half, r1, b, 0.5 * h, omega0, nshift)) % two_pi
            p = _advance(p, g_half, r1, r2)
            for j in range(m_sub):
                # Gaussian kick of the complex amplitude (Ito-correct, keeps p >= 0)
                amp = math.sqrt(p)
                xi1, xi2 = rng_normal_pair(state)
                x = amp + sigma_full * xi1
                y = sigma_full * xi2
                p = x * x + y * y
                if rf:
                    phase += math.atan2(y, x)
                g_step = g_full if j < m_sub - 1 else g_half
                t_step = h if j < m_sub - 1 else 0.5 * h
                if rf:
                    phase = (phase + _phase_advance(p, g_step, r1, b, t_step, omega0, nshift)) % two_pi
                p = _advance(p, g_step, r1, r2)
        if kk >= 0:
            if rf:
                out[kk] = scale * math.sqrt(p) * math.cos(phase)
            else:
                out[kk] = scale * p


@numba.njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def _kernel(drive, bias, i_th, omega0, seeds, out, dt, gain, gamma, q, d_th, noise, m_sub, rf, nshift, scale):
    """Rows of a batch one after the other; releases the GIL so threads run disjoint row ranges
    in parallel (:func:`~spinlab.sim_backends._numba_common.run_rows`)."""
    for i in range(drive.shape[0]):
        _simulate_one(
            drive[i],
            dt,
            bias[i],
            i_th[i],
            seeds[i],
            gain,
            gamma,
            q,
            d_th,
            noise,
            m_sub,
            rf,
            omega0[i],
            nshift,
            scale,
            out[i],
        )


# ------------------------------------------------------------------------------------------
# numba kernel with forward sensitivities (mean-field power, the noise=0 path)
# ------------------------------------------------------------------------------------------
@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _root_partials(a: float, b: float, c: float):
    """The roots of a p - b p^2 + c and their partial derivatives with respect to (a, b, c),
    each root in the form that avoids cancellation (as :func:`_roots`)."""
    disc = math.sqrt(a * a + 4.0 * b * c)
    sgn = 1.0 if a >= 0.0 else -1.0
    big = (a + sgn * disc) / (2.0 * b)
    big_a = (1.0 + sgn * a / disc) / (2.0 * b)
    big_b = sgn * c / (b * disc) - big / b
    big_c = sgn / disc
    small = -c / (b * big)  # the product of the roots is -c / b
    ratio = small / big
    small_a = -ratio * big_a
    small_b = -small / b - ratio * big_b
    small_c = small / c - ratio * big_c
    if a >= 0.0:
        return disc, big, small, big_a, big_b, big_c, small_a, small_b, small_c
    return disc, small, big, small_a, small_b, small_c, big_a, big_b, big_c


@numba.njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def _sensitivity_kernel(
    current, start, i_th, gamma, q, c_th, cur_tan, start_tan, out, out_t, dt, flags, points
):
    """Power ``out[b, k]`` of sample k (settled at current ``start[b]`` before the drive) and its
    derivatives ``out_t[b, j, k]`` along K directions. Direction j changes the current by
    ``cur_tan[b, j]`` (``start_tan[b, j]`` before the drive) and Q, log Gamma_G and
    log thermal_power by ``flags[j]``: the coefficients a, b, c of each sample change by
    (da, db, dc), and the exact step is differentiated through its roots and gain. The output
    is the mean power at ``points`` equally spaced instants ending at the end of the hold
    (1: the end of the hold, as sim:vortex reports)."""
    n_dirs = flags.shape[0]
    dp = np.zeros(n_dirs)
    dp_end = np.zeros(n_dirs)
    dr1 = np.zeros(n_dirs)
    dr2 = np.zeros(n_dirs)
    db = np.zeros(n_dirs)
    ddisc = np.zeros(n_dirs)
    for row in range(current.shape[0]):
        g2 = 2.0 * gamma[row]
        floor = g2 * _BETA_FLOOR
        c = g2 * c_th[row]
        p = 0.0
        for k in range(-1, current.shape[1]):  # k = -1: the settled start
            cur = start[row] if k < 0 else current[row, k]
            z = cur / i_th[row]
            a = g2 * (z - 1.0)
            b_raw = g2 * (q[row] + z)
            above = b_raw > floor
            b = b_raw if above else floor
            disc, r1, r2, r1a, r1b, r1c, r2a, r2b, r2c = _root_partials(a, b, c)
            for j in range(n_dirs):
                dcur = start_tan[row, j] if k < 0 else cur_tan[row, j, k]
                dz = dcur / i_th[row]
                da = g2 * dz + flags[j, 1] * a
                db[j] = (g2 * (dz + flags[j, 0]) if above else 0.0) + flags[j, 1] * b
                dc = (flags[j, 1] + flags[j, 2]) * c
                dr1[j] = r1a * da + r1b * db[j] + r1c * dc
                dr2[j] = r2a * da + r2b * db[j] + r2c * dc
                ddisc[j] = (a * da + 2.0 * c * db[j] + 2.0 * b * dc) / disc
            if k < 0:
                p = r1
                dp[:] = dr1
                continue
            mean = 0.0
            out_t[row, :, k] = 0.0
            for m in range(1, points + 1):
                t = dt * m / points
                e = math.exp(-disc * t)
                g = _gain(b, disc, t)
                h_disc = b * (t * disc * e - (1.0 - e)) / (disc * disc)  # d g / d disc
                den = 1.0 + g * (p - r1)
                p_t = (p + g * r2 * (p - r1)) / den
                jac_p = (1.0 - g * (r1 - r2)) / (den * den)
                mean += p_t / points
                for j in range(n_dirs):
                    dg = g / b * db[j] + h_disc * ddisc[j]
                    d_a = r2 * dg + g * dr2[j]
                    d_b = -(r1 * r2 * dg + g * r2 * dr1[j] + g * r1 * dr2[j])
                    d_d = -(r1 * dg + g * dr1[j])
                    dp_t = jac_p * dp[j] + (p * d_a + d_b - p_t * (p * dg + d_d)) / den
                    out_t[row, j, k] += dp_t / points
                    dp_end[j] = dp_t
            p = p_t
            dp[:] = dp_end
            out[row, k] = mean


#: Quantities :func:`power_and_jacobian` differentiates with respect to besides the
#: parameters: the DC bias (A, absolute).
BIAS = "bias_A"


def power_and_jacobian(
    values: Mapping[str, Any],
    drive_V: np.ndarray,
    bias_A: Any,
    field_T: Any,
    dt_s: float,
    wrt: Sequence[str] = (),
    *,
    drive_tangents: np.ndarray | None = None,
    rest_drive_V: float | None = None,
    points_per_sample: int = 1,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-field detector voltage (B, n) (``sim:vortex`` at ``noise=0``) and its derivatives.

    ``values`` maps :class:`VortexParams` names (missing: the defaults) to numbers or one
    value per drive (B,), so a batch holds several parameter sets. Columns of the Jacobian
    (B, n, len(wrt) + K): d V / d log(param) for each name in ``wrt`` (d V / d param for
    ``threshold_slope_per_T``, d V / d bias for ``"bias_A"``), then one column per drive
    tangent ``drive_tangents[j]`` (B, n) (d V along a change of the drive samples). The start
    is settled at the first sample (as ``sim:vortex``) or at ``rest_drive_V``. Each output
    sample is the mean power at ``points_per_sample`` instants equally spaced over its hold,
    the last at its end (1: the end of the hold, as ``sim:vortex``; a bench whose scope
    averages m points per drive sample reports m).
    """
    if isinstance(points_per_sample, bool) or not isinstance(points_per_sample, int) or points_per_sample < 1:
        raise ConfigError(f"points_per_sample must be a positive integer, got {points_per_sample!r}")
    names = {f.name for f in fields(VortexParams)}
    unknown = sorted(set(wrt) - names - {BIAS})
    if unknown:
        raise ConfigError(f"cannot differentiate with respect to {unknown}; valid: {sorted(names | {BIAS})}")
    drive = np.require(drive_V, np.float64, "CW")  # writable C arrays: one numba signature
    batch, n = drive.shape
    defaults = asdict(VortexParams())
    v = {
        k: np.broadcast_to(np.asarray(values.get(k, defaults[k]), dtype=np.float64), (batch,)) for k in names
    }
    bias = np.broadcast_to(np.asarray(bias_A, dtype=np.float64), (batch,))
    field = np.broadcast_to(np.asarray(field_T, dtype=np.float64), (batch,))
    gain = v["drive_gain_A_per_V"][:, None]
    current = bias[:, None] + gain * drive
    start_drive = drive[:, 0] if rest_drive_V is None else np.full(batch, float(rest_drive_V))
    start = bias + gain[:, 0] * start_drive
    i_th = v["threshold_A"] * (1.0 + v["threshold_slope_per_T"] * field)
    tangents = [] if drive_tangents is None else list(np.asarray(drive_tangents, dtype=np.float64))
    k_dirs = len(wrt) + len(tangents)
    cur_tan = np.zeros((batch, k_dirs, n))
    start_tan = np.zeros((batch, k_dirs))
    flags = np.zeros((k_dirs, 3))
    for j, name in enumerate(wrt):
        if name == BIAS:
            cur_tan[:, j], start_tan[:, j] = 1.0, 1.0
        elif name == "drive_gain_A_per_V":
            cur_tan[:, j], start_tan[:, j] = gain * drive, gain[:, 0] * start_drive
        elif name in ("threshold_A", "threshold_slope_per_T"):
            # z = I / I_th: a relative change of I_th acts like the opposite change of I
            rel = (
                np.ones(batch)
                if name == "threshold_A"
                else field / (1.0 + v["threshold_slope_per_T"] * field)
            )
            cur_tan[:, j], start_tan[:, j] = -rel[:, None] * current, -rel * start
        elif name == "Q":
            flags[j, 0] = 1.0  # d/dQ; times Q (per row) after the kernel
        elif name == "gamma_G_per_s":
            flags[j, 1] = 1.0
        elif name == "thermal_power":
            flags[j, 2] = 1.0
        elif name != "detector_V_per_p":  # the output scale: filled in after the kernel
            raise ConfigError(f"the power output does not depend on {name!r}")
    for j, tangent in enumerate(tangents, start=len(wrt)):
        cur_tan[:, j] = gain * tangent
        start_tan[:, j] = gain[:, 0] * tangent[:, 0] if rest_drive_V is None else 0.0
    power = np.empty((batch, n))
    power_t = np.empty((batch, k_dirs, n))
    workers = (threads or os.cpu_count() or 1) if batch * n * max(1, k_dirs) >= 2_000_000 else 1
    run_rows(
        _sensitivity_kernel,
        batch,
        workers,
        (
            current,
            start,
            *(
                np.require(x, np.float64, "CW")
                for x in (i_th, v["gamma_G_per_s"], v["Q"], v["thermal_power"])
            ),
            cur_tan,
            start_tan,
            power,
            power_t,
        ),
        (float(dt_s), flags, points_per_sample),
        "sim-vortex",
    )
    scale = v["detector_V_per_p"][:, None]
    volts = scale * power
    jac = np.moveaxis(power_t, 1, 2) * scale[..., None]
    for j, name in enumerate(wrt):
        if name == "Q":
            jac[..., j] *= v["Q"][:, None]
        elif name == "detector_V_per_p":
            jac[..., j] = volts
    return volts, jac


# ------------------------------------------------------------------------------------------
# Device
# ------------------------------------------------------------------------------------------
class VortexDevice(Device):
    """The vortex STO as a :class:`spinlab.Device` (``sim:vortex``).

    Output ``"power"`` (default) is what a rectifying detector delivers, ``detector_V_per_p * p``;
    ``"rf"`` is the oscillating voltage ``rf_V_per_sqrt_p * sqrt(p) cos(phase)``, only meaningful
    when the sample interval resolves the oscillation (checked: at least 4 samples per period of
    the highest frequency ``f0_Hz + N_Hz``). Response sample k is the state at the end of drive
    sample k's hold. ``seed`` seeds a numpy Generator; every call advances it (repeated calls
    differ, a fresh device with the same seed reproduces exactly). ``noise`` in [0, 1] scales the
    random part of the thermal force (0 = deterministic). ``noise_substep_s`` bounds the substep
    on which noise kicks are applied (accuracy of the fluctuation statistics, not of the mean).
    How a measurement reads the device, so a fitted model can stand in for a bench:
    ``points_per_sample`` m > 1 reports the mean of the output at m instants equally spaced over
    each hold, the last at its end (a scope averaging m points per drive sample), and
    ``rest_drive_V`` starts every drive settled at that drive level instead of at its first
    sample (a bench idling there between records).
    """

    OUTPUTS = ("power", "rf")
    #: Below this many samples per call, threads cost more than they save.
    _THREADED_MIN_SAMPLES = 200_000

    def __init__(
        self,
        params: VortexParams | None = None,
        *,
        seed: int = 0,
        noise: float = 1.0,
        output: str = "power",
        noise_substep_s: float | None = None,
        threads: int | None = None,
        points_per_sample: int = 1,
        rest_drive_V: float | None = None,
        limits: SafetyLimits | None = None,
        default_conditions: Mapping[str, float] | None = None,
    ) -> None:
        defaults = {"bias_A": DEFAULT_BIAS_A, "field_T": 0.0, **dict(default_conditions or {})}
        super().__init__(limits or VORTEX_LIMITS, defaults)
        if (
            isinstance(points_per_sample, bool)
            or not isinstance(points_per_sample, int)
            or points_per_sample < 1
        ):
            raise ConfigError(f"points_per_sample must be a positive integer, got {points_per_sample!r}")
        if rest_drive_V is not None:
            if not (isinstance(rest_drive_V, (int, float)) and math.isfinite(rest_drive_V)):
                raise ConfigError(f"rest_drive_V must be a number of volts, got {rest_drive_V!r}")
            if abs(rest_drive_V) > self.limits.max_drive_V:
                raise SafetyLimitError(
                    f"rest_drive_V = {rest_drive_V:g} V exceeds max_drive_V = {self.limits.max_drive_V:g} V"
                )
        self.points_per_sample = points_per_sample
        self.rest_drive_V = None if rest_drive_V is None else float(rest_drive_V)
        self.params = params or VortexParams()
        if not isinstance(self.params, VortexParams):
            raise ConfigError(f"params must be a VortexParams, got {type(self.params).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            # 2^64: what the run journal records
            raise ConfigError(f"seed must be an integer in 0 .. 2^64 - 1, got {seed!r}")
        if isinstance(noise, bool) or not (isinstance(noise, (int, float)) and 0.0 <= float(noise) <= 1.0):
            raise ConfigError(
                f"noise must be a number in [0, 1] (fraction of the thermal force that is random), got {noise!r}"
            )
        if output not in self.OUTPUTS:
            raise ConfigError(f"output must be one of {list(self.OUTPUTS)}, got {output!r}")
        if noise_substep_s is None:
            # Strang splitting: the power-fluctuation std is within ~1 % of a 2 ns reference at
            # Gamma_G h = 0.25 (50 ns by default; 2 substeps per 100 ns sample), ~2 % at 0.5
            noise_substep_s = 0.25 / self.params.gamma_G_per_s
        if not (
            isinstance(noise_substep_s, (int, float))
            and math.isfinite(noise_substep_s)
            and noise_substep_s > 0
        ):
            raise ConfigError(
                f"noise_substep_s must be a positive number of seconds, got {noise_substep_s!r}"
            )
        if threads is None:
            threads = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.seed = int(seed)
        self.noise = float(noise)
        self.output = output
        self.noise_substep_s = float(noise_substep_s)
        self._rng = np.random.default_rng(self.seed)
        self.address = "sim:vortex"

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "model": "universal auto-oscillator (Slavin & Tiberkevich)",
            "params": asdict(self.params),
            "seed": self.seed,
            "noise": self.noise,
            "output": self.output,
            "noise_substep_s": self.noise_substep_s,
            "threads": self.threads,
            "points_per_sample": self.points_per_sample,
            "rest_drive_V": self.rest_drive_V,
            "default_conditions": dict(self.default_conditions),
            "numba": numba.__version__,
        }

    def check_rf_sampling(self, dt_s: float, field_T: Any = 0.0) -> None:
        """Raise unless ``dt_s`` gives >= 4 samples per period of the highest RF frequency."""
        f0 = float(np.max(self.params.linear_frequency_Hz(field_T)))
        f_max = f0 + max(self.params.N_Hz, 0.0)
        if f_max > 0 and dt_s > 1.0 / (4.0 * f_max):
            raise ConfigError(
                f"output='rf' needs a sample interval <= {1.0 / (4.0 * f_max):.3g} s to resolve the "
                f"oscillation up to {f_max / 1e6:.0f} MHz, got dt = {dt_s:.3g} s; sample faster or use "
                "output='power' (the rectified detector voltage)"
            )

    def line(self, conditions: Mapping[str, float] | None = None) -> Line:
        """The oscillator's line (frequency, FWHM, power into 50 ohm of the ``output="rf"``
        signal) at a DC operating point; missing conditions take the device's defaults."""
        cond = {**self.default_conditions, **dict(conditions or {})}
        unknown = sorted(set(cond) - {"bias_A", "field_T"})
        if unknown:
            raise ConfigError(f"sim:vortex spectrum does not know condition(s) {unknown}")
        p = self.params
        z = p.supercriticality(cond["bias_A"], cond["field_T"])
        return auto_oscillator_line(
            z,
            f0_Hz=self._linear_frequency(cond["field_T"]),
            N_Hz=p.N_Hz,
            gamma_G_per_s=p.gamma_G_per_s,
            Q=p.Q,
            thermal_power=p.thermal_power,
            rf_V_per_sqrt_p=p.rf_V_per_sqrt_p,
        )

    def spectrum(self, conditions: Mapping[str, float] | None, freqs_Hz: Any) -> np.ndarray:
        """One-sided power spectral density (W/Hz into 50 ohm) of the RF output at a DC
        operating point, at ``freqs_Hz`` (:mod:`spinlab.sim_backends.spectrum`). Conditions
        given as arrays (B,) give one row per operating point: (B, len(freqs_Hz))."""
        line = self.line(conditions)
        if np.ndim(line.frequency_Hz):
            line = Line(*(np.asarray(x)[..., None] for x in astuple(line)))
        return lorentzian_psd(freqs_Hz, line)

    def _linear_frequency(self, field_T: Any) -> Any:
        f0 = self.params.linear_frequency_Hz(field_T)
        if np.any(f0 < 0):
            raise ConfigError(
                f"field_T {np.min(field_T):g} T is below -saturation_field_T "
                f"({self.params.saturation_field_T:g} T): the vortex has no gyrotropic mode there"
            )
        return f0

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        p = self.params
        if self.output == "rf":
            self.check_rf_sampling(dt_s, conditions["field_T"])
        bias = np.ascontiguousarray(conditions["bias_A"], dtype=np.float64)
        i_th = np.ascontiguousarray(p.threshold_current_A(conditions["field_T"]), dtype=np.float64)
        if np.any(i_th <= 0):
            raise ConfigError(
                f"field_T values {conditions['field_T'].tolist()} push the threshold current to <= 0 "
                f"(threshold_slope_per_T = {p.threshold_slope_per_T}); reduce the field"
            )
        batch, n = drive.shape
        points, rest = self.points_per_sample, self.rest_drive_V
        if points > 1:  # the same held drive on a grid m times finer, averaged back below
            drive, dt_s = np.repeat(drive, points, axis=1), dt_s / points
        if rest is not None:  # one leading sample at the rest level: the settled start is there
            drive = np.concatenate([np.full((batch, 1), rest), drive], axis=1)
        seeds = self._rng.integers(0, 2**64 - 1, size=batch, dtype=np.uint64, endpoint=True)
        m_sub = max(1, int(math.ceil(dt_s / self.noise_substep_s - 1e-9)))
        rf = self.output == "rf"
        scale = p.rf_V_per_sqrt_p if rf else p.detector_V_per_p
        drive = np.ascontiguousarray(drive, dtype=np.float64)
        out = np.empty_like(drive)
        consts = (
            p.drive_gain_A_per_V,
            p.gamma_G_per_s,
            p.Q,
            p.gamma_G_per_s * p.thermal_power,
            self.noise,
            m_sub,
            rf,
            2 * math.pi * p.N_Hz,
            scale,
        )
        omega0 = np.ascontiguousarray(
            2 * math.pi * self._linear_frequency(conditions["field_T"]), dtype=np.float64
        )
        omega0 = np.broadcast_to(omega0, (batch,)).copy()
        workers = min(self.threads, batch) if drive.size >= self._THREADED_MIN_SAMPLES else 1
        run_rows(
            _kernel,
            batch,
            workers,
            (drive, bias, i_th, omega0, seeds, out),
            (float(dt_s), *consts),
            "sim-vortex",
        )
        if rest is not None:
            out = out[:, 1:]
        return out.reshape(batch, n, points).mean(axis=2) if points > 1 else out


#: Options accepted by ``sim:vortex?...`` (strings are converted to these types).
OPTION_SPEC: dict[str, Any] = {
    **{f.name: float for f in fields(VortexParams)},
    "seed": int,
    "noise": float,
    "output": choice(*VortexDevice.OUTPUTS),
    "noise_substep_s": float,
    "threads": int,
    "points_per_sample": int,
    "rest_drive_V": float,
    "params": instance_of(VortexParams),
    **device_options_spec(),
}


def open_vortex(**options: Any) -> VortexDevice:
    """Build a :class:`VortexDevice` from address/keyword options (see ``OPTION_SPEC``)."""
    opts = coerce_options(options, OPTION_SPEC, where="sim:vortex")
    param_names = {f.name for f in fields(VortexParams)}
    overrides = {k: opts.pop(k) for k in list(opts) if k in param_names}
    params = opts.pop("params", None) or VortexParams()
    if overrides:
        params = VortexParams(**{**asdict(params), **overrides})
    limits, conditions = take_limits_and_conditions(opts, VORTEX_LIMITS)
    return VortexDevice(params, limits=limits, default_conditions=conditions, **opts)
