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
