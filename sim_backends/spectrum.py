"""The power spectral density of a spin-torque auto-oscillator, from its model's parameters.

Why here: a spectrum analyser on an emulated bench must show what the simulated device would
emit, computed from the same physics as its time-domain response (Slavin & Tiberkevich, IEEE
Trans. Magn. 45, 1875 (2009)), not from a table. For the model of :mod:`.vortex`
(``dc/dt = -i omega(p) c - Gamma_G (1 + Q p) c + Gamma_G z (1 - p) c + f``, thermal force
``<f f*> = 2 D delta``, ``D = Gamma_G kT/E0``):

* power: the mean-field steady power ``p`` (``(z-1)/(z+Q)`` above threshold, ``kT/E0 / (1-z)``
  below it, smooth across it);
* frequency: ``f(p) = f0 + N p / (2 pi)`` (``N_Hz`` is ``N / 2 pi``);
* linewidth (full width at half maximum, Hz). Below threshold the damped mode's: its amplitude
  decays at ``Gamma_G [(1 - z) + (Q + z) p] = D / p``, so ``FWHM = D / (pi p)``
  (``Gamma_G (1 - z) / pi`` far below). Above it the phase diffuses (``D / p`` directly, plus
  the power fluctuations turned into phase noise by ``N``):
  ``FWHM = D (1 + nu^2) / (2 pi p)``, i.e. ``Gamma_G (kT/E(p)) (1 + nu^2) / 2 pi`` with
  ``nu = N / (Gamma_G (Q + z))``, the S&T generation linewidth for this model's constant
  noise intensity;
* line shape: a Lorentzian of that width carrying the oscillation's power.

Each limit holds away from threshold: within ``|z - 1| ~ sqrt(kT/E0)`` of it the power
fluctuates as much as it averages, the line is broad and not Lorentzian, and the width jumps
from one form to the other. Where the width approaches the power relaxation rate
``2 Gamma_G (Q + z) p`` the line is between a Lorentzian and a Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinlab.errors import ConfigError

#: Load the RF output is delivered into (ohm), as an analyser's input.
LOAD_OHM = 50.0


@dataclass(frozen=True)
class Line:
    """The oscillator's line at one or more operating points (arrays broadcast together)."""

    frequency_Hz: Any
    linewidth_Hz: Any  # FWHM
    power_W: Any  # total power of the line into the load
    supercriticality: Any  # z = I / I_th


def auto_oscillator_line(
    z: Any,
    *,
    f0_Hz: float,
    N_Hz: float,
    gamma_G_per_s: float,
    Q: float,
    thermal_power: float,
    rf_V_per_sqrt_p: float,
    load_ohm: float = LOAD_OHM,
) -> Line:
    """Frequency, linewidth and power of the auto-oscillator at supercriticality ``z``."""
    z = np.asarray(z, dtype=float)
    g = gamma_G_per_s
    diffusion = g * thermal_power  # D
    a = 2 * g * (z - 1)
    b = 2 * g * np.maximum(Q + z, 1e-3)
    c = 2 * diffusion
    disc = np.sqrt(a * a + 4 * b * c)
    # the stable root of a p - b p^2 + c = 0, each branch in its cancellation-free form
    p = np.where(a >= 0, (a + disc) / (2 * b), 2 * c / np.maximum(disc - a, 1e-300))
    nu = 2 * math.pi * N_Hz / (g * np.maximum(Q + z, 1e-3))
    below = diffusion / (math.pi * p)
    above = diffusion * (1 + nu * nu) / (2 * math.pi * p)
    width = np.where(z > 1, above, below)
    power = rf_V_per_sqrt_p**2 * p / (2 * load_ohm)
    frequency = f0_Hz + N_Hz * p
    return Line(*(np.asarray(x, dtype=float)[()] for x in (frequency, width, power, z)))


def lorentzian_psd(freqs_Hz: Any, line: Line) -> np.ndarray:
    """One-sided power spectral density (W/Hz) of ``line`` at ``freqs_Hz``; integrates to
    ``line.power_W``. Lines and frequencies broadcast (a (B, 1) line over (n,) freqs is (B, n))."""
    f = np.asarray(freqs_Hz, dtype=float)
    if not np.all(np.isfinite(f)):
        raise ConfigError("spectrum frequencies must be finite numbers of Hz")
    half = np.asarray(line.linewidth_Hz, dtype=float) / 2
    shape = half / (math.pi * ((f - line.frequency_Hz) ** 2 + half**2))
    return np.asarray(line.power_W * shape)
