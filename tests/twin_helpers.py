"""Small deterministic devices for the twin tests (a twin must learn them quickly)."""

from __future__ import annotations

import math
import time

import numpy as np

from spinlab import Device, SafetyLimits


class LowPassDevice(Device):
    """First-order low-pass of the drive plus a bias term, zero-order-held drive:
    ``tau dy/dt = gain * u + bias_gain * bias_A - y``; sample k is taken at the end of drive
    sample k's hold and the device starts settled at the first sample. ``delay_s`` makes every
    call slow, like a real instrument."""

    def __init__(self, tau_s=3e-7, gain=0.02, bias_gain_V_per_A=2.0, delay_s=0.0, limits=None):
        super().__init__(limits or SafetyLimits(), {"bias_A": 7.5e-3, "field_T": 0.0})
        self.tau_s, self.gain, self.bias_gain, self.delay_s = tau_s, gain, bias_gain_V_per_A, delay_s
        self.calls = 0
        self.address = "test:lowpass"

    def _respond(self, drive, dt_s, conditions):
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        a = math.exp(-dt_s / self.tau_s)
        target = self.gain * drive + self.bias_gain * conditions["bias_A"][:, None]
        out = np.empty_like(drive)
        y = target[:, 0].copy()
        for k in range(drive.shape[1]):
            y = a * y + (1 - a) * target[:, k]
            out[:, k] = y
        return out


def write_mumax_table(path, n=3000, dt_s=5e-12, seed=0, dmi_amplitude=3e-4, columns=None):
    """A small MuMax3-format table (tab separated, '# name (unit)' header) of a known system:
    mz relaxes (tau = 10 samples) towards a level set by the anisotropy drive Ku1 (4 GHz,
    a random amplitude each period) with a gain and an offset set by the slowly modulated DMI
    (0.4 GHz, random amplitudes): a two-input twin must use both to predict it."""
    rng = np.random.default_rng(seed)
    t = 1e-9 + np.arange(n) * dt_s
    fast, slow = 4e9, 4e8
    a = rng.uniform(-1, 1, int(n * dt_s * fast) + 2)[(np.arange(n) * dt_s * fast).astype(int)]
    b = rng.uniform(-1, 1, int(n * dt_s * slow) + 2)[(np.arange(n) * dt_s * slow).astype(int)]
    ku = 8e5 + 5e4 * a * np.sin(2 * np.pi * fast * (t - t[0]))
    dmi = 3e-3 + dmi_amplitude * b * np.sin(2 * np.pi * slow * (t - t[0]))
    d = (dmi - 3e-3) / 3e-4
    target = 0.93 + 0.02 * d + 0.03 * (1 + 0.5 * d) * (ku - 8e5) / 5e4
    mz = np.empty(n)
    y, alpha = target[0], math.exp(-1 / 10)
    for i in range(n):
        y = alpha * y + (1 - alpha) * target[i]
        mz[i] = y
    data = {
        "t": ("s", t),
        "mx": ("", np.zeros(n)),
        "my": ("", np.zeros(n)),
        "mz": ("", mz),
        "Ku1.region100": ("J/m3", ku),
        "Dind.region100": ("J/m2", dmi),
    }
    names = columns or list(data)
    header = "# " + "\t".join(f"{k} ({data[k][0]})" for k in names)
    np.savetxt(
        path,
        np.stack([data[k][1] for k in names], axis=1),
        delimiter="\t",
        header=header,
        comments="",
        fmt="%.9g",
    )
    return path
