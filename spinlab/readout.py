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

HDF5 with plain arrays and one JSON attribute (nothing executes on load), written atomically,
with a format marker and version like the twin checkpoints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from spinlab.device import Device
from spinlab.errors import ReadoutError
from spinlab.features import ChannelNormalizer, FeatureConfig, extract, utterance_features
from spinlab.files import check_file
from spinlab.reservoir import (MAX_CHANNELS, MAX_NODES, MAX_SAMPLES_PER_NODE, Encoder, RidgeReadout,
                               device_states, fit_cv, piece_states, pool_states)
from spinlab.engine.documents import package_versions, to_jsonable

FORMAT = "spinlab-digit-readout"
FORMAT_VERSION = 1
#: Name of the readout file inside a run directory.
FILE_NAME = "readout.h5"
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

    @property
    def rate_Hz(self) -> int:
        """Sample rate the readout's audio must have."""
        return int(self.features.rate_Hz)

    # --- the pipeline ----------------------------------------------------------------------
    def features_of(self, samples: np.ndarray) -> np.ndarray:
        """Normalised features of one utterance at :attr:`rate_Hz`."""
        return self.normaliser.transform(extract(samples, self.features))

    def states(self, device: Device, features: Sequence[np.ndarray], piece_frames: int = 0) -> np.ndarray:
        """Pooled device states ``(utterances, D)`` of normalised features; ``piece_frames`` > 0
        drives each word as pieces side by side (:func:`~spinlab.reservoir.piece_states`)."""
        if piece_frames:
            frames = piece_states(device, self.encoder, features, self.conditions, self.node_features, piece_frames)
            return np.concatenate([pool_states(f, self.segments) for f in frames])
        pooled = device_states(device, self.encoder, features, self.conditions, self.node_features,
                               reduce=lambda s: pool_states(s, self.segments))
        return np.concatenate(pooled)

    def recognise(self, device: Device, samples: Sequence[np.ndarray], piece_frames: int = 0) -> list[Recognition]:
        """Recognise utterances (samples at :attr:`rate_Hz`); one device call for all of them
        (``piece_frames``: see :meth:`states`)."""
        if self.segments == 0:
            raise ReadoutError("this readout scores frames (segments = 0); retrain it with pooled "
                               "states (`spinlab run spoken-digits --segments 3`)")
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
        return [Recognition(self.class_names[int(np.argmax(s))], int(np.argmax(s)), s, dict(timings))
                for s in scores]

    def check_device(self, device: Device, conditions: Mapping[str, float] | None = None) -> None:
        """Refuse a device or operating point other than the one the readout was trained at."""
        if device_key(device.address) != device_key(self.device_address):
            raise ReadoutError(
                f"this readout was trained on {self.device_address}, not {device.address}; pass "
                f"--device {self.device_address}, or train one for {device.address} with "
                f"`spinlab run spoken-digits --device {device.address}`")
        for name, value in (conditions or {}).items():
            trained = self.conditions.get(name)
            if trained is None or not np.isclose(value, trained, rtol=_REL_TOL, atol=0.0):
                raise ReadoutError(
                    f"this readout was trained at {name} = {trained!r}, not {value!r}; leave the "
                    f"option out to use the readout's operating point, or train one at {value!r}")
        if self.encoder.amplitude_V > device.limits.max_drive_V * (1 + _REL_TOL):
            raise ReadoutError(
                f"this readout drives +-{self.encoder.amplitude_V:g} V but {device.address} allows "
                f"+-{device.limits.max_drive_V:g} V; train a readout within this device's limits")

    # --- a new voice -------------------------------------------------------------------------
    def enrol(self, device: Device, samples: Sequence[np.ndarray], labels: Sequence[int], *,
              speaker: str = "enrolled", weight: float = 1.0) -> "DigitReadout":
        """A readout adapted to a new voice: re-fit on the stored training states plus the new
        utterances, the new voice weighing ``weight`` times all stored utterances together."""
        if self.training is None:
            raise ReadoutError("this readout has no stored training states to enrol against; "
                               "retrain it with `spinlab run spoken-digits`")
        if not weight > 0:
            raise ReadoutError(f"enrolment weight must be > 0, got {weight}")
        labels = np.asarray(labels, dtype=np.int64)
        if len(samples) == 0 or labels.shape != (len(samples),):
            raise ReadoutError("enrolment needs at least one utterance and one label per utterance")
        self.check_device(device)
        new = self.states(device, [self.features_of(s) for s in samples])
        old = self.training
        each = weight * float(old.weights.sum()) / len(new)
        training = TrainingStates(np.vstack([old.states, new]), np.concatenate([old.labels, labels]),
                                  np.concatenate([old.speakers, np.full(len(new), speaker)]),
                                  np.concatenate([old.weights, np.full(len(new), each)]))
        ridge = RidgeReadout(alpha=self.ridge.alpha, n_classes=self.ridge.n_classes)
        ridge.fit(training.states[:, None, :], training.labels, training.weights)
        enrolled = list(self.provenance.get("enrolled", [])) + [
            {"speaker": speaker, "utterances": len(new), "weight": weight}]
        return replace(self, ridge=ridge, training=training,
                       provenance={**self.provenance, "enrolled": enrolled})

    # --- storage -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a file, or ``DIR/readout.h5`` for a directory) atomically."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        enc = self.encoder
        meta = to_jsonable({
            "features": self.features.to_dict(), "node_features": self.node_features,
            "segments": self.segments, "device_address": self.device_address,
            "conditions": self.conditions, "class_names": list(self.class_names),
            "encoder": {"theta_s": enc.theta_s, "samples_per_node": enc.samples_per_node,
                        "amplitude_V": enc.amplitude_V, "input_sigma": enc.input_sigma,
                        "scale": enc.scale},
            "ridge": {"alpha": self.ridge.alpha, "n_classes": self.ridge.n_classes},
            "provenance": {"versions": package_versions(), **self.provenance},
        })
        tmp = path.with_name(path.name + ".tmp")
        # libver v108: checksummed superblock and object headers, so a damaged file is refused by
        # HDF5 instead of being parsed (an unchecked flipped byte in metadata can crash HDF5 itself)
        with h5py.File(tmp, "w", libver=("v108", "latest")) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["meta"] = json.dumps(meta)
            f["mask"] = enc.mask
            f["feature_mean"] = self.normaliser.mean
            f["feature_std"] = self.normaliser.std
            f["ridge_mean"] = self.ridge.mean
            f["ridge_std"] = self.ridge.std
            f["ridge_weights"] = self.ridge.weights
            if self.training is not None:
                t = self.training
                f.create_dataset("training/states", data=t.states, compression="gzip")
                f["training/labels"] = t.labels
                f["training/speakers"] = t.speakers.astype("S")
                f["training/weights"] = t.weights
        os.replace(tmp, path)
        return path


