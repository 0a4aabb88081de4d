"""Audio features for the reservoir: Lyon cochleagram (default), MFCC and log-mel spectrogram.

Every extractor maps one utterance (float samples at ``rate_Hz``) to an array ``(frames,
channels)``. The Lyon passive-ear model is what Torrejon et al. (2017) fed their oscillator; at
8 kHz it gives 64 channels and, with decimation 64, 125 frames/s. Its outputs are ~1e-4, so the
features are standardised per channel with :class:`ChannelNormalizer`, fitted on the training
set only (test statistics must never leak into the encoding).

Computing Lyon features for all of FSDD takes ~25 s, so :func:`utterance_features` caches them in
an ``.npz`` keyed by the extractor settings and the files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator
from scipy import fft as sfft
from scipy import signal as ssignal

from spinlab.config import Config, Positive, PositiveInt
from spinlab.errors import ConfigError
from spinlab.speech.audio import FSDD_RATE_HZ, Utterance, speed_perturb

FEATURE_KINDS = ("lyon", "mfcc", "logmel")


class FeatureConfig(Config):
    """Which features, and their frame rate (``rate_Hz / decimation`` frames per second).

    ``kind``: ``lyon`` (cochleagram, 64 channels at 8 kHz), ``mfcc`` (``n_mfcc`` cepstral
    coefficients of an ``n_mels`` mel filterbank) or ``logmel`` (log mel-band energies).
    ``decimation`` is the hop in samples for every kind, so all kinds share a frame rate.
    """

    kind: str = Field("lyon", description="Features: lyon (cochleagram), mfcc or logmel")
    rate_Hz: PositiveInt = Field(FSDD_RATE_HZ, description="Sample rate of the audio")
    decimation: PositiveInt = Field(64, description="Hop between two frames, in samples")
    ear_q: Positive = Field(8.0, description="Quality factor of the Lyon ear's filters")
    n_mels: PositiveInt = Field(40, description="Bands of the mel filterbank (mfcc, logmel)")
    n_mfcc: PositiveInt = Field(13, description="Cepstral coefficients kept (mfcc)")
    window_s: Positive = Field(0.025, description="Length of a spectrogram window (mfcc, logmel)")

    @model_validator(mode="after")
    def _known_kind(self) -> FeatureConfig:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind {self.kind!r} is unknown; use one of {list(FEATURE_KINDS)}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}")
        return self

    @property
    def frame_rate_Hz(self) -> float:
        return self.rate_Hz / self.decimation


#: The default features (a frozen model: one instance shared as the default argument).
DEFAULT_FEATURES = FeatureConfig()


def extract(samples: np.ndarray, config: FeatureConfig = DEFAULT_FEATURES) -> np.ndarray:
    """Features ``(frames, channels)`` of one utterance; at least one frame."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise ConfigError(f"expected one mono signal, got shape {samples.shape}")
    if config.kind == "lyon":
        return lyon_cochleagram(samples, config)
    power = _power_spectrogram(samples, config)
    mel = np.log(power @ _mel_filterbank(config).T + 1e-10)
    if config.kind == "logmel":
        return mel
    return sfft.dct(mel, type=2, axis=1, norm="ortho")[:, : config.n_mfcc]


def lyon_cochleagram(samples: np.ndarray, config: FeatureConfig = DEFAULT_FEATURES) -> np.ndarray:
    """Lyon's passive-ear model (``lyon`` package): ``(len // decimation, channels)``."""
    from lyon.calc import LyonCalc

    # The model's decimation drops a trailing partial frame; pad so short clips keep >= 1 frame.
    if samples.size < config.decimation:
        samples = np.pad(samples, (0, config.decimation - samples.size))
    out = LyonCalc().lyon_passive_ear(
        samples, config.rate_Hz, decimation_factor=config.decimation, ear_q=config.ear_q
    )
    return np.ascontiguousarray(out, dtype=np.float64)


def _power_spectrogram(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    nperseg = int(round(config.window_s * config.rate_Hz))
    nfft = 1 << (nperseg - 1).bit_length()
    padded = np.pad(samples, (0, max(0, nperseg - samples.size)))
    _, _, z = ssignal.stft(
        padded,
        fs=config.rate_Hz,
        window="hann",
        nperseg=nperseg,
        noverlap=nperseg - min(config.decimation, nperseg),
        nfft=nfft,
        boundary=None,
        padded=True,
    )
    return (np.abs(z) ** 2).T


def _mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Triangular filters ``(n_mels, nfft//2+1)`` equally spaced on the mel scale up to Nyquist."""
    nperseg = int(round(config.window_s * config.rate_Hz))
    nfft = 1 << (nperseg - 1).bit_length()
    freqs = np.linspace(0, config.rate_Hz / 2, nfft // 2 + 1)
    mel = lambda f: 2595.0 * np.log10(1 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1)  # noqa: E731
    edges = inv(np.linspace(mel(0.0), mel(config.rate_Hz / 2), config.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None)


class ChannelNormalizer:
    """Per-channel standardisation fitted on training frames (mean 0, std 1 per channel)."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, features: Sequence[np.ndarray]) -> ChannelNormalizer:
        frames = np.concatenate([np.asarray(f) for f in features], axis=0)
        self.mean = frames.mean(axis=0)
        std = frames.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)  # a constant channel stays 0 instead of NaN
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise ConfigError("ChannelNormalizer used before fit(); fit it on the training set")
        if features.shape[-1] != self.mean.size:
            raise ConfigError(
                f"features have {features.shape[-1]} channels, normaliser was fitted on {self.mean.size}"
            )
        return (features - self.mean) / self.std


def utterance_features(
    utterances: Sequence[Utterance],
    config: FeatureConfig = DEFAULT_FEATURES,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    speed: float = 1.0,
) -> list[np.ndarray]:
    """Features of each utterance, in order; read from / written to an ``.npz`` cache if given.

    ``speed`` other than 1 extracts them from a speed-perturbed copy of the audio
    (:func:`spinlab.audio.speed_perturb`: training augmentation for voices not in the data).
    """
    cache_file = None
    if cache_dir is not None:
        key = _cache_key(utterances, config, speed)
        cache_file = Path(cache_dir) / f"features-{config.kind}-{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as data:
                flat, lengths = data["frames"], data["lengths"]
            return np.split(flat, np.cumsum(lengths)[:-1])
    out = []
    for i, utt in enumerate(utterances):
        samples = utt.load()
        out.append(extract(samples if speed == 1.0 else speed_perturb(samples, speed), config))
        if progress is not None:
            progress(i + 1, len(utterances))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: the points of a sweep may write the same cache at once
        tmp = cache_file.with_suffix(f".{secrets.token_hex(6)}.tmp.npz")
        np.savez(tmp, frames=np.concatenate(out), lengths=np.array([len(f) for f in out]))
        os.replace(tmp, cache_file)
    return out


def _cache_key(utterances: Sequence[Utterance], config: FeatureConfig, speed: float = 1.0) -> str:
    settings = config.to_dict() if speed == 1.0 else {**config.to_dict(), "speed": speed}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for utt in utterances:
        st = utt.path.stat()
        h.update(f"{utt.path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
