"""The vortex auto-oscillator in torch: differentiable, parallel in time, checked against numba.

Same model as :mod:`spinlab.sim_backends.vortex` at ``noise=0`` (the mean-field power, with
the thermal force's mean ``2 D`` kept), detector output ``detector_V_per_p * p``. Over each
zero-order-held sample the power obeys a Riccati equation, whose exact solution is a Moebius
map of the power at the start of the sample::

    p' = ((1 + g r2) p - g r1 r2) / (g p + 1 - g r1)     ~   M = [[1 + g r2, -g r1 r2], [g, 1 - g r1]]

(r1 >= 0 >= r2 the roots of ``a p - b p^2 + c``, ``g = b (1 - exp(-k dt)) / k``; all four
entries are positive). The power after sample k is the product ``M_k ... M_0`` applied to the
start, so instead of a 10^5-step loop of tiny ops the whole record is an associative scan of
2 x 2 products: ~2 log2(n) big vectorised ops that autograd (and a GPU) handle well. Each
product is divided by its entry sum (a Moebius map does not change under scaling), so long
records neither overflow nor underflow; positive entries keep the products well conditioned.

Why not the numba kernel: fitting (``spinlab fit-physics``) and task optimisation
(``spinlab optimise``) need gradients with respect to the parameters, the bias and the drive.
The numba kernel stays the device's fast path (and its noise model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from spinlab.errors import ConfigError
from spinlab.sim_backends.vortex import _BETA_FLOOR, VortexParams

#: Parameters the power output depends on (the RF ones do not enter it).
POWER_PARAMS = (
    "threshold_A",
    "Q",
    "gamma_G_per_s",
    "drive_gain_A_per_V",
    "detector_V_per_p",
    "thermal_power",
    "threshold_slope_per_T",
)


def _compose(later: tuple[Tensor, ...], earlier: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``later @ earlier`` for 2 x 2 matrices stored as (a, b, c, d), divided by the entry sum."""
    a1, b1, c1, d1 = later
    a0, b0, c0, d0 = earlier
    a, b = a1 * a0 + b1 * c0, a1 * b0 + b1 * d0
    c, d = c1 * a0 + d1 * c0, c1 * b0 + d1 * d0
    total = a + b + c + d
    return a / total, b / total, c / total, d / total


