"""A run directory's guards: the lock that keeps it to one process, and the device provenance
that a resume checks.

Why a lock: a resume beside a live run (or two resumes at once) would rebuild the run file
under the feet of the process writing it. The lock is an OS lock (``flock``) on a file inside
the directory, taken before anything in it is read, opened or created and held until the run's
files are closed; the OS releases it when its holder dies, SIGKILL included.

Why provenance: a resumed run must continue on the device it started on. The start document
records the address with any file it names made absolute (a relative ``bench:tcp.toml`` means
the directory the run was started from, not the one it is resumed from), the SHA-256 of that
file's content, and the device's identity (instrument IDNs, station, model).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spinlab.errors import ConfigError, RunBusyError
from spinlab.locks import holder_info

LOCK_FILE = ".spinlab.lock"
_HASH_LIMIT = 1 << 30  # files larger than this are named, not hashed


class RunDirLock:
    """Exclusive use of run directory ``directory`` by this process; :meth:`release` it."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path.parent} is not a run directory (it does not exist)")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(
                    f"cannot lock the run directory {self.path.parent}: "
                    f"{exc.strerror or exc}; check its permissions"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunBusyError(
                    f"run directory {self.path.parent} is in use by {holder}; wait "
                    "for that process to end, or stop it, then resume"
                ) from None
            try:  # the file we locked may have been removed by a holder that just released it
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd: int | None = fd
        with contextlib.suppress(OSError):  # who holds it, for a refused process (a full disk: unnamed)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder_info()).encode())

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return "another process"
    run = f", run {info['run']}" if info.get("run") else ""
    argv = " ".join(str(a) for a in info.get("argv") or [])
    return f"PID {info.get('pid')}{run} ({argv}, since {info.get('since')})"


# --- device provenance ---------------------------------------------------------------------
def _target(address: str) -> tuple[str, str, str]:
    """``(scheme, target, "?query" or "")`` of an address, without interpreting the target."""
    head, sep, query = address.partition("?")
    scheme, _, target = head.partition(":")
    return scheme.strip(), target.strip(), sep + query


def absolute_address(address: str) -> str:
    """``address`` with a relative target that names an existing file made absolute (so it
    means the same file wherever the run is resumed from)."""
    scheme, target, query = _target(address)
    path = Path(target)
    if scheme and target and not path.is_absolute() and path.is_file():
        return f"{scheme}:{path.resolve()}{query}"
    return address


def address_sha256(address: str) -> str | None:
    """SHA-256 of the regular file an address names (a station file, a checkpoint), or None."""
    path = Path(_target(address)[1])
    try:
        if not path.is_file() or path.stat().st_size > _HASH_LIMIT:
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def address_change(start: Mapping[str, Any], address: str | None) -> str | None:
    """What differs between the device a run started on and ``address`` (None: the same)."""
    recorded = start.get("address")
    if not recorded or not address:
        return None
    if absolute_address(address) != recorded and address != recorded:
        return f"the run was started on {recorded}, not {address}"
    digest, before = address_sha256(recorded), start.get("address_sha256")
    if before and digest != before:
        what = "is gone" if digest is None else "has changed"
        return f"{_target(recorded)[1]} {what} since the run started"
    return None


def identity_change(before: Any, after: Any, where: str = "") -> str | None:
    """The first place two device identities differ (``instruments.awg: 'A' -> 'B'``), or None;
    the address is compared by :func:`address_change`."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after), key=str):
            if key == "address" and not where:
                continue
            found = identity_change(before.get(key), after.get(key), f"{where}{key}.")
            if found:
                return found
        return None
    if before != after and not (before != before and after != after):  # NaN is NaN here
        return f"{where.rstrip('.') or 'identity'}: {_short(before)} -> {_short(after)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = [
    "RunDirLock",
    "LOCK_FILE",
    "absolute_address",
    "address_sha256",
    "address_change",
    "identity_change",
]
