"""Recording files of a monitoring stream (``spinlab monitor --record FILE``).

Layout (all integers little-endian)::

    b"SPINLAB-MONREC\\x00\\x01"            16-byte magic + format version 1
    repeated per message:
        uint32  number of frames
        repeated per frame: uint64 length, then the frame's bytes

The frames are exactly what came off the wire (topic, msgpack header, raw arrays), so a
recording replays through the same validation as live data (:func:`read_recording`) and keeps
full-resolution array bytes with their dtype and shape. A file cut short (Ctrl-C, full disk)
is read up to its last complete message.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from spinlab.errors import ConfigError, MessageFormatError
from spinlab.monitoring import messages

log = logging.getLogger("spinlab.monitoring.recording")

MAGIC = b"SPINLAB-MONREC\x00\x01"
_MAX_FRAMES = 2 + messages.MAX_ARRAYS


class Recorder:
    """Append raw message frames to a recording file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "wb")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the recording {str(self.path)!r}: {exc.strerror or exc}; "
                "choose a writable file (--record FILE)"
            ) from None
        self._file.write(MAGIC)
        self.count = 0

    def write(self, frames: Sequence) -> None:
        bufs = [f.buffer if hasattr(f, "buffer") else f for f in frames]
        self._file.write(struct.pack("<I", len(bufs)))
        for buf in bufs:
            self._file.write(struct.pack("<Q", len(buf)))
            self._file.write(buf)
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_recording(path: str | Path) -> Iterator[messages.Message]:
    """Yield the validated messages of a recording; skip (and log) invalid ones."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read the recording {str(path)!r}: {exc.strerror or exc}") from None
    with f:
        if f.read(len(MAGIC)) != MAGIC:
            raise MessageFormatError(f"{path} is not a spinlab monitor recording (bad magic)")
        while True:
            frames = _read_frames(f)
            if frames is None:
                return
            try:
                yield messages.decode(frames)
            except MessageFormatError as exc:
                log.warning("skipped an invalid message in %s: %s", path, exc)


def _read_frames(f: BinaryIO) -> list[bytes] | None:
    head = f.read(4)
    if len(head) < 4:
        return None
    (count,) = struct.unpack("<I", head)
    if not 2 <= count <= _MAX_FRAMES:
        raise MessageFormatError(f"corrupt recording: message with {count} frames")
    frames = []
    for _ in range(count):
        raw = f.read(8)
        if len(raw) < 8:
            return None
        (length,) = struct.unpack("<Q", raw)
        if length > messages.MAX_MESSAGE_BYTES:
            raise MessageFormatError(f"corrupt recording: frame of {length} bytes")
        data = f.read(length)
        if len(data) < length:
            return None
        frames.append(data)
    return frames
