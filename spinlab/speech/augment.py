"""Vocal-tract-length perturbation (VTLP) of a cochleagram: training copies in other voices.

A shorter vocal tract puts every formant higher by about the same factor, so a new voice is, to
first order, the same spectrum on a stretched frequency axis. VTLP (Jaitly & Hinton, ICML 2013
workshop) warps the frequency axis of each training utterance by a factor ``alpha`` near 1
(0.9..1.1): a component at ``f`` moves to ``alpha f`` up to a boundary frequency, above which the
warp is linear so that the Nyquist frequency stays put. Here the warp acts on finished features
(channels at known centre frequencies) by interpolation across channels, so a warped copy costs
no audio processing, unlike :func:`spinlab.speech.audio.speed_perturb`, which also changes
the tempo.
"""

from __future__ import annotations

import numpy as np

from spinlab.errors import ConfigError
from spinlab.speech.features import FeatureConfig

#: Warp factors outside this range are no longer "another adult voice".
VTLP_RANGE = (0.7, 1.4)


def channel_frequencies(config: FeatureConfig) -> np.ndarray:
    """Centre frequency (Hz) of every feature channel, in the features' channel order."""
    if config.kind == "lyon":
        from lyon.utils import design_lyon_filters

        _, centre = design_lyon_filters(config.rate_Hz, config.ear_q, config.ear_q / 32)
        return np.asarray(centre, dtype=np.float64)
    if config.kind == "logmel":
        mel = lambda f: 2595.0 * np.log10(1 + f / 700.0)  # noqa: E731
        edges = np.linspace(mel(0.0), mel(config.rate_Hz / 2), config.n_mels + 2)[1:-1]
        return 700.0 * (10 ** (edges / 2595.0) - 1)
    raise ConfigError(f"VTLP needs features on a frequency axis (lyon or logmel), not {config.kind!r}")


def warp_frequency(f_Hz: np.ndarray, alpha: float, nyquist_Hz: float, boundary: float = 0.8) -> np.ndarray:
    """Where VTLP moves a component at ``f_Hz``: ``alpha f`` below ``boundary * nyquist *
    min(alpha, 1) / alpha``, then a straight line to the Nyquist frequency (monotonic, 0 -> 0)."""
    knee = boundary * nyquist_Hz * min(alpha, 1.0) / alpha
    return np.interp(f_Hz, [0.0, knee, nyquist_Hz], [0.0, alpha * knee, nyquist_Hz])


def vtlp(
    features: np.ndarray, alpha: float, centre_Hz: np.ndarray, nyquist_Hz: float, boundary: float = 0.8
) -> np.ndarray:
    """One utterance's features ``(frames, channels)`` as said by a vocal tract ``1/alpha`` as long:
    the output channel at ``f`` reads the input spectrum at ``warp^-1(f)`` (linear interpolation
    between channels, the edge channel beyond the range)."""
    lo, hi = VTLP_RANGE
    if not lo <= alpha <= hi:
        raise ConfigError(f"VTLP factor must be in [{lo}, {hi}], got {alpha}")
    features = np.asarray(features, dtype=np.float64)
    centre_Hz = np.asarray(centre_Hz, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != centre_Hz.size:
        raise ConfigError(f"features must have shape (frames, {centre_Hz.size}), got {features.shape}")
    if alpha == 1.0:
        return features.copy()
    order = np.argsort(centre_Hz)
    ascending = centre_Hz[order]
    knee_in = boundary * nyquist_Hz * min(alpha, 1.0) / alpha
    source = np.interp(ascending, [0.0, alpha * knee_in, nyquist_Hz], [0.0, knee_in, nyquist_Hz])
    position = np.interp(source, ascending, np.arange(ascending.size, dtype=np.float64))
    left = np.floor(position).astype(int)
    right = np.minimum(left + 1, ascending.size - 1)
    weight = position - left
    sorted_features = features[:, order]
    warped = sorted_features[:, left] * (1.0 - weight) + sorted_features[:, right] * weight
    out = np.empty_like(warped)
    out[:, order] = warped
    return out
