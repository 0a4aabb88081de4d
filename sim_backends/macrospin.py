"""Macrospin LLGS spin-torque oscillator, differentiable in its physical parameters, fast.

Why differentiable: gradient-based fitting of physical parameters to measured responses (Imai et
al., 2024) needs d(response)/d(alpha, Hk, ...). Every parameter lives in :class:`MacrospinParams`
as a log-valued ``nn.Parameter`` (positive by construction, and an Adam step is a *relative*
change, so Ms ~ 1e6 A/m and alpha ~ 1e-2 train with one learning rate).

Model. Free layer magnetisation ``m`` (unit vector), in-plane easy axis x (anisotropy field
Hk), thin-film effective demagnetising field Hd along z (Ms_eff, reduced by interfacial
anisotropy), applied field ``field_T / mu0`` along x, fixed layer/polariser ``p = +x``.
Landau-Lifshitz-Gilbert-Slonczewski equation in Landau-Lifshitz form::

    (1 + a^2) dm/dt = -g [m x H + a m x (m x H)] + g Hs [m x (m x p) - a m x p]
    H = (H_ext + Hk m_x) x - Hd m_z z + H_th,     g = gamma mu0,
    Hs = hbar eta I / (2 e mu0 Ms V)       (Slonczewski torque as a field, A/m)

Positive current pushes ``m`` away from ``p`` (destabilises the parallel state); above the
critical current ``Ic = a (H_ext + Hk + Hd/2) 2 e mu0 Ms V / (hbar eta)`` the macrospin
precesses steadily when H_ext > Hk (with a weaker field it switches to the antiparallel state,
which the torque then stabilises). Output: magnetoresistive voltage ``V = I R_P [1 + tmr (1 - m_x)/2]`` (what a
DC-coupled scope sees across the junction). Integration: fixed-step RK4 with ``m`` renormalised
after every step; the drive is zero-order held, each sample split into equal substeps no longer
than ``max_step_s`` (2 ps default: omega dt < 0.15 up to 10 GHz). Precession starts from the
initial tilt ``initial_tilt_rad`` of ``m`` in the film plane.

Thermal field (stochastic LLGS, Brown): at ``temperature_K`` > 0 each Cartesian component of
``H_th`` is white Gaussian noise with ``<H_i(t) H_j(t')> = 2 a kB T / (gamma mu0^2 Ms V)
delta_ij delta(t - t')``, drawn once per substep and held over its four RK4 stages (the
Stratonovich limit; mumax3 does the same). Each drive has its own seeded stream, so a batch row
does not depend on the batch around it. The default is T = 0: deterministic, as before, and
what a model fitted to a noisy device predicts (its mean response).

Numerics. The fast path is a numba kernel that integrates ``m`` together with its forward
sensitivities ``dm/dq`` for the parameters q that need gradients (the RK4 scheme applied to the
variational equation, which is exactly the derivative of the discrete RK4 map; the
renormalisation is differentiated too). Forward mode needs no stored trajectory, so long records
cost no memory beyond their output, and the same sensitivities give the fitters their Jacobian
(:func:`response_and_jacobian`). :func:`trajectory` wraps the kernel as a torch autograd
function, so gradients flow to :class:`MacrospinParams` as before; ``benchmarks/bench_sim_macrospin.py``
compares it with the pure-torch integrator it replaced (:func:`reference_trajectory`, kept as
the check and for gradients with respect to the drive itself).

Scope: precession is GHz, so this model resolves ps time steps. It suits short drives on fine
grids (characterising a junction, fitting its parameters), not 100 ns reservoir grids, where
``sim:vortex`` is the fast model; ``max_steps`` refuses runs that would take minutes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor, nn

from spinlab import Device, SafetyLimits
from spinlab.errors import ConfigError
from spinlab.sim_backends._numba_common import rng_init, rng_normal_pair, run_rows
from spinlab.sim_backends._options import (
    coerce_options,
    device_options_spec,
    instance_of,
    take_limits_and_conditions,
)

MU0 = 4e-7 * math.pi
#: Gyromagnetic ratio of the electron (rad / (s T)).
GAMMA_E = 1.760859630e11
HBAR = 1.054571817e-34
E_CHARGE = 1.602176634e-19
K_BOLTZMANN = 1.380649e-23

#: Safety limits of the simulated junction.
MACROSPIN_LIMITS = SafetyLimits(max_drive_V=0.5, max_bias_A=10e-3, max_field_T=1.0)
#: Default operating point: 50 mT along the easy axis (above Hk, so the antiparallel state is
#: unstable and the junction precesses instead of switching) and 3 mA = 1.26 x Ic(50 mT).
DEFAULT_BIAS_A = 3e-3
DEFAULT_FIELD_T = 0.05


class MacrospinParams(nn.Module):
    """Physical parameters (SI), each a positive tensor ``params.NAME`` backed by ``log_NAME``.

    Defaults: a CoFeB-like free layer (Ms 1e6 A/m, alpha 0.02, Hk 2e4 A/m ~ 25 mT,
    Hd 4e5 A/m ~ 0.5 T, eta 0.5, V = 6e-23 m^3 ~ 4 x 150 x 125 nm ellipse) with Ic = 2.0 mA at
    zero field, read through an MR junction of R_P = 50 Ohm and TMR 100 %.
    """

    DEFAULTS: dict[str, float] = {
        "Ms_A_per_m": 1.0e6,
        "alpha": 0.02,
        "Hk_A_per_m": 2.0e4,
        "Hd_A_per_m": 4.0e5,
        "eta": 0.5,
        "volume_m3": 6.0e-23,
        "R_P_ohm": 50.0,
        "tmr": 1.0,
    }

    def __init__(self, **values: float | Tensor) -> None:
        super().__init__()
        unknown = sorted(set(values) - set(self.DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown macrospin parameter(s) {unknown}; valid: {sorted(self.DEFAULTS)}")
        for name, default in self.DEFAULTS.items():
            value = values.get(name, default)
            tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
            if tensor.ndim != 0 or not bool(torch.isfinite(tensor)) or float(tensor) <= 0:
                raise ConfigError(
                    f"macrospin parameter {name} must be a positive finite number, got {value!r}"
                )
            self.register_parameter("log_" + name, nn.Parameter(tensor.log()))
        if float(self.alpha.detach()) >= 1:
            raise ConfigError(f"alpha (Gilbert damping) must be < 1, got {float(self.alpha.detach())!r}")
        if float(self.eta.detach()) > 1:
            raise ConfigError(f"eta (spin polarisation) must be <= 1, got {float(self.eta.detach())!r}")

    def as_dict(self) -> dict[str, float]:
        """Current values as plain floats (for run files and ``identity()``)."""
        return {name: float(getattr(self, name).detach()) for name in self.DEFAULTS}

    def fit_only(self, *names: str) -> MacrospinParams:
        """Let only ``names`` receive gradients (freeze the others); returns self."""
        unknown = sorted(set(names) - set(self.DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown macrospin parameter(s) {unknown}; valid: {sorted(self.DEFAULTS)}")
        for name in self.DEFAULTS:
            getattr(self, "log_" + name).requires_grad_(name in names)
        return self

    def stt_field_per_A(self) -> Tensor:
        """Slonczewski torque field per ampere, ``hbar eta / (2 e mu0 Ms V)`` (A/m per A)."""
        return HBAR * self.eta / (2 * E_CHARGE * MU0 * self.Ms_A_per_m * self.volume_m3)

    def critical_current_A(self, field_T: float | Tensor = 0.0) -> Tensor:
        """Onset of precession from the parallel state: ``alpha (H + Hk + Hd/2) / Hs-per-A``."""
        h_ext = torch.as_tensor(field_T, dtype=torch.float64) / MU0
        return self.alpha * (h_ext + self.Hk_A_per_m + 0.5 * self.Hd_A_per_m) / self.stt_field_per_A()

    def fmr_frequency_Hz(self, field_T: float | Tensor = 0.0) -> Tensor:
        """Small-angle (Kittel, in-plane) precession frequency, damping neglected:
        ``gamma mu0 sqrt((H + Hk)(H + Hk + Hd)) / 2 pi``."""
        h = torch.as_tensor(field_T, dtype=torch.float64) / MU0 + self.Hk_A_per_m
        return GAMMA_E * MU0 * torch.sqrt(h * (h + self.Hd_A_per_m)) / (2 * math.pi)


def _make_property(name: str) -> property:
    return property(
        lambda self: torch.exp(getattr(self, "log_" + name)), doc=f"{name} (positive tensor, differentiable)"
    )


for _name in MacrospinParams.DEFAULTS:
    setattr(MacrospinParams, _name, _make_property(_name))


# ------------------------------------------------------------------------------------------
# reference integrator (pure torch autograd)
# ------------------------------------------------------------------------------------------
def _llgs(m: Tensor, diag: Tensor, h0: Tensor, p: Tensor, hs: Tensor, alpha: Tensor, inv: Tensor) -> Tensor:
    """dm/dtau in normalised units for m (B, 3); effective field h = m * diag + h0."""
    h = m * diag + h0
    mxh = torch.linalg.cross(m, h)
    mxp = torch.linalg.cross(m, p)
    return inv * (hs * (torch.linalg.cross(m, mxp) - alpha * mxp) - mxh - alpha * torch.linalg.cross(m, mxh))


def _rk4_step(
    m: Tensor, diag: Tensor, h0: Tensor, p: Tensor, hs: Tensor, alpha: Tensor, inv: Tensor, step: Tensor
) -> Tensor:
    """One classical RK4 step followed by renormalisation of m to the unit sphere."""
    half = 0.5 * step
    k1 = _llgs(m, diag, h0, p, hs, alpha, inv)
    k2 = _llgs(m + half * k1, diag, h0, p, hs, alpha, inv)
    k3 = _llgs(m + half * k2, diag, h0, p, hs, alpha, inv)
    k4 = _llgs(m + step * k3, diag, h0, p, hs, alpha, inv)
    new = m + (step / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return new / torch.sqrt((new * new).sum(dim=-1, keepdim=True))


# TorchScript trims the dispatch of the ~70 ops of a step (scripting is deprecated in torch 2.13
# but still supported; the eager function is the fallback if it ever stops working).
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _rk4_step = torch.jit.script(_rk4_step)
except Exception:  # pragma: no cover - depends on the torch build
    pass


def _check_inputs(current_A: Tensor, field_T: Any, dt_s: float) -> tuple[Tensor, Tensor]:
    if not isinstance(current_A, Tensor) or current_A.ndim != 2:
        raise ConfigError("current_A must be a torch tensor of shape (batch, n)")
    if not (isinstance(dt_s, (int, float)) and math.isfinite(dt_s) and dt_s > 0):
        raise ConfigError(f"dt_s must be a positive number of seconds, got {dt_s!r}")
    current = current_A.to(torch.float64)
    field = torch.as_tensor(field_T, dtype=torch.float64)
    if field.ndim == 0:
        field = field.expand(current.shape[0])
    if field.shape != (current.shape[0],):
        raise ConfigError(
            f"field_T must be a number or one value per drive ({current.shape[0]}), got shape {tuple(field.shape)}"
        )
    return current, field


def substeps(dt_s: float, max_step_s: float) -> int:
    """Number of equal RK4 substeps per drive sample."""
    return max(1, int(math.ceil(dt_s / max_step_s - 1e-9)))


def reference_trajectory(
    params: MacrospinParams,
    current_A: Tensor,
    field_T: float | Tensor,
    dt_s: float,
    *,
    max_step_s: float = 2e-12,
    initial_tilt_rad: float = 0.05,
) -> Tensor:
    """:func:`trajectory` at T = 0 in plain torch (normalised units, autograd through every op).

    About 300x slower than the numba kernel; it is the independent check of the kernel and the
    way to differentiate with respect to the drive samples themselves.
    """
    current, field = _check_inputs(current_A, field_T, dt_s)
    ms = params.Ms_A_per_m
    alpha = params.alpha
    inv = 1.0 / (1.0 + alpha * alpha)
    hs_all = (params.stt_field_per_A() / ms) * current  # (B, n) normalised torque field
    n_sub = substeps(float(dt_s), max_step_s)
    step = GAMMA_E * MU0 * ms * (float(dt_s) / n_sub)  # normalised time step (a tensor: d/dMs)

    batch = current.shape[0]
    zero = torch.zeros((), dtype=torch.float64)
    diag = torch.stack((params.Hk_A_per_m / ms, zero, -params.Hd_A_per_m / ms))  # h = m * diag + h0
    h0 = torch.stack((field / (MU0 * ms), zero.expand(batch), zero.expand(batch)), dim=-1)
    polariser = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).expand(batch, 3)
    m = torch.tensor(
        [[math.cos(initial_tilt_rad), math.sin(initial_tilt_rad), 0.0]], dtype=torch.float64
    ).expand(batch, 3)
    outputs = []
    for hs in hs_all.unbind(1):  # unbind: O(n) backward (indexing inside the loop is O(n^2))
        hs = hs[:, None]
        for _ in range(n_sub):
            m = _rk4_step(m, diag, h0, polariser, hs, alpha, inv, step)
        outputs.append(m)
    return torch.stack(outputs, dim=1)


# ------------------------------------------------------------------------------------------
# numba kernel: m and its forward sensitivities dm/dq
# ------------------------------------------------------------------------------------------
#: Quantities the kernel differentiates with respect to, in its own (physical-time) variables:
#: damping, anisotropy field, demagnetising field (A/m), torque field per ampere cs (A/m per A),
#: thermal-field std per substep sigma (A/m) and applied field (A/m).
KERNEL_QUANTITIES = ("alpha", "hk", "hd", "cs", "sigma", "hext")
_ALPHA, _HK, _HD, _CS, _SIGMA, _HEXT = range(len(KERNEL_QUANTITIES))

# Rows are integrated LANES at a time. Every per-row quantity lives in one flat work array at
# index ``slot * LANES + lane`` with constant slots (the sensitivities too: one fixed block per
# quantity, used or not), so the compiler can prove the lanes' loads and stores disjoint and
# turn each ``for lane in range(LANES)`` into vector instructions: 8 rows cost about what 1
# row costs in scalar code (measured: ~10x forward over a row-at-a-time kernel).
LANES = 8
_M, _MT, _K, _ACC = 0, 3, 6, 9  # m, stage input, stage rate, RK4 sum (3 slots each)
_JAC = 12  # d(dm/dt)/dm, 9 slots, column-major
_T, _D, _F = 21, 24, 27  # T, m x (m x H), m x (m x p) (3 slots each)
_A, _HKS, _HDS, _HX, _CSS, _G, _DG, _HS, _I = range(30, 39)  # per-row scalars
_HTH, _XI = 39, 42  # thermal field and its unit-variance draw (3 each)
_S, _SK, _SACC = 45, 63, 81  # per quantity q: dm/dq, its stage rate, its RK4 sum
_SLOTS = 99  # (3 slots each at 3 q + offset: fixed, like the rest)


@numba.njit(inline="always")
def _rates(w, c):
    """Stage input m + c k and its rate dm/dt = g T, for every lane.

    T = -(m x H) - a m x (m x H) + hs (m x (m x p) - a m x p), p = x,
    H = (H_ext + Hk m_x, 0, -Hd m_z) + H_th."""
    n = LANES
    for l in range(n):
        mx = w[_M * n + l] + c * w[_K * n + l]
        my = w[(_M + 1) * n + l] + c * w[(_K + 1) * n + l]
        mz = w[(_M + 2) * n + l] + c * w[(_K + 2) * n + l]
        w[_MT * n + l], w[(_MT + 1) * n + l], w[(_MT + 2) * n + l] = mx, my, mz
        a, hk, hd, h = w[_A * n + l], w[_HKS * n + l], w[_HDS * n + l], w[_HS * n + l]
        hx = w[_HX * n + l] + hk * mx + w[_HTH * n + l]
        hy = w[(_HTH + 1) * n + l]
        hz = -hd * mz + w[(_HTH + 2) * n + l]
        cx, cy, cz = my * hz - mz * hy, mz * hx - mx * hz, mx * hy - my * hx  # C = m x H
        dx, dy, dz = my * cz - mz * cy, mz * cx - mx * cz, mx * cy - my * cx  # D = m x C
        ex, ey, ez = 0.0, mz, -my  # E = m x p
        fx, fy, fz = my * ez - mz * ey, mz * ex - mx * ez, mx * ey - my * ex  # F = m x E
        tx = -cx - a * dx + h * (fx - a * ex)
        ty = -cy - a * dy + h * (fy - a * ey)
        tz = -cz - a * dz + h * (fz - a * ez)
        g = w[_G * n + l]
        w[_K * n + l], w[(_K + 1) * n + l], w[(_K + 2) * n + l] = g * tx, g * ty, g * tz
        w[_T * n + l], w[(_T + 1) * n + l], w[(_T + 2) * n + l] = tx, ty, tz
        w[_D * n + l], w[(_D + 1) * n + l], w[(_D + 2) * n + l] = dx, dy, dz
        w[_F * n + l], w[(_F + 1) * n + l], w[(_F + 2) * n + l] = fx, fy, fz


@numba.njit(inline="always")
def _jacobian(w):
    """d(dm/dt)/dm at the stage input, for every lane (only needed for sensitivities)."""
    n = LANES
    for l in range(n):
        mx, my, mz = w[_MT * n + l], w[(_MT + 1) * n + l], w[(_MT + 2) * n + l]
        a, hk, hd, h, g = w[_A * n + l], w[_HKS * n + l], w[_HDS * n + l], w[_HS * n + l], w[_G * n + l]
        hx = w[_HX * n + l] + hk * mx + w[_HTH * n + l]
        hy = w[(_HTH + 1) * n + l]
        hz = -hd * mz + w[(_HTH + 2) * n + l]
        cx, cy, cz = my * hz - mz * hy, mz * hx - mx * hz, mx * hy - my * hx  # C = m x H
        ex, ey, ez = 0.0, mz, -my  # E = m x p
        # dT/dm = -M - a (X(m) M - X(C)) + hs (-X(m) X(p) - X(E) + a X(p)), with X(v) the
        # cross-product matrix and M = d(m x H)/dm = X(m) diag(hk, 0, -hd) - X(H); M's columns:
        a0x, a0y, a0z = 0.0, mz * hk - hz, hy - my * hk
        a1x, a1y, a1z = hz, 0.0, -hx
        a2x, a2y, a2z = -my * hd - hy, mx * hd + hx, 0.0
        b0x, b0y, b0z = my * a0z - mz * a0y, mz * a0x - mx * a0z, mx * a0y - my * a0x  # X(m) M
        b1x, b1y, b1z = my * a1z - mz * a1y, mz * a1x - mx * a1z, mx * a1y - my * a1x
        b2x, b2y, b2z = my * a2z - mz * a2y, mz * a2x - mx * a2z, mx * a2y - my * a2x
        w[_JAC * n + l] = g * (-a0x - a * b0x)
        w[(_JAC + 1) * n + l] = g * (-a0y - a * (b0y - cz) - h * ez)
        w[(_JAC + 2) * n + l] = g * (-a0z - a * (b0z + cy) + h * ey)
        w[(_JAC + 3) * n + l] = g * (-a1x - a * (b1x + cz) + h * (ez - my))
        w[(_JAC + 4) * n + l] = g * (-a1y - a * b1y + h * mx)
        w[(_JAC + 5) * n + l] = g * (-a1z - a * (b1z - cx) + h * (a - ex))
        w[(_JAC + 6) * n + l] = g * (-a2x - a * (b2x - cy) - h * (mz + ey))
        w[(_JAC + 7) * n + l] = g * (-a2y - a * (b2y + cx) + h * (ex - a))
        w[(_JAC + 8) * n + l] = g * (-a2z - a * b2z + h * mx)


@numba.njit(inline="always")
def _jacobian_times(w, d, l, c):
    """J v for the stage input v = s + c ks of quantity d's sensitivity, one lane."""
    n = LANES
    o, k = (_S + 3 * d) * n, (_SK + 3 * d) * n
    vx = w[o + l] + c * w[k + l]
    vy = w[o + n + l] + c * w[k + n + l]
    vz = w[o + 2 * n + l] + c * w[k + 2 * n + l]
    return (
        w[_JAC * n + l] * vx + w[(_JAC + 3) * n + l] * vy + w[(_JAC + 6) * n + l] * vz,
        w[(_JAC + 1) * n + l] * vx + w[(_JAC + 4) * n + l] * vy + w[(_JAC + 7) * n + l] * vz,
        w[(_JAC + 2) * n + l] * vx + w[(_JAC + 5) * n + l] * vy + w[(_JAC + 8) * n + l] * vz,
    )


