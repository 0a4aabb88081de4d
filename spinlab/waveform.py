"""The one data type that crosses package boundaries: samples with their time base and unit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinlab.errors import WaveformError


@dataclass(frozen=True, eq=False)
class Waveform:
    """Uniformly sampled signal, optionally a batch of equal-length signals.

    ``samples`` has shape ``(n,)`` for one signal or ``(batch, n)`` for a batch; the last axis is
    time. ``dt_s`` is the sample interval in seconds, ``unit`` the physical unit of the samples
    (``"V"`` for drives and detector outputs). Construction rejects NaN/inf samples and a
    non-positive sample interval, so a valid Waveform is always safe to hand to a backend.
    """

    samples: np.ndarray
    dt_s: float
    unit: str = "V"
    t0_s: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.dtype.kind not in "fiu":
            raise WaveformError(f"waveform samples must be real numbers, got dtype {samples.dtype}")
        if samples.dtype.kind != "f":
            samples = samples.astype(np.float64)
        if samples.ndim not in (1, 2):
            raise WaveformError(
                f"waveform samples must have shape (n,) or (batch, n), got shape {samples.shape}"
            )
        if samples.shape[-1] == 0:
            raise WaveformError("waveform has no samples")
        if not np.all(np.isfinite(samples)):
            bad = np.flatnonzero(~np.isfinite(samples.reshape(-1)))
            raise WaveformError(
                f"waveform has {bad.size} non-finite sample(s) (NaN or inf), first at flat index "
                f"{int(bad[0])}; clean the data before sending it anywhere"
            )
        try:
            dt = float(self.dt_s)
        except (TypeError, ValueError):
            raise WaveformError(
                f"sample interval dt_s must be a number of seconds, got {self.dt_s!r}"
            ) from None
        if not np.isfinite(dt) or dt <= 0:
            raise WaveformError(f"sample interval dt_s must be a positive number, got {self.dt_s!r}")
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "dt_s", dt)
        object.__setattr__(self, "t0_s", float(self.t0_s))
        object.__setattr__(self, "meta", dict(self.meta))

    # --- shape -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of samples per signal."""
        return int(self.samples.shape[-1])

    @property
    def batched(self) -> bool:
        return self.samples.ndim == 2

    @property
    def batch_size(self) -> int:
        return int(self.samples.shape[0]) if self.batched else 1

    @property
    def duration_s(self) -> float:
        return self.n * self.dt_s

    @property
    def sample_rate_Hz(self) -> float:
        return 1.0 / self.dt_s

    def __len__(self) -> int:
        return self.n

    def time_s(self) -> np.ndarray:
        """Sample times in seconds."""
        return self.t0_s + self.dt_s * np.arange(self.n)

    # --- derived waveforms -----------------------------------------------------------------
    def with_samples(self, samples: np.ndarray, unit: str | None = None, **meta: Any) -> Waveform:
        """Same time base, new samples (and optionally unit / extra metadata)."""
        return Waveform(samples, self.dt_s, unit or self.unit, self.t0_s, {**self.meta, **meta})

    def as_batch(self) -> Waveform:
        """This waveform with a leading batch axis (a no-op when already batched)."""
        return self if self.batched else self.with_samples(self.samples[None, :])

    def item(self, index: int) -> Waveform:
        """One signal of a batch."""
        return self.with_samples(self.as_batch().samples[index])

    def split(self, max_samples: int) -> list[Waveform]:
        """Consecutive pieces of at most ``max_samples`` samples (time axis), in order."""
        if max_samples < 1:
            raise WaveformError(f"max_samples must be >= 1, got {max_samples}")
        return [
            Waveform(
                self.samples[..., i : i + max_samples],
                self.dt_s,
                self.unit,
                self.t0_s + i * self.dt_s,
                self.meta,
            )
            for i in range(0, self.n, max_samples)
        ]

    @staticmethod
    def concatenate(pieces: Sequence[Waveform]) -> Waveform:
        """Join pieces along time; they must share sample interval, unit and batch shape."""
        if not pieces:
            raise WaveformError("nothing to concatenate")
        first = pieces[0]
        for p in pieces[1:]:
            if not np.isclose(p.dt_s, first.dt_s, rtol=1e-9, atol=0.0) or p.unit != first.unit:
                raise WaveformError("cannot concatenate waveforms with different dt_s or unit")
        samples = np.concatenate([p.samples for p in pieces], axis=-1)
        return Waveform(samples, first.dt_s, first.unit, first.t0_s, first.meta)

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.samples.shape)
        return f"Waveform({shape} samples, dt={self.dt_s:.3g} s, unit={self.unit!r})"
