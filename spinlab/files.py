"""One check before reading any file a user names: it is a regular file of a bounded size.

Why before reading: ``open()`` of a FIFO blocks until a writer comes (inside a signal-deferred
section it cannot even be interrupted), ``/dev/zero`` never ends, and a file far larger than its
kind ever is makes a loader allocate until the machine runs out of memory. :func:`check_file`
only calls ``stat`` (which neither blocks nor reads), so every loader calls it first and fails
with one line. The bounds are per kind of file, far above what spinlab itself writes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from spinlab.errors import SpinlabError

MiB = 1 << 20
#: Largest file of each kind spinlab reads, in bytes, and what the kind is called in messages.
MAX_BYTES = {
    "wav": 64 * MiB,  # a minute of 8-channel 32-bit audio at 32 kHz
    "readout": 512 * MiB,  # a readout with the pooled states of ~25,000 utterances
    "checkpoint": 160 * MiB,  # a twin of MAX_PARAMETERS float64 weights, plus metadata
    "station": 1 * MiB,  # a station file is a page of TOML
    "model": 1 * MiB,  # a fitted-model JSON is a few hundred bytes
    "mumax": 512 * MiB,  # a long MuMax3 table.txt
    "series": 64 * MiB,  # a time series, one value a line (Mackey-Glass)
}
NAMES = {
    "wav": "wav file",
    "readout": "digit readout",
    "checkpoint": "twin checkpoint",
    "station": "station file",
    "model": "model file",
    "mumax": "MuMax3 table",
    "series": "time-series file",
}


def _what(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_file(path: str | os.PathLike, kind: str, error: type[SpinlabError], missing: str = "") -> Path:
    """``path`` if it is a regular file of at most ``MAX_BYTES[kind]`` bytes; otherwise
    ``error`` with one line saying what the path is and what to pass instead (``missing``: the
    message when it does not exist)."""
    path = Path(path).expanduser()
    name = NAMES[kind]
    try:
        info = os.stat(path)  # follows symbolic links; never opens the file
    except FileNotFoundError:
        raise error(missing or f"{name} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise error(f"{name} {path} cannot be read ({reason})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is {_what(info.st_mode)}, not a {name}; pass the path of a regular file")
    if info.st_size > MAX_BYTES[kind]:
        raise error(
            f"{path} is {info.st_size / MiB:.1f} MiB; a {name} may be at most "
            f"{MAX_BYTES[kind] // MiB} MiB: this is not a {name}, or it is too large for spinlab"
        )
    return path


__all__ = ["MAX_BYTES", "check_file"]
