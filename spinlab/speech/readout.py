"""A spoken-digit readout that travels: everything that turns audio into a digit, in one file.

`spinlab run spoken-digits` saves ``readout.h5`` in its run directory; `spinlab listen` and
`spinlab enrol` (and Python code: :func:`load_readout`) load it by path. The file holds the
feature settings and their normalisation, the input mask and the encoder scale, the device
address and operating point the readout was trained at, the readout weights and class names,
and the pooled device states of the training set with their labels, speakers and weights, so a
new voice is enrolled by re-fitting on stored states: the training set never goes through the
device again.

Why enrolment weights the new voice: five utterances per digit against thousands of known ones
barely move a ridge fit (measured: 80 % on the new voice's other utterances, against 98 % when
the new voice counts as much as all the known ones together, ``weight = 1``).

A readout trained with per-speaker normalisation (``normalisation = "speaker"``) standardises
every word by its voice's own channel statistics (:mod:`spinlab.speech.normalise`): enrolment takes
them from the new voice's enrolment words; before any enrolment the training voices' pooled
statistics stand in (``voice.source == TRAINING_VOICES``), which recognises a new voice worse.
The same holds for the pooled device states when they are normalised by voice (``state_voice``).

The file format and its checks are :mod:`spinlab.speech.readout_file`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from spinlab.analysis.ridge import RidgeReadout
from spinlab.device import Device
from spinlab.engine.documents import package_versions, to_jsonable
from spinlab.errors import ReadoutError
from spinlab.speech.encoder import Encoder, device_states, piece_states, pool_states
from spinlab.speech.features import ChannelNormalizer, FeatureConfig, extract
from spinlab.speech.normalise import NORMALISATIONS, TRAINING_VOICES, VoiceStats, voice_free
from spinlab.speech.readout_file import (
    FILE_NAME,
    FORMAT,
    FORMAT_VERSION,
    read_readout_file,
    readout_path,
    write_readout_file,
)

#: Relative tolerance when comparing an operating point with the one a readout was trained at.
_REL_TOL = 1e-6


@dataclass
class TrainingStates:
    """Pooled device states of the utterances a readout was fitted on (one row each)."""

    states: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.speakers = np.asarray(self.speakers, dtype=str)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        n = len(self.states)
        if self.states.ndim != 2 or any(len(a) != n for a in (self.labels, self.speakers, self.weights)):
            raise ReadoutError("stored training states, labels, speakers and weights differ in length")


@dataclass
class Recognition:
    """One utterance recognised: the class, the readout's score for every class, stage times."""

    label: str
    index: int
    scores: np.ndarray
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class DigitReadout:
    """Audio -> features -> mask -> device -> pooled states -> ridge readout -> digit."""

    features: FeatureConfig
    normaliser: ChannelNormalizer
    encoder: Encoder
    node_features: str
    segments: int
    ridge: RidgeReadout
    device_address: str
    conditions: dict[str, float]
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))
    training: TrainingStates | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: channel, speaker or utterance (:mod:`spinlab.speech.normalise`), and for ``speaker`` the
    #: statistics of the voice it listens to
    normalisation: str = "channel"
    voice: VoiceStats | None = None
    #: the pooled states' statistics of the voice it listens to, when states are normalised by voice
    state_voice: VoiceStats | None = None

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ReadoutError(
                f"normalisation {self.normalisation!r} is unknown; use one of {list(NORMALISATIONS)}"
            )
        if self.normalisation == "speaker" and self.voice is None:
            raise ReadoutError("a speaker-normalised readout needs voice statistics; retrain it")

    @property
    def rate_Hz(self) -> int:
        """Sample rate the readout's audio must have."""
        return int(self.features.rate_Hz)

    @property
    def voice_unknown(self) -> bool:
        """True when the readout normalises by voice but no voice was enrolled: the training
        voices' statistics stand in for the one it hears."""
        return any(v is not None and v.source == TRAINING_VOICES for v in (self.voice, self.state_voice))

    # --- the pipeline ----------------------------------------------------------------------
    def features_of(self, samples: np.ndarray) -> np.ndarray:
        """Normalised features of one utterance at :attr:`rate_Hz`."""
        return self.normalised(extract(samples, self.features))

    def normalised(self, features: np.ndarray) -> np.ndarray:
        """Raw features of one utterance -> the readout's normalisation (its voice's, then channel)."""
        return self.normaliser.transform(voice_free(features, self.normalisation, self.voice))

    def states(self, device: Device, features: Sequence[np.ndarray], piece_frames: int = 0) -> np.ndarray:
        """Pooled device states ``(utterances, D)`` of normalised features; ``piece_frames`` > 0
        drives each word as pieces side by side (:func:`~spinlab.speech.encoder.piece_states`)."""
        if piece_frames:
            frames = piece_states(
                device, self.encoder, features, self.conditions, self.node_features, piece_frames
            )
            return self._voice_free_states(np.concatenate([pool_states(f, self.segments) for f in frames]))
        pooled = device_states(
            device,
            self.encoder,
            features,
            self.conditions,
            self.node_features,
            reduce=lambda s: pool_states(s, self.segments),
        )
        return self._voice_free_states(np.concatenate(pooled))

    def _voice_free_states(self, pooled: np.ndarray) -> np.ndarray:
        if self.state_voice is None:
            return pooled
        return (pooled - self.state_voice.mean) / self.state_voice.std

    def recognise(
        self, device: Device, samples: Sequence[np.ndarray], piece_frames: int = 0
    ) -> list[Recognition]:
        """Recognise utterances (samples at :attr:`rate_Hz`); one device call for all of them
        (``piece_frames``: see :meth:`states`)."""
        if self.segments == 0:
            raise ReadoutError(
                "this readout scores frames (segments = 0); retrain it with pooled "
                "states (`spinlab run spoken-digits --segments 3`)"
            )
        self.check_device(device)
        t0 = time.perf_counter()
        features = [self.features_of(s) for s in samples]
        t1 = time.perf_counter()
        states = self.states(device, features, piece_frames)
        t2 = time.perf_counter()
        scores = [self.ridge.frame_scores(row[None, :])[0] for row in states]
        t3 = time.perf_counter()
        n = len(samples)
        timings = {"features_s": (t1 - t0) / n, "device_s": (t2 - t1) / n, "readout_s": (t3 - t2) / n}
        return [
            Recognition(self.class_names[int(np.argmax(s))], int(np.argmax(s)), s, dict(timings))
            for s in scores
        ]

    def check_device(self, device: Device, conditions: Mapping[str, float] | None = None) -> None:
        """Refuse a device or operating point other than the one the readout was trained at."""
        if device_key(device.address) != device_key(self.device_address):
            raise ReadoutError(
                f"this readout was trained on {self.device_address}, not {device.address}; pass "
                f"--device {self.device_address}, or train one for {device.address} with "
                f"`spinlab run spoken-digits --device {device.address}`"
            )
        for name, value in (conditions or {}).items():
            trained = self.conditions.get(name)
            if trained is None or not np.isclose(value, trained, rtol=_REL_TOL, atol=0.0):
                raise ReadoutError(
                    f"this readout was trained at {name} = {trained!r}, not {value!r}; leave the "
                    f"option out to use the readout's operating point, or train one at {value!r}"
                )
        if self.encoder.amplitude_V > device.limits.max_drive_V * (1 + _REL_TOL):
            raise ReadoutError(
                f"this readout drives +-{self.encoder.amplitude_V:g} V but {device.address} allows "
                f"+-{device.limits.max_drive_V:g} V; train a readout within this device's limits"
            )

    # --- a new voice -------------------------------------------------------------------------
    def enrol(
        self,
        device: Device,
        samples: Sequence[np.ndarray],
        labels: Sequence[int],
        *,
        speaker: str = "enrolled",
        weight: float = 1.0,
    ) -> DigitReadout:
        """A readout adapted to a new voice: re-fit on the stored training states plus the new
        utterances, the new voice weighing ``weight`` times all stored utterances together."""
        if self.training is None:
            raise ReadoutError(
                "this readout has no stored training states to enrol against; "
                "retrain it with `spinlab run spoken-digits`"
            )
        if not weight > 0:
            raise ReadoutError(f"enrolment weight must be > 0, got {weight}")
        labels = np.asarray(labels, dtype=np.int64)
        if len(samples) == 0 or labels.shape != (len(samples),):
            raise ReadoutError("enrolment needs at least one utterance and one label per utterance")
        self.check_device(device)
        raw = [extract(s, self.features) for s in samples]
        # a voice-normalised readout hears the new voice through its own statistics
        voice = VoiceStats.of(raw, speaker) if self.normalisation == "speaker" else self.voice
        heard = replace(self, voice=voice, state_voice=None)
        new = heard.states(device, [heard.normalised(f) for f in raw])
        if self.state_voice is not None:  # and its reservoir states through their own statistics
            heard = replace(heard, state_voice=VoiceStats.of(new, speaker))
            new = heard._voice_free_states(new)
        old = self.training
        each = weight * float(old.weights.sum()) / len(new)
        training = TrainingStates(
            np.vstack([old.states, new]),
            np.concatenate([old.labels, labels]),
            np.concatenate([old.speakers, np.full(len(new), speaker)]),
            np.concatenate([old.weights, np.full(len(new), each)]),
        )
        ridge = RidgeReadout(alpha=self.ridge.alpha, n_classes=self.ridge.n_classes)
        ridge.fit(training.states[:, None, :], training.labels, training.weights)
        enrolled = list(self.provenance.get("enrolled", [])) + [
            {"speaker": speaker, "utterances": len(new), "weight": weight}
        ]
        return replace(
            heard, ridge=ridge, training=training, provenance={**self.provenance, "enrolled": enrolled}
        )

    # --- storage -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a file, or ``DIR/readout.h5`` for a directory) atomically."""
        path = save_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        enc = self.encoder
        meta = to_jsonable(
            {
                "features": self.features.to_dict(),
                "node_features": self.node_features,
                "segments": self.segments,
                "device_address": self.device_address,
                "conditions": self.conditions,
                "class_names": list(self.class_names),
                "encoder": {
                    "theta_s": enc.theta_s,
                    "samples_per_node": enc.samples_per_node,
                    "amplitude_V": enc.amplitude_V,
                    "input_sigma": enc.input_sigma,
                    "scale": enc.scale,
                },
                "ridge": {"alpha": self.ridge.alpha, "n_classes": self.ridge.n_classes},
                "provenance": {"versions": package_versions(), **self.provenance},
                **(
                    {}
                    if self.normalisation == "channel"
                    else {"normalisation": self.normalisation, "voice": self.voice and self.voice.source}
                ),
                **(
                    {}
                    if self.state_voice is None
                    else {"state_normalisation": "speaker", "state_voice": self.state_voice.source}
                ),
            }
        )
        arrays = {
            "mask": enc.mask,
            "feature_mean": self.normaliser.mean,
            "feature_std": self.normaliser.std,
            "ridge_mean": self.ridge.mean,
            "ridge_std": self.ridge.std,
            "ridge_weights": self.ridge.weights,
        }
        if self.voice is not None:
            arrays.update({"voice_mean": self.voice.mean, "voice_std": self.voice.std})
        if self.state_voice is not None:
            arrays.update(
                {"state_voice_mean": self.state_voice.mean, "state_voice_std": self.state_voice.std}
            )
        if self.training is not None:
            t = self.training
            arrays.update(
                {
                    "training/states": t.states,
                    "training/labels": t.labels,
                    "training/speakers": t.speakers.astype("S"),
                    "training/weights": t.weights,
                }
            )
        # a readout that normalises by voice is version 2: an older spinlab must refuse it, not
        # silently feed it features normalised by channel alone
        plain = self.normalisation == "channel" and self.state_voice is None
        write_readout_file(path, meta, arrays, 1 if plain else 2)
        return path


