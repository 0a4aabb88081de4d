"""The auto-oscillator's spectrum (sim_backends.spectrum, sim:vortex.spectrum) against the model's
closed forms, and against an FFT of the time-domain simulation of the same oscillator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from spinlab import Waveform
from spinlab.errors import ConfigError
from spinlab.sim_backends.spectrum import LOAD_OHM, auto_oscillator_line, lorentzian_psd
from spinlab.sim_backends.vortex import VortexDevice, VortexParams


def test_frequency_is_f0_plus_n_times_the_steady_power():
    dev = VortexDevice()
    p = dev.params
    for bias_A in (6e-3, 7.5e-3, 9e-3):
        line = dev.line({"bias_A": bias_A})
        assert line.frequency_Hz == pytest.approx(p.f0_Hz + p.N_Hz * p.steady_power(bias_A), rel=1e-12)
        z = bias_A / p.threshold_A
        assert line.frequency_Hz == pytest.approx(p.f0_Hz + p.N_Hz * (z - 1) / (z + p.Q), rel=2e-3)
    # N recovered from two operating points above threshold
    lo, hi = dev.line({"bias_A": 7e-3}), dev.line({"bias_A": 9e-3})
    n_fit = (hi.frequency_Hz - lo.frequency_Hz) / (p.steady_power(9e-3) - p.steady_power(7e-3))
    assert n_fit == pytest.approx(p.N_Hz, rel=1e-9)


def test_power_onset_at_the_field_dependent_threshold():
    dev = VortexDevice()
    p = dev.params
    for field_T in (0.0, 0.2, 0.4):
        i_th = p.threshold_A * (1 + p.threshold_slope_per_T * field_T)
        below = dev.line({"bias_A": 0.9 * i_th, "field_T": field_T})
        above = dev.line({"bias_A": 1.1 * i_th, "field_T": field_T})
        assert above.power_W > 20 * below.power_W
        # the line's power is the RF output's mean power into 50 ohm
        assert above.power_W == pytest.approx(
            p.rf_V_per_sqrt_p**2 * p.steady_power(1.1 * i_th, field_T) / (2 * LOAD_OHM), rel=1e-12
        )
    # the field moves the frequency twice: f0(B) = f0 (1 + B / B_s) (de Loubens et al. 2009),
    # and through the threshold (a higher field: less power, so less N p)
    for field_T in (0.0, 0.3, 0.5):
        line = dev.line({"bias_A": 7.5e-3, "field_T": field_T})
        f0 = p.f0_Hz * (1 + field_T / p.saturation_field_T)
        assert line.frequency_Hz == pytest.approx(f0 + p.N_Hz * p.steady_power(7.5e-3, field_T), rel=1e-12)
    assert dev.line({"field_T": 0.4}).frequency_Hz > dev.line({"field_T": 0.0}).frequency_Hz


def test_linewidth_closed_forms_and_trends():
    p = VortexParams()
    d = p.gamma_G_per_s * p.thermal_power
    z = np.array([0.3, 0.6, 0.9, 1.2, 1.5, 2.0])
    line = auto_oscillator_line(
        z,
        f0_Hz=p.f0_Hz,
        N_Hz=p.N_Hz,
        gamma_G_per_s=p.gamma_G_per_s,
        Q=p.Q,
        thermal_power=p.thermal_power,
        rf_V_per_sqrt_p=p.rf_V_per_sqrt_p,
    )
    width = line.linewidth_Hz
    # far below threshold: the damped mode's Gamma_G (1 - z) / pi
    assert width[0] == pytest.approx(p.gamma_G_per_s * 0.7 / math.pi, rel=1e-3)
    # above: Gamma_G kT/E(p) (1 + nu^2) / 2 pi with nu = N / (Gamma_G (Q + z))
    p0 = (z[4] - 1) / (z[4] + p.Q)
    nu = 2 * math.pi * p.N_Hz / (p.gamma_G_per_s * (p.Q + z[4]))
    assert width[4] == pytest.approx(d / p0 * (1 + nu**2) / (2 * math.pi), rel=2e-3)
    # the line narrows toward threshold from below and away from it above
    assert np.all(np.diff(width[:3]) < 0) and np.all(np.diff(width[3:]) < 0)


def test_psd_is_a_lorentzian_holding_the_line_power():
    dev = VortexDevice()
    line = dev.line({"bias_A": 7.5e-3})
    f = np.linspace(
        line.frequency_Hz - 2000 * line.linewidth_Hz, line.frequency_Hz + 2000 * line.linewidth_Hz, 400_001
    )
    psd = dev.spectrum({"bias_A": 7.5e-3}, f)
    assert np.trapezoid(psd, f) == pytest.approx(line.power_W, rel=2e-3)
    assert f[psd.argmax()] == pytest.approx(line.frequency_Hz, abs=f[1] - f[0])
    half = f[psd >= psd.max() / 2]
    assert half[-1] - half[0] == pytest.approx(line.linewidth_Hz, rel=0.01)
    with pytest.raises(ConfigError, match="finite"):
        lorentzian_psd([np.nan], line)
    with pytest.raises(ConfigError, match="field_X"):
        dev.spectrum({"field_X": 1.0}, f)


def test_spectrum_of_several_operating_points_has_one_row_each():
    dev = VortexDevice()
    f = np.linspace(290e6, 330e6, 101)
    rows = dev.spectrum({"bias_A": np.array([6e-3, 8e-3]), "field_T": 0.1}, f)
    assert rows.shape == (2, 101)
    np.testing.assert_allclose(rows[1], dev.spectrum({"bias_A": 8e-3, "field_T": 0.1}, f), rtol=1e-12)


def _lorentzian(f, amp, f0, fwhm, floor):
    return amp * (fwhm / 2) ** 2 / ((f - f0) ** 2 + (fwhm / 2) ** 2) + floor


@pytest.mark.parametrize("bias_A", [6.5e-3, 7.5e-3, 9e-3])
def test_spectrum_agrees_with_an_fft_of_the_simulated_rf_signal(bias_A):
    """64 x 164 us of the noisy RF output, Hann-windowed periodograms averaged, a Lorentzian
    fitted: its centre and width are the closed forms' (a slow, wide line so 5 ns samples do)."""
    params = VortexParams(f0_Hz=20e6, N_Hz=10e6, thermal_power=1e-3)
    dev = VortexDevice(params, output="rf", seed=1, threads=2)
    dt, n, rows = 5e-9, 2**15, 64
    y = dev.respond(Waveform(np.zeros((rows, n)), dt), {"bias_A": bias_A}).samples
    periodogram = (np.abs(np.fft.rfft(y * np.hanning(n), axis=1)) ** 2).mean(axis=0)
    f = np.fft.rfftfreq(n, dt)
    line = dev.line({"bias_A": bias_A})
    near = np.abs(f - line.frequency_Hz) < 5 * line.linewidth_Hz
    guess = [periodogram[near].max(), line.frequency_Hz, line.linewidth_Hz, 0.0]
    (_, centre, fwhm, _), _ = curve_fit(_lorentzian, f[near], periodogram[near], p0=guess)
    assert centre == pytest.approx(line.frequency_Hz, abs=0.3 * line.linewidth_Hz)
    assert abs(fwhm) == pytest.approx(line.linewidth_Hz, rel=0.15)


def test_the_time_domain_rf_signal_oscillates_at_the_field_shifted_frequency():
    """The kernel's phase uses the same f0(B) as the spectrum: the RF record's FFT peak sits at
    the line's frequency at 0 T and at 0.5 T (90 MHz apart)."""
    dev = VortexDevice(output="rf", noise=0.0)
    dt, n = 0.25e-9, 1 << 16
    for field_T in (0.0, 0.5):
        cond = {"bias_A": 7.5e-3, "field_T": field_T}
        rf = dev.respond(Waveform(np.zeros(n), dt), cond).samples
        freqs = np.fft.rfftfreq(n, dt)
        peak = freqs[np.argmax(np.abs(np.fft.rfft(rf * np.hanning(n))))]
        assert peak == pytest.approx(dev.line(cond).frequency_Hz, abs=2 / (n * dt))