def device_key(address: str) -> str:
    """What identifies a device for a readout: the address without its options, file targets
    (twin checkpoints, station files) as absolute paths."""
    base = str(address).split("?", 1)[0].strip()
    scheme, _, target = base.partition(":")
    if Path(target).suffix in (".pt", ".toml"):
        target = str(Path(target).expanduser().resolve())
    return f"{scheme.lower()}:{target}"


def readout_path(path: str | Path) -> Path:
    """A run directory (or a readout file) -> the readout file."""
    path = Path(path).expanduser()
    return path / FILE_NAME if path.is_dir() else path


def load_readout(path: str | Path) -> DigitReadout:
    """Read a readout saved by :meth:`DigitReadout.save` (a run directory or the file).

    Nothing is read before it is checked: the file's type and size (:mod:`spinlab.files`), then
    the metadata's settings, then every dataset's link (hard links only: no soft-link loops, no
    external files), storage and declared shape against what the metadata implies, so a hostile
    file costs at most :data:`MAX_DATASET_BYTES` per array and never a traceback."""
    file = readout_path(path)
    check_file(file, "readout", ReadoutError, f"no readout at {file}; train one with `spinlab run "
               "spoken-digits --device ...` and pass its run directory")
    try:
        with h5py.File(file, "r") as f:
            if _attribute(f, "format", file) != FORMAT:
                raise ReadoutError(f"{file} is not a spinlab digit readout (no '{FORMAT}' marker)")
            version = _attribute(f, "format_version", file)
            if not (isinstance(version, (int, np.integer)) and 1 <= version <= FORMAT_VERSION):
                raise ReadoutError(f"{file} has readout format version {version!r}; this spinlab reads up "
                                   f"to {FORMAT_VERSION}: upgrade spinlab")
            text = _attribute(f, "meta", file)
            if not isinstance(text, str) or len(text) > MAX_META_CHARS:
                raise ReadoutError(f"{file} has no readable 'meta' attribute (a JSON text of at most "
                                   f"{MAX_META_CHARS} characters)")
            meta = json.loads(text)
            arrays = _read_arrays(f, meta, file)
    except ReadoutError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError, RecursionError) as exc:
        raise ReadoutError(f"{file} is not a readable digit readout ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); copy it again or retrain with "
                           "`spinlab run spoken-digits`") from None
    try:
        training = None
        if "training/states" in arrays:
            training = TrainingStates(arrays["training/states"], arrays["training/labels"],
                                      arrays["training/speakers"].astype(str), arrays["training/weights"])
        e = meta["encoder"]
        encoder = Encoder(arrays["mask"], e["theta_s"], e["samples_per_node"], e["amplitude_V"],
                          e["input_sigma"], e["scale"])
        r = meta["ridge"]
        ridge = RidgeReadout(alpha=r["alpha"], n_classes=r["n_classes"], mean=arrays["ridge_mean"],
                             std=arrays["ridge_std"], weights=arrays["ridge_weights"])
        readout = DigitReadout(
            FeatureConfig(**meta["features"]),
            ChannelNormalizer(arrays["feature_mean"], arrays["feature_std"]), encoder,
            meta["node_features"], int(meta["segments"]), ridge, meta["device_address"],
            {k: float(v) for k, v in meta["conditions"].items()}, tuple(meta["class_names"]),
            training, meta.get("provenance", {}))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ReadoutError(f"{file} is incompatible with this spinlab ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); retrain with `spinlab run spoken-digits`") from None
    _check_shapes(readout, file)
    return readout