@numba.njit(inline="always")
def _store(w, d, l, weight, rx, ry, rz):
    n = LANES
    k, a = (_SK + 3 * d) * n, (_SACC + 3 * d) * n
    w[k + l], w[k + n + l], w[k + 2 * n + l] = rx, ry, rz
    w[a + l] += weight * rx
    w[a + n + l] += weight * ry
    w[a + 2 * n + l] += weight * rz


@numba.njit(inline="always")
def _tangent(w, d, c, weight):
    """Sensitivity to quantity d (a constant at each call site): the rate J (s + c ks) + df/dq
    of its stage input and the RK4 sum, for every lane."""
    n = LANES
    if d == _ALPHA:  # dT/da = -D - hs E, and g depends on a
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            g, dg, h = w[_G * n + l], w[_DG * n + l], w[_HS * n + l]
            rx += dg * w[_T * n + l] - g * w[_D * n + l]
            ry += dg * w[(_T + 1) * n + l] - g * (w[(_D + 1) * n + l] + h * w[(_MT + 2) * n + l])
            rz += dg * w[(_T + 2) * n + l] - g * (w[(_D + 2) * n + l] - h * w[(_MT + 1) * n + l])
            _store(w, d, l, weight, rx, ry, rz)
    elif d == _HK:  # dH = (mx, 0, 0): dT = -mx (E + a F)
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            q, a = -w[_G * n + l] * w[_MT * n + l], w[_A * n + l]
            rx += q * a * w[_F * n + l]
            ry += q * (w[(_MT + 2) * n + l] + a * w[(_F + 1) * n + l])
            rz += q * (a * w[(_F + 2) * n + l] - w[(_MT + 1) * n + l])
            _store(w, d, l, weight, rx, ry, rz)
    elif d == _HD:  # dH = (0, 0, -mz): dT = mz (G + a m x G), G = m x z = (my, -mx, 0)
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            mx, my, mz = w[_MT * n + l], w[(_MT + 1) * n + l], w[(_MT + 2) * n + l]
            q, a = w[_G * n + l] * mz, w[_A * n + l]
            rx += q * (my + a * mz * mx)
            ry += q * (a * mz * my - mx)
            rz -= q * a * (mx * mx + my * my)
            _store(w, d, l, weight, rx, ry, rz)
    elif d == _CS:  # hs = cs I: dT = I (F - a E)
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            q, a = w[_G * n + l] * w[_I * n + l], w[_A * n + l]
            rx += q * w[_F * n + l]
            ry += q * (w[(_F + 1) * n + l] - a * w[(_MT + 2) * n + l])
            rz += q * (w[(_F + 2) * n + l] + a * w[(_MT + 1) * n + l])
            _store(w, d, l, weight, rx, ry, rz)
    elif d == _SIGMA:  # dH = xi: dT = -(m x xi) - a m x (m x xi)
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            mx, my, mz = w[_MT * n + l], w[(_MT + 1) * n + l], w[(_MT + 2) * n + l]
            x0, x1, x2 = w[_XI * n + l], w[(_XI + 1) * n + l], w[(_XI + 2) * n + l]
            kx, ky, kz = my * x2 - mz * x1, mz * x0 - mx * x2, mx * x1 - my * x0
            g, a = w[_G * n + l], w[_A * n + l]
            rx -= g * (kx + a * (my * kz - mz * ky))
            ry -= g * (ky + a * (mz * kx - mx * kz))
            rz -= g * (kz + a * (mx * ky - my * kx))
            _store(w, d, l, weight, rx, ry, rz)
    else:  # applied field, dH = (1, 0, 0): dT = -(E + a F)
        for l in range(n):
            rx, ry, rz = _jacobian_times(w, d, l, c)
            g, a = w[_G * n + l], w[_A * n + l]
            rx -= g * a * w[_F * n + l]
            ry -= g * (w[(_MT + 2) * n + l] + a * w[(_F + 1) * n + l])
            rz -= g * (a * w[(_F + 2) * n + l] - w[(_MT + 1) * n + l])
            _store(w, d, l, weight, rx, ry, rz)


