"""The readout file (``readout.h5``): how a :class:`~spinlab.speech.readout.DigitReadout` is kept
on disk, and every check made before any of a file is read.

HDF5 with plain arrays and one JSON attribute (nothing executes on load), written atomically,
with a format marker and version like the twin checkpoints. A file is a user's input (a readout
copied from another machine), so reading checks the file's type and size, then the metadata's
settings, then every dataset's link (hard links only: no soft-link loops, no external files),
storage and declared shape against what the metadata implies: a hostile file costs at most
:data:`MAX_DATASET_BYTES` per array and never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spinlab.errors import ReadoutError
from spinlab.files import check_file
from spinlab.speech.encoder import MAX_CHANNELS, MAX_NODES, MAX_SAMPLES_PER_NODE

FORMAT = "spinlab-digit-readout"
#: Version 2 adds the voice normalisation (``meta["normalisation"]``, ``voice_mean``/``voice_std``;
#: ``meta["state_normalisation"]``, ``state_voice_mean``/``state_voice_std``); a readout without
#: either is still written as version 1, which every spinlab reads.
FORMAT_VERSION = 2
#: Name of the readout file inside a run directory.
FILE_NAME = "readout.h5"
#: Largest array a readout may hold (bytes), and the longest metadata text (characters).
MAX_DATASET_BYTES = 256 << 20
MAX_META_CHARS = 1 << 20
#: Bounds of the metadata settings that decide array sizes and the work of one recognition.
MAX_SEGMENTS = 100
MAX_CLASSES = 1000
FEATURE_BOUNDS = {
    "rate_Hz": (1000, 192_000),
    "decimation": (1, 100_000),
    "n_mels": (1, 512),
    "n_mfcc": (1, 512),
    "window_s": (1e-4, 1.0),
    "ear_q": (0.1, 1000.0),
}


def readout_path(path: str | Path) -> Path:
    """A run directory (or a readout file) -> the readout file."""
    path = Path(path).expanduser()
    return path / FILE_NAME if path.is_dir() else path


def write_readout_file(
    path: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], version: int = FORMAT_VERSION
) -> None:
    """Write ``meta`` (JSON-ready) and ``arrays`` (name -> array; ``training/...`` in a group)
    to ``path`` atomically, marked as format ``version``."""
    tmp = path.with_name(path.name + ".tmp")
    # libver v108: checksummed superblock and object headers, so a damaged file is refused by
    # HDF5 instead of being parsed (an unchecked flipped byte in metadata can crash HDF5 itself)
    with h5py.File(tmp, "w", libver=("v108", "latest")) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = version
        f.attrs["meta"] = json.dumps(meta)
        for name, array in arrays.items():
            if name == "training/states":
                f.create_dataset(name, data=array, compression="gzip")
            else:
                f[name] = array
    os.replace(tmp, path)


def read_readout_file(file: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The metadata and arrays of the readout file ``file``, each checked before it is read."""
    check_file(
        file,
        "readout",
        ReadoutError,
        f"no readout at {file}; train one with `spinlab run "
        "spoken-digits --device ...` and pass its run directory",
    )
    try:
        with h5py.File(file, "r") as f:
            if _attribute(f, "format", file) != FORMAT:
                raise ReadoutError(f"{file} is not a spinlab digit readout (no '{FORMAT}' marker)")
            version = _attribute(f, "format_version", file)
            if not (isinstance(version, (int, np.integer)) and 1 <= version <= FORMAT_VERSION):
                raise ReadoutError(
                    f"{file} has readout format version {version!r}; this spinlab reads up "
                    f"to {FORMAT_VERSION}: upgrade spinlab"
                )
            text = _attribute(f, "meta", file)
            if not isinstance(text, str) or len(text) > MAX_META_CHARS:
                raise ReadoutError(
                    f"{file} has no readable 'meta' attribute (a JSON text of at most "
                    f"{MAX_META_CHARS} characters)"
                )
            meta = json.loads(text)
            arrays = _read_arrays(f, meta, file)
    except ReadoutError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError, RecursionError) as exc:
        raise ReadoutError(
            f"{file} is not a readable digit readout ({type(exc).__name__}: "
            f"{str(exc)[:200]}); copy it again or retrain with "
            "`spinlab run spoken-digits`"
        ) from None
    return meta, arrays


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
        raise ReadoutError(
            f"{file}: encoder samples_per_node must be an integer 1..{MAX_SAMPLES_PER_NODE}, "
            f"got {samples!r}; the file is corrupt or hostile, retrain the readout"
        )
    if not (isinstance(segments, int) and 0 <= segments <= MAX_SEGMENTS):
        raise ReadoutError(f"{file}: segments must be an integer 0..{MAX_SEGMENTS}, got {segments!r}")
    if not (
        isinstance(classes, list)
        and 1 <= len(classes) <= MAX_CLASSES
        and all(isinstance(c, str) for c in classes)
    ):
        raise ReadoutError(f"{file}: class_names must be a list of 1..{MAX_CLASSES} names")
    if not isinstance(features, dict):
        raise ReadoutError(f"{file}: the feature settings are not a map")
    for key, (low, high) in FEATURE_BOUNDS.items():
        value = features.get(key, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ReadoutError(
                f"{file}: feature setting {key} must be between {low:g} and {high:g}, got {value!r}"
            )
    if len(mask_shape) != 2 or not (1 <= mask_shape[0] <= MAX_NODES and 1 <= mask_shape[1] <= MAX_CHANNELS):
        raise ReadoutError(
            f"{file}: the mask's shape {mask_shape} is not (1..{MAX_NODES} nodes, 1..{MAX_CHANNELS} channels)"
        )
    nodes, channels = mask_shape
    width = nodes * (samples if meta["node_features"] == "samples" else 1) * (segments + 1 if segments else 1)
    return {
        "mask": mask_shape,
        "feature_mean": (channels,),
        "feature_std": (channels,),
        "voice_mean": (channels,),
        "voice_std": (channels,),
        "state_voice_mean": (width,),
        "state_voice_std": (width,),
        "ridge_mean": (width,),
        "ridge_std": (width,),
        "ridge_weights": (width + 1, len(classes)),
        "training/states": (None, width),
        "training/labels": (None,),
        "training/speakers": (None,),
        "training/weights": (None,),
    }


def _read_arrays(f: h5py.File, meta: Any, file: Path) -> dict[str, np.ndarray]:
    """Every array of the readout, each checked before it is read (see the module docstring)."""
    shapes = _expected_shapes(meta, _dataset(f, "mask", file).shape, file)
    names = [n for n in shapes if not n.startswith(("training/", "voice_", "state_voice_"))]
    if meta.get("normalisation", "channel") == "speaker":
        names += ["voice_mean", "voice_std"]
    if meta.get("state_normalisation", "none") == "speaker":
        names += ["state_voice_mean", "state_voice_std"]
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
            raise ReadoutError(
                f"{file}: dataset '{name}' has shape {ds.shape}, expected {expected}; "
                "the file is inconsistent, retrain with `spinlab run spoken-digits`"
            )
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
        raise ReadoutError(
            f"{file}: '{name}' is {kind}; a digit readout holds its arrays itself (no soft or external links)"
        )
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
        raise ReadoutError(
            f"{file}: dataset '{name}' of shape {ds.shape} would take "
            f"{ds.size * ds.dtype.itemsize / 2**20:.0f} MiB; a readout's arrays are at most "
            f"{MAX_DATASET_BYTES >> 20} MiB"
        )
    return ds


__all__ = [
    "FILE_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_DATASET_BYTES",
    "read_readout_file",
    "readout_path",
    "write_readout_file",
]
