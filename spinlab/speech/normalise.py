"""Feature normalisation that removes what a voice adds: per channel, per speaker or per utterance.

A voice shifts and scales the cochleagram's channels (vocal tract, loudness, microphone); a
readout trained on a few voices learns those offsets too. Three normalisations, each fitted on
the training set only:

- ``channel``: one mean and std per channel over all training frames (what the protocol did);
- ``speaker``: each speaker's frames standardised with that speaker's own channel statistics,
  then ``channel`` on top. A speaker's statistics come from their own utterances alone and
  need no labels, so a new voice is normalised from its own (unlabelled) recordings;
- ``utterance``: cepstral-mean-and-variance style (CMVN), every utterance standardised by its
  own channel statistics, then ``channel`` on top; needs nothing but the utterance itself.

The same idea after the device (``STATE_NORMALISATIONS``): each voice's pooled reservoir states
standardised by that voice's own statistics (:func:`by_voice`), what is left of the voice once
the reservoir has mixed the channels.

A saved readout (:class:`~spinlab.speech.readout.DigitReadout`) hears one voice at a time: it
keeps that voice's :class:`VoiceStats`, from enrolment words, or those of the training voices
pooled until a voice is enrolled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spinlab.errors import ConfigError
from spinlab.speech.features import ChannelNormalizer

NORMALISATIONS = ("channel", "speaker", "utterance")
#: Normalisations of the pooled reservoir states: none, or each voice by its own statistics.
STATE_NORMALISATIONS = ("none", "speaker")
#: Source of the voice statistics a readout uses before any voice is enrolled.
TRAINING_VOICES = "training voices"


@dataclass(frozen=True)
class VoiceStats:
    """One voice's channel mean and std (of unlabelled frames) and whose they are."""

    mean: np.ndarray
    std: np.ndarray
    source: str

    @classmethod
    def of(cls, features: Sequence[np.ndarray], source: str) -> VoiceStats:
        """The statistics of all frames (or pooled rows) of ``features``."""
        return cls(*channel_stats(np.concatenate([np.atleast_2d(f) for f in features])), source)


def channel_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (a constant channel gets std 1, so it stays 0, not NaN)."""
    frames = np.asarray(frames, dtype=np.float64)
    std = frames.std(axis=0)
    return frames.mean(axis=0), np.where(std > 0, std, 1.0)


def standardise(frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``frames`` with a channel mean and std removed: ``stats`` or their own."""
    mean, std = channel_stats(frames) if stats is None else stats
    return (np.asarray(frames, dtype=np.float64) - mean) / std


class VoiceNormaliser:
    """``kind`` normalisation (:data:`NORMALISATIONS`), fitted on training utterances only."""

    def __init__(self, kind: str = "channel") -> None:
        if kind not in NORMALISATIONS:
            raise ConfigError(f"normalisation {kind!r} is unknown; use one of {list(NORMALISATIONS)}")
        self.kind = kind
        self.channel = ChannelNormalizer()
        self.training_voices: VoiceStats | None = None

    def fit(self, features: Sequence[np.ndarray], speakers: Sequence[str]) -> VoiceNormaliser:
        self.channel.fit(self._voice_free(features, speakers))
        if self.kind == "speaker":
            self.training_voices = VoiceStats.of(features, TRAINING_VOICES)
        return self

    def transform(
        self, features: Sequence[np.ndarray], speakers: Sequence[str], voices: Sequence[bool] | None = None
    ) -> list[np.ndarray]:
        """Normalised copies; ``speaker`` statistics come from the utterances passed here with the
        same speaker name, or from those of them marked in ``voices`` (a few words of a new voice,
        as a lab would have before it recognises anything)."""
        return [self.channel.transform(f) for f in self._voice_free(features, speakers, voices)]

    def _voice_free(
        self, features: Sequence[np.ndarray], speakers: Sequence[str], voices: Sequence[bool] | None = None
    ) -> list[np.ndarray]:
        if len(speakers) != len(features):
            raise ConfigError(f"need one speaker per utterance ({len(features)}), got {len(speakers)}")
        if self.kind == "channel":
            return [np.asarray(f, dtype=np.float64) for f in features]
        if self.kind == "utterance":
            return [standardise(f) for f in features]
        use = [True] * len(features) if voices is None else list(voices)
        if not all(any(v for t, v in zip(speakers, use) if t == s) for s in set(speakers)):
            raise ConfigError("every speaker needs at least one utterance for its voice statistics")
        own = {
            s: channel_stats(np.concatenate([f for f, t, v in zip(features, speakers, use) if t == s and v]))
            for s in set(speakers)
        }
        return [standardise(f, own[s]) for f, s in zip(features, speakers)]


def voice_free(features: np.ndarray, kind: str, voice: VoiceStats | None = None) -> np.ndarray:
    """One utterance with what its voice adds removed, before the channel normalisation: by
    ``voice``'s statistics (``speaker``), by its own (``utterance``), unchanged (``channel``)."""
    if kind == "utterance":
        return standardise(features)
    if kind == "speaker":
        if voice is None:
            raise ConfigError("speaker normalisation needs the voice's statistics (enrol the voice)")
        return standardise(features, (voice.mean, voice.std))
    return np.asarray(features, dtype=np.float64)


def by_voice(rows: Sequence[np.ndarray], voices: Sequence[str]) -> list[np.ndarray]:
    """Readout inputs (one pooled row per utterance) with each voice's rows standardised by that
    voice's own mean and std over its utterances (no labels needed)."""
    if len(voices) != len(rows):
        raise ConfigError(f"need one voice per utterance ({len(rows)}), got {len(voices)}")
    voices = np.asarray(voices)
    out = [np.asarray(r, dtype=np.float64) for r in rows]
    for v in np.unique(voices):
        mine = np.flatnonzero(voices == v)
        stats = VoiceStats.of([out[i] for i in mine], str(v))
        for i in mine:
            out[i] = (out[i] - stats.mean) / stats.std
    return out