def prefix_products(m: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inclusive prefix products ``M_k ... M_0`` along the last axis (work-efficient scan:
    pair neighbours, recurse on the pairs, fill in the even positions)."""
    n = m[0].shape[-1]
    if n == 1:
        return m
    even = tuple(x[..., 0 : n - n % 2 : 2] for x in m)
    odd = tuple(x[..., 1::2] for x in m)
    pairs = prefix_products(_compose(odd, even))  # prefix at 1, 3, 5, ...
    before = tuple(x[..., :-1] for x in pairs) if n % 2 == 0 else pairs
    rest = _compose(tuple(x[..., 2::2] for x in m), before)  # prefix at 2, 4, ...
    out = []
    for head, evens, odds in zip(m, rest, pairs):
        evens = torch.cat([head[..., :1], evens], dim=-1)
        merged = torch.stack([evens[..., : odds.shape[-1]], odds], dim=-1).flatten(-2)
        out.append(torch.cat([merged, evens[..., odds.shape[-1] :]], dim=-1))
    return tuple(out)


def _riccati(values: Mapping[str, Tensor], current: Tensor, field_T: Tensor) -> tuple[Tensor, ...]:
    """Stable root r1, other root r2, b and the root distance k of every held sample."""
    gamma = values["gamma_G_per_s"][..., None]
    i_th = (values["threshold_A"] * (1.0 + values["threshold_slope_per_T"] * field_T))[..., None]
    z = current / i_th
    a = 2.0 * gamma * (z - 1.0)
    b = torch.maximum(2.0 * gamma * (values["Q"][..., None] + z), 2.0 * gamma * _BETA_FLOOR)
    c = 2.0 * gamma * values["thermal_power"][..., None]
    disc = torch.sqrt(a * a + 4.0 * b * c)
    big = torch.where(a >= 0, a + disc, a - disc) / (2.0 * b)  # the root computed without cancellation
    small = -c / (b * big)
    r1, r2 = torch.where(a >= 0, big, small), torch.where(a >= 0, small, big)
    return r1, r2, b, disc


def _step(p: Tensor, r1: Tensor, r2: Tensor, b: Tensor, disc: Tensor, t: float) -> Tensor:
    """The exact power after holding for t from power p (the Moebius map of one sample)."""
    g = -b * torch.expm1(-disc * t) / disc
    return ((1.0 + g * r2) * p - g * r1 * r2) / (g * p + 1.0 - g * r1)


def power_response(
    values: Mapping[str, Any],
    drive_V: Tensor,
    bias_A: Any,
    field_T: Any,
    dt_s: float,
    *,
    rest_drive_V: float | None = None,
    points_per_sample: int = 1,
) -> Tensor:
    """Detector voltage (B, n) of the mean-field vortex model for drives ``drive_V`` (B, n).

    ``values`` maps :data:`POWER_PARAMS` (missing ones take the :class:`VortexParams`
    defaults) to numbers or tensors of one value per drive (batches of parameter sets);
    ``bias_A`` and ``field_T`` are numbers or (B,) tensors. The oscillator starts settled at
    the first sample's current (like ``sim:vortex``) or, with ``rest_drive_V``, at the current
    of that drive level (a bench that idles there between records). Each output sample is the
    mean power at ``points_per_sample`` instants equally spaced over its hold, the last at its
    end (1: the end of the hold, as ``sim:vortex``). Differentiable in all of them, the drive
    included.
    """
    if not isinstance(drive_V, Tensor) or drive_V.ndim != 2:
        raise ConfigError("drive_V must be a torch tensor of shape (batch, n)")
    unknown = sorted(set(values) - {f.name for f in fields(VortexParams)})
    if unknown:
        raise ConfigError(f"unknown vortex parameter(s) {unknown}; valid: {list(POWER_PARAMS)}")
    defaults = VortexParams()
    like = {"dtype": torch.float64, "device": drive_V.device}  # runs where the drive is (CPU, GPU)
    batch = drive_V.shape[0]
    v = {k: torch.as_tensor(values.get(k, getattr(defaults, k)), **like).expand(batch) for k in POWER_PARAMS}
    bias = torch.as_tensor(bias_A, **like).expand(batch)
    field = torch.as_tensor(field_T, **like).expand(batch)
    drive = drive_V.to(torch.float64)
    current = bias[:, None] + v["drive_gain_A_per_V"][:, None] * drive
    r1, r2, b, disc = _riccati(v, current, field)
    g = -b * torch.expm1(-disc * float(dt_s)) / disc
    first = (
        current[:, :1]
        if rest_drive_V is None
        else bias[:, None] + v["drive_gain_A_per_V"][:, None] * float(rest_drive_V)
    )
    p0 = _riccati(v, first, field)[0]  # settled: the steady power there
    a, b_, c, d = prefix_products((1.0 + g * r2, -g * r1 * r2, g, 1.0 - g * r1))
    power = (a * p0 + b_) / (c * p0 + d)  # at the end of every hold
    if points_per_sample > 1:  # each hold's power at m instants, from the previous hold's end
        before = torch.cat([p0, power[:, :-1]], dim=1)
        power = (
            sum(
                _step(before, r1, r2, b, disc, float(dt_s) * m / points_per_sample)
                for m in range(1, points_per_sample + 1)
            )
            / points_per_sample
        )
    return v["detector_V_per_p"][:, None] * power


__all__ = ["POWER_PARAMS", "power_response", "prefix_products"]