@numba.njit(inline="always")
def _tangents(w, active, c, weight):
    """Every active sensitivity; each call passes its quantity as a constant (fixed slots)."""
    if active[_ALPHA]:
        _tangent(w, _ALPHA, c, weight)
    if active[_HK]:
        _tangent(w, _HK, c, weight)
    if active[_HD]:
        _tangent(w, _HD, c, weight)
    if active[_CS]:
        _tangent(w, _CS, c, weight)
    if active[_SIGMA]:
        _tangent(w, _SIGMA, c, weight)
    if active[_HEXT]:
        _tangent(w, _HEXT, c, weight)


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)
def _kernel(current, hext, alpha, hk, hd, cs, sigma, seeds, out_m, out_s, n_sub, dt, m0, column):
    """Rows LANES at a time: ``out_m[b, k]`` = m at the end of sample k and, for each quantity
    q with ``column[q] >= 0``, ``out_s[b, k, :, column[q]]`` = dm/dq (q indexes
    ``KERNEL_QUANTITIES``). Releases the GIL (rows run on threads)."""
    n = LANES
    batch, length = current.shape
    active = column >= 0
    tangents = np.any(active)
    w = np.zeros(_SLOTS * n)
    state = np.empty((n, 4), dtype=np.uint64)
    half, sixth = 0.5 * dt, dt / 6.0
    for first in range(0, batch, n):
        valid = min(n, batch - first)
        noisy = False
        w[:] = 0.0
        for l in range(n):
            b = first + l if l < valid else first  # spare lanes repeat the block's first row
            a = alpha[b]
            g = GAMMA_E * MU0 / (1.0 + a * a)
            w[_A * n + l], w[_HKS * n + l], w[_HDS * n + l] = a, hk[b], hd[b]
            w[_HX * n + l], w[_CSS * n + l] = hext[b], cs[b]
            w[_G * n + l], w[_DG * n + l] = g, -2.0 * a * g / (1.0 + a * a)
            for i in range(3):
                w[(_M + i) * n + l] = m0[i]
            if sigma[b] > 0.0:
                noisy = True
                rng_init(seeds[b], state[l])
        for t in range(length):
            for l in range(n):
                cur = current[first + l if l < valid else first, t]
                w[_I * n + l] = cur
                w[_HS * n + l] = w[_CSS * n + l] * cur
            for _ in range(n_sub):
                if noisy:  # one thermal field per step, held over its four stages
                    for l in range(n):
                        b = first + l if l < valid else first
                        x0, x1 = rng_normal_pair(state[l])
                        x2, _unused = rng_normal_pair(state[l])
                        w[_XI * n + l], w[(_XI + 1) * n + l], w[(_XI + 2) * n + l] = x0, x1, x2
                        w[_HTH * n + l] = sigma[b] * x0
                        w[(_HTH + 1) * n + l] = sigma[b] * x1
                        w[(_HTH + 2) * n + l] = sigma[b] * x2
                for i in range(3 * n):
                    w[_K * n + i] = 0.0
                    w[_ACC * n + i] = 0.0
                for i in range(3 * len(KERNEL_QUANTITIES) * n):
                    w[_SACC * n + i] = 0.0
                for stage in range(4):
                    c = 0.0 if stage == 0 else (half if stage < 3 else dt)
                    weight = 2.0 if stage == 1 or stage == 2 else 1.0
                    _rates(w, c)
                    for i in range(3 * n):
                        w[_ACC * n + i] += weight * w[_K * n + i]
                    if tangents:
                        _jacobian(w)
                        _tangents(w, active, c, weight)
                # m + dt/6 (k1 + 2 k2 + 2 k3 + k4), renormalised: m = u / |u|,
                # dm = (du - m (m . du)) / |u|
                for l in range(n):
                    ux = w[_M * n + l] + sixth * w[_ACC * n + l]
                    uy = w[(_M + 1) * n + l] + sixth * w[(_ACC + 1) * n + l]
                    uz = w[(_M + 2) * n + l] + sixth * w[(_ACC + 2) * n + l]
                    r = math.sqrt(ux * ux + uy * uy + uz * uz)
                    w[_MT * n + l] = r
                    w[_M * n + l], w[(_M + 1) * n + l], w[(_M + 2) * n + l] = ux / r, uy / r, uz / r
                for q in range(len(KERNEL_QUANTITIES)):
                    if active[q]:
                        o, a = (_S + 3 * q) * n, (_SACC + 3 * q) * n
                        for l in range(n):
                            mx, my, mz, r = (
                                w[_M * n + l],
                                w[(_M + 1) * n + l],
                                w[(_M + 2) * n + l],
                                w[_MT * n + l],
                            )
                            vx = w[o + l] + sixth * w[a + l]
                            vy = w[o + n + l] + sixth * w[a + n + l]
                            vz = w[o + 2 * n + l] + sixth * w[a + 2 * n + l]
                            dot = mx * vx + my * vy + mz * vz
                            w[o + l] = (vx - mx * dot) / r
                            w[o + n + l] = (vy - my * dot) / r
                            w[o + 2 * n + l] = (vz - mz * dot) / r
            for l in range(valid):
                for i in range(3):
                    out_m[first + l, t, i] = w[(_M + i) * n + l]
                    for q in range(len(KERNEL_QUANTITIES)):
                        if active[q]:
                            out_s[first + l, t, i, column[q]] = w[(_S + 3 * q + i) * n + l]


