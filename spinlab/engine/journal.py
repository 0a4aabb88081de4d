"""An append-only journal of a run's documents: what the run file is built from.

Why a journal: an HDF5 file that is being written when its process dies (SIGKILL, power loss,
a crash inside a write) can be left unreadable as a whole. Every document the run records is
first appended here as one self-checking record and handed to the operating system, then
applied to ``run.h5`` (which is flushed), so a killed process loses no completed step. The
journal is also synced to the disk itself (``fsync``) at most ``sync_interval_s`` apart and at
the end: a power cut loses at most that last second. Syncing after every step costs about 5 ms
a step here, which is more than the 10 % budget of a fast acquisition
(``benchmarks/bench_durability.py`` measures all three). The run file therefore always holds every completed step after any stop
between steps, and if a stop ever lands inside a write, ``spinlab resume`` rebuilds the run
file from this journal. A completed run's journal is deleted; an interrupted one's is kept.

Format: a 16-byte magic, then records ``b"REC1" | uint64 length | uint32 crc32 | payload``
(little-endian), where the payload is a msgpack map. numpy arrays travel as
``{"__nd__": [dtype.str, shape, raw bytes]}`` through :mod:`spinlab.engine.arrays` (the codec and
dtype allow-list of the monitoring wire, plus fixed-width text; never pickle). Reading stops at the first truncated or corrupt record: that is where the
writer died (a torn tail), or where the file was damaged (:func:`scan` tells which). A length
field is checked against the file's size before anything is allocated for it.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np

from spinlab.engine.arrays import ArrayCodecError, decode_array, encode_array
from spinlab.errors import JournalError

MAGIC = b"SPINLAB-JOURNAL\x01"
_HEAD = struct.Struct("<4sQI")
_TAG = b"REC1"


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        try:
            return {"__nd__": list(encode_array(value, text=True))}
        except ArrayCodecError as exc:
            raise TypeError(f"cannot journal an array: {exc}") from None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _object_hook(obj: dict[str, Any]) -> Any:
    spec = obj.get("__nd__")
    if spec is not None and len(obj) == 1:
        dtype, shape, raw = spec
        return decode_array(dtype, shape, raw, text=True).copy()
    return obj


def encode(record: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(record, use_bin_type=True, default=_default)
    return _HEAD.pack(_TAG, len(payload), zlib.crc32(payload)) + payload


class Journal:
    """Append records to ``path`` (created with the magic if missing). Each append reaches the
    OS at once; ``fsync`` follows when ``sync_interval_s`` has passed since the last one (0:
    after every append, None: only at close)."""

    def __init__(self, path: str | Path, *, sync_interval_s: float | None = 1.0) -> None:
        self.path = Path(path)
        self.sync_interval_s = sync_interval_s
        self._synced = time.monotonic()
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            # drop a torn tail so new records follow the last good one
            good = valid_length(self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        self._fh = open(self.path, "ab")
        if new:
            self._fh.write(MAGIC)
            self._flush()

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(encode(record))
        self._flush()

    def _flush(self) -> None:
        self._fh.flush()
        interval = self.sync_interval_s
        if interval is not None and time.monotonic() - self._synced >= interval:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self.sync()
            self._fh.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class Scan:
    """What :func:`scan` found: the intact records, where they end, and the file's size."""

    records: list[dict[str, Any]]
    end: int
    size: int
    torn: bool  # the bytes after ``end`` are one record cut short (a writer died), not damage

    @property
    def damaged(self) -> bool:
        return self.end < self.size and not self.torn


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(end offset, record) for every intact record, in order."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if fh.read(len(MAGIC)) != MAGIC:
            raise JournalError(f"{path} is not a spinlab run journal")
        offset = len(MAGIC)
        while True:
            head = fh.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            tag, length, crc = _HEAD.unpack(head)
            if tag != _TAG or length > size - offset - _HEAD.size:  # never allocate past the file
                return
            payload = fh.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                record = msgpack.unpackb(payload, raw=False, object_hook=_object_hook, strict_map_key=False)
            except Exception:  # a checksummed record that does not decode: stop here
                return
            if not isinstance(record, dict):
                return
            offset += _HEAD.size + length
            yield offset, record


def scan(path: str | Path) -> Scan:
    """The intact records of the journal at ``path`` and what follows them."""
    path = Path(path)
    records, end = [], len(MAGIC)
    for end, record in _records(path):
        records.append(record)
    size = path.stat().st_size
    torn = False
    if end < size:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
            head = raw[end : end + _HEAD.size]
            # cut short: a partial header, or a good tag whose record runs past the end of the
            # file, with no record after it (a writer dies inside its last record only)
            torn = (
                len(head) < _HEAD.size
                or (head[:4] == _TAG and _HEAD.unpack(head)[1] > size - end - _HEAD.size)
            ) and raw.find(_TAG, end + 4) == -1
    return Scan(records, end, size, torn)


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every intact record of the journal at ``path``, in order."""
    return [record for _, record in _records(Path(path))]


def valid_length(path: str | Path) -> int:
    end = len(MAGIC)
    for end, _ in _records(Path(path)):
        pass
    return end