#: Largest array a readout may hold (bytes), and the longest metadata text (characters).
MAX_DATASET_BYTES = 256 << 20
MAX_META_CHARS = 1 << 20
#: Bounds of the metadata settings that decide array sizes and the work of one recognition.
MAX_SEGMENTS = 100
MAX_CLASSES = 1000
FEATURE_BOUNDS = {"rate_Hz": (1000, 192_000), "decimation": (1, 100_000), "n_mels": (1, 512),
                  "n_mfcc": (1, 512), "window_s": (1e-4, 1.0), "ear_q": (0.1, 1000.0)}


def _attribute(f: h5py.File, name: str, file: Path) -> Any:
    """An attribute of the root, read only if it is a scalar of bounded storage."""
    if name not in f.attrs:
        raise ReadoutError(f"{file} is not a spinlab digit readout (no '{name}' attribute)")
    attr = h5py.h5a.open(f.id, name.encode())
    if attr.shape not in ((), None) or attr.get_storage_size() > MAX_META_CHARS:
        raise ReadoutError(f"{file}: attribute '{name}' is not a scalar; the file is not a digit readout")
    value = f.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def _expected_shapes(meta: Any, mask_shape: tuple[int, ...], file: Path) -> dict[str, tuple]:
    """Shapes every array must have, from the metadata and the mask's declared shape (None:
    any length along that axis)."""
    e, features = meta["encoder"], meta["features"]
    samples, segments, classes = e["samples_per_node"], meta["segments"], meta["class_names"]
    if not (isinstance(samples, int) and 1 <= samples <= MAX_SAMPLES_PER_NODE):
        raise ReadoutError(f"{file}: encoder samples_per_node must be an integer 1..{MAX_SAMPLES_PER_NODE}, "
                           f"got {samples!r}; the file is corrupt or hostile, retrain the readout")
    if not (isinstance(segments, int) and 0 <= segments <= MAX_SEGMENTS):
        raise ReadoutError(f"{file}: segments must be an integer 0..{MAX_SEGMENTS}, got {segments!r}")
    if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES
            and all(isinstance(c, str) for c in classes)):
        raise ReadoutError(f"{file}: class_names must be a list of 1..{MAX_CLASSES} names")
    if not isinstance(features, dict):
        raise ReadoutError(f"{file}: the feature settings are not a map")
    for key, (low, high) in FEATURE_BOUNDS.items():
        value = features.get(key, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ReadoutError(f"{file}: feature setting {key} must be between {low:g} and {high:g}, "
                               f"got {value!r}")
    if len(mask_shape) != 2 or not (1 <= mask_shape[0] <= MAX_NODES and 1 <= mask_shape[1] <= MAX_CHANNELS):
        raise ReadoutError(f"{file}: the mask's shape {mask_shape} is not (1..{MAX_NODES} nodes, "
                           f"1..{MAX_CHANNELS} channels)")
    nodes, channels = mask_shape
    width = nodes * (samples if meta["node_features"] == "samples" else 1) * (segments + 1 if segments else 1)
    return {"mask": mask_shape, "feature_mean": (channels,), "feature_std": (channels,),
            "ridge_mean": (width,), "ridge_std": (width,), "ridge_weights": (width + 1, len(classes)),
            "training/states": (None, width), "training/labels": (None,), "training/speakers": (None,),
            "training/weights": (None,)}


def _read_arrays(f: h5py.File, meta: Any, file: Path) -> dict[str, np.ndarray]:
    """Every array of the readout, each checked before it is read (see :func:`load_readout`)."""
    shapes = _expected_shapes(meta, _dataset(f, "mask", file).shape, file)
    names = [n for n in shapes if not n.startswith("training/")]
    if _link(f, "training", file) is not None:
        names += [n for n in shapes if n.startswith("training/")]
    arrays, rows = {}, None
    for name in names:
        ds = _dataset(f, name, file)
        expected = shapes[name]
        if name.startswith("training/"):
            rows = ds.shape[0] if rows is None and ds.shape else rows
            expected = (rows, *expected[1:])
        if ds.shape != expected:
            raise ReadoutError(f"{file}: dataset '{name}' has shape {ds.shape}, expected {expected}; "
                               "the file is inconsistent, retrain with `spinlab run spoken-digits`")
        arrays[name] = ds[()]
        if arrays[name].dtype.kind == "f" and not np.all(np.isfinite(arrays[name])):
            raise ReadoutError(f"{file}: dataset '{name}' holds NaN or infinite values; retrain the readout")
    return arrays


def _link(f: h5py.Group, name: str, file: Path) -> Any:
    """The hard link ``name`` (None if absent); soft and external links are refused."""
    link = f.get(name, getlink=True)
    if link is not None and not isinstance(link, h5py.HardLink):
        kinds = {"SoftLink": "a soft link", "ExternalLink": "an external link"}
        kind = kinds.get(type(link).__name__, "a link")
        raise ReadoutError(f"{file}: '{name}' is {kind}; a digit readout holds its arrays itself "
                           "(no soft or external links)")
    return link


def _dataset(f: h5py.File, name: str, file: Path) -> h5py.Dataset:
    """Dataset ``name``, checked before any of it is read: a hard link to an array of numbers or
    fixed-size strings stored in this file, at most :data:`MAX_DATASET_BYTES` when read."""
    node: Any = f
    for part in name.split("/"):
        if not isinstance(node, h5py.Group) or _link(node, part, file) is None:
            raise ReadoutError(f"{file} has no dataset '{name}'; it is not a complete digit readout")
        node = node[part]
    ds = node
    if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external:
        raise ReadoutError(f"{file}: '{name}' is not an array stored in the file")
    if ds.dtype.kind not in "biufS" or ds.shape is None:
        raise ReadoutError(f"{file}: dataset '{name}' holds {ds.dtype}, not numbers")
    chunk = int(np.prod(ds.chunks, dtype=object)) if ds.chunks else 0  # HDF5 inflates whole chunks
    if max(ds.size, chunk) * ds.dtype.itemsize > MAX_DATASET_BYTES:
        raise ReadoutError(f"{file}: dataset '{name}' of shape {ds.shape} would take "
                           f"{ds.size * ds.dtype.itemsize / 2**20:.0f} MiB; a readout's arrays are at most "
                           f"{MAX_DATASET_BYTES >> 20} MiB")
    return ds


def _check_shapes(readout: DigitReadout, file: Path) -> None:
    """The pieces must chain: features -> mask -> states -> weights -> classes."""
    channels = readout.normaliser.mean.size
    per_frame = readout.encoder.n_nodes * (readout.encoder.samples_per_node
                                           if readout.node_features == "samples" else 1)
    width = per_frame * (readout.segments + 1 if readout.segments else 1)
    problems = []
    if readout.encoder.n_channels != channels:
        problems.append(f"mask has {readout.encoder.n_channels} channels, features {channels}")
    if readout.ridge.weights.shape != (width + 1, len(readout.class_names)):
        problems.append(f"weights {readout.ridge.weights.shape} do not fit {width} states and "
                        f"{len(readout.class_names)} classes")
    if readout.training is not None and readout.training.states.shape[1] != width:
        problems.append(f"stored training states have width {readout.training.states.shape[1]}, not {width}")
    if problems:
        raise ReadoutError(f"{file} is inconsistent ({'; '.join(problems)}); retrain with `spinlab run spoken-digits`")




def mfcc_reference(train: Sequence[Any], test: Sequence[Any], groups: np.ndarray,
                   alphas: Sequence[float], cache_dir: str | Path | None = None) -> tuple[float, np.ndarray]:
    """What a user would pick instead of a reservoir: MFCCs pooled over each utterance (mean
    and standard deviation per coefficient) into a ridge classifier, alpha by the same grouped
    cross-validation. Returns (test accuracy, test predictions)."""
    mfcc = utterance_features(list(train) + list(test), FeatureConfig(kind="mfcc"), cache_dir)
    pooled = [np.concatenate([f.mean(axis=0), f.std(axis=0)])[None, :] for f in mfcc]
    labels = np.array([u.digit for u in train])
    ridge, _ = fit_cv(pooled[: len(train)], labels, groups, alphas)
    predictions = ridge.predict(pooled[len(train):])
    return float(np.mean(predictions == np.array([u.digit for u in test]))), predictions


__all__ = ["DigitReadout", "Recognition", "TrainingStates", "load_readout", "readout_path",
           "device_key", "mfcc_reference", "FILE_NAME", "FORMAT", "FORMAT_VERSION"]