#: Below this many RK4 steps per call, threads cost more than they save.
_THREADED_MIN_STEPS = 200_000


def thermal_field_std(
    alpha: Any, Ms_A_per_m: Any, volume_m3: Any, temperature_K: float, step_s: float
) -> Any:
    """Std (A/m) of each thermal-field component held over one step of ``step_s`` (Brown):
    ``sqrt(2 a kB T / (gamma mu0^2 Ms V dt))``."""
    return (
        2.0 * alpha * K_BOLTZMANN * temperature_K / (GAMMA_E * MU0 * MU0 * Ms_A_per_m * volume_m3 * step_s)
    ) ** 0.5


def row_seeds(seed: int | Sequence[int] | np.ndarray, batch: int) -> np.ndarray:
    """One 64-bit noise seed per drive: drawn from ``default_rng(seed)`` or given per row."""
    if np.ndim(seed) == 0:
        return np.random.default_rng(int(seed)).integers(
            0, 2**64 - 1, size=batch, dtype=np.uint64, endpoint=True
        )
    seeds = np.asarray(seed, dtype=np.uint64)
    if seeds.shape != (batch,):
        raise ConfigError(f"need one noise seed per drive ({batch}), got shape {seeds.shape}")
    return seeds


def _integrate(
    quantities: Mapping[str, np.ndarray],
    current: np.ndarray,
    dt_s: float,
    *,
    max_step_s: float,
    initial_tilt_rad: float,
    seeds: np.ndarray,
    wrt: Sequence[str] = (),
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the kernel: ``quantities`` maps each of :data:`KERNEL_QUANTITIES` to a (B,) array;
    returns ``m`` (B, n, 3) and ``dm/dq`` (B, n, 3, len(wrt))."""
    batch, n = current.shape
    n_sub = substeps(float(dt_s), max_step_s)
    column = np.full(len(KERNEL_QUANTITIES), -1, dtype=np.int64)
    for j, q in enumerate(wrt):
        column[KERNEL_QUANTITIES.index(q)] = j
    out_m = np.empty((batch, n, 3))
    out_s = np.empty((batch, n, 3, len(wrt)))
    # writable C arrays only: numba compiles (and caches) one kernel per array type, and a
    # read-only view (what broadcast_to returns) is another type
    rows = [
        np.require(np.broadcast_to(np.asarray(quantities[q], dtype=np.float64), (batch,)), np.float64, "CW")
        for q in KERNEL_QUANTITIES[:4] + ("sigma",)
    ]
    hext = np.require(
        np.broadcast_to(np.asarray(quantities["hext"], dtype=np.float64), (batch,)), np.float64, "CW"
    )
    m0 = np.array([math.cos(initial_tilt_rad), math.sin(initial_tilt_rad), 0.0])
    workers = (threads or os.cpu_count() or 1) if batch * n * n_sub >= _THREADED_MIN_STEPS else 1
    run_rows(
        _kernel,
        batch,
        workers,
        (
            np.require(current, np.float64, "CW"),
            hext,
            *rows,
            np.require(seeds, np.uint64, "CW"),
            out_m,
            out_s,
        ),
        (n_sub, float(dt_s) / n_sub, m0, column),
        "sim-macrospin",
        block=LANES,
    )
    return out_m, out_s


def _kernel_quantities(
    values: Mapping[str, Any], field_T: Any, temperature_K: float, step_s: float
) -> dict[str, Any]:
    """Physical parameters (SI) -> the kernel's quantities (works on floats, arrays, tensors)."""
    cs = HBAR * values["eta"] / (2 * E_CHARGE * MU0 * values["Ms_A_per_m"] * values["volume_m3"])
    sigma = (
        thermal_field_std(values["alpha"], values["Ms_A_per_m"], values["volume_m3"], temperature_K, step_s)
        if temperature_K > 0
        else 0.0
    )
    return {
        "alpha": values["alpha"],
        "hk": values["Hk_A_per_m"],
        "hd": values["Hd_A_per_m"],
        "cs": cs,
        "sigma": sigma,
        "hext": field_T / MU0,
    }


def _check_temperature(temperature_K: Any) -> float:
    if isinstance(temperature_K, bool) or not (
        isinstance(temperature_K, (int, float)) and math.isfinite(temperature_K) and temperature_K >= 0
    ):
        raise ConfigError(f"temperature_K must be a number >= 0 (kelvin), got {temperature_K!r}")
    return float(temperature_K)


class _KernelTrajectory(torch.autograd.Function):
    """m (B, n, 3) from the kernel; backward contracts the forward sensitivities it computed
    for exactly the quantities that need gradients."""

    @staticmethod
    def forward(ctx, alpha, hk, hd, cs, sigma, hext, current, dt_s, options):
        inputs = (alpha, hk, hd, cs, sigma, hext)
        wrt = [q for q, needed in zip(KERNEL_QUANTITIES, ctx.needs_input_grad[:6]) if needed]
        quantities = {q: t.detach().cpu().numpy() for q, t in zip(KERNEL_QUANTITIES, inputs)}
        m, sens = _integrate(quantities, current.detach().cpu().numpy(), dt_s, wrt=wrt, **options)
        ctx.wrt = wrt
        ctx.shapes = [t.shape for t in inputs]
        ctx.save_for_backward(torch.from_numpy(sens))
        return torch.from_numpy(m).to(current.device)

    @staticmethod
    def backward(ctx, grad_m):
        (sens,) = ctx.saved_tensors
        batch = sens.shape[0]
        per_row = torch.bmm(grad_m.to(sens).reshape(batch, 1, -1), sens.reshape(batch, -1, len(ctx.wrt)))[
            :, 0
        ]
        grads = []
        for q, shape in zip(KERNEL_QUANTITIES, ctx.shapes):
            if q not in ctx.wrt:
                grads.append(None)
                continue
            g = per_row[:, ctx.wrt.index(q)]
            grads.append(g.sum() if len(shape) == 0 else g)
        return (*grads, None, None, None)


def trajectory(
    params: MacrospinParams,
    current_A: Tensor,
    field_T: float | Tensor,
    dt_s: float,
    *,
    max_step_s: float = 2e-12,
    initial_tilt_rad: float = 0.05,
    temperature_K: float = 0.0,
    seed: int | Sequence[int] = 0,
    threads: int | None = None,
) -> Tensor:
    """Magnetisation ``m`` (B, n, 3) at the end of each zero-order-held current sample.

    ``current_A`` (B, n) in A, ``field_T`` a number or (B,) tensor (applied along the easy axis),
    ``dt_s`` the sample interval. Differentiable with respect to ``params`` and ``field_T``
    (numba kernel with forward sensitivities); for gradients with respect to the current
    samples use :func:`reference_trajectory`. ``temperature_K`` > 0 adds the thermal field,
    seeded per drive from ``seed`` (an int, or one 64-bit seed per drive).
    """
    current, field = _check_inputs(current_A, field_T, dt_s)
    if current.requires_grad:
        raise ConfigError(
            "trajectory() differentiates with respect to the parameters and the field; "
            "for gradients with respect to the current samples use reference_trajectory()"
        )
    temperature_K = _check_temperature(temperature_K)
    n_sub = substeps(float(dt_s), max_step_s)
    q = _kernel_quantities(
        {name: getattr(params, name) for name in MacrospinParams.DEFAULTS},
        field,
        temperature_K,
        float(dt_s) / n_sub,
    )
    options = {
        "max_step_s": max_step_s,
        "initial_tilt_rad": initial_tilt_rad,
        "seeds": row_seeds(seed, current.shape[0]),
        "threads": threads,
    }
    q = [torch.as_tensor(q[name], dtype=torch.float64) for name in KERNEL_QUANTITIES]
    return _KernelTrajectory.apply(*q, current, float(dt_s), options)


def simulate(
    params: MacrospinParams,
    current_A: Tensor,
    field_T: float | Tensor,
    dt_s: float,
    *,
    reference: bool = False,
    **options: Any,
) -> Tensor:
    """Magnetoresistive voltage ``I R_P [1 + tmr (1 - m_x) / 2]`` (B, n) for currents (B, n).

    ``options`` go to :func:`trajectory` (or :func:`reference_trajectory` with ``reference``).
    """
    integrate = reference_trajectory if reference else trajectory
    m = integrate(params, current_A, field_T, dt_s, **options)
    resistance = params.R_P_ohm * (1 + 0.5 * params.tmr * (1 - m[..., 0]))
    return current_A.to(torch.float64) * resistance


#: d log(kernel quantity) / d log(parameter): cs = hbar eta / (2 e mu0 Ms V), sigma ~ sqrt(a / (Ms V)).
_LOG_CHAIN: dict[str, dict[str, float]] = {
    "alpha": {"alpha": 1.0, "sigma": 0.5},
    "Hk_A_per_m": {"hk": 1.0},
    "Hd_A_per_m": {"hd": 1.0},
    "eta": {"cs": 1.0},
    "Ms_A_per_m": {"cs": -1.0, "sigma": -0.5},
    "volume_m3": {"cs": -1.0, "sigma": -0.5},
    "R_P_ohm": {},
    "tmr": {},
}


def response_and_jacobian(
    values: Mapping[str, np.ndarray],
    current_A: np.ndarray,
    field_T: np.ndarray,
    dt_s: float,
    wrt: Sequence[str] = (),
    *,
    max_step_s: float = 2e-12,
    initial_tilt_rad: float = 0.05,
    temperature_K: float = 0.0,
    seeds: np.ndarray | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Junction voltage (B, n) and its derivatives d V / d log(param) (B, n, len(wrt)), numpy.

    What fitters call: ``values`` maps every :class:`MacrospinParams` name to one value per
    drive (B,), so a batch holds several parameter sets (multi-start fits, grids) at once.
    """
    unknown = sorted(set(wrt) - set(MacrospinParams.DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown macrospin parameter(s) {unknown}; valid: {sorted(MacrospinParams.DEFAULTS)}"
        )
    temperature_K = _check_temperature(temperature_K)
    current = np.asarray(current_A, dtype=np.float64)
    batch = current.shape[0]
    v = {
        k: np.broadcast_to(np.asarray(values[k], dtype=np.float64), (batch,))
        for k in MacrospinParams.DEFAULTS
    }
    n_sub = substeps(float(dt_s), max_step_s)
    q = _kernel_quantities(
        v,
        np.broadcast_to(np.asarray(field_T, dtype=np.float64), (batch,)),
        temperature_K,
        float(dt_s) / n_sub,
    )
    needed = [
        k
        for k in KERNEL_QUANTITIES
        if any(k in _LOG_CHAIN[p] for p in wrt) and (k != "sigma" or temperature_K > 0)
    ]
    m, sens = _integrate(
        q,
        current,
        dt_s,
        wrt=needed,
        max_step_s=max_step_s,
        initial_tilt_rad=initial_tilt_rad,
        threads=threads,
        seeds=seeds if seeds is not None else row_seeds(0, batch),
    )
    r_p, tmr = v["R_P_ohm"][:, None], v["tmr"][:, None]
    volts = current * r_p * (1 + 0.5 * tmr * (1 - m[..., 0]))
    jac = np.zeros((*volts.shape, len(wrt)))
    dv_dmx = -0.5 * current * r_p * tmr
    for col, name in enumerate(wrt):
        if name == "R_P_ohm":
            jac[..., col] = volts
        elif name == "tmr":
            jac[..., col] = 0.5 * current * r_p * tmr * (1 - m[..., 0])
        for quantity, power in _LOG_CHAIN[name].items():
            if quantity in needed:  # dm/dlog p = sum_q power * q * dm/dq
                jac[..., col] += dv_dmx * power * q[quantity][:, None] * sens[..., 0, needed.index(quantity)]
    return volts, jac


# ------------------------------------------------------------------------------------------
# Device
# ------------------------------------------------------------------------------------------
class MacrospinDevice(Device):
    """The macrospin junction as a :class:`spinlab.Device` (``sim:macrospin``).

    Drive volts become current ``bias_A + drive_gain_A_per_V * V``; the response is the junction
    voltage. Default conditions: 3 mA, 50 mT (steady large-angle precession). ``max_steps``
    bounds the RK4 steps per call (samples x substeps), so a 100 ns-grid reservoir drive is
    refused with a pointer to ``sim:vortex`` instead of running for hours. Each drive starts
    from ``m`` tilted by ``initial_tilt_rad`` in the film plane. ``temperature_K``
    switches the thermal field on; ``seed`` seeds a numpy Generator from which every drive draws
    its own noise seed (repeated calls differ, a fresh device with the same seed reproduces).
    """

    def __init__(
        self,
        params: MacrospinParams | None = None,
        *,
        drive_gain_A_per_V: float = 5e-3,
        max_step_s: float = 2e-12,
        initial_tilt_rad: float = 0.05,
        max_steps: int = 200_000,
        temperature_K: float = 0.0,
        threads: int | None = None,
        seed: int = 0,
        limits: SafetyLimits | None = None,
        default_conditions: Mapping[str, float] | None = None,
    ) -> None:
        defaults = {"bias_A": DEFAULT_BIAS_A, "field_T": DEFAULT_FIELD_T, **dict(default_conditions or {})}
        super().__init__(limits or MACROSPIN_LIMITS, defaults)
        self.params = params if params is not None else MacrospinParams()
        if not isinstance(self.params, MacrospinParams):
            raise ConfigError(f"params must be a MacrospinParams, got {type(self.params).__name__}")
        checks = {"drive_gain_A_per_V": drive_gain_A_per_V, "max_step_s": max_step_s}
        for name, value in checks.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(initial_tilt_rad, (int, float)) and 0 < initial_tilt_rad < math.pi / 2):
            raise ConfigError(f"initial_tilt_rad must be in (0, pi/2), got {initial_tilt_rad!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            # 2^64: what the run journal records
            raise ConfigError(f"seed must be an integer in 0 .. 2^64 - 1, got {seed!r}")
        self.temperature_K = _check_temperature(temperature_K)
        self.seed = int(seed)  # every scheme takes a seed (spinlab.registry); recorded in identity()
        self._rng = np.random.default_rng(self.seed)
        self.threads = threads
        self.drive_gain_A_per_V = float(drive_gain_A_per_V)
        self.max_step_s = float(max_step_s)
        self.initial_tilt_rad = float(initial_tilt_rad)
        self.max_steps = max_steps
        self.address = "sim:macrospin"

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "model": "macrospin LLGS (Slonczewski), RK4",
            "params": self.params.as_dict(),
            "drive_gain_A_per_V": self.drive_gain_A_per_V,
            "max_step_s": self.max_step_s,
            "initial_tilt_rad": self.initial_tilt_rad,
            "temperature_K": self.temperature_K,
            "seed": self.seed,
            "default_conditions": dict(self.default_conditions),
            "numba": numba.__version__,
        }

    def _respond(self, drive: np.ndarray, dt_s: float, conditions: dict[str, np.ndarray]) -> np.ndarray:
        steps = drive.shape[1] * substeps(dt_s, self.max_step_s)
        if steps > self.max_steps:
            raise ConfigError(
                f"sim:macrospin would take {steps} RK4 steps of <= {self.max_step_s:.3g} s for this "
                f"{drive.shape[1]}-sample drive at dt = {dt_s:.3g} s (max_steps = {self.max_steps}); "
                "use a shorter drive or finer grid, raise max_steps, or use sim:vortex for long drives"
            )
        seeds = self._rng.integers(0, 2**64 - 1, size=drive.shape[0], dtype=np.uint64, endpoint=True)
        volts, _ = response_and_jacobian(
            self.params.as_dict(),
            conditions["bias_A"][:, None] + self.drive_gain_A_per_V * drive,
            conditions["field_T"],
            dt_s,
            max_step_s=self.max_step_s,
            initial_tilt_rad=self.initial_tilt_rad,
            temperature_K=self.temperature_K,
            seeds=seeds,
            threads=self.threads,
        )
        return volts


#: Options accepted by ``sim:macrospin?...``.
OPTION_SPEC: dict[str, Any] = {
    **{name: float for name in MacrospinParams.DEFAULTS},
    "drive_gain_A_per_V": float,
    "max_step_s": float,
    "initial_tilt_rad": float,
    "max_steps": int,
    "temperature_K": float,
    "threads": int,
    "seed": int,
    "params": instance_of(MacrospinParams),
    **device_options_spec(),
}


def open_macrospin(**options: Any) -> MacrospinDevice:
    """Build a :class:`MacrospinDevice` from address/keyword options (see ``OPTION_SPEC``)."""
    opts = coerce_options(options, OPTION_SPEC, where="sim:macrospin")
    overrides = {k: opts.pop(k) for k in list(opts) if k in MacrospinParams.DEFAULTS}
    params = opts.pop("params", None)
    if overrides:
        base = params.as_dict() if params is not None else {}
        params = MacrospinParams(**{**base, **overrides})
    limits, conditions = take_limits_and_conditions(opts, MACROSPIN_LIMITS)
    return MacrospinDevice(params, limits=limits, default_conditions=conditions, **opts)