def save_path(path: str | Path) -> Path:
    """The file :meth:`DigitReadout.save` writes for ``path``: the path itself, or
    ``DIR/readout.h5`` for a directory (or a name without a suffix)."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() or not path.suffix else path


def device_key(address: str) -> str:
    """What identifies a device for a readout: the address without its options, file targets
    (twin checkpoints, station files) as absolute paths."""
    base = str(address).split("?", 1)[0].strip()
    scheme, _, target = base.partition(":")
    if Path(target).suffix in (".pt", ".toml"):
        target = str(Path(target).expanduser().resolve())
    return f"{scheme.lower()}:{target}"


def load_readout(path: str | Path) -> DigitReadout:
    """Read a readout saved by :meth:`DigitReadout.save` (a run directory or the file).

    Nothing is read before it is checked: the file's type and size (:mod:`spinlab.files`), then
    the metadata's settings, then every dataset's link (hard links only: no soft-link loops, no
    external files), storage and declared shape against what the metadata implies, so a hostile
    file costs at most :data:`~spinlab.speech.readout_file.MAX_DATASET_BYTES` per array and never a
    traceback."""
    file = readout_path(path)
    meta, arrays = read_readout_file(file)
    try:
        training = None
        if "training/states" in arrays:
            training = TrainingStates(
                arrays["training/states"],
                arrays["training/labels"],
                arrays["training/speakers"].astype(str),
                arrays["training/weights"],
            )
        e = meta["encoder"]
        encoder = Encoder(
            arrays["mask"],
            e["theta_s"],
            e["samples_per_node"],
            e["amplitude_V"],
            e["input_sigma"],
            e["scale"],
        )
        r = meta["ridge"]
        voice = None
        if "voice_mean" in arrays:
            voice = VoiceStats(arrays["voice_mean"], arrays["voice_std"], str(meta["voice"]))
        state_voice = None
        if "state_voice_mean" in arrays:
            state_voice = VoiceStats(
                arrays["state_voice_mean"], arrays["state_voice_std"], str(meta["state_voice"])
            )
        ridge = RidgeReadout(
            alpha=r["alpha"],
            n_classes=r["n_classes"],
            mean=arrays["ridge_mean"],
            std=arrays["ridge_std"],
            weights=arrays["ridge_weights"],
        )
        readout = DigitReadout(
            FeatureConfig(**meta["features"]),
            ChannelNormalizer(arrays["feature_mean"], arrays["feature_std"]),
            encoder,
            meta["node_features"],
            int(meta["segments"]),
            ridge,
            meta["device_address"],
            {k: float(v) for k, v in meta["conditions"].items()},
            tuple(meta["class_names"]),
            training,
            meta.get("provenance", {}),
            meta.get("normalisation", "channel"),
            voice,
            state_voice,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ReadoutError(
            f"{file} is incompatible with this spinlab ({type(exc).__name__}: "
            f"{str(exc)[:200]}); retrain with `spinlab run spoken-digits`"
        ) from None
    _check_shapes(readout, file)
    return readout


def _check_shapes(readout: DigitReadout, file: Path) -> None:
    """The pieces must chain: features -> mask -> states -> weights -> classes."""
    channels = readout.normaliser.mean.size
    per_frame = readout.encoder.n_nodes * (
        readout.encoder.samples_per_node if readout.node_features == "samples" else 1
    )
    width = per_frame * (readout.segments + 1 if readout.segments else 1)
    problems = []
    if readout.encoder.n_channels != channels:
        problems.append(f"mask has {readout.encoder.n_channels} channels, features {channels}")
    if readout.ridge.weights.shape != (width + 1, len(readout.class_names)):
        problems.append(
            f"weights {readout.ridge.weights.shape} do not fit {width} states and "
            f"{len(readout.class_names)} classes"
        )
    if readout.training is not None and readout.training.states.shape[1] != width:
        problems.append(f"stored training states have width {readout.training.states.shape[1]}, not {width}")
    if problems:
        raise ReadoutError(
            f"{file} is inconsistent ({'; '.join(problems)}); retrain with `spinlab run spoken-digits`"
        )


__all__ = [
    "DigitReadout",
    "Recognition",
    "TrainingStates",
    "load_readout",
    "readout_path",
    "save_path",
    "device_key",
    "FILE_NAME",
    "FORMAT",
    "FORMAT_VERSION",
]
